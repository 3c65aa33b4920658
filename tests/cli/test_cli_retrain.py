"""``tfmot-zip retrain``: joint retraining of a zipped file, untouched input, small output, user errors."""
import json

import numpy as np

from tfmot_zip.cli.parser import EXIT_OK, EXIT_USAGE
from tfmot_zip.compat import keras

from cli_fixtures import files, run, sha256, zipped_file  # noqa: F401  (fixtures)
from builders import calib


def test_retrain_trains_shared_weights_and_keeps_the_input(files, zipped_file, tmp_path, capsys):
    before = sha256(zipped_file)
    out = tmp_path / "retrained.keras"
    code, captured = run(["retrain", zipped_file, "--data", files["data0"], files["data1"], "--steps", "3", "--batch-size", "16",
                          "--lr", "1e-2", "--eval", files["data0"], files["data1"], "--out", out,
                          "--report", tmp_path / "report", "-q"], capsys)
    assert code == EXIT_OK, captured.err
    assert sha256(zipped_file) == before
    original, retrained = keras.models.load_model(zipped_file), keras.models.load_model(out)
    assert not np.array_equal(original.get_layer("fc1").physical_kernel().numpy(), retrained.get_layer("fc1").physical_kernel().numpy())
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
    for flag, value in (("--steps", "-1"), ("--batch-size", "0"), ("--seed", "-2")):
        code, captured = run(["retrain", zipped_file, "--data", files["data0"], flag, value, "--out", out, "-q"], capsys)
        assert code == EXIT_USAGE and f"{flag} must be" in captured.err
    assert not out.exists()
