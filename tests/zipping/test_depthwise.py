"""Depthwise convolutions and squeeze-and-excitation gates in zipped models (MobileNet/EfficientNet blocks)."""
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib
from tfmot_zip.compat import keras, tf
from tfmot_zip.core import damped
from tfmot_zip.model.graph import UnsupportedModelError

L = keras.layers


def mobile_block(seed, width=6, se=False, dw_bias=True, kernel=3, name=None):
    """stem conv -> ReLU6 -> depthwise -> BN -> ReLU [-> SE gate] -> 1x1 project -> GAP -> head."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((8, 8, 2), name="image")
    x = L.Conv2D(width, 3, padding="same", name="stem")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    x = L.DepthwiseConv2D(kernel, padding="same", use_bias=dw_bias, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(name="dw_relu")(x)
    if se:
        g = L.GlobalAveragePooling2D(name="se_squeeze")(x)
        g = L.Reshape((1, 1, width), name="se_reshape")(g)
        g = L.Conv2D(3, 1, activation="relu", name="se_reduce")(g)
        g = L.Conv2D(width, 1, activation="sigmoid", name="se_expand")(g)
        x = L.Multiply(name="se_excite")([x, g])
    x = L.Conv2D(4, 1, name="project")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(3, name="head")(x)
    model = keras.Model(inp, out, name=name or f"mobile{seed}")
    bn = model.get_layer("dw_bn")
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 1.5, width), rng.normal(size=width) * 0.1, rng.normal(size=width) * 0.1,
                    rng.uniform(0.5, 2.0, width)])
    return model


def channel_hessians(x, k):
    """[channels, k*k+1, k*k+1] from TensorFlow's own patch extraction ('same' padding, stride 1)."""
    patches = tf.image.extract_patches(x, (1, k, k, 1), (1, 1, 1, 1), (1, 1, 1, 1), "SAME").numpy()
    c = x.shape[-1]
    rows = patches.reshape(-1, k * k, c)  # extract_patches orders (row, col, channel)
    rows = np.concatenate([rows, np.ones((rows.shape[0], 1, c))], axis=1).astype(np.float64)
    return np.einsum("npc,nqc->cpq", rows, rows) / rows.shape[0]


def test_merged_depthwise_channels_are_the_closed_form_mtz_merge(rng):
    a, b = mobile_block(1), mobile_block(2)
    xa, xb = calib(rng, 64, (8, 8, 2)), calib(rng, 64, (8, 8, 2))
    damping = 1e-4
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing=1.0, damping=damping,
                                  recalibrate_batchnorm=False)
    dw = zipped.get_layer("dw")
    stem = zipped.get_layer("stem")
    # The depthwise layer reads the stem's space: same maps.
    for t in range(2):
        np.testing.assert_array_equal(dw.get_maps(t)[0], stem.get_maps(t)[1])
        np.testing.assert_array_equal(dw.get_maps(t)[1], stem.get_maps(t)[1])
    # Its inputs (the merged stem's ReLU6 outputs), per task, as the zipper saw them.
    inputs = keras.Model(zipped.inputs, zipped.get_layer("dw").input)([xa, xb])
    h = [channel_hessians(np.asarray(inputs[t]), 3) for t in range(2)]
    (ka, ba), (kb, bb) = (m.get_layer("dw").get_weights() for m in (a, b))
    rows = [np.hstack([k[:, :, :, 0].reshape(9, -1).T, bias[:, None]]) for k, bias in ((ka, ba), (kb, bb))]
    kernel, bias = dw.kernel.numpy(), dw.bias.numpy()
    map_a, map_b = stem.get_maps(0)[1], stem.get_maps(1)[1]
    assert len(np.unique(np.concatenate([map_a, map_b]))) == 6  # fully shared
    for j, unit in enumerate(map_b):
        i = int(np.flatnonzero(map_a == unit)[0])
        ha, hb = damped(h[0][i], damping), damped(h[1][j], damping)
        expected = np.linalg.solve(ha + hb, ha @ rows[0][i] + hb @ rows[1][j])
        got = np.append(kernel[:, :, unit, 0].reshape(-1), bias[unit])
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)
    assert tfmot_zip.zip_summary(zipped).layers[1].merge_cost > 0


def test_euclidean_averages_the_paired_channels(rng):
    a, b = mobile_block(1, dw_bias=False), mobile_block(2, dw_bias=False)
    x = calib(rng, 32, (8, 8, 2))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=1.0, method="euclidean")
    stem, dw = zipped.get_layer("stem"), zipped.get_layer("dw")
    ka, kb = a.get_layer("dw").get_weights()[0], b.get_layer("dw").get_weights()[0]
    for j, unit in enumerate(stem.get_maps(1)[1]):
        i = int(np.flatnonzero(stem.get_maps(0)[1] == unit)[0])
        np.testing.assert_allclose(dw.kernel.numpy()[:, :, unit], 0.5 * (ka[:, :, i] + kb[:, :, j]), atol=1e-6)


@settings(max_examples=6, deadline=None)
@given(se=st.booleans(), dw_bias=st.booleans(), kernel=st.sampled_from([1, 3]), extra=st.integers(0, 2),
       sharing=st.sampled_from([0.5, 1.0]))
def test_mobile_blocks_zip_strip_save_and_reproduce(se, dw_bias, kernel, extra, sharing):
    rng = np.random.default_rng(0)
    a = mobile_block(1, width=6, se=se, dw_bias=dw_bias, kernel=kernel)
    b = mobile_block(2, width=6 + extra, se=se, dw_bias=dw_bias, kernel=kernel)
    xa, xb = calib(rng, 40, (8, 8, 2)), calib(rng, 40, (8, 8, 2))
    weights_before = [w.copy() for w in a.get_weights()]
    zero = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing=0.0)
    za, zb = zero([xa, xb])
    np.testing.assert_allclose(za, a(xa), atol=1e-5)
    np.testing.assert_allclose(zb, b(xb), atol=1e-5)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing=sharing)
    for w, before in zip(a.get_weights(), weights_before):
        np.testing.assert_array_equal(w, before)  # the user's model is untouched
    if se:  # the gate's last layer writes into the space it gates: it follows the stem's pairing
        for t in range(2):
            np.testing.assert_array_equal(zipped.get_layer("se_expand").get_maps(t)[1], zipped.get_layer("stem").get_maps(t)[1])
    out = [np.asarray(o) for o in zipped([xa, xb])]
    plain = tfmot_zip.strip_zipping(zipped)
    for o, s in zip(out, plain([xa, xb])):
        np.testing.assert_allclose(s, o, atol=1e-5)
    assert not any("Zip" in type(l).__name__ for l in plain.layers)
    assert plain.count_params() < a.count_params() + b.count_params()
    summary = tfmot_zip.zip_summary(zipped)
    dw_row = next(l for l in summary.layers if l.name == "dw")
    shared = int(round(sharing * 6))
    assert dw_row.kind == "depthwise" and dw_row.shared_units == shared
    assert dw_row.params_after == dw_row.params_before - shared * (kernel * kernel + dw_bias)
    path = os.path.join(tempfile.mkdtemp(), "zipped.keras")
    zipped.save(path)
    loaded = keras.models.load_model(path)
    for o, l in zip(out, loaded([xa, xb])):
        np.testing.assert_array_equal(l, o)
    task_a, _ = tfmot_zip.extract_task_models(zipped)
    np.testing.assert_allclose(task_a(xa), out[0], atol=1e-5)


def test_scheduled_zipping_with_calibration_data_merges_depthwise_layers(rng):
    from tfmot_zip import training
    from tfmot_zip.data import tasks as data

    a, b = mobile_block(1), mobile_block(2)
    xs = [calib(rng, 64, (8, 8, 2)) for _ in range(2)]
    sets = [(x, rng.integers(0, 3, 64)) for x in xs]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0,
                                  schedule=tfmot_zip.LayerwiseSchedule(calibration_steps=0, retrain_steps=2))
    training.compile_multitask(zipped, 1e-3)
    with pytest.raises(ValueError, match="calibration_data=\\(x_a, x_b"):
        zipped.fit(data.multitask(*sets, batch_size=16), steps_per_epoch=2, verbose=0, callbacks=[tfmot_zip.ZipCallback()])
    zipped.fit(data.multitask(*sets, batch_size=16), steps_per_epoch=12, verbose=0,
               callbacks=[tfmot_zip.ZipCallback(calibration_data=xs)])
    stem, dw = zipped.get_layer("stem"), zipped.get_layer("dw")
    for t in range(2):
        np.testing.assert_array_equal(dw.get_maps(t)[0], stem.get_maps(t)[1])
    assert {l.name: l.shared_units for l in tfmot_zip.zip_summary(zipped).layers}["dw"] == 6
    plain = tfmot_zip.strip_zipping(zipped)
    for o, s in zip(zipped(xs), plain(xs)):
        np.testing.assert_allclose(s, o, atol=1e-5)


def _with(layer_factory):
    keras.utils.set_random_seed(0)
    x = inp = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, name="stem")(x)
    x = layer_factory()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


@pytest.mark.parametrize("factory, message", [
    (lambda: L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"), "depth_multiplier=2.*depth_multiplier=1"),
    # depth_multiplier=1 is zipped as its depthwise and 1x1 convolutions (tests/model/test_flatten.py)
    (lambda: L.SeparableConv2D(4, 3, depth_multiplier=2, name="sep"),
     "SeparableConv2D with depth_multiplier=2.*depth_multiplier=1.*pointwise_kernel"),
])
def test_unsupported_depthwise_variants_are_refused_with_the_fix(factory, message):
    x = np.zeros((4, 8, 8, 2), np.float32)
    with pytest.raises(UnsupportedModelError, match=message):
        tfmot_zip.zip_models(_with(factory), _with(factory), calibration_data=(x, x))


def test_depthwise_kernel_sizes_must_agree():
    x = np.zeros((4, 8, 8, 2), np.float32)
    with pytest.raises(UnsupportedModelError, match="kernel_size"):
        tfmot_zip.zip_models(_with(lambda: L.DepthwiseConv2D(3, name="dw")), _with(lambda: L.DepthwiseConv2D(1, name="dw")),
                             calibration_data=(x, x))


def test_zipped_depthwise_layers_prune_with_tfmot(rng):
    import tensorflow_model_optimization as tfmot

    from tfmot_zip import training
    from tfmot_zip.data import tasks as data
    from tfmot_zip.model.depthwise import ZipDepthwiseConv2D

    a, b = mobile_block(1, se=True), mobile_block(2, se=True)
    xs = [calib(rng, 64, (8, 8, 2)) for _ in range(2)]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=1.0)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        zipped, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1))
    training.compile_multitask(pruned, 1e-3)
    sets = [(x, rng.integers(0, 3, 64)) for x in xs]
    pruned.fit(data.multitask(*sets, batch_size=16), steps_per_epoch=2, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    plain = tfmot.sparsity.keras.strip_pruning(pruned)
    dw = next(l for l in plain.layers if isinstance(l, ZipDepthwiseConv2D))
    assert any(type(l).__name__ == "PruneLowMagnitude" and isinstance(l.layer, ZipDepthwiseConv2D) for l in pruned.layers)
    assert float(np.mean(dw.kernel.numpy() == 0.0)) >= 0.5  # the physical kernel reached the target sparsity
    used = dw.kernel.numpy()[:, :, dw.used_units()]
    assert float(np.mean(used == 0.0)) > 0.25  # and not only in the unused channels (zero already)


@pytest.mark.parametrize("se", [False, True])
def test_budget_sharing_counts_depthwise_layers_exactly(rng, se):
    """The depthwise kernels of the shared channels count once: the record's count is the stripped model's."""
    x = calib(rng, 40, (8, 8, 2))
    a, b = mobile_block(1, se=se), mobile_block(2, se=se)
    budget = tfmot_zip.Budget(fraction=0.7, probe_fractions=(1.0,), refine=0, holdout=8)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=budget)
    record = tfmot_zip.zip_summary(zipped).budget
    stripped = tfmot_zip.strip_zipping(zipped).count_params()
    assert stripped == record["params"] <= 0.7 * (a.count_params() + b.count_params())


def test_budget_sharing_refuses_channel_concatenations_with_the_fix(rng):
    def dense_block(seed):
        keras.utils.set_random_seed(seed)
        x = inp = keras.Input((8, 8, 2), name="image")
        y = L.Conv2D(3, 3, padding="same", name="c1")(x)
        z = L.Conv2D(3, 3, padding="same", name="c2")(y)
        x = L.Concatenate(name="cat")([y, z])
        return keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x)))

    x = calib(rng, 40, (8, 8, 2))
    with pytest.raises(UnsupportedModelError, match="concatenations.*sharing=0.6"):
        tfmot_zip.zip_models(dense_block(1), dense_block(2), calibration_data=(x, x), sharing=tfmot_zip.Budget(fraction=0.6))
