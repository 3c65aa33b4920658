"""Writes docs/BAD_INPUTS.md: every bad input the tests try, and the error or warning it gets.

The cases are the module-level case lists of the tests that own them (listed in ``SOURCES``; imported,
so the table and the tests cannot drift apart); each is run for real and its actual message recorded.
A row whose message no longer matches its test's pattern is marked so (and printed). The few cases
that only exist inline in tests owned elsewhere are built here, with the test named in the note.

Usage: nice .venv/bin/python scripts/bad_inputs_table.py [--out docs/BAD_INPUTS.md]   (a few minutes)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["tests/zipping/test_hardening.py", "tests/zipping/test_budget.py", "tests/model/test_flatten.py",
           "tests/model/test_batchnorm.py", "tests/export/test_export_data_checks.py", "tests/cli/test_cli_errors.py"]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")] + sorted({str(ROOT / Path(source).parent) for source in SOURCES})

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


def outcome(function: Callable[[], Any]) -> tuple[str, str, Any]:
    """(kind, message, result) of calling ``function``.

    kind is the exception type if it raised; else ``UserWarning`` (``UserWarning: <subclass>``) with
    the warnings' messages if it warned; else ``no error`` and ``accepted``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = function()
        except Exception as err:  # noqa: BLE001 - recording every outcome
            return type(err).__name__, str(err), None
    ours = [w for w in caught if issubclass(w.category, UserWarning)]
    if not ours:
        return "no error", "accepted", result
    kinds = sorted({w.category.__name__ for w in ours})
    kind = "UserWarning" + "".join(f": {k}" for k in kinds if k != "UserWarning")
    messages = list(dict.fromkeys(str(w.message) for w in ours))
    return kind, " / ".join(messages), result


def attempt(function: Callable[[], Any]) -> tuple[str, str]:
    """(kind, message) of :func:`outcome`."""
    return outcome(function)[:2]


MISMATCHES: list[str] = []


def checked(entry: str, name: str, kind: str, message: str, note: str, pattern: str | None) -> tuple:
    """A row; marked (and remembered) if its message does not match the test's ``pattern``."""
    if pattern is not None and not re.search(pattern, message):
        MISMATCHES.append(f"{entry}: {name}: {message!r} !~ {pattern!r}")
        note = (note + "; " if note else "") + "MISMATCH: the test's pattern does not match"
    return entry, name, kind, message, note


def zip_rows(hardening) -> list[tuple]:
    rows = []
    for name, factory, kwargs, _, pattern in hardening.ZIP_CASES:
        try:
            models = factory()
        except BaseException as err:  # noqa: BLE001 - e.g. skipped when Keras 3 is missing
            rows.append(("zip_models", name, "skipped", str(err), ""))
            continue
        call = {"calibration_data": (hardening.X, hardening.X), **kwargs}
        rows.append(checked("zip_models", name, *attempt(lambda: tfmot_zip.zip_models(*models, **call)), "", pattern))
    x = hardening.X
    for name, kwargs, _, pattern in hardening.FIXED_ZIP_CASES:
        kind, message = attempt(lambda: tfmot_zip.zip_models(hardening.mlp(1), hardening.mlp(2), calibration_data=(x, x), **kwargs))
        rows.append(checked("zip_models", name, kind, message, "fixed (was a bug)", pattern))
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
        for name, kwargs, _, pattern in hardening.REPORT_CASES:
            kind, message = attempt(lambda: write_zip_report(zipped, Path(folder) / "r", **kwargs))
            rows.append(checked("write_zip_report", name, kind, message, "", pattern))
        blocker = Path(folder) / "file.txt"
        blocker.write_text("x")
        kind, message = attempt(lambda: write_zip_report(zipped, blocker / "r"))
        rows.append(("write_zip_report", "out_dir below a regular file", kind, message.replace(folder + "/", ""), ""))
    rng = np.random.default_rng(0)
    train = [hardening.trainset(rng), hardening.trainset(rng)]
    rows.append(("compile_multitask", "learning_rate=0", *attempt(lambda: training.compile_multitask(zipped, 0.0)), ""))
    rows.append(("retrain", "steps=-1", *attempt(lambda: training.retrain(zipped, train, steps=-1)), ""))
    rows.append(("retrain", "fewer examples than batch_size", *attempt(lambda: training.retrain(zipped, train, steps=1, batch_size=128)), ""))
    rows.append(("retrain", "one (x, y) for a two-task model", *attempt(lambda: training.retrain(zipped, train[:1], steps=1)), "fixed (was a bug)"))
    bad_labels = [(train[0][0], np.full(len(train[0][0]), 7)), train[1]]
    rows.append(("retrain", "labels beyond a head's classes", *attempt(lambda: training.retrain(zipped, bad_labels, steps=1)), "fixed (was a bug)"))
    from tfmot_zip.export import export_tflite

    plain = tfmot_zip.strip_zipping(zipped)
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "m.tflite"
        rows.append(("export_tflite", "quantize='int4'", *attempt(lambda: export_tflite(plain, target, quantize="int4")), ""))
        rows.append(("export_tflite", "quantize='int8' without representative_data",
                     *attempt(lambda: export_tflite(plain, target, quantize="int8")), ""))
        rows.append(("export_tflite", "a model that still has zip layers", *attempt(lambda: export_tflite(zipped, target)), ""))
        rows.append(("export_tflite", "signatures=['task_c'] (no such task)",
                     *attempt(lambda: export_tflite(plain, target, signatures=["task_c"])), ""))
        rows.append(("export_tflite", "signatures=[]", *attempt(lambda: export_tflite(plain, target, signatures=[])), ""))
    return rows


def call_text(name: str, kwargs: dict) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def budget_text(budget: Any) -> str:
    """``Budget(params=10)``: the arguments that differ from the defaults."""
    fields = {f.name: getattr(budget, f.name) for f in dataclasses.fields(budget)
              if f.default is not dataclasses.MISSING and getattr(budget, f.name) != f.default}
    return call_text(type(budget).__name__, fields)


def sharing_rows(budget_tests) -> list[tuple]:
    """The sharing argument (numpy numbers, arrays, unknown keys) and ``Budget`` (tests/zipping/test_budget.py)."""
    from tfmot_zip.apps.zoo import example_pair
    from tfmot_zip.zipping.budget import Budget

    model_a, model_b, data = example_pair(samples=60)  # the test module's ``pair`` fixture

    def zip_pair(sharing):
        return tfmot_zip.zip_models(model_a, model_b, calibration_data=data, sharing=sharing)

    rows = []
    for value in budget_tests.NUMPY_SHARING_VALUES:
        kind, message, zipped = outcome(lambda: zip_pair(value))
        if zipped is not None:
            message += f": fc1 shares {tfmot_zip.zip_summary(zipped).layers[0].shared_units} of its 16 units"
        rows.append(("zip_models", f"sharing={value!r}", kind, message,
                     "fixed: numpy numbers were refused ('Expected sharing between 0 and 1 ... Received: sharing=0.5')"))
    for name, value, pattern in budget_tests.SHARING_VALUE_CASES:
        rows.append(checked("zip_models", f"sharing: {name}", *attempt(lambda: zip_pair(value)), "", pattern))
    kind, message = attempt(lambda: zip_pair(budget_tests.many_unknown_keys()))
    rows.append(("zip_models", "sharing: a dict of 100,000 unknown layer names", kind, message,
                 f"fixed: the message listed every name (1.5 MB; now {len(message)} characters)"))
    for kwargs, pattern in budget_tests.BUDGET_ARGUMENT_CASES:
        rows.append(checked("Budget", call_text("Budget", kwargs), *attempt(lambda: Budget(**kwargs)), "", pattern))
    total = model_a.count_params() + model_b.count_params()
    for budget, pattern in budget_tests.UNREACHABLE_BUDGETS:
        rows.append(checked("zip_models", f"sharing={budget_text(budget)} (two models of {total:,} parameters)",
                            *attempt(lambda: zip_pair(budget)), "", pattern))
    for name, call, pattern in budget_tests.BUDGET_REFUSED_CASES:
        rows.append(checked("zip_models", name, *attempt(lambda: call(model_a, model_b, data)), "", pattern))
    return rows


def model_rows(flatten_tests, hardening) -> list[tuple]:
    """Nested models (zipped now, with their own refusals), TF ops, an already zipped model, repair with a schedule."""
    from tfmot_zip.compat import keras

    layers = keras.layers
    rows = []
    x4 = np.random.default_rng(0).random((40, 4)).astype("float32")
    for name, (factory, pattern) in flatten_tests.REFUSED_NESTINGS.items():
        kind, message = attempt(lambda: tfmot_zip.zip_models(factory(), factory(), calibration_data=(x4, x4)))
        rows.append(checked("zip_models", name, kind, message, "", pattern))

    def nested(seed):
        keras.utils.set_random_seed(seed)
        base = keras.Sequential([layers.Flatten(input_shape=(6, 6, 1)), layers.Dense(8, activation="relu", name="fc1")], name=f"base{seed}")
        inputs = keras.Input((6, 6, 1))
        return keras.Model(inputs, layers.Dense(3, name="head")(base(inputs, training=False)), name=f"nested{seed}")

    x = hardening.X
    kind, message = attempt(lambda: tfmot_zip.zip_models(nested(1), nested(2), calibration_data=(x, x)))
    rows.append(("zip_models", "a model nested in a model (a base called with training=False)", kind, message,
                 "fixed: was refused; now flattened first (model/flatten.py)"))

    def tf_op(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((6, 6, 1))
        h = tf.math.square(layers.Conv2D(4, 3, name="c")(inputs))
        return keras.Model(inputs, layers.Dense(3, name="head")(layers.Flatten()(layers.Conv2D(4, 3, name="c2")(h))), name=f"o{seed}")

    kind, message = attempt(lambda: tfmot_zip.zip_models(tf_op(1), tf_op(2), calibration_data=(x, x)))
    rows.append(checked("zip_models", "a TensorFlow op layer it cannot convert (tf.math.square)", kind, message,
                        "test: tests/zipping/test_nested_models.py", r"'tf.math.square'.*TensorFlow op.*Replace it by a Keras layer"))
    zipped = tfmot_zip.zip_models(hardening.mlp(1), hardening.mlp(2), calibration_data=(x, x), sharing=0.5)
    kind, message = attempt(lambda: tfmot_zip.zip_models(zipped, hardening.mlp(3), calibration_data=(x, x)))
    rows.append(checked("zip_models", "an already zipped model", kind, message,
                        "fixed: was 'different depths'; test: tests/zipping/test_nested_models.py", r"models\[0\] .* is already zipped"))
    kind, message = attempt(lambda: tfmot_zip.zip_models(hardening.mlp(1), hardening.mlp(2), calibration_data=None, sharing=1.0,
                                                         repair=True, schedule=tfmot_zip.LayerwiseSchedule()))
    rows.append(checked("zip_models", "repair=True with a schedule", kind, message, "test: tests/zipping/test_repair.py",
                        "repair=True works in one-shot"))
    return rows


def batchnorm_rows(batchnorm_tests) -> list[tuple]:
    """BatchNorm re-estimation from too few or degenerate samples: a warning, the trained statistics kept."""
    from builders import calib
    from tfmot_zip.model.batchnorm import recalibrate_batchnorm

    rows = []
    for name, make_model, data, pattern in batchnorm_tests.BATCHNORM_CASES:
        model = make_model()
        kind, message, update = outcome(lambda: recalibrate_batchnorm(model, [data()]))
        variance = np.unique(model.get_layer("bn").moving_variance.numpy()).tolist()
        what = (f"fixed: moving_variance was set to 0 without a word. Now: updated={update.updated}, "
                f"restored_channels={update.restored_channels}, moving_variance {variance} (trained: 2.0)") if update else ""
        rows.append(checked("recalibrate_batchnorm", name, kind, message, what, pattern))
    name, make_models, samples, pattern = batchnorm_tests.ZIP_TOO_FEW_SAMPLES
    rng = np.random.default_rng(0)
    a, b = make_models()
    data = [calib(rng, samples, (8, 8, 1)), calib(rng, samples, (8, 8, 1))]
    kind, message, zipped = outcome(lambda: tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0))
    record = tfmot_zip.zip_summary(zipped).as_dict()["batchnorm"] if zipped is not None else {}
    plain = json.loads(json.dumps(record, default=lambda v: dict(v) if hasattr(v, "items") else list(v)))  # tracked by Keras
    record = ", ".join(f"{k}={v!r}" for k, v in plain.items())
    rows.append(checked("zip_models", name, kind, message, f"the zip report records it (batchnorm: {record})", pattern))
    return rows


EXPORT_NOTES = {  # issue 16: what these inputs did before
    "one task's representative data all NaN": "fixed: returned a float32 model, which verify_tflite(quantize='int8') passed",
    "inf in representative data (was a segmentation fault)": "fixed: killed the process and left its temporary folder",
    "complex representative data": "fixed: unclear error",
    "object representative data": "fixed: unclear error",
    "a generator as representative data": "fixed: unclear error",
    "m.keras": "fixed: wrote TFLite bytes into m.keras",
    "b'garbage' as the TFLite model": "fixed: unclear error",
    "a float file verified with quantize='int8'": "fixed: passed",
    "uint8 images 0..255 as calibration data": "fixed: used unscaled without a word",
}


def export_rows(export_tests, folder: Path) -> list[tuple]:
    """Export data checks, int8 tensor types, non-TFLite files and paths (tests/export/test_export_data_checks.py)."""
    from tfmot_zip.export import export_tflite

    setup = export_tests.make_setup(folder)
    target = folder / "m.tflite"
    rows = []
    for name, make, pattern in export_tests.REPRESENTATIVE_CASES:
        kind, message = attempt(lambda: export_tflite(setup.model, target, quantize="int8", representative_data=(setup.x, make(setup.x))))
        rows.append(checked("export_tflite", f"quantize='int8': {name}", kind, message, EXPORT_NOTES.get(name, ""), pattern))
    for name in export_tests.NOT_TFLITE_PATHS:
        kind, message = attempt(lambda: export_tflite(setup.model, folder / name))
        rows.append(checked("export_tflite", f"output path {name!r}", kind, message.replace(str(folder) + "/", ""),
                            EXPORT_NOTES.get(name, ""), export_tests.NOT_TFLITE_PATH_PATTERN))
    cases = export_tests.NOT_TFLITE_CASES + export_tests.EVALUATION_CASES + [("verify_tflite", *c) for c in export_tests.TENSOR_TYPE_CASES]
    for entry, name, call, pattern in cases + export_tests.UNSCALED_CASES:
        kind, message = attempt(lambda: call(setup))
        rows.append(checked(entry, name, kind, message.replace(str(folder) + "/", ""), EXPORT_NOTES.get(name, ""), pattern))
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
    np.savez(work / "nan_labelled.npz", x=nan, y=np.arange(len(nan)) % 3)
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
        "NaN in retrain data": ["retrain", str(zipped), "--data", str(work / "nan_labelled.npz"), "--out", str(work / "r.keras")],
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
    intro = (
        "Generated by `scripts/bad_inputs_table.py` from the case lists of " + ", ".join(f"`{s}`" for s in SOURCES)
        + ", run for real (messages and warnings as raised). The tests check each row: the exception or warning "
        "type, a pattern of the message and, where it applies, that no work started before the check (the work "
        "functions are replaced by ones that fail the test), that inputs are unchanged, that nothing was written "
        "and what happened instead (the trained BatchNorm statistics kept). A row whose message no longer matches "
        "its test's pattern says *MISMATCH*. Warnings are rows too (error `UserWarning`, or `UserWarning: <its "
        "class>`): the call went on. Command-line errors exit with code 2 (user error); unexpected failures exit "
        "with 1. Rows marked *fixed* were library bugs (found by these tests, or listed in issue 16) and fixed "
        "since; the note says what the input did before."
    )
    lines = [
        "# Bad inputs and the errors they get",
        "",
        *textwrap.wrap(intro, width=110, break_on_hyphens=False, break_long_words=False),
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
    import test_batchnorm
    import test_budget
    import test_cli_errors
    import test_export_data_checks
    import test_flatten
    import test_hardening

    rows = zip_rows(test_hardening) + sharing_rows(test_budget) + model_rows(test_flatten, test_hardening)
    rows += batchnorm_rows(test_batchnorm) + other_rows(test_hardening)
    with tempfile.TemporaryDirectory() as folder:
        rows += export_rows(test_export_data_checks, Path(folder))
    rows += cli_rows(test_cli_errors)
    from tfmot_zip.io import atomic_write_text

    for mismatch in MISMATCHES:
        print(f"MISMATCH {mismatch}", file=sys.stderr)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, render(rows))
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
