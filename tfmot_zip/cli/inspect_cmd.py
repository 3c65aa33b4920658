"""``tfmot-zip inspect``: describe a zipped ``.keras`` model or a ``.tflite`` file."""
from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from tfmot_zip.cli.console import Console
from tfmot_zip.cli.errors import EXIT_OK, UsageError
from tfmot_zip.cli.files import MODEL_SUFFIXES, file_size, load_model_file

__all__ = ["NAME", "HELP", "DESCRIPTION", "EXAMPLE", "add_arguments", "inspect_path", "format_info", "run"]

NAME = "inspect"
HELP = "describe a zipped .keras model or a .tflite file"
DESCRIPTION = "Per-layer sharing and parameters of a zipped model, or the signatures and size of a TFLite file."
EXAMPLE = "tfmot-zip inspect zipped.keras\n  tfmot-zip inspect model.tflite --json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``inspect``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args(["m.tflite", "--json"]).json
        True
    """
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def inspect_path(path: str | os.PathLike) -> dict:
    """Describes a zipped ``.keras`` model or a ``.tflite`` file as a dict (what ``inspect`` prints).

    For a model: inputs, outputs, parameters and, when zipped, the per-layer summary of
    :func:`tfmot_zip.zip_summary`. For a TFLite file: every signature with its input and output
    names, shapes and dtypes, and the file size raw and gzipped.

    Raises:
        UsageError: a missing file, an unknown suffix, or a file that is not a valid model.

    Example:
        >>> import tempfile
        >>> from tfmot_zip.compat import keras
        >>> path = Path(tempfile.mkdtemp()) / "m.keras"
        >>> keras.Sequential([keras.layers.Dense(2, input_shape=(3,), name="head")], name="m").save(path)
        >>> info = inspect_path(path)
        >>> info["kind"], info["params"], info["zipped"], info["outputs"]
        ('keras', 8, False, {'head': [2]})
    """
    target = Path(path).expanduser()
    if not target.exists():
        raise UsageError(f"{str(path)!r} does not exist. Pass a .keras model or a .tflite file.")
    if target.suffix.lower() == ".tflite":
        return _inspect_tflite(target)
    if not target.is_dir() and target.suffix.lower() not in MODEL_SUFFIXES:
        raise UsageError(
            f"Cannot inspect {str(path)!r} (suffix {target.suffix or '(none)'!r}): pass a .keras (or .h5) model, "
            "a SavedModel folder or a .tflite file."
        )
    from tfmot_zip.model.layers import zip_layers

    model = load_model_file(target, "model")

    def shapes(s: object) -> list:
        return [list(x[1:]) for x in (s if isinstance(s, list) else [s])]

    info: dict = {
        "path": str(target),
        "kind": "keras",
        "name": model.name,
        "file_bytes": file_size(target),
        "inputs": dict(zip(model.input_names, shapes(model.input_shape))),
        "outputs": dict(zip(model.output_names, shapes(model.output_shape))),
        "params": int(model.count_params()),
        "zipped": bool(zip_layers(model)),
    }
    if info["zipped"]:
        import tfmot_zip

        summary = tfmot_zip.zip_summary(model)
        info["summary"] = summary.as_dict()
        info["summary_text"] = str(summary)
    return info


def _inspect_tflite(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - listed in the tflite extra
        raise UsageError("Inspecting .tflite files needs ai-edge-litert: pip install 'tfmot_zip[tflite]'.") from None
    try:
        interpreter = Interpreter(model_content=raw)  # its C++ banner is silenced by main()
        signatures = interpreter.get_signature_list()
    except ValueError as err:
        raise UsageError(f"{str(path)!r} is not a valid TFLite file ({str(err)[:200]}); pass a file written by export.") from None
    details = {}
    for key in signatures:
        runner = interpreter.get_signature_runner(key)
        details[key] = {
            "inputs": {n: _tensor_info(d) for n, d in runner.get_input_details().items()},
            "outputs": {n: _tensor_info(d) for n, d in runner.get_output_details().items()},
        }
    return {
        "path": str(path),
        "kind": "tflite",
        "file_bytes": len(raw),
        "gzipped_bytes": len(gzip.compress(raw, 9)),
        "signatures": details,
    }


def _tensor_info(detail: Mapping) -> dict:
    shape = detail.get("shape_signature", detail.get("shape"))
    return {"shape": [int(v) for v in np.asarray(shape).tolist()], "dtype": np.dtype(detail["dtype"]).name}


def _format_tflite(info: dict) -> str:
    lines = [f"{info['path']}: TFLite, {info['file_bytes']:,} bytes ({info['gzipped_bytes']:,} gzipped)",
             f"{len(info['signatures'])} signatures:"]
    names = [n for sig in info["signatures"].values() for role in ("inputs", "outputs") for n in sig[role]]
    width = max([len(n) for n in names] + [8]) + 2
    for key, sig in info["signatures"].items():
        lines.append(f"  {key}")
        for role in ("inputs", "outputs"):
            for name, t in sig[role].items():
                shape = "x".join("?" if v < 0 else str(v) for v in t["shape"])
                lines.append(f"    {role[:-1]:<7}{name:<{width}}{shape:<14}{t['dtype']}")
    return "\n".join(lines)


def format_info(info: dict) -> str:
    """The text ``inspect`` prints for a dict of :func:`inspect_path`.

    Example:
        >>> print(format_info({"path": "m.keras", "kind": "keras", "name": "m", "params": 8, "file_bytes": 900,
        ...                    "inputs": {"x": [3]}, "outputs": {"head": [2]}, "zipped": False}))
        m.keras: tf_keras model 'm', 8 parameters, 900 bytes
          input  x         (3,)
          output head      (2,)
          (no zip layers: not a zipped model, or already stripped)
    """
    if info["kind"] == "tflite":
        return _format_tflite(info)
    lines = [f"{info['path']}: tf_keras model {info['name']!r}, {info['params']:,} parameters, {info['file_bytes']:,} bytes"]
    width = max([len(n) for role in ("inputs", "outputs") for n in info[role]] + [8]) + 2
    for role in ("inputs", "outputs"):
        for name, shape in info[role].items():
            lines.append(f"  {role[:-1]:<7}{name:<{width}}{tuple(shape)}")
    if info["zipped"]:
        lines += ["", info["summary_text"]]
    else:
        lines.append("  (no zip layers: not a zipped model, or already stripped)")
    return "\n".join(lines)


def run(args: argparse.Namespace, console: Console) -> int:
    """Runs ``inspect``: prints :func:`format_info` or JSON; returns the exit code.

    Example:
        >>> from tfmot_zip.cli.parser import main
        >>> main(["inspect", "missing.tflite"])
        2
    """
    info = inspect_path(args.path)
    if args.json:
        info.pop("summary_text", None)
        print(json.dumps(info, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    else:
        print(format_info(info))
    return EXIT_OK
