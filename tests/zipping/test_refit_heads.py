"""The per-task head refit of zip_models(refit_heads=True) (beyond the paper)."""
import numpy as np
import pytest

import tfmot_zip
from builders import calib, mlp
from tfmot_zip.compat import keras


def _head_preactivations(model, x):
    head = model.get_layer("head")
    features = keras.Model(model.inputs, head.input)(x, training=False).numpy()
    kernel, bias = head.get_weights()
    return features @ kernel + bias


def _zipped_head_preactivations(zipped, task, x):
    head = zipped.get_layer("head")
    feeds = [x if i == task else np.zeros_like(x) for i in range(len(zipped.inputs))]
    features = keras.Model(zipped.inputs, list(head.input))(feeds, training=False)[task].numpy()
    kernel, bias = head.get_task_weights(task)
    return features @ kernel + bias


def test_refit_heads_fits_the_original_preactivations_better_on_the_calibration_data(rng):
    a, b = mlp(31), mlp(32)
    data = (calib(rng, 300, (6, 6, 1)), calib(rng, 300, (6, 6, 1)))
    plain = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz")
    refit = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", refit_heads=True)
    for task, (model, x) in enumerate(zip((a, b), data)):
        target = _head_preactivations(model, x)
        error_plain = np.mean((_zipped_head_preactivations(plain, task, x) - target) ** 2)
        error_refit = np.mean((_zipped_head_preactivations(refit, task, x) - target) ** 2)
        assert error_plain > 1e-6  # sharing everything did change the features
        assert error_refit < 0.9 * error_plain
    # Only the heads changed: the hidden layers are the same as without the refit.
    for name in ("fc1", "fc2"):
        for w_plain, w_refit in zip(plain.get_layer(name).get_weights(), refit.get_layer(name).get_weights()):
            np.testing.assert_array_equal(w_plain, w_refit)


def test_refit_heads_is_an_option_of_one_shot_zipping_only(rng):
    a, b = mlp(33), mlp(34)
    with pytest.raises(ValueError, match="refit_heads=True and refit_layers=True work in one-shot zipping"):
        tfmot_zip.zip_models(a, b, calibration_data=None, refit_heads=True, schedule=tfmot_zip.OneShotSchedule())
    with pytest.raises(ValueError, match="refit_heads='yes'"):
        tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 8, (6, 6, 1)),) * 2, refit_heads="yes")


def test_refit_heads_is_recorded_in_the_report(rng):
    a, b = mlp(35), mlp(36)
    data = (calib(rng, 50, (6, 6, 1)), calib(rng, 50, (6, 6, 1)))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=0.5, refit_heads=True)
    assert tfmot_zip.zip_summary(zipped).options["refit_heads"] is True
