"""``tfmot-zip export``: strip the zipping and write one TFLite file with a signature per task."""
from __future__ import annotations

import argparse
import gzip

from tfmot_zip.cli.console import Console
from tfmot_zip.cli.errors import EXIT_OK, UsageError
from tfmot_zip.cli.files import check_model_path, check_output_file, load_model_file, npz_files
from tfmot_zip.cli.inputs import FASHION_MNIST as _FM
from tfmot_zip.cli.inputs import check_inputs_fit, load_specs, per_model_specs

__all__ = ["NAME", "HELP", "DESCRIPTION", "EXAMPLE", "QUANTIZE_CHOICES", "add_arguments", "run"]

NAME = "export"
HELP = "strip the zipping and write one TFLite file"
DESCRIPTION = (
    "Strip the zip layers (standard tf_keras layers, shared weights stored once) and convert to one "
    "TFLite file with a signature per task."
)
EXAMPLE = (
    "tfmot-zip export retrained.keras --out model.tflite\n"
    "  tfmot-zip export retrained.keras --out model_int8.tflite --quantize int8 \\\n"
    f"    --representative '{_FM}:train[:200]'"
)
QUANTIZE_CHOICES = ("none", "dynamic", "float16", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``export``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args(["z.keras", "--out", "m.tflite", "--quantize", "int8"]).quantize
        'int8'
    """
    parser.add_argument("model", metavar="ZIPPED.keras")
    parser.add_argument("--out", required=True, metavar="FILE.tflite")
    parser.add_argument("--quantize", default="none", choices=QUANTIZE_CHOICES, help="weight/activation quantization (default none)")
    parser.add_argument("--representative", nargs="+", metavar="SPEC",
                        help="calibration inputs for int8: one spec per model input, or one for all")
    parser.add_argument("--representative-samples", type=int, default=200, metavar="N",
                        help="samples per input used for int8 (default 200)")


def run(args: argparse.Namespace, console: Console) -> int:
    """Runs ``export``; returns the exit code.

    Example:
        >>> from tfmot_zip.cli.parser import main
        >>> main(["export", "missing.keras", "--out", "m.tflite", "-q"])
        2
    """
    path = check_model_path(args.model, "model")
    quantize = args.quantize
    if quantize == "int8" and not args.representative:
        raise UsageError(
            "--quantize int8 needs --representative SPEC [SPEC ...] (a few hundred typical inputs per task, e.g. "
            f"{_FM}:train[:200]) to calibrate activation ranges; or use --quantize dynamic."
        )
    from tfmot_zip.data.specs import parse_data_spec

    rep_specs = [parse_data_spec(s) for s in args.representative or []]
    out = check_output_file(args.out, (".tflite",), "--out", inputs=[path] + npz_files(rep_specs))
    try:
        from tfmot_zip.export import export_tflite
    except ImportError as err:  # pragma: no cover - export is part of the package
        raise UsageError(f"TFLite export is unavailable ({err}); install the 'tflite' extra: pip install 'tfmot_zip[tflite]'.") from None
    from tfmot_zip.model.layers import zip_layers

    with console.bar(total=3, desc="export", unit="step") as bar:
        bar.set_postfix_str("loading")
        model = load_model_file(path, "model", log=console.log)
        bar.update(1)
        representative = None
        if rep_specs and quantize == "int8":
            inputs = list(range(len(model.inputs)))
            data = load_specs(per_model_specs(args.representative, len(inputs), "--representative", "inputs"), args,
                              need_labels=False, console=console)
            check_inputs_fit(model, data, "--representative", inputs)
            representative = [d.x for d in data]
        if zip_layers(model):
            import tfmot_zip

            bar.set_postfix_str("stripping")
            model = tfmot_zip.strip_zipping(model)
        bar.update(1)
        bar.set_postfix_str(f"converting ({quantize})")
        data = export_tflite(
            model, out, quantize=None if quantize == "none" else quantize, representative_data=representative,
            representative_samples=args.representative_samples,
        )
        bar.update(1)
    print(f"wrote {out} ({len(data):,} bytes, {len(gzip.compress(data, 9)):,} gzipped; quantize={quantize})")
    return EXIT_OK
