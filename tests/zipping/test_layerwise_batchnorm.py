"""BatchNorm statistics re-estimated layer by layer during zipping."""
import numpy as np
import pytest

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
    from tfmot_zip.zipping import api
    from tfmot_zip.zipping.activations import ActivationCache

    calls, estimated = [], []
    original, estimate = api._recalibrate, ActivationCache._estimate
    monkeypatch.setattr(api, "_recalibrate", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(ActivationCache, "_estimate", lambda self, layer, x: estimated.append(layer.name) or estimate(self, layer, x))
    data = [calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1))]
    _zip("layerwise", data)
    assert len(calls) == 1  # the whole-model pass runs once, at the end
    # during zipping, the stem's BatchNorm (each task's) was re-estimated once, after the stem merged
    assert sorted(estimated) == ["stem_bn__res7", "stem_bn__res8"]
    calls.clear(), estimated.clear()
    _zip("end", data)
    assert len(calls) == 1 and not estimated


@pytest.mark.parametrize("mode", ["sometimes", 2, None])
def test_unknown_batchnorm_modes_are_refused(mode, rng):
    with pytest.raises(ValueError, match="recalibrate_batchnorm"):
        _zip(mode, [calib(rng, 8, (8, 8, 1))] * 2)
