"""``tfmot-zip zip``: the model the API would build, untouched inputs, atomic output, the progress
bar drawn from ``zip_models(progress=...)``, and exit code 1 for unexpected failures."""
import io
import json
from pathlib import Path

import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.cli.console import Console, StageBar
from tfmot_zip.cli.parser import EXIT_FAILURE, EXIT_OK, main
from tfmot_zip.compat import keras

from cli_fixtures import files, run, sha256  # noqa: F401  (files is a fixture)
from builders import mlp


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
        sharing={"fc1": 1.0, "fc2": 0.5}, selection="greedy", seed=3, method="mtz"
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


@pytest.mark.parametrize("models, total", [(2, 2), (3, 4)])  # two hidden layers, one pass per added model
def test_zip_progress_bar_follows_the_library_callback_to_the_total(files, tmp_path, monkeypatch, models, total):
    paths = [files["model0"], files["model1"]]
    if models == 3:
        paths.append(tmp_path / "model2.keras")
        mlp(3, name="taskc").save(paths[-1])
    calls = []
    original = StageBar.__call__

    def recording(self, done, total, stage):
        original(self, done, total, stage)
        calls.append((done, total, stage, self._bar.n))

    monkeypatch.setattr(StageBar, "__call__", recording)
    assert main(["zip", *map(str, paths), "--calibration", str(files["data0"]), "--out", str(tmp_path / "z.keras")]) == EXIT_OK
    dones = [c[0] for c in calls]
    assert dones == list(range(total + 1))  # once per stage as it starts, then once with done == total
    assert {c[1] for c in calls} == {total}
    assert [c[2].split()[0] for c in calls[:-1]] == ["fc1", "fc2"] * (models - 1) and calls[-1][2] == ""  # "fc1 (task 1)"
    assert [c[3] for c in calls] == dones  # the tqdm bar is at `done` after every call, full at the end


def test_stage_bar_draws_each_stage_and_the_full_bar():
    stream = io.StringIO()

    class Recording(Console):
        def bar(self, **kwargs):
            return super().bar(file=stream, mininterval=0, miniters=1, leave=True, **kwargs)

    with StageBar(Recording(), desc="zipping", unit="layer") as progress:
        progress(0, 2, "fc1")
        progress(1, 2, "fc2")
        progress(2, 2, "")
    text = stream.getvalue()
    assert "zipping" in text and "fc1" in text and "fc2" in text
    assert "2/2" in text and "100%" in text and "0/2" in text
    assert (progress.done, progress.total, progress.stages) == (2, 2, ["fc1", "fc2"])
    progress.close()  # a second close is harmless


def test_zip_passes_options_through_to_zip_models(files, tmp_path, monkeypatch):
    seen = {}

    def spy(*models, calibration_data, progress=None, **options):
        seen.update(options, models=len(models), calibration=len(calibration_data), progress=progress)
        raise KeyError("stop here")

    monkeypatch.setattr(tfmot_zip, "zip_models", spy, raising=False)
    code = main(["zip", str(files["model0"]), str(files["model1"]), "--calibration", str(files["data0"]), "--sharing", "fc1=0.25",
                 "--method", "euclidean", "--selection", "greedy", "--damping", "0.01", "--calibration-samples", "7",
                 "--single-input", "--seed", "5", "--out", str(tmp_path / "z.keras"), "-q"])
    assert code == EXIT_FAILURE
    assert seen["models"] == 2 and seen["calibration"] == 2 and isinstance(seen["progress"], StageBar)
    assert {k: seen[k] for k in ("sharing", "method", "selection", "damping", "calibration_samples", "single_input", "seed")} == {
        "sharing": {"fc1": 0.25}, "method": "euclidean", "selection": "greedy", "damping": 0.01, "calibration_samples": 7,
        "single_input": True, "seed": 5,
    }


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
