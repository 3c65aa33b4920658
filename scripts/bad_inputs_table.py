"""Writes docs/BAD_INPUTS.md: every bad input the hardening and CLI tests try, and the error it gets.

The cases are the ones of tests/zipping/test_hardening.py and tests/cli/test_cli_errors.py (imported from there, so
the table and the tests cannot drift apart); each is run for real and its actual message recorded.
Rows whose behaviour is a known library bug (an ``xfail`` test) say so.

Usage: .venv/bin/python scripts/bad_inputs_table.py [--out docs/BAD_INPUTS.md]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cli"), str(ROOT / "tests" / "zipping")]

import numpy as np  # noqa: E402

import tfmot_zip  # noqa: E402
from tfmot_zip.compat import tf  # noqa: E402
from tfmot_zip import training  # noqa: E402
from tfmot_zip.cli import main as cli_main  # noqa: E402
import tfmot_zip.compat  # noqa: E402,F401  (tf_keras before anything else)


def one_line(text: str, limit: int = 420) -> str:
    text = " ".join(str(text).split())
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def attempt(function) -> tuple[str, str]:
    """(exception type, message) of calling ``function``; ("no error", ...) if it returned."""
    try:
        function()
    except Exception as err:  # noqa: BLE001 - recording every outcome
        return type(err).__name__, str(err)
    return "no error", "accepted"


def zip_rows(hardening) -> list[tuple]:
    rows = []
    for name, factory, kwargs, _, _ in hardening.ZIP_CASES:
        try:
            models = factory()
        except BaseException as err:  # noqa: BLE001 - e.g. skipped when Keras 3 is missing
            rows.append(("zip_models", name, "skipped", str(err), ""))
            continue
        call = {"calibration_data": (hardening.X, hardening.X), **kwargs}
        kind, message = attempt(lambda: tfmot_zip.zip_models(*models, **call))
        rows.append(("zip_models", name, kind, message, ""))
    x = hardening.X
    bugs = [
        ("seed='abc'", dict(seed="abc")),
        ("seed=-1", dict(seed=-1)),
        ("damping=True", dict(damping=True)),
        ("calibration_samples=True", dict(calibration_samples=True)),
        ("task_names=['head', 'b'] (collides with a layer)", dict(task_names=["head", "b"])),
    ]
    for name, kwargs in bugs:
        kind, message = attempt(lambda: tfmot_zip.zip_models(hardening.mlp(1), hardening.mlp(2), calibration_data=(x, x), **kwargs))
        rows.append(("zip_models", name, kind, message, "fixed (was a bug)"))
    kind, message = attempt(lambda: tfmot_zip.zip_models(hardening.unbuilt(1), hardening.unbuilt(2), calibration_data=(x, x)))
    rows.append(("zip_models", "unbuilt Sequential (no input shape)", kind, message, "fixed (was a bug)"))
    dead = (hardening.dead_pixel_data(1), hardening.dead_pixel_data(2))
    kind, message = attempt(lambda: tfmot_zip.zip_models(hardening.mlp(31), hardening.mlp(32), calibration_data=dead, damping=0.0))
    rows.append(("zip_models", "damping=0 with dead input pixels (singular Hessian)", kind, message, "fixed: names the layer"))
    infinite = tf.data.Dataset.from_tensor_slices(x).repeat()
    kind, message = attempt(lambda: tfmot_zip.zip_models(hardening.mlp(1), hardening.mlp(2), calibration_data=(x, infinite), calibration_samples=None))
    rows.append(("zip_models", "infinite tf.data calibration with calibration_samples=None", kind, message, "fixed (was a bug)"))
    return rows


def other_rows(hardening) -> list[tuple]:
    rows = []
    zipped = tfmot_zip.zip_models(hardening.mlp(21), hardening.mlp(22), calibration_data=(hardening.X, hardening.X), sharing=0.5)
    rows.append(("strip_zipping", "a model without zip layers", *attempt(lambda: tfmot_zip.strip_zipping(hardening.mlp(1))), ""))
    rows.append(("strip_zipping", "a path string instead of a model", *attempt(lambda: tfmot_zip.strip_zipping("zipped.keras")), ""))
    rows.append(("zip_summary", "a model without zip layers", *attempt(lambda: tfmot_zip.zip_summary(hardening.mlp(1))), ""))
    from tfmot_zip.report.zip_report import write_zip_report

    with tempfile.TemporaryDirectory() as folder:
        for name, kwargs, _, _ in hardening.REPORT_CASES:
            rows.append(("write_zip_report", name, *attempt(lambda: write_zip_report(zipped, Path(folder) / "r", **kwargs)), ""))
        blocker = Path(folder) / "file.txt"
        blocker.write_text("x")
        kind, message = attempt(lambda: write_zip_report(zipped, blocker / "r"))
        rows.append(("write_zip_report", "out_dir below a regular file", kind, message.replace(folder + "/", ""), ""))
    rng = np.random.default_rng(0)
    train = [hardening._trainset(rng), hardening._trainset(rng)]
    rows.append(("compile_multitask", "learning_rate=0", *attempt(lambda: training.compile_multitask(zipped, 0.0)), ""))
    rows.append(("retrain", "steps=-1", *attempt(lambda: training.retrain(zipped, train, steps=-1)), ""))
    rows.append(("retrain", "fewer examples than batch_size", *attempt(lambda: training.retrain(zipped, train, steps=1, batch_size=128)), ""))
    rows.append(("retrain", "one (x, y) for a two-task model", *attempt(lambda: training.retrain(zipped, train[:1], steps=1)), "fixed (was a bug)"))
    bad_labels = [(train[0][0], np.full(len(train[0][0]), 7)), train[1]]
    rows.append(("retrain", "labels beyond a head's classes", *attempt(lambda: training.retrain(zipped, bad_labels, steps=1)), "fixed (was a bug)"))
    try:
        from tfmot_zip.export import export_tflite
    except ImportError:
        return rows
    plain = tfmot_zip.strip_zipping(zipped)
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "m.tflite"
        rows.append(("export_tflite", "quantize='int4'", *attempt(lambda: export_tflite(plain, target, quantize="int4")), ""))
        rows.append(("export_tflite", "quantize='int8' without representative_data",
                     *attempt(lambda: export_tflite(plain, target, quantize="int8")), ""))
        rows.append(("export_tflite", "a model that still has zip layers", *attempt(lambda: export_tflite(zipped, target)), ""))
    return rows


def after_loading_cases(files, work: Path) -> dict[str, list[str]]:
    """Command-line cases only detectable once models and data are loaded (as in test_cli_errors)."""
    from builders import calib, mlp

    m0, m1, d0 = (str(files[k]) for k in ("model0", "model1", "data0"))
    out = str(work / "z.keras")
    rng = np.random.default_rng(1)
    deeper = work / "deeper.keras"
    mlp(5, widths=(16,), name="deeper").save(deeper)
    nan = calib(rng, 8, (6, 6, 1))
    nan[0, 0, 0, 0] = np.nan
    np.savez(work / "nan.npz", x=nan)
    np.savez(work / "small.npz", x=calib(rng, 8, (5, 5, 1)))
    dead = calib(rng, 30, (6, 6, 1))
    dead[:, :2] = 0.0
    np.savez(work / "dead.npz", x=dead)
    np.savez(work / "labels.npz", x=calib(rng, 32, (6, 6, 1)), y=np.arange(32) % 7)
    (work / "broken.keras").write_bytes(b"not a zip archive")
    (work / "bad.tflite").write_bytes(bytes(64))
    zipped = work / "zipped.keras"
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["zip", m0, m1, "--calibration", d0, "--out", str(zipped), "-q"])
    cases = {
        "models of different depths": ["zip", m0, str(deeper), "--calibration", d0, "--out", out],
        "NaN in calibration data": ["zip", m0, m1, "--calibration", str(work / "nan.npz"), "--out", out],
        "calibration of another shape": ["zip", m0, m1, "--calibration", str(work / "small.npz"), "--out", out],
        "damping 0 with dead pixels": ["zip", m0, m1, "--calibration", str(work / "dead.npz"), "--damping", "0", "--out", out],
        "corrupt .keras file": ["zip", m0, str(work / "broken.keras"), "--calibration", d0, "--out", out],
        "labels beyond a head's classes": ["retrain", str(zipped), "--data", str(work / "labels.npz"), "--out", str(work / "r.keras")],
        "batch larger than the data": ["retrain", str(zipped), "--data", d0, "--batch-size", "500", "--out", str(work / "r.keras")],
        "retrain data without labels": ["retrain", str(zipped), "--data", str(files["unlabelled"]), "--out", str(work / "r.keras")],
        "corrupt .tflite file": ["inspect", str(work / "bad.tflite")],
    }
    try:
        import keras as keras3

        if keras3.__version__.startswith("3."):
            keras3.Sequential([keras3.Input((6, 6, 1)), keras3.layers.Flatten(), keras3.layers.Dense(3)]).save(work / "k3.keras")
            cases["a Keras 3 .keras file"] = ["zip", m0, str(work / "k3.keras"), "--calibration", d0, "--out", out]
    except ImportError:
        pass
    return cases


def cli_rows(cli_errors) -> list[tuple]:
    from cli_fixtures import write_inputs

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        files = write_inputs(folder)
        work = folder / "work"
        work.mkdir()
        cases = {name: cli_errors.bad_cases(files, work)[name][0] for name in cli_errors.BAD}
        cases.update(after_loading_cases(files, work))
        for name, argv in cases.items():
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                code = cli_main(argv + ["-q"])
            message = stderr.getvalue().strip().splitlines()
            message = [line for line in message if line.strip()]
            shown = message[-1] if message else ""
            shown = shown.split(": error: ", 1)[-1].replace(str(work) + "/", "").replace(str(folder) + "/", "")
            rows.append(("tfmot-zip " + argv[0], name, f"exit {code}", shown, ""))
    return rows


def render(rows: list[tuple]) -> str:
    lines = [
        "# Bad inputs and the errors they get",
        "",
        "Generated by `scripts/bad_inputs_table.py` from the cases of `tests/zipping/test_hardening.py` and",
        "`tests/cli/test_cli_errors.py` (run for real; messages as raised). The tests check each row: the exception",
        "type, a pattern of the message, that no work started before the check (the work functions are",
        "replaced by ones that fail the test), that inputs are unchanged and that nothing was written.",
        "Command-line errors exit with code 2 (user error); unexpected failures exit with 1.",
        "Rows marked *fixed* were library bugs found by these tests and fixed since.",
        "",
        "| entry point | bad input | error | message | note |",
        "|---|---|---|---|---|",
    ]
    for entry, name, kind, message, note in rows:
        lines.append(f"| `{entry}` | {one_line(name)} | {one_line(kind)} | {one_line(message)} | {one_line(note)} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "BAD_INPUTS.md"))
    args = parser.parse_args()
    import test_cli_errors
    import test_hardening

    rows = zip_rows(test_hardening) + other_rows(test_hardening) + cli_rows(test_cli_errors)
    from tfmot_zip.io import atomic_write_text

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, render(rows))
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
