"""``tfmot-zip zip``: merge pre-trained models into one multi-task ``.keras`` model.

The command checks what only it knows about (files, suffixes, folders, spec syntax), loads the
models and data, and passes every zipping option through to :func:`tfmot_zip.zip_models`, which
validates them; its errors reach the user as exit code 2 with the library's message.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from tfmot_zip.cli.console import Console, StageBar
from tfmot_zip.cli.errors import EXIT_OK
from tfmot_zip.cli.files import check_model_path, check_output_dir, check_output_file, file_size, load_model_file, npz_files
from tfmot_zip.cli.inputs import FASHION_MNIST as _FM
from tfmot_zip.cli.inputs import accuracy_of, check_inputs_fit, check_labels_fit, load_specs, parse_sharing, per_model_specs
from tfmot_zip.zipping.options import DEFAULT_METHOD

__all__ = ["NAME", "HELP", "DESCRIPTION", "EXAMPLE", "add_arguments", "zip_with_progress", "run"]

NAME = "zip"
HELP = "zip pre-trained models into one multi-task model"
DESCRIPTION = "Zip two pre-trained tf_keras models (.keras files or SavedModel folders) into one multi-task model."
EXAMPLE = (
    "tfmot-zip zip a.keras b.keras \\\n"
    f"    --calibration '{_FM}:train[:10000]?classes=0,1,2,3,4' '{_FM}:train[:10000]?classes=5,6,7,8,9' \\\n"
    f"    --eval '{_FM}:test?classes=0,1,2,3,4' '{_FM}:test?classes=5,6,7,8,9' \\\n"
    "    --sharing 0.5 --out zipped.keras --report out/report"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zip``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args(["a.keras", "b.keras", "--calibration", "c.npz", "--out", "z.keras"]).sharing
        '1.0'
    """
    parser.add_argument("models", nargs="+", metavar="MODEL", help=".keras file or SavedModel folder, one per task")
    parser.add_argument("--calibration", nargs="+", required=True, metavar="SPEC",
                        help="inputs to compute layer Hessians: one spec per model, or one for all")
    parser.add_argument("--sharing", default="1.0",
                        help="fraction of each hidden layer to share (0..1), or LAYER=F,LAYER=F (default 1.0)")
    parser.add_argument("--method", default=DEFAULT_METHOD,
                        help=f"{DEFAULT_METHOD} (default: MTZ, then the layer and head refits), mtz (the paper's method alone), "
                             "mtz-centered, mtz-lsq, euclidean, random or activation")
    parser.add_argument("--selection", default="hungarian", help="hungarian (default) or greedy")
    parser.add_argument("--damping", type=float, default=1e-4, help="relative damping of the layer Hessians (default 1e-4)")
    parser.add_argument("--calibration-samples", type=int, default=10_000, metavar="N",
                        help="at most N samples per model (default 10000)")
    parser.add_argument("--single-input", action="store_true", help="one input for every task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", nargs="+", metavar="SPEC", help="labelled test data per model: report accuracy before/after")
    parser.add_argument("--out", required=True, metavar="FILE.keras", help="where to write the zipped model")
    parser.add_argument("--report", metavar="DIR", help="write a Markdown/JSON/PNG report of the zip into DIR")


def zip_with_progress(models: Sequence[Any], calibration: Sequence[Any], console: Console, **options: Any) -> Any:
    """:func:`tfmot_zip.zip_models` with a per-layer progress bar (from its ``progress`` callback).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> def mlp(seed):
        ...     keras.utils.set_random_seed(seed)
        ...     return keras.Sequential([keras.layers.Dense(4, activation="relu", input_shape=(3,), name="fc1"),
        ...                              keras.layers.Dense(2, name="head")], name=f"m{seed}")
        >>> x = np.random.default_rng(0).random((16, 3)).astype("float32")
        >>> zipped = zip_with_progress([mlp(1), mlp(2)], (x, x), Console(quiet=True), sharing=0.5)
        >>> len(zipped.outputs)
        2
    """
    import tfmot_zip

    with StageBar(console, desc="zipping", unit="layer") as progress:
        return tfmot_zip.zip_models(*models, calibration_data=tuple(calibration), progress=progress, **options)


def run(args: argparse.Namespace, console: Console) -> int:
    """Runs ``zip`` (see the module docstring); returns the exit code.

    Example:
        >>> from tfmot_zip.cli.parser import main
        >>> main(["zip", "a.keras", "b.keras", "--calibration", "c.npz", "--out", "z.keras", "-q"])
        2
    """
    # Everything checkable without loading is checked first.
    paths = [check_model_path(p, f"model {i}") for i, p in enumerate(args.models)]
    sharing = parse_sharing(args.sharing)
    calibration_specs = per_model_specs(args.calibration, len(paths), "--calibration", "models")
    eval_specs = per_model_specs(args.eval, len(paths), "--eval", "models") if args.eval else []
    out = check_output_file(args.out, (".keras",), "--out", inputs=paths + npz_files(calibration_specs + eval_specs))
    report_dir = check_output_dir(args.report, "--report") if args.report else None

    console.log(f"loading {len(paths)} models")
    models = [load_model_file(path, f"model {i}", log=console.log) for i, path in enumerate(console.bar(iterable=paths, desc="loading models", unit="model"))]
    console.log("reading calibration data")
    calibration = load_specs(calibration_specs, args, need_labels=False, console=console)
    tests = load_specs(eval_specs, args, need_labels=True, console=console) if eval_specs else None
    for model, d in zip(models, tests or []):
        check_inputs_fit(model, [d], "--eval")
        check_labels_fit(model, [d], "--eval")
    zipped = zip_with_progress(
        models, [d.x for d in calibration], console, sharing=sharing, method=args.method, selection=args.selection,
        damping=args.damping, calibration_samples=args.calibration_samples, single_input=args.single_input, seed=args.seed,
    )
    import tfmot_zip
    from tfmot_zip.io import atomic_save_model

    summary = tfmot_zip.zip_summary(zipped)
    before = after = None
    if tests is not None:
        before = [accuracy_of(m, [d], console, f"original {m.name}")[0] for m, d in zip(models, tests)]
        after = accuracy_of(zipped, tests, console, "zipped model")
    console.log(f"saving {out}")
    atomic_save_model(zipped, out)
    print(summary)
    for name, b, a in zip(summary.task_names, before or [], after or []):
        print(f"{name}: accuracy {b:.2f}% -> {a:.2f}% after zipping (no retraining)")
    print(f"wrote {out} ({file_size(out):,} bytes)")
    if report_dir is not None:
        from tfmot_zip.report.zip_report import write_zip_report

        sizes = {f"original {i + 1} ({p.suffix or 'SavedModel'})": file_size(p) for i, p in enumerate(paths)}
        sizes["zipped (.keras)"] = file_size(out)
        result = write_zip_report(zipped, report_dir, accuracy_before=before, accuracy_after=after, sizes=sizes)
        print(f"wrote report {result['files']['markdown']}")
    return EXIT_OK
