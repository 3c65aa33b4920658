"""``method="mtz-lsq"``: MTZ at each layer's least-squares weights, against a brute-force assignment."""
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import tfmot_zip
from builders import mlp
from tfmot_zip.compat import keras


def _pairs(zipped, name):
    (_, units, columns), = zipped.get_layer(name).zip_record["pairs"]
    return dict(zip(columns, units))


def _pair(seed=5):
    rng = np.random.default_rng(seed)
    models = [mlp(seed, widths=(7, 6), input_shape=(5,)), mlp(seed + 1, widths=(7, 6), input_shape=(5,))]
    data = [(rng.normal(size=(400, 5)) + 2.0 * rng.random(5)).astype("float32") for _ in range(2)]
    return models, data


def _zip(models, data, method):
    return tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, method=method, refit_layers=False,
                                refit_heads=False, progress=False)


def test_first_layer_equals_mtz_and_second_layer_pairs_by_the_least_squares_residual():
    models, data = _pair()
    lsq, mtz = _zip(models, data, "mtz-lsq"), _zip(models, data, "mtz")
    # The first layer's inputs are the raw inputs: the least-squares fit is the original weights, so MTZ's choice.
    assert _pairs(lsq, "fc1") == _pairs(mtz, "fc1")
    np.testing.assert_allclose(lsq.get_layer("fc1").get_task_weights(0)[0], mtz.get_layer("fc1").get_task_weights(0)[0], atol=1e-5)
    # fc2 reads the merged fc1: cost of a pair = joint least-squares residual - the two separate residuals, by lstsq.
    merged = keras.Model(lsq.inputs, lsq.get_layer("fc1").output)(data)
    layer = lsq.get_layer("fc2")
    designs, targets = [], []
    for t, (model, x) in enumerate(zip(models, data)):
        features = np.asarray(merged[t], np.float64)
        physical = np.zeros((len(x), layer.input_capacity))
        physical[:, layer.get_maps(t)[0]] = features  # columns in physical order: both tasks read the same units
        designs.append(np.hstack([physical, np.ones((len(x), 1))]) / np.sqrt(2 * len(x)))
        original_in = keras.Model(model.inputs, model.get_layer("fc1").output)(x).numpy().astype(np.float64)
        kernel, bias = model.get_layer("fc2").get_weights()
        targets.append((original_in @ kernel + bias) / np.sqrt(2 * len(x)))

    def residual(design, target):
        return float(np.sum((design @ np.linalg.lstsq(design, target, rcond=None)[0] - target) ** 2))

    costs = np.zeros((6, 6))
    joint = np.vstack(designs)
    for i in range(6):
        for j in range(6):
            costs[i, j] = residual(joint, np.concatenate([targets[0][:, i], targets[1][:, j]])) - residual(
                designs[0], targets[0][:, i]) - residual(designs[1], targets[1][:, j])
    rows, cols = linear_sum_assignment(costs)
    expected = {int(c): int(layer.get_maps(0)[1][r]) for r, c in zip(rows, cols)}
    assert _pairs(lsq, "fc2") == expected
    assert _pairs(mtz, "fc2") != expected  # plain MTZ, at the weights fitted to the original inputs, chooses otherwise


def test_refused_with_a_schedule():
    models, _ = _pair()
    with pytest.raises(ValueError, match="one-shot zipping"):
        tfmot_zip.zip_models(*models, calibration_data=None, method="mtz-lsq", schedule=tfmot_zip.OneShotSchedule())
