"""``tfmot-zip export`` and ``tfmot-zip inspect`` on a zipped file, and ``demo``'s configuration."""
import json

import pytest

import tfmot_zip
from tfmot_zip.cli.inspect_cmd import inspect_path
from tfmot_zip.cli.parser import EXIT_OK, EXIT_USAGE

from cli_fixtures import files, run, sha256, zipped_file  # noqa: F401  (fixtures)


def test_export_then_inspect_tflite(files, zipped_file, tmp_path, capsys):
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
    out = tmp_path / "int8.tflite"
    code, captured = run(["export", zipped_file, "--out", out, "--quantize", "int8", "--representative", files["data0"],
                          "--representative-samples", "8", "-q"], capsys)
    assert code == EXIT_OK, captured.err
    assert "quantize=int8" in captured.out
    info = inspect_path(out)
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
