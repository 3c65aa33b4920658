"""Tests for tfmot_zip.export (convert, interpreter, verify, inputs) and tfmot_zip.export.size: one TFLite file, a signature per task.

A small LeNet-5 pair (Fashion-MNIST classes 0-4 / 5-9, 2000 training images, 2 epochs) is zipped
at full sharing and stripped once per module; every export is checked in the LiteRT interpreter.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import tfmot_zip
from tfmot_zip import data
from tfmot_zip.apps import zoo
from tfmot_zip.compat import keras
from tfmot_zip.export import (
    ALL_TASKS,
    ALL_TASKS_SHARED_INPUT,
    TOLERANCES,
    TFLiteVerificationError,
    Tolerance,
    export_tflite,
    tflite_accuracy,
    tflite_predict,
    tflite_signatures,
    verify_tflite,
)
from tfmot_zip.export.size import count_params, format_report, gzip_size, size_latency_report

TASKS = ("classes_0_4", "classes_5_9")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cache = tmp_path_factory.mktemp("zoo")
    tasks = [data.make_task(name) for name in TASKS]
    models = [
        zoo.train_on_task("lenet5", task, epochs=2, max_train_samples=2000, cache_dir=cache).model
        for task in tasks
    ]
    calibration = tuple(task.x_train[:256] for task in tasks)
    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=1.0, task_names=list(TASKS))
    plain = tfmot_zip.strip_zipping(zipped)
    tests = [(task.x_test[:400], task.y_test[:400]) for task in tasks]
    float_tflite = export_tflite(plain)
    return {
        "tasks": tasks,
        "models": models,
        "zipped": zipped,
        "plain": plain,
        "tests": tests,
        "x": [x for x, _ in tests],
        "calibration": calibration,
        "float_tflite": float_tflite,
        "separate_float": [export_tflite(m) for m in models],
    }


def test_one_file_with_a_signature_per_task_and_all_tasks(setup):
    signatures = tflite_signatures(setup["float_tflite"])
    assert signatures == {
        "classes_0_4": {"inputs": ["classes_0_4_input"], "outputs": ["classes_0_4"]},
        "classes_5_9": {"inputs": ["classes_5_9_input"], "outputs": ["classes_5_9"]},
        ALL_TASKS: {"inputs": ["classes_0_4_input", "classes_5_9_input"], "outputs": ["classes_0_4", "classes_5_9"]},
        ALL_TASKS_SHARED_INPUT: {"inputs": ["input"], "outputs": ["classes_0_4", "classes_5_9"]},
    }
    report = verify_tflite(setup["float_tflite"], setup["plain"], setup["x"])
    assert set(report) == set(signatures)
    for key, entry in report.items():
        assert entry["max_abs_error"] <= TOLERANCES[None].max_abs, key
        assert entry["argmax_agreement"] == 1.0


def test_shared_weights_are_stored_once(setup):
    zipped_bytes = len(setup["float_tflite"])
    separate = sum(len(b) for b in setup["separate_float"])
    # Fully shared hidden layers: one weight set (plus two 5-class heads) for four signatures.
    assert zipped_bytes < 0.56 * separate
    weights_bytes = 4 * count_params(setup["plain"])["params"]
    assert weights_bytes < zipped_bytes < 1.15 * weights_bytes


def test_per_task_signature_matches_keras_and_batches(setup):
    plain = setup["plain"]
    (xa, ya), (xb, yb) = setup["tests"]
    keras_a, keras_b = plain.predict([xa, xb], verbose=0)
    out = tflite_predict(setup["float_tflite"], "classes_0_4", xa, batch_size=64)  # 400 = 6 x 64 + 16
    assert out["classes_0_4"].shape == keras_a.shape
    np.testing.assert_allclose(out["classes_0_4"], keras_a, atol=1e-5)
    both = tflite_predict(setup["float_tflite"], ALL_TASKS, {"classes_0_4_input": xa, "classes_5_9_input": xb}, batch_size=128)
    np.testing.assert_allclose(both["classes_5_9"], keras_b, atol=1e-5)
    accuracy = tflite_accuracy(setup["float_tflite"], ALL_TASKS, [xa, xb], {"classes_0_4": ya, "classes_5_9": yb})
    assert accuracy["classes_0_4"] == pytest.approx(100 * np.mean(np.argmax(keras_a, -1) == ya))
    assert accuracy["classes_5_9"] == pytest.approx(100 * np.mean(np.argmax(keras_b, -1) == yb))
    assert accuracy["classes_5_9"] > 70  # percent; a trained model, not chance (20)


def test_shared_input_signature_feeds_every_task(setup):
    plain = setup["plain"]
    xa = setup["x"][0][:50]
    keras_outputs = plain.predict([xa, xa], verbose=0)
    out = tflite_predict(setup["float_tflite"], ALL_TASKS_SHARED_INPUT, xa)
    for name, expected in zip(TASKS, keras_outputs):
        np.testing.assert_allclose(out[name], expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["dynamic", "float16", "int8"])
def test_quantized_exports_verify_and_shrink(setup, mode):
    data_bytes = export_tflite(setup["plain"], quantize=mode, representative_data=setup["calibration"], representative_samples=100)
    report = verify_tflite(data_bytes, setup["plain"], setup["x"], quantize=mode)
    assert set(report) == {*TASKS, ALL_TASKS, ALL_TASKS_SHARED_INPUT}
    for entry in report.values():
        assert entry["max_abs_error"] <= TOLERANCES[mode].max_abs
        assert entry["mean_abs_error"] <= {"float16": 1e-3, "dynamic": 2e-2, "int8": 3e-2}[mode]
        assert entry["argmax_agreement"] >= 0.95
    float_bytes = len(setup["float_tflite"])
    assert len(data_bytes) < {"float16": 0.6, "dynamic": 0.4, "int8": 0.45}[mode] * float_bytes


def test_verify_detects_a_mismatch(setup):
    other = keras.models.clone_model(setup["plain"])
    weights = setup["plain"].get_weights()
    other.set_weights([w + 0.05 for w in weights])
    with pytest.raises(TFLiteVerificationError, match="max \\|tflite - keras\\|") as err:
        verify_tflite(setup["float_tflite"], other, setup["x"])
    # a float file's failure names float32 rounding and the looser bound, not int8 calibration
    assert "Tolerance(max_abs=1e-3)" in str(err.value) and "calibrate" not in str(err.value)
    # A looser explicit tolerance accepts what the default rejects.
    report = verify_tflite(setup["float_tflite"], other, setup["x"], tolerance=Tolerance(max_abs=1.0))
    assert report[ALL_TASKS]["max_abs_error"] > TOLERANCES[None].max_abs


def test_verify_rejects_a_file_of_another_model(setup):
    with pytest.raises(TFLiteVerificationError, match="lacks the signatures"):
        verify_tflite(setup["separate_float"][0], setup["plain"], setup["x"])


def test_single_task_model_exports_one_signature(setup):
    model = setup["models"][0]
    signatures = tflite_signatures(setup["separate_float"][0])
    assert list(signatures) == ["head"]
    report = verify_tflite(setup["separate_float"][0], model, setup["x"][0][:100])
    assert report["head"]["max_abs_error"] <= 1e-5


def _mlp(seed, hidden=(16, 8), classes=3, input_shape=(6, 6, 1), name=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Flatten(input_shape=input_shape, name="flat")]
    layers += [keras.layers.Dense(w, activation="relu", name=f"fc{i + 1}") for i, w in enumerate(hidden)]
    layers.append(keras.layers.Dense(classes, activation="softmax", name="head"))
    return keras.Sequential(layers, name=name or f"mlp{seed}")


def test_sparsity_flag_shrinks_a_pruned_float_model():
    model = _mlp(0, hidden=(256,), classes=10, input_shape=(28, 28, 1))
    for layer in model.layers[1:]:
        kernel, bias = layer.get_weights()
        kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0.0
        layer.set_weights([kernel, bias])
    dense_bytes = export_tflite(model)
    sparse_bytes = export_tflite(model, sparsity=True)
    assert len(sparse_bytes) < 0.6 * len(dense_bytes)
    x = np.random.default_rng(0).random((50, 28, 28, 1), dtype=np.float32)
    verify_tflite(sparse_bytes, model, x)
    assert gzip_size(dense_bytes) < 0.5 * len(dense_bytes)  # the zeros compress too


def test_single_input_zipped_model():
    rng = np.random.default_rng(0)
    models = [_mlp(1, name="left"), _mlp(2, name="right")]
    calibration = rng.random((64, 6, 6, 1), dtype=np.float32)
    zipped = tfmot_zip.zip_models(*models, calibration_data=(calibration, calibration), sharing=0.5, single_input=True)
    plain = tfmot_zip.strip_zipping(zipped)
    data_bytes = export_tflite(plain)
    signatures = tflite_signatures(data_bytes)
    assert set(signatures) == {"left", "right", ALL_TASKS, ALL_TASKS_SHARED_INPUT}
    assert signatures["left"]["inputs"] == signatures[ALL_TASKS]["inputs"] == [plain.input_names[0]]
    assert signatures[ALL_TASKS_SHARED_INPUT]["inputs"] == ["input"]
    report = verify_tflite(data_bytes, plain, calibration)
    assert report["right"]["max_abs_error"] <= 1e-5


def test_int8_without_representative_data_fails_before_converting(setup):
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(setup["plain"], quantize="int8")


def test_bad_arguments_are_named(setup):
    with pytest.raises(ValueError, match="quantize='int4'"):
        export_tflite(setup["plain"], quantize="int4")
    with pytest.raises(ValueError, match="one array per input"):
        export_tflite(setup["plain"], quantize="int8", representative_data=[setup["x"][0]] * 3)
    with pytest.raises(ValueError, match=r"shape \(28, 28\)"):
        export_tflite(setup["plain"], quantize="int8", representative_data=setup["x"][0][..., 0])
    with pytest.raises(ValueError, match="neither a model input"):
        export_tflite(setup["plain"], quantize="int8", representative_data={"nope": setup["x"][0]})


def test_zip_layers_must_be_stripped_first(setup):
    with pytest.raises(ValueError, match="strip_zipping"):
        export_tflite(setup["zipped"])


def test_pruning_wrappers_must_be_stripped_first():
    import tensorflow_model_optimization as tfmot

    pruned = tfmot.sparsity.keras.prune_low_magnitude(_mlp(3))
    with pytest.raises(ValueError, match="strip_pruning"):
        export_tflite(pruned)


def _tiny_model():
    inp = keras.Input((4,), name="x_input")
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="x")(inp))


def test_atomic_write_and_unwritable_paths(tmp_path, monkeypatch):
    model = _tiny_model()
    target = tmp_path / "model.tflite"
    written = export_tflite(model, target)
    assert target.read_bytes() == written
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_tflite(model, tmp_path / "missing" / "model.tflite")
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        export_tflite(model, not_a_folder / "model.tflite")
    with pytest.raises(ValueError, match="is a directory"):
        export_tflite(model, tmp_path)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        export_tflite(model, tmp_path / "other.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "model.tflite"]  # nothing partial


def test_size_latency_report_structure(setup):
    report = size_latency_report(
        setup["plain"], setup["models"], setup["x"], runs=5, warmup=1,
        zipped_tflite=setup["float_tflite"], separate_tflite=setup["separate_float"],
    )
    zipped, total, ratios = report["zipped"], report["separate_total"], report["ratios"]
    assert report["tasks"] == list(TASKS)
    assert zipped["params"] == setup["plain"].count_params()
    assert total["params"] == sum(m.count_params() for m in setup["models"])
    assert ratios["params"] == pytest.approx(zipped["params"] / total["params"])
    assert ratios["params"] < 0.51  # one trunk + two heads for two models
    assert zipped["tflite_bytes"] < total["tflite_bytes"]
    assert zipped["gzip_bytes"] < total["gzip_bytes"]
    assert set(zipped["signatures"]) == {*TASKS, ALL_TASKS, ALL_TASKS_SHARED_INPUT}
    timings = [v for s in zipped["signatures"].values() for v in s.values()]
    timings += [v for s in report["separate"] for v in s["latency"].values()]
    assert all(t > 0 for t in timings)
    assert report["protocol"]["runs"] == 5 and report["protocol"]["num_threads"] == 1
    text = format_report(report)
    assert "all_tasks_shared_input" in text and "TFLite bytes gzipped" in text


def test_size_latency_report_checks_arguments(setup):
    with pytest.raises(ValueError, match="one separate model per task"):
        size_latency_report(setup["plain"], setup["models"][:1], setup["x"], runs=1)
    with pytest.raises(ValueError, match="runs=0"):
        size_latency_report(setup["plain"], setup["models"], setup["x"], runs=0)


def test_only_the_signatures_asked_for_are_written_and_the_file_shrinks(setup):
    full = export_tflite(setup["plain"], quantize="int8", representative_data=setup["calibration"], representative_samples=50)
    one = export_tflite(setup["plain"], quantize="int8", representative_data=setup["calibration"], representative_samples=50,
                        signatures=[ALL_TASKS_SHARED_INPUT])
    assert sorted(tflite_signatures(one)) == [ALL_TASKS_SHARED_INPUT]
    assert len(one) < len(full)
    xa = setup["x"][0]  # 400 images: on 50, one flipped argmax moves the agreement by 2 points
    expected = setup["plain"].predict([xa, xa], verbose=0)
    out = tflite_predict(one, ALL_TASKS_SHARED_INPUT, xa)
    for name, keras_out in zip(TASKS, expected):
        assert np.mean(out[name].argmax(1) == keras_out.argmax(1)) >= 0.95
    with pytest.raises(ValueError, match=r"Unknown signatures \['nope'\].*classes_0_4"):
        export_tflite(setup["plain"], signatures=["nope"])
    with pytest.raises(ValueError, match=r"signatures=\[\] asks for no signature.*all_tasks"):
        export_tflite(setup["plain"], signatures=[])
