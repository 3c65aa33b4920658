"""Residual networks: streams share one pairing; sharing 0 is exact; strip stays equivalent."""
import numpy as np
import pytest

import tfmot_zip

from builders import calib, tiny_resnet


def outputs(model, xs):
    return [o.numpy() for o in model(xs)]


def test_residual_sharing_zero_reproduces_both_originals_exactly(rng):
    a, b = tiny_resnet(1), tiny_resnet(2)
    data = (calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1)))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=0.0)
    xs = [calib(rng, 6, (8, 8, 1)), calib(rng, 6, (8, 8, 1))]
    za, zb = outputs(zipped, xs)
    np.testing.assert_array_equal(za, a(xs[0]).numpy())
    np.testing.assert_array_equal(zb, b(xs[1]).numpy())


@pytest.mark.parametrize("sharing", [0.5, 1.0])
@pytest.mark.parametrize("conv_hessian", ["exact", "block"])
def test_streams_share_one_pairing_and_strip_is_equivalent(rng, sharing, conv_hessian):
    a, b = tiny_resnet(3), tiny_resnet(4)
    data = (calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1)))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=sharing, conv_hessian=conv_hessian)
    # Every writer of a residual stream maps task B's channels to the same physical units.
    for writers in (("stem", "b1_conv2"), ("b2_proj", "b2_conv2")):
        maps = [zipped.get_layer(w).get_maps(1)[1] for w in writers]
        np.testing.assert_array_equal(maps[0], maps[1])
    shared = tfmot_zip.zip_summary(zipped).layers
    assert {l.name: l.shared_units for l in shared}["b2_proj"] == int(round(sharing * 6))
    plain = tfmot_zip.strip_zipping(zipped)
    xs = [calib(rng, 6, (8, 8, 1)), calib(rng, 6, (8, 8, 1))]
    for z, p in zip(outputs(zipped, xs), outputs(plain, xs)):
        np.testing.assert_allclose(z, p, atol=2e-6)
    assert plain.count_params() == tfmot_zip.zip_summary(zipped).params_zipped


def test_stream_writers_with_conflicting_sharing_are_refused(rng):
    a, b = tiny_resnet(5), tiny_resnet(6)
    data = (calib(rng, 10, (8, 8, 1)),) * 2
    with pytest.raises(ValueError, match="residual stream"):
        tfmot_zip.zip_models(a, b, calibration_data=data, sharing={"stem": 1.0, "b1_conv2": 0.5})


def test_batchnorm_recalibration_matches_the_statistics_of_its_inputs(rng):
    from tfmot_zip.model.batchnorm import recalibrate_batchnorm
    from tfmot_zip.compat import keras

    a, b = tiny_resnet(7), tiny_resnet(8)
    data = [calib(rng, 64, (8, 8, 1)), calib(rng, 64, (8, 8, 1))]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, recalibrate_batchnorm=False)
    assert len(recalibrate_batchnorm(zipped, data, batch_size=16).updated) == 2
    for t, task in enumerate(zipped.output_names):
        bn = zipped.get_layer(f"stem_bn__{task}")
        feeds = keras.Model(zipped.inputs, bn.input)(data)
        x = feeds.numpy().reshape(-1, 4)
        mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        np.testing.assert_allclose(mean, x.mean(0), rtol=1e-4, atol=1e-5)
        # the running average of per-batch variances (4 batches of 16) approximates the variance
        np.testing.assert_allclose(var, x.var(0), rtol=0.1)
        assert bn.momentum == 0.99
