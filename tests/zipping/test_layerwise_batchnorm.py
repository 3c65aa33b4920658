"""BatchNorm statistics re-estimated layer by layer during zipping."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib, tiny_resnet
from tfmot_zip.compat import keras


def _zip(mode, data):
    a, b = tiny_resnet(7), tiny_resnet(8)
    return tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, recalibrate_batchnorm=mode, method="mtz")


def test_layerwise_mode_lets_later_hessians_see_re_estimated_statistics(rng):
    data = [calib(rng, 64, (8, 8, 1)), calib(rng, 64, (8, 8, 1))]
    layerwise, end = _zip(True, data), _zip("end", data)
    pairs = lambda z: [z.get_layer(n).zip_record["pairs"] for n in ("stem", "b1_conv1", "b1_conv2")]  # noqa: E731
    # the first layer is paired before any statistic changes; everything above may differ
    assert pairs(layerwise)[0] == pairs(end)[0]
    weights = lambda z: [w.numpy() for w in z.get_layer("b1_conv1").weights if "kernel" in w.name]  # noqa: E731
    assert any(not np.allclose(x, y) for x, y in zip(weights(layerwise), weights(end)))
    # both end with statistics that describe the zipped network's own inputs
    for zipped in (layerwise, end):
        for task in zipped.output_names:
            bn = zipped.get_layer(f"stem_bn__{task}")
            x = keras.Model(zipped.inputs, bn.input)(data).numpy().reshape(-1, bn.moving_mean.shape[0])
            np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(0), rtol=1e-3, atol=1e-4)


def test_layerwise_mode_re_estimates_statistics_downstream_of_each_stage(rng, monkeypatch):
    from tfmot_zip.model import batchnorm
    from tfmot_zip.zipping.activations import ActivationCache

    calls, estimated = [], []
    original, estimate = batchnorm.recalibrate_batchnorm, ActivationCache._estimate
    monkeypatch.setattr(batchnorm, "recalibrate_batchnorm", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(ActivationCache, "_estimate", lambda self, layer, x: estimated.append(layer.name) or estimate(self, layer, x))
    data = [calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1))]
    _zip("layerwise", data)
    assert not calls  # no whole-model training pass: the cache's estimates are finished instead
    # the stem's BatchNorm (each task's) is the only one; re-estimated once, after the stem merged
    assert sorted(estimated) == ["stem_bn__res7", "stem_bn__res8"]
    calls.clear(), estimated.clear()
    _zip("end", data)
    assert len(calls) == 1 and not estimated
    calls.clear()
    with pytest.warns(UserWarning, match="only 20 calibration samples"):
        _zip("layerwise", [d[:20] for d in data])  # too few samples: the end pass runs, and warns
    assert len(calls) == 1


def _bn_cnn(seed):
    """Three conv + BatchNorm stages (each BatchNorm reads the one below through a zip layer)."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((8, 8, 1), name="image")
    for i, width in enumerate((4, 5, 6)):
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"c{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"r{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(x), name=f"net{seed}")


@settings(max_examples=5, deadline=None)
@given(sizes=st.tuples(st.integers(32, 600), st.integers(32, 600)), sharing=st.sampled_from([0.5, 1.0]),
       seed=st.integers(0, 100), single=st.booleans())
def test_every_batchnorm_ends_with_the_statistics_of_its_own_inputs_under_the_final_network(sizes, sharing, seed, single):
    """Brute force: each BatchNorm's moving statistics equal the batch-averaged moments (first 2,000
    samples, batches of 250) of its inputs computed by the zipped model as it runs at inference.
    (The training-mode pass of ``recalibrate_batchnorm="end"`` fails this once there are several
    batches: it normalises each batch by its own statistics.)"""
    rng = np.random.default_rng(seed)
    data = [calib(rng, n, (8, 8, 1)) for n in sizes]
    zipped = tfmot_zip.zip_models(_bn_cnn(1), _bn_cnn(2), calibration_data=data, sharing=sharing, method="mtz",
                                  progress=False, single_input=single)
    count = min(min(sizes), 2000)
    for t, task in enumerate(zipped.output_names):
        for i in range(3):
            bn = zipped.get_layer(f"bn{i}__{task}")
            feed = data[t][:count] if single else [d[:count] for d in data]  # one input: task t's own data
            x = keras.Model(zipped.inputs, bn.input)(feed).numpy().astype(np.float64)
            batches = [x[s : s + 250] for s in range(0, count, 250)]
            mean = np.mean([b.mean((0, 1, 2)) for b in batches], axis=0)
            var = np.mean([b.reshape(-1, b.shape[-1]).var(0, ddof=1) for b in batches], axis=0)  # fused: unbiased
            np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=2e-4, atol=2e-5)
            np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("mode", ["sometimes", 2, None])
def test_unknown_batchnorm_modes_are_refused(mode, rng):
    with pytest.raises(ValueError, match="recalibrate_batchnorm"):
        _zip(mode, [calib(rng, 8, (8, 8, 1))] * 2)
