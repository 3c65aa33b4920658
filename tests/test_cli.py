"""The ``tfmot-zip`` command line: subcommands end to end on small models, data specs, exit codes,
untouched inputs, atomic outputs, quiet TensorFlow.

Most tests call ``tfmot_zip.cli.main(argv)`` in-process (it returns the exit code); a few run the
installed ``tfmot-zip`` script in a subprocess to check the entry point, ``--help`` and stderr.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfmot_zip
from tfmot_zip import cli
from tfmot_zip.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, main, parse_data_spec, parse_sharing
from tfmot_zip.compat import keras

from conftest import calib, mlp

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("tfmot-zip")
NOISE = ("I0000", "W0000", "E0000", "absl::InitializeLog", "oneDNN", "cuda", "cpu_feature_guard", "XNNPACK")


def sha256(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                digest.update(str(p.relative_to(path)).encode() + p.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two small trained-looking models on disk and labelled .npz data for each task."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    paths = {}
    for i, seed in enumerate((1, 2)):
        model = mlp(seed, name=f"task{'ab'[i]}")
        paths[f"model{i}"] = folder / f"model{i}.keras"
        model.save(paths[f"model{i}"])
        x = calib(rng, 64, (6, 6, 1))
        np.savez(folder / f"data{i}.npz", x=x, y=rng.integers(0, 3, 64))
        paths[f"data{i}"] = folder / f"data{i}.npz"
    np.savez(folder / "unlabelled.npz", calib(rng, 32, (6, 6, 1)))
    paths["unlabelled"] = folder / "unlabelled.npz"
    paths["folder"] = folder
    return paths


@pytest.fixture(scope="module")
def zipped_file(files):
    out = files["folder"] / "zipped.keras"
    code = main(["zip", str(files["model0"]), str(files["model1"]), "--calibration", str(files["data0"]), str(files["data1"]),
                 "--sharing", "0.5", "--out", str(out), "-q"])
    assert code == EXIT_OK
    return out


def run(argv, capsys=None):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr() if capsys is not None else None
    return code, captured


# --- zip ----------------------------------------------------------------------------------------


def test_zip_writes_the_model_the_api_would_build_and_leaves_inputs_untouched(files, tmp_path, capsys):
    hashes = {k: sha256(files[k]) for k in ("model0", "model1", "data0", "data1")}
    out = tmp_path / "zipped.keras"
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", files["data0"], files["data1"],
                          "--sharing", "fc1=1.0,fc2=0.5", "--method", "mtz", "--selection", "greedy", "--seed", "3",
                          "--eval", files["data0"], files["data1"], "--out", out, "--report", tmp_path / "report"], capsys)
    assert code == EXIT_OK, captured.err
    assert {k: sha256(files[k]) for k in hashes} == hashes
    assert "total parameters" in captured.out and "fc1" in captured.out
    assert "after zipping" in captured.out  # accuracy before -> after, per task
    loaded = keras.models.load_model(out)
    with np.load(files["data0"]) as d0, np.load(files["data1"]) as d1:
        x0, x1 = d0["x"], d1["x"]
    expected = tfmot_zip.zip_models(
        keras.models.load_model(files["model0"]), keras.models.load_model(files["model1"]), calibration_data=(x0, x1),
        sharing={"fc1": 1.0, "fc2": 0.5}, selection="greedy", seed=3,
    )
    for a, b in zip(loaded([x0[:5], x1[:5]]), expected([x0[:5], x1[:5]])):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    report = json.loads((tmp_path / "report" / "zip_report.json").read_text())
    assert [l["shared_units"] for l in report["layers"]] == [16, 4, 0]
    assert report["accuracy"]["before_labels"] == ["original"] and len(report["accuracy"]["series"]["zipped"]) == 2
    assert {"original 1 (.keras)", "original 2 (.keras)", "zipped (.keras)"} == set(report["sizes"])
    for key in ("markdown", "overview_png", "sharing_png", "accuracy_png"):
        assert Path(report["files"][key]).stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "zipped.keras"]  # no temporary files left


def test_zip_shows_progress_bars_on_stderr(files, tmp_path, capfd):
    code = main(["zip", str(files["model0"]), str(files["model1"]), "--calibration", str(files["data0"]),
                 "--out", str(tmp_path / "z.keras")])
    captured = capfd.readouterr()
    assert code == EXIT_OK, captured.err
    assert "zipping" in captured.err and "layer" in captured.err and "loading models" in captured.err
    assert captured.out.count("wrote") == 1
    quiet = main(["zip", str(files["model0"]), str(files["model1"]), "--calibration", str(files["data0"]),
                  "--out", str(tmp_path / "q.keras"), "--quiet"])
    assert quiet == EXIT_OK
    assert "zipping" not in capfd.readouterr().err


def test_zip_single_input_and_three_models(files, tmp_path):
    third = files["folder"] / "model2.keras"
    if not third.exists():
        mlp(3, name="taskc").save(third)
    out = tmp_path / "three.keras"
    assert main(["zip", str(files["model0"]), str(files["model1"]), str(third), "--calibration", str(files["data0"]),
                 "--single-input", "--sharing", "0.5", "--out", str(out), "-q"]) == EXIT_OK
    model = keras.models.load_model(out)
    assert len(model.inputs) == 1 and len(model.outputs) == 3


def test_zip_output_is_atomic_when_saving_fails(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "zipped.keras"
    out.write_bytes(b"previous")

    def crash(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK partial")
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(keras.Model, "save", crash)
    code, captured = run(["zip", files["model0"], files["model1"], "--calibration", files["data0"], "--out", out, "-q"], capsys)
    assert code == EXIT_FAILURE
    assert "unexpected failure: RuntimeError: disk full" in captured.err and "--debug" in captured.err
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zipped.keras"]


def test_unexpected_failures_exit_1_and_debug_shows_the_traceback(files, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("internal bug")

    monkeypatch.setattr(tfmot_zip.zipping.api, "zip_models", broken)
    monkeypatch.setattr(tfmot_zip, "zip_models", broken, raising=False)
    argv = ["zip", files["model0"], files["model1"], "--calibration", files["data0"], "--out", tmp_path / "z.keras", "-q"]
    code, captured = run(argv, capsys)
    assert code == EXIT_FAILURE and "unexpected failure: KeyError" in captured.err and "Traceback" not in captured.err
    code, captured = run(argv + ["--debug"], capsys)
    assert code == EXIT_FAILURE and "Traceback" in captured.err
    assert not (tmp_path / "z.keras").exists()


# --- user errors: exit code 2, a message that names the problem, nothing written ------------------


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
        "sharing above 1": (["zip", m0, m1, "--calibration", d0, "--sharing", "1.5", "--out", out], "between 0 and 1.*'1.5'"),
        "sharing not a number": (["zip", m0, m1, "--calibration", d0, "--sharing", "half", "--out", out], "'half'"),
        "sharing item malformed": (["zip", m0, m1, "--calibration", d0, "--sharing", "fc1=0.5,fc2", "--out", out], "LAYER=FRACTION"),
        "sharing unknown layer": (["zip", m0, m1, "--calibration", d0, "--sharing", "fc9=0.5", "--out", out], r"unknown layers \['fc9'\]"),
        "three calibration specs for two models": (["zip", m0, m1, "--calibration", d0, d1, d0, "--out", out], "3 specs for 2 models"),
        "out without .keras": (["zip", m0, m1, "--calibration", d0, "--out", str(tmp_path / "z.h5")], "must end in .keras"),
        "out under a file": (["zip", m0, m1, "--calibration", d0, "--out", str(blocker / "z.keras")], "is a file, not a folder"),
        "out overwrites an input": (["zip", m0, m1, "--calibration", d0, "--out", m0], "is also an input"),
        "report dir is a file": (["zip", m0, m1, "--calibration", d0, "--out", out, "--report", str(blocker)], "is a file"),
        "unknown method": (["zip", m0, m1, "--calibration", d0, "--method", "best", "--out", out], "Unknown --method 'best'"),
        "unknown selection": (["zip", m0, m1, "--calibration", d0, "--selection", "optimal", "--out", out], "Unknown --selection"),
        "negative damping": (["zip", m0, m1, "--calibration", d0, "--damping", "-1", "--out", out], "--damping"),
        "negative seed": (["zip", m0, m1, "--calibration", d0, "--seed", "-3", "--out", out], "--seed must be a non-negative"),
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
    "sharing not a number", "sharing item malformed", "sharing unknown layer", "three calibration specs for two models",
    "out without .keras", "out under a file", "out overwrites an input", "report dir is a file", "unknown method",
    "unknown selection", "negative damping", "negative seed", "spec with unknown option", "spec with bad classes", "spec without split",
    "missing npz", "npz class filter without labels", "class filter selecting nothing", "eval without labels",
    "transform of non-images", "unknown tfds dataset", "tfds dataset not prepared", "retrain zero lr",
    "export int8 without representative", "export to .keras", "inspect missing file", "inspect not a model",
]


@pytest.mark.parametrize("name", BAD)
def test_user_errors_exit_2_with_a_clear_message_and_write_nothing(files, tmp_path, capsys, name):
    before = {k: sha256(files[k]) for k in ("model0", "model1", "data0", "data1")}
    argv, pattern = bad_cases(files, tmp_path)[name]
    code, captured = run(argv + ["-q"], capsys)
    assert code == EXIT_USAGE, captured.err
    import re

    assert re.search(pattern, captured.err), captured.err
    assert captured.err.startswith("tfmot-zip ") and ": error: " in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "z.keras").exists() and not (tmp_path / "m.tflite").exists()
    assert {k: sha256(files[k]) for k in before} == before


def test_argparse_errors_exit_2(capsys):
    assert main(["frobnicate"]) == EXIT_USAGE
    assert main(["zip", "a.keras", "b.keras"]) == EXIT_USAGE  # --calibration and --out are required
    assert "required" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE


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


def test_keras3_file_gets_a_conversion_hint(files, tmp_path, capsys):
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3."):
        pytest.skip("keras is not Keras 3 here")
    path = tmp_path / "k3.keras"
    keras3.Sequential([keras3.Input((6, 6, 1)), keras3.layers.Flatten(), keras3.layers.Dense(3)]).save(path)
    before = sha256(path)
    code, captured = run(["zip", files["model0"], path, "--calibration", files["data0"], "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE
    assert "saved by Keras 3" in captured.err and "tf_keras" in captured.err
    assert sha256(path) == before


def test_corrupt_model_file_exit_2(files, tmp_path, capsys):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip archive")
    code, captured = run(["zip", files["model0"], path, "--calibration", files["data0"], "--out", tmp_path / "z.keras", "-q"], capsys)
    assert code == EXIT_USAGE and "Cannot load model 1" in captured.err


# --- retrain, export, inspect ------------------------------------------------------------------


def test_retrain_trains_shared_weights_and_keeps_the_input(files, zipped_file, tmp_path, capsys):
    before = sha256(zipped_file)
    out = tmp_path / "retrained.keras"
    code, captured = run(["retrain", zipped_file, "--data", files["data0"], files["data1"], "--steps", "3", "--batch-size", "16",
                          "--lr", "1e-2", "--eval", files["data0"], files["data1"], "--out", out,
                          "--report", tmp_path / "report", "-q"], capsys)
    assert code == EXIT_OK, captured.err
    assert sha256(zipped_file) == before
    original, retrained = keras.models.load_model(zipped_file), keras.models.load_model(out)
    assert not np.array_equal(original.get_layer("fc1").kernel.numpy(), retrained.get_layer("fc1").kernel.numpy())
    np.testing.assert_array_equal(original.get_layer("fc1").get_maps(1)[1], retrained.get_layer("fc1").get_maps(1)[1])
    assert "after 3 steps" in captured.out
    x = [np.load(files["data0"])["x"][:4], np.load(files["data1"])["x"][:4]]
    assert out.stat().st_size < 1.5 * zipped_file.stat().st_size  # no optimizer slots in the file
    assert not np.allclose(original(x)[0].numpy(), retrained(x)[0].numpy())
    report = json.loads((tmp_path / "report" / "zip_report.json").read_text())
    assert list(report["accuracy"]["series"]) == ["zipped", "retrained 3 steps"]


def test_retrain_user_errors(files, zipped_file, tmp_path, capsys):
    out = tmp_path / "r.keras"
    code, captured = run(["retrain", zipped_file, "--data", files["unlabelled"], "--steps", "1", "--out", out, "-q"], capsys)
    assert code == EXIT_USAGE and "has no labels" in captured.err
    code, captured = run(["retrain", zipped_file, "--data", files["data0"], files["data1"], files["data0"], "--out", out, "-q"], capsys)
    assert code == EXIT_USAGE and "3 specs for 2 tasks" in captured.err
    code, captured = run(["retrain", zipped_file, "--data", files["data0"], "--batch-size", "500", "--out", out, "-q"], capsys)
    assert code == EXIT_USAGE and "fewer than --batch-size 500" in captured.err
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=calib(np.random.default_rng(3), 32, (6, 6, 1)), y=np.arange(32) % 7)
    code, captured = run(["retrain", zipped_file, "--data", labels, "--out", out, "-q"], capsys)
    assert code == EXIT_USAGE and "labels 0..6" in captured.err and "3 classes" in captured.err
    assert not out.exists()


def test_export_then_inspect_tflite(files, zipped_file, tmp_path, capsys):
    pytest.importorskip("tfmot_zip.export")
    pytest.importorskip("ai_edge_litert")
    before = sha256(zipped_file)
    out = tmp_path / "model.tflite"
    code, captured = run(["export", zipped_file, "--out", out, "-q"], capsys)
    assert code == EXIT_OK, captured.err
    assert sha256(zipped_file) == before
    assert f"{out.stat().st_size:,} bytes" in captured.out
    code, captured = run(["inspect", out, "--json"], capsys)
    assert code == EXIT_OK, captured.err
    info = json.loads(captured.out)
    assert info["kind"] == "tflite" and info["file_bytes"] == out.stat().st_size and 0 < info["gzipped_bytes"] < info["file_bytes"]
    signatures = info["signatures"]
    assert {"taska", "taskb", "all_tasks"} <= set(signatures)
    assert signatures["taska"]["inputs"] == {"taska_input": {"shape": [-1, 6, 6, 1], "dtype": "float32"}}
    assert signatures["taskb"]["outputs"] == {"taskb": {"shape": [-1, 3], "dtype": "float32"}}
    code, captured = run(["inspect", out], capsys)
    assert code == EXIT_OK and "all_tasks" in captured.out and "gzipped" in captured.out


def test_export_int8_with_representative_data(files, zipped_file, tmp_path, capsys):
    pytest.importorskip("tfmot_zip.export")
    out = tmp_path / "int8.tflite"
    code, captured = run(["export", zipped_file, "--out", out, "--quantize", "int8", "--representative", files["data0"],
                          "--representative-samples", "8", "-q"], capsys)
    assert code == EXIT_OK, captured.err
    assert "quantize=int8" in captured.out
    info = cli.inspect_path(out)
    assert info["signatures"]["taska"]["inputs"]["taska_input"]["dtype"] == "float32"


def test_inspect_a_corrupt_tflite_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.tflite"
    path.write_bytes(b"\x00" * 64)
    code, captured = run(["inspect", path], capsys)
    assert code == EXIT_USAGE and "not a valid TFLite file" in captured.err


def test_inspect_zipped_keras(zipped_file, capsys):
    code, captured = run(["inspect", zipped_file], capsys)
    assert code == EXIT_OK
    assert "fc1" in captured.out and "total parameters" in captured.out and "taska_input" in captured.out
    code, captured = run(["inspect", zipped_file, "--json"], capsys)
    info = json.loads(captured.out)
    assert info["zipped"] is True and [l["shared_units"] for l in info["summary"]["layers"]] == [8, 4, 0]
    assert info["outputs"] == {"taska": [3], "taskb": [3]}


def test_inspect_plain_keras_model(files, capsys):
    code, captured = run(["inspect", files["model0"]], capsys)
    assert code == EXIT_OK and "no zip layers" in captured.out


def test_demo_quick_maps_to_a_small_config(tmp_path, monkeypatch, capsys):
    import tfmot_zip.apps.demo

    seen = {}

    def fake_run_demo(config, log=print):
        seen["config"] = config
        return {}

    monkeypatch.setattr(tfmot_zip.apps.demo, "run_demo", fake_run_demo)
    code, _ = run(["demo", "--out", tmp_path / "demo", "--quick"], capsys)
    assert code == EXIT_OK
    config = seen["config"]
    assert config.out_dir == str(tmp_path / "demo") and config.sharings == (1.0,) and config.retrain_steps < 300
    code, _ = run(["demo", "--out", tmp_path / "full"], capsys)
    assert seen["config"].sharings == tfmot_zip.apps.demo.DemoConfig().sharings


# --- data specs -------------------------------------------------------------------------------


def test_parse_data_spec():
    spec = parse_data_spec("local_fashion_mnist:train[:5000]?classes=0,1,2,3,4")
    assert (spec.source, spec.name, spec.split, spec.classes) == ("tfds", "local_fashion_mnist", "train[:5000]", (0, 1, 2, 3, 4))
    spec = parse_data_spec("mnist:3.0.1:test[10%:20%]?transform=transpose&count=7&scale=none")
    assert (spec.name, spec.split, spec.transform, spec.count, spec.scale) == ("mnist:3.0.1", "test[10%:20%]", "transpose", 7, "none")
    spec = parse_data_spec("some/dir/calib.npz?classes=3,1")
    assert (spec.source, spec.name, spec.classes) == ("npz", "some/dir/calib.npz", (3, 1))
    for bad, pattern in [("", "empty"), ("x:train?count=0", "count"), ("x:train?classes=1,1", "distinct"),
                         ("x:train?scale=255", "scale"), ("x:train?count", "KEY=VALUE"), ("x:train?count=1&count=2", "twice"),
                         (":train", "split is missing"), ("x:", "split is missing")]:
        with pytest.raises(UsageError, match=pattern):
            parse_data_spec(bad)


def test_parse_sharing():
    assert parse_sharing("1") == 1.0 and parse_sharing(" 0.25 ") == 0.25
    assert parse_sharing("fc1=1.0, fc2=0") == {"fc1": 1.0, "fc2": 0.0}
    for bad in ("nan", "-0.1", "fc1=2", "fc1=0.5,fc1=0.5", "=0.5"):
        with pytest.raises(UsageError):
            parse_sharing(bad)


def test_npz_spec_options(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(20, 4, 3, 1)).astype(np.uint8)
    y = np.arange(20) % 5
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    data = cli.load_data_spec(f"{path}?classes=4,2&transform=transpose&count=5", need_labels=True)
    keep = np.isin(y, [4, 2])
    expected_x = np.transpose(x[keep][:5].astype(np.float32) / 255.0, (0, 2, 1, 3))
    np.testing.assert_array_equal(data.x, expected_x)
    np.testing.assert_array_equal(data.y, np.where(y[keep][:5] == 4, 0, 1))
    raw = cli.load_data_spec(f"{path}?scale=none")
    assert raw.x.dtype == np.float32 and raw.x.max() > 1.0
    flipped = cli.load_data_spec(f"{path}?transform=flip_lr")
    np.testing.assert_array_equal(flipped.x, x[:, :, ::-1].astype(np.float32) / 255.0)
    first = tmp_path / "first.npz"
    np.savez(first, x[:3])  # no 'x' key: the first array
    assert cli.load_data_spec(str(first)).x.shape == (3, 4, 3, 1)
    np.savez(tmp_path / "bad_labels.npz", x=x, y=y[:5])
    with pytest.raises(UsageError, match="one integer label per example"):
        cli.load_data_spec(str(tmp_path / "bad_labels.npz"))
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(UsageError, match="cannot read"):
        cli.load_data_spec(str(tmp_path / "text.npz"))


def test_local_fashion_mnist_spec_reads_the_local_builder():
    """Prepared once into the user's cache (about a minute on a fresh machine), then instant."""
    from tfmot_zip.data.fashion_mnist import load_fashion_mnist

    data = cli.load_data_spec("local_fashion_mnist:test[:300]?classes=9,0", need_labels=True)
    x, y = load_fashion_mnist("test")
    keep = np.isin(y[:300], [9, 0])
    np.testing.assert_allclose(data.x, x[:300][keep], atol=1e-7)
    np.testing.assert_array_equal(data.y, np.where(y[:300][keep] == 9, 0, 1))
    with pytest.raises(UsageError, match="bad split 'validation'"):
        cli.load_data_spec("local_fashion_mnist:validation")


# --- the installed script ---------------------------------------------------------------------


def script(*args, timeout=300):
    assert SCRIPT.exists(), f"{SCRIPT} missing: run .venv/bin/pip install -e . --no-deps"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the CLI must silence TF itself
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize("command", ["zip", "retrain", "export", "inspect", "demo"])
def test_every_subcommand_help_shows_an_example(command):
    result = script(command, "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout and f"tfmot-zip {command}" in result.stdout.split("example:")[1]


def test_top_level_help_lists_every_subcommand_with_examples():
    result = script("--help")
    assert result.returncode == 0
    for command in ("zip", "retrain", "export", "inspect", "demo"):
        assert f"tfmot-zip {command}" in result.stdout
    assert "exit codes" in result.stdout


def test_script_is_quiet_and_exit_codes_reach_the_shell(zipped_file, tmp_path):
    result = script("inspect", zipped_file)
    assert result.returncode == 0, result.stderr
    assert "total parameters" in result.stdout
    noise = [line for line in result.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noise == [], result.stderr
    result = script("inspect", tmp_path / "missing.keras")
    assert result.returncode == 2 and "does not exist" in result.stderr
