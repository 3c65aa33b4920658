"""zip_models(repair=True): per-task statistics repair, its strip, save/load, TFLite and TFMOT."""
import os

import numpy as np
import pytest

import tensorflow_model_optimization as tfmot  # noqa: E402  (tfmot_zip sets TF_USE_LEGACY_KERAS on import)

import tfmot_zip
from builders import calib, cnn, mlp
from tfmot_zip.compat import keras
from tfmot_zip.model.copying import copy_model
from tfmot_zip.zipping.repair import original_preactivation


def _feeds(zipped, task, x):
    return [x if i == task else np.zeros_like(x) for i in range(len(zipped.inputs))]


def _statistics(zipped, models, data, name):
    """Per task: (original mean, original std, repaired mean, repaired std) of layer ``name``'s units."""
    layer = zipped.get_layer(name)
    out = []
    for task, (model, x) in enumerate(zip(models, data)):
        original_layer = model.get_layer(name)
        z0 = original_preactivation(original_layer, keras.Model(model.inputs, original_layer.input)(x)).numpy()
        merged_input = keras.Model(zipped.inputs, list(layer.input))(_feeds(zipped, task, x))[task]
        scale, shift = layer.get_repair(task)
        z = layer.preactivation(merged_input, task).numpy() * scale + shift
        z0, z = z0.reshape(-1, z0.shape[-1]), z.reshape(-1, z.shape[-1])
        out.append((z0.mean(0), z0.std(0), z.mean(0), z.std(0)))
    return out


def _max_output_difference(first, second, x):
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(first(x), second(x)))


@pytest.fixture(scope="module")
def mlp_pair():
    rng = np.random.default_rng(0)
    models = (mlp(41), mlp(42))
    data = (calib(rng, 400, (6, 6, 1)), calib(rng, 400, (6, 6, 1)))
    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.5, repair=True)
    return models, data, zipped


def test_repaired_units_have_the_original_statistics_layer_by_layer(mlp_pair):
    models, data, zipped = mlp_pair
    plain = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.5)
    for name in ("fc1", "fc2"):  # fc2 measured through the repaired fc1: bottom-up
        for mean0, std0, mean, std in _statistics(zipped, models, data, name):
            np.testing.assert_allclose(mean, mean0, atol=2e-4 * (1 + np.abs(mean0).max()))
            np.testing.assert_allclose(std, std0, rtol=2e-3, atol=1e-5)
        # Without repair the statistics differ, so the check above can fail.
        mean0, std0, mean, std = _statistics(plain, models, data, "fc2")[0]
        assert np.max(np.abs(std - std0)) > 1e-2
    # Shared units keep one affine per task; units read by one task were folded into their weights.
    fc1 = zipped.get_layer("fc1")
    owners = fc1.unit_tasks()
    for task in range(2):
        scale, shift = fc1.get_repair(task)
        private = np.asarray([len(owners[int(u)]) == 1 for u in fc1.get_maps(task)[1]])
        assert private.any() and (~private).any()
        assert np.all(scale[private] == 1.0) and np.all(shift[private] == 0.0)
        assert np.any(scale[~private] != 1.0)
    record = fc1.zip_record["repair"]
    assert list(record["repaired"]) == [16, 16] and list(record["folded"]) == [8, 8]
    assert "repair" not in zipped.get_layer("head").zip_record  # heads are never merged
    assert zipped.get_layer("head").repair is False


def test_strip_keeps_the_affine_per_task_and_counts_it(mlp_pair):
    models, data, zipped = mlp_pair
    plain = tfmot_zip.strip_zipping(zipped)
    repair_layers = [l for l in plain.layers if "_repair_" in l.name]
    # One frozen BatchNormalization per task and shared group (fc1, fc2).
    assert sorted(l.name for l in repair_layers) == [
        "fc1_shared_repair_mlp41", "fc1_shared_repair_mlp42", "fc2_shared_repair_mlp41", "fc2_shared_repair_mlp42"]
    assert all(isinstance(l, keras.layers.BatchNormalization) and not l.trainable for l in repair_layers)
    assert _max_output_difference(lambda x: zipped(x), lambda x: plain(x), list(data)) < 1e-5
    report = tfmot_zip.zip_summary(zipped)
    assert plain.count_params() == report.params_zipped
    without = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.5)
    # 4 values per repaired unit and task (gamma, beta, moving mean and variance): 8 + 4 shared units, 2 tasks.
    assert report.params_zipped - tfmot_zip.zip_summary(without).params_zipped == 4 * 2 * (8 + 4)


def test_repair_survives_clone_save_and_load(mlp_pair, tmp_path):
    models, data, zipped = mlp_pair
    x = list(data)
    path = os.path.join(tmp_path, "repaired.keras")
    zipped.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("fc1").repair and loaded.get_layer("fc1").get_config()["repair"]
    assert _max_output_difference(lambda v: zipped(v), lambda v: loaded(v), x) == 0.0
    assert loaded.get_layer("fc1").zip_record["repair"]["repaired"] == [16, 16]
    copied = copy_model(zipped)
    assert _max_output_difference(lambda v: zipped(v), lambda v: copied(v), x) == 0.0


def test_models_without_repair_are_unchanged(mlp_pair):
    models, data, _ = mlp_pair
    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.5)
    fc1 = zipped.get_layer("fc1")
    assert fc1.repair is False and not any("repair" in w.name for w in zipped.weights)
    config = fc1.get_config()
    del config["repair"]  # a config written before repair existed
    assert type(fc1).from_config(config).repair is False


def test_repair_is_refused_with_a_schedule():
    with pytest.raises(ValueError, match="repair=True works in one-shot"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=None, sharing=1.0, repair=True,
                             schedule=tfmot_zip.LayerwiseSchedule())


def test_conv_channels_are_repaired_over_positions_and_strip_equals(rng):
    models = (cnn(51, bn=True), cnn(52, bn=True))
    data = (calib(rng, 230, (10, 10, 1)), calib(rng, 120, (10, 10, 1)))  # unequal: one task runs out first
    # The BatchNorm between conv1 and conv2 keeps its trained statistics (which these random models
    # do not share with the data), so conv2 is measured through exactly what repair saw.
    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, repair=True, recalibrate_batchnorm=False)
    for name in ("conv1", "conv2"):
        for mean0, std0, mean, std in _statistics(zipped, models, data, name):
            np.testing.assert_allclose(mean, mean0, atol=2e-4 * (1 + np.abs(mean0).max()))
            np.testing.assert_allclose(std, std0, rtol=2e-3, atol=1e-5)
    # By default the BatchNorm statistics are re-estimated after the repair; strip still equals.
    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, repair=True)
    assert "batchnorm" in zipped.get_layer("conv1").zip_record
    plain = tfmot_zip.strip_zipping(zipped)
    assert _max_output_difference(lambda x: zipped(x), lambda x: plain(x), list(data)) < 1e-5
    assert plain.count_params() == tfmot_zip.zip_summary(zipped).params_zipped


def test_constant_units_are_guarded_and_reported():
    models = (mlp(61), mlp(62))
    constant = np.full((50, 6, 6, 1), 0.5, np.float32)  # every pre-activation is constant
    zipped = tfmot_zip.zip_models(*models, calibration_data=(constant, constant), sharing=1.0, repair=True)
    record = zipped.get_layer("fc1").zip_record["repair"]
    assert list(record["guarded"]) == [16, 16]
    scale, shift = zipped.get_layer("fc1").get_repair(0)
    assert np.all(scale == 1.0) and np.any(shift != 0.0)


def test_layers_without_bias_keep_private_affines_and_strip():
    def model(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.layers.Flatten(input_shape=(6, 6, 1), name="flat"),
            keras.layers.Dense(12, activation="relu", use_bias=False, name="fc1"),
            keras.layers.Dense(10, activation="relu", use_bias=False, name="fc2"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ], name=f"nobias{seed}")

    rng = np.random.default_rng(3)
    models = (model(71), model(72))
    data = (calib(rng, 200, (6, 6, 1)), calib(rng, 200, (6, 6, 1)))
    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.5, repair=True)
    assert list(zipped.get_layer("fc2").zip_record["repair"]["folded"]) == [0, 0]
    plain = tfmot_zip.strip_zipping(zipped)
    names = {l.name for l in plain.layers if "_repair_" in l.name}
    # fc1's own units see the original inputs and weights (their affine is the identity, no layer);
    # fc2's own units read fc1's merged units, so they keep an affine, as a BatchNorm of their own.
    assert "fc1_nobias71_repair_nobias71" not in names
    assert {"fc2_nobias71_repair_nobias71", "fc2_nobias72_repair_nobias72", "fc1_shared_repair_nobias71"} <= names
    assert _max_output_difference(lambda x: zipped(x), lambda x: plain(x), list(data)) < 1e-5
    assert plain.count_params() == tfmot_zip.zip_summary(zipped).params_zipped


def test_stripped_repair_exports_to_tflite_and_prunes(mlp_pair):
    from tfmot_zip.export import export_tflite, verify_tflite

    models, data, zipped = mlp_pair
    plain = tfmot_zip.strip_zipping(zipped)
    x = list(data)
    for quantize in (None, "int8"):
        tflite = export_tflite(plain, quantize=quantize, representative_data=x if quantize else None)
        verify_tflite(tflite, plain, [v[:100] for v in x], quantize=quantize)  # raises beyond tolerance
    # prune_low_magnitude + a few joint steps: the affine stays frozen (inference-mode BatchNorm).
    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(copy_model(plain), pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile("adam", loss={name: "sparse_categorical_crossentropy" for name in pruned.output_names})
    labels = [np.zeros(len(v), np.int64) for v in x]
    pruned.fit(x, labels, epochs=1, batch_size=50, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(pruned)
    for name in ("fc1_shared_repair_mlp41", "fc2_shared_repair_mlp42"):
        for before, after in zip(plain.get_layer(name).get_weights(), stripped.get_layer(name).get_weights()):
            np.testing.assert_array_equal(before, after)
    assert np.mean(stripped.get_layer("fc1_input_to_shared").kernel.numpy() == 0) == pytest.approx(0.5, abs=0.01)


def test_refit_and_repair_run_layer_by_layer_when_both_are_on(mlp_pair):
    """zip_models(refit_layers=True, repair=True) equals refit fc1, repair fc1, refit fc2, repair fc2."""
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping.refit import refit_layers
    from tfmot_zip.zipping.repair import repair_statistics

    models, data, _ = mlp_pair
    both = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, method="mtz", refit_layers=True, repair=True)
    by_hand = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, method="mtz")
    graph = align_models(models)
    for name in ("fc1", "fc2"):
        assert refit_layers(by_hand, graph, list(data), layers=[name]) == [name]
        assert list(repair_statistics(by_hand, graph, list(data), layers=[name])) == [name]
    for name in ("fc1", "fc2"):
        for task in range(2):
            np.testing.assert_allclose(both.get_layer(name).get_task_weights(task)[0],
                                       by_hand.get_layer(name).get_task_weights(task)[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(both.get_layer(name).get_repair(task), by_hand.get_layer(name).get_repair(task),
                                       rtol=1e-5, atol=1e-6)
    # all refits first, then all repairs, is a different model: the order matters
    batch = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0)
    refit_layers(batch, graph, list(data))
    repair_statistics(batch, graph, list(data))
    assert not np.allclose(batch.get_layer("fc2").get_task_weights(0)[0], both.get_layer("fc2").get_task_weights(0)[0])


def test_layers_argument_limits_refit_and_repair(mlp_pair):
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping.refit import refit_layers
    from tfmot_zip.zipping.repair import repair_statistics

    models, data, _ = mlp_pair
    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0)
    before = zipped.get_layer("fc1").get_task_weights(0)[0].copy()
    graph = align_models(models)
    assert refit_layers(zipped, graph, list(data), layers=["fc2"]) == ["fc2"]
    assert list(repair_statistics(zipped, graph, list(data), layers=["fc2"])) == ["fc2"]
    np.testing.assert_array_equal(zipped.get_layer("fc1").get_task_weights(0)[0], before)
    assert not zipped.get_layer("fc1").repair and zipped.get_layer("fc2").repair
