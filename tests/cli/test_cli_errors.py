"""User errors of ``tfmot-zip``: exit code 2, a message that names the problem, nothing written,
inputs untouched. Errors found by the CLI's own checks (files, suffixes, folders, spec syntax) and
errors raised by the library (``zip_models``' arguments, data specs) reach the user the same way;
a ValueError raised outside tfmot_zip is an unexpected failure (exit 1).

``bad_cases`` and ``BAD`` are also read by scripts/bad_inputs_table.py (docs/BAD_INPUTS.md).
"""
import re

import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.cli.errors import EXIT_FAILURE, EXIT_USAGE, UsageError, is_user_error
from tfmot_zip.cli.parser import main
from tfmot_zip.compat import keras

from cli_fixtures import files, run, sha256  # noqa: F401  (files is a fixture)
from builders import calib, mlp


def bad_cases(files, tmp_path):
    m0, m1, d0, d1 = (str(files[k]) for k in ("model0", "model1", "data0", "data1"))
    out = str(tmp_path / "z.keras")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return {
        "missing model": (["zip", m0, str(tmp_path / "nope.keras"), "--calibration", d0, "--out", out], "does not exist"),
        "model with wrong suffix": (["zip", m0, d0, "--calibration", d0, "--out", out], "has suffix '.npz'"),
        "folder that is not a SavedModel": (["zip", m0, str(tmp_path), "--calibration", d0, "--out", out], "without saved_model.pb"),
        "one model": (["zip", m0, "--calibration", d0, "--out", out], "at least two models"),
        "sharing above 1": (["zip", m0, m1, "--calibration", d0, "--sharing", "1.5", "--out", out], r"between 0 and 1.*sharing=1\.5"),
        "sharing per layer above 1": (["zip", m0, m1, "--calibration", d0, "--sharing", "fc1=2", "--out", out],
                                      r"between 0 and 1.*sharing\['fc1'\]=2\.0"),
        "sharing not a number": (["zip", m0, m1, "--calibration", d0, "--sharing", "half", "--out", out], "'half'"),
        "sharing item malformed": (["zip", m0, m1, "--calibration", d0, "--sharing", "fc1=0.5,fc2", "--out", out], "LAYER=FRACTION"),
        "sharing unknown layer": (["zip", m0, m1, "--calibration", d0, "--sharing", "fc9=0.5", "--out", out], r"unknown layers \['fc9'\]"),
        "three calibration specs for two models": (["zip", m0, m1, "--calibration", d0, d1, d0, "--out", out], "3 specs for 2 models"),
        "out without .keras": (["zip", m0, m1, "--calibration", d0, "--out", str(tmp_path / "z.h5")], "must end in .keras"),
        "out under a file": (["zip", m0, m1, "--calibration", d0, "--out", str(blocker / "z.keras")], "is a file, not a folder"),
        "out overwrites an input": (["zip", m0, m1, "--calibration", d0, "--out", m0], "is also an input"),
        "report dir is a file": (["zip", m0, m1, "--calibration", d0, "--out", out, "--report", str(blocker)], "is a file"),
        "unknown method": (["zip", m0, m1, "--calibration", d0, "--method", "best", "--out", out], "Unknown method 'best'"),
        "unknown selection": (["zip", m0, m1, "--calibration", d0, "--selection", "optimal", "--out", out], "Unknown selection 'optimal'"),
        "negative damping": (["zip", m0, m1, "--calibration", d0, "--damping", "-1", "--out", out], r"non-negative damping.*damping=-1\.0"),
        "negative seed": (["zip", m0, m1, "--calibration", d0, "--seed", "-3", "--out", out], "non-negative integer seed.*seed=-3"),
        "zero calibration samples": (["zip", m0, m1, "--calibration", d0, "--calibration-samples", "0", "--out", out],
                                     "calibration_samples=0"),
        "spec with unknown option": (["zip", m0, m1, "--calibration", d0 + "?colour=red", "--out", out], "unknown option 'colour'"),
        "spec with bad classes": (["zip", m0, m1, "--calibration", d0 + "?classes=a,b", "--out", out], "classes='a,b'"),
        "spec without split": (["zip", m0, m1, "--calibration", "local_fashion_mnist", "--out", out], "split is missing"),
        "missing npz": (["zip", m0, m1, "--calibration", str(tmp_path / "none.npz"), "--out", out], "does not exist"),
        "npz class filter without labels": (["zip", m0, m1, "--calibration", str(files["unlabelled"]) + "?classes=0", "--out", out],
                                            "needs labels"),
        "class filter selecting nothing": (["zip", m0, m1, "--calibration", d0 + "?classes=7", "--out", out], "no example has a label"),
        "eval without labels": (["zip", m0, m1, "--calibration", d0, "--eval", str(files["unlabelled"]), "--out", out], "has no labels"),
        "transform of non-images": (["zip", m0, m1, "--calibration", d0 + "?transform=spin", "--out", out], "transform='spin'"),
        "unknown tfds dataset": (["zip", m0, m1, "--calibration", "no_such_dataset_xyz:train", "--out", out], "has no dataset 'no_such_dataset_xyz'"),
        "tfds dataset not prepared": (["zip", m0, m1, "--calibration", "mnist:train[:10]", "--tfds-data-dir", str(tmp_path / "tfds"),
                                       "--out", out], "not prepared.*never downloads"),
        "retrain zero lr": (["retrain", m0, "--data", d0, "--lr", "0", "--out", out], "--lr"),
        "export int8 without representative": (["export", m0, "--out", str(tmp_path / "m.tflite"), "--quantize", "int8"],
                                               "needs --representative"),
        "export to .keras": (["export", m0, "--out", out], "must end in .tflite"),
        "inspect missing file": (["inspect", str(tmp_path / "nope.tflite")], "does not exist"),
        "inspect not a model": (["inspect", d0], r"Cannot inspect .*\(suffix '.npz'\).*\.tflite file"),
    }


BAD = [
    "missing model", "model with wrong suffix", "folder that is not a SavedModel", "one model", "sharing above 1",
    "sharing per layer above 1", "sharing not a number", "sharing item malformed", "sharing unknown layer",
    "three calibration specs for two models", "out without .keras", "out under a file", "out overwrites an input",
    "report dir is a file", "unknown method", "unknown selection", "negative damping", "negative seed",
    "zero calibration samples", "spec with unknown option", "spec with bad classes", "spec without split", "missing npz",
    "npz class filter without labels", "class filter selecting nothing", "eval without labels", "transform of non-images",
    "unknown tfds dataset", "tfds dataset not prepared", "retrain zero lr", "export int8 without representative",
    "export to .keras", "inspect missing file", "inspect not a model",
]


@pytest.mark.parametrize("name", BAD)
def test_user_errors_exit_2_with_a_clear_message_and_write_nothing(files, tmp_path, capsys, name):
    before = {k: sha256(files[k]) for k in ("model0", "model1", "data0", "data1")}
    argv, pattern = bad_cases(files, tmp_path)[name]
    code, captured = run(argv + ["-q"], capsys)
    assert code == EXIT_USAGE, captured.err
    assert re.search(pattern, captured.err), captured.err
    assert captured.err.startswith("tfmot-zip ") and ": error: " in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "z.keras").exists() and not (tmp_path / "m.tflite").exists()
    assert {k: sha256(files[k]) for k in before} == before


@pytest.mark.parametrize("argv, kwargs", [
    (["--sharing", "1.5"], dict(sharing=1.5)),
    (["--sharing", "fc9=0.5"], dict(sharing={"fc9": 0.5})),
    (["--method", "best"], dict(method="best")),
    (["--damping", "-1"], dict(damping=-1.0)),
    (["--calibration-samples", "0"], dict(calibration_samples=0)),
])
def test_zip_models_errors_reach_the_user_with_the_library_message(files, tmp_path, capsys, argv, kwargs):
    """The CLI does not repeat zip_models' checks: it shows zip_models' own message, exit 2."""
    x = np.load(files["data0"])["x"]
    models = [keras.models.load_model(files[k]) for k in ("model0", "model1")]
    with pytest.raises(ValueError) as raised:
        tfmot_zip.zip_models(*models, calibration_data=(x, x), **kwargs)
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", files["data0"], *argv,
                          "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE
    assert captured.err.strip() == f"tfmot-zip zip: error: {raised.value}"


def test_value_errors_raised_outside_tfmot_zip_are_unexpected_failures(files, tmp_path, monkeypatch, capsys):
    def foreign(*args, **kwargs):
        raise ValueError("raised by another library")

    monkeypatch.setattr(tfmot_zip, "zip_models", foreign, raising=False)
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", files["data0"],
                          "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_FAILURE and "unexpected failure: ValueError: raised by another library" in captured.err


def test_is_user_error_looks_at_where_the_error_was_raised():
    from tfmot_zip.data.specs import parse_data_spec

    with pytest.raises(ValueError) as library:
        parse_data_spec("x:train?count=0")
    assert is_user_error(library.value) and is_user_error(UsageError("bad flag"))
    with pytest.raises(ValueError) as foreign:
        int("not a number")
    assert not is_user_error(foreign.value)
    assert not is_user_error(ValueError("never raised"))  # no traceback: not known to be ours
    assert not is_user_error(KeyError("bug"))


def test_argparse_errors_exit_2(capsys):
    assert main(["frobnicate"]) == EXIT_USAGE
    assert main(["zip", "a.keras", "b.keras"]) == EXIT_USAGE  # --calibration and --out are required
    assert "required" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE
    assert main(["export", "z.keras", "--out", "m.tflite", "--quantize", "int4"]) == EXIT_USAGE
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_errors_found_after_loading_also_exit_2(files, tmp_path, capsys):
    other = tmp_path / "deeper.keras"
    mlp(5, widths=(16,), name="deeper").save(other)
    code, captured = run(["zip", files["model0"], other, "--calibration", files["data0"], "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE and "different depths" in captured.err
    bad = tmp_path / "bad.npz"
    x = calib(np.random.default_rng(1), 8, (6, 6, 1))
    x[0, 0, 0, 0] = np.nan
    np.savez(bad, x=x)
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", bad, "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE and "NaN or inf" in captured.err
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=calib(np.random.default_rng(1), 8, (5, 5, 1)))
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", wrong, "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE and "(5, 5, 1), but the model input is (6, 6, 1)" in captured.err
    dead = tmp_path / "dead.npz"
    x = calib(np.random.default_rng(2), 30, (6, 6, 1))
    x[:, :2] = 0.0
    np.savez(dead, x=x)
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", dead, "--damping", "0",
                          "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE and "increase damping" in captured.err
    assert not (tmp_path / "z.keras").exists()


def test_nan_in_retrain_eval_or_representative_data_is_counted_exit_2(files, tmp_path, capsys):
    """The CLI's own data check gives the library's message (counts of NaN and inf), exit 2."""
    x = calib(np.random.default_rng(4), 32, (6, 6, 1))
    x[0, 0, 0, 0], x[1, 0, 0, 0], x[2, 1, 1, 0] = np.nan, np.nan, -np.inf
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, y=np.arange(32) % 3)
    expected = f"'{bad}' contains NaN or inf values: 2 NaN and 1 inf out of {x.size} values"
    out = tmp_path / "r.keras"
    code, captured = run(["retrain", files["model0"], "--data", bad, "--steps", "1", "--out", out, "-q"], capsys)
    assert code == EXIT_USAGE and f"--data {expected}" in captured.err and "Traceback" not in captured.err
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", files["data0"], "--eval", bad,
                          "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE and f"--eval {expected}" in captured.err
    code, captured = run(["export", files["model0"], "--out", tmp_path / "m.tflite", "--quantize", "int8",
                          "--representative", bad, "-q"], capsys)
    assert code == EXIT_USAGE and f"--representative {expected}" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_corrupt_model_file_exit_2(files, tmp_path, capsys):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip archive")
    code, captured = run(["zip", files["model0"], path, "--calibration", files["data0"], "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE and "Cannot load model 1" in captured.err
