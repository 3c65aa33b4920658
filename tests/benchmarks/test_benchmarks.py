"""The benchmark's quick path on one tiny scenario (real Fashion-MNIST, subsampled): structure and numbers."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import measure, report  # noqa: E402
from benchmarks.scenarios import BenchConfig, Scenario, full_config, quick_config  # noqa: E402


def tiny_config(tmp_path) -> BenchConfig:
    scenario = Scenario(
        name="tiny",
        title="LeNet-300-100 on 1,000 images, classes 0-4 vs 5-9",
        arch="lenet_300_100",
        tasks=("classes_0_4", "classes_5_9"),
        epochs=1,
        train_samples=1000,
        calibration_samples=100,
        test_samples=500,
        fractions=(0.0, 1.0),
        strategies=("mtz-hungarian", "euclidean"),
        retrain_strategies=("mtz-hungarian",),
        retrain_steps=3,
        scratch_steps=4,
        scratch_checkpoints=(2,),
        search_target=0.9,
    )
    return BenchConfig(
        scenarios=[scenario], quick=True, out_dir=str(tmp_path / "out"), batch_size=32, cache_dir=str(tmp_path / "zoo"),
        search_fractions=(1.0, 0.0), search_max_steps=4, search_eval_every=2,
    )


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bench")
    config = tiny_config(tmp_path)
    return measure.run_benchmark(config, log=lambda message: None), tmp_path


def test_tiny_run_structure_and_exact_numbers(tiny_results):
    results, _ = tiny_results
    json.dumps(results)  # serialisable as written
    assert results["complete"] and set(results["versions"]) >= {"tensorflow", "tf_keras", "numpy"}
    assert results["machine"]["cores"] >= 1
    scenario = results["scenarios"]["tiny"]
    originals = scenario["originals"]
    assert originals["params_each"] == [266_105, 266_105]  # LeNet-300-100 with 5-way heads
    assert len(scenario["grid"]) == 4
    for row in scenario["grid"]:
        if row["fraction"] == 0.0:
            # Sharing nothing reproduces both originals exactly, whatever the strategy.
            assert row["zipped"]["accuracy"] == originals["accuracy"], row["strategy"]
            assert row["shared_params"] == 0 and row["params_zipped"] == originals["params_separate"]
        else:
            # Closed form: fc1 and fc2 stored once (265,600), heads per task (2 x 505).
            assert row["params_zipped"] == 266_610
            assert row["shared_over_one_network"] == round((532_210 - 266_610) / 266_105, 4)
        assert (row["retrained"] is not None) == (row["strategy"] == "mtz-hungarian")
    retrained = [r["retrained"] for r in scenario["grid"] if r["retrained"]]
    assert all(r["steps"] == 3 and len(r["accuracy"]) == 2 for r in retrained)


def test_tiny_run_references_and_search(tiny_results):
    results, _ = tiny_results
    scenario = results["scenarios"]["tiny"]
    scratch = scenario["scratch"]
    assert scratch["params"] == 266_610 and [s for s, _ in scratch["history"]] == [2, 4]
    control = scenario["control"]
    assert [s for s, _ in control["history"]] == [2, 3, 4]  # search evaluations and the grid's retraining budget
    search = scenario["search"]
    first = search["trials"][0]
    assert first["fraction"] == 1.0
    if first["passed"]:
        assert search["result"]["fraction"] == 1.0
    else:
        # Sharing 0 is the originals themselves: it passes before any retraining.
        assert [t["fraction"] for t in search["trials"]] == [1.0, 0.0, 0.5][: len(search["trials"])]
        zero = search["trials"][1]
        assert zero["passed"] and zero["pass_step"] == 0 and zero["drop"] == [0.0, 0.0]
        assert zero["passed_vs_control"] and zero["steps_run"] == 0
        assert search["result"]["fraction"] in (0.0, 0.5)
        assert search["meets_target"] is False


def test_separate_models_reproduce_the_originals(tiny_results):
    from tfmot_zip import data
    from tfmot_zip.apps import zoo

    _, tmp_path = tiny_results
    tasks = [data.make_task("classes_0_4"), data.make_task("classes_5_9")]
    # The tiny run's originals, from its zoo cache.
    models = [zoo.train_on_task("lenet_300_100", t, epochs=1, max_train_samples=1000, cache_dir=tmp_path / "zoo").model for t in tasks]
    tests = [(t.x_test[:300], t.y_test[:300]) for t in tasks]
    from tfmot_zip.training import evaluate_tasks

    pair = measure.separate_models(models, ["a", "b"])
    assert pair.output_names == ["a", "b"]
    assert evaluate_tasks(pair, tests) == measure.evaluate_models(models, tests)


def test_report_renders_tables_and_plots(tiny_results):
    results, tmp_path = tiny_results
    text = report.render_markdown(results)
    assert "LeNet-300-100 on 1,000 images" in text and "| mtz-hungarian |" in text
    written = report.write_plots(results, tmp_path / "img")
    assert {p.name for p in written} == {"bench_tiny_accuracy.png", "bench_tiny_layers.png", "bench_search.png"}
    assert all(p.stat().st_size > 1000 for p in written)


def test_configs():
    assert [s.name for s in full_config(resnet=True).scenarios][-1] == "resnet20_split_classes"
    quick = quick_config()
    assert quick.quick and all(len(s.fractions) <= 2 for s in quick.scenarios)
    with pytest.raises(ValueError, match="Unknown strategy label 'mtz'"):
        Scenario(name="x", title="x", arch="lenet5", tasks=("all", "all"), strategies=("mtz",))
