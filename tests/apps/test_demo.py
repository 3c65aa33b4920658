"""The main job's recipes, on a small run (real Fashion-MNIST, subsampled)."""
import json

import pytest

from tfmot_zip.apps.demo import RECIPES, DemoConfig, run_demo


def test_demo_compares_every_recipe_and_the_refits_help(tmp_path):
    config = DemoConfig(out_dir=str(tmp_path / "demo"), cache_dir=str(tmp_path / "cache"), sharings=(1.0,),
                        calibration_samples=500, retrain_steps=2, eval_every=2, train_samples=2000, epochs=1,
                        export_tflite=False)
    report = run_demo(config, log=lambda line: None)
    rows = report["zipped"]["1.0"]
    assert list(rows) == list(RECIPES) == ["mtz", "mtz+refits", "euclidean"]
    mean_drop = {name: sum(r["drop"]) / 2 for name, r in rows.items()}
    assert mean_drop["mtz+refits"] < mean_drop["mtz"] < mean_drop["euclidean"]
    assert rows["mtz"]["params"] == rows["mtz+refits"]["params"]  # the refits add no parameters
    written = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert set(written["zipped"]["1.0"]) == set(RECIPES)
    assert "| 1.00 | mtz+refits |" in (tmp_path / "demo" / "report.md").read_text()


def test_unknown_demo_method_names_the_recipes(tmp_path):
    config = DemoConfig(out_dir=str(tmp_path / "demo"), cache_dir=str(tmp_path / "cache"), methods=("mtz", "best"))
    with pytest.raises(ValueError, match=r"Unknown demo method 'best'; expected one of \['euclidean', 'mtz', 'mtz\+refits'\]"):
        run_demo(config, log=lambda line: None)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "cache").exists()  # refused before any work
