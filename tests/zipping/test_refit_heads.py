"""The per-task head refit of zip_models(refit_heads=True) (beyond the paper)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib, mlp
from tfmot_zip.compat import keras
from tfmot_zip.core.head_fit import head_probabilities


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
    refit = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", refit_heads="least_squares")
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


def _damped_cross_entropy(zipped, task, x, target_logits, prior, damping=1e-3):
    """What the head refit minimises, per sample: the cross-entropy of the zipped head to the original
    probabilities plus the damping's pull towards ``prior`` (the head MTZ left)."""
    head = zipped.get_layer("head")
    feeds = [x if i == task else np.zeros_like(x) for i in range(len(zipped.inputs))]
    features = keras.Model(zipped.inputs, list(head.input))(feeds, training=False)[task].numpy().astype(np.float64)
    kernel, bias = head.get_task_weights(task)
    w = np.vstack([kernel, bias[None]])
    rows = np.hstack([features, np.ones((len(features), 1))])
    p, q = head_probabilities(target_logits, "softmax"), head_probabilities(rows @ w, "softmax")
    lam = damping * np.mean(np.sum(rows * rows, axis=0))
    return float(-np.sum(p * np.log(np.maximum(q, 1e-300))) + 0.5 * lam * np.sum((w - prior) ** 2)) / len(rows)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), widths=st.tuples(st.integers(3, 12), st.integers(2, 8)), classes=st.integers(2, 5),
       samples=st.integers(90, 200))  # at least 10 per head input: the damping is the default 1e-3
def test_a_softmax_head_is_fitted_to_the_original_probabilities(seed, widths, classes, samples):
    # "auto" fits a softmax head by its damped cross-entropy to the original model's probabilities:
    # on the calibration data it is lower than for the head MTZ left and for the least-squares fit.
    rng = np.random.default_rng(seed)
    a, b = mlp(seed, widths, classes), mlp(seed + 1, widths, classes)
    data = (calib(rng, samples, (6, 6, 1)), calib(rng, samples, (6, 6, 1)))
    zips = {heads: tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", refit_heads=heads, progress=False)
            for heads in (False, "least_squares", True)}
    gains = []
    for task, (model, x) in enumerate(zip((a, b), data)):
        target = _head_preactivations(model, x)
        kernel, bias = zips[False].get_layer("head").get_task_weights(task)
        prior = np.vstack([kernel, bias[None]])
        loss = {h: _damped_cross_entropy(z, task, x, target, prior) for h, z in zips.items()}
        assert loss[True] <= min(loss[False], loss["least_squares"]) + 1e-6, loss
        gains.append(loss["least_squares"] - loss[True])
    assert sum(gains) > 0  # not the least-squares fit under another name
    assert tfmot_zip.zip_summary(zips["least_squares"]).options["refit_heads"] == "least_squares"


def test_a_head_the_zip_left_unchanged_is_not_moved_by_the_cross_entropy_fit(rng):
    # sharing 0: the zipped features are the original ones, so the original head is already the
    # minimum of the cross-entropy (and the prior): the refit keeps it.
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping.head_refit import refit_heads

    a, b = mlp(41), mlp(42)
    data = [calib(rng, 200, (6, 6, 1)), calib(rng, 200, (6, 6, 1))]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=0.0, refit_heads=False)
    assert refit_heads(zipped, align_models([a, b]), data, fit="softmax") == ["head"]
    for task, model in enumerate((a, b)):
        for got, original in zip(zipped.get_layer("head").get_task_weights(task), model.get_layer("head").get_weights()):
            np.testing.assert_allclose(got, original, atol=1e-4)


def test_the_head_fit_follows_the_head_activation():
    from tfmot_zip.zipping.head_refit import head_loss

    assert head_loss(keras.layers.Dense(3, activation="softmax")) == "softmax"
    assert head_loss(keras.layers.Dense(1, activation="sigmoid")) == "sigmoid"
    assert head_loss(keras.layers.Dense(3, activation="linear")) == "least_squares"
    assert head_loss(keras.layers.Dense(3), "softmax") == "softmax"  # a linear head whose model applies a softmax
    with pytest.raises(ValueError, match="Unknown head fit 'kl'"):
        head_loss(keras.layers.Dense(3), "kl")


def _head_inputs(zipped, task, data):
    head = zipped.get_layer("head")
    return keras.Model(zipped.inputs, list(head.input))(list(data), training=False)[task].numpy().astype(np.float64)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 1000), samples=st.integers(20, 85))
def test_a_head_with_few_samples_per_input_takes_the_damping_that_loses_least_on_held_out_samples(seed, samples):
    # Brute force: every fifth sample held out, the fit of the others with each damping scored by its
    # cross-entropy on them, against the head as the zip left it; the refit must pick the same.
    from tfmot_zip.core.head_fit import cross_entropy_refit
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping.head_refit import VALIDATE_BELOW, VALIDATION_DAMPINGS, refit_heads

    rng = np.random.default_rng(seed)
    a, b = mlp(seed, (12, 9)), mlp(seed + 1, (12, 9))
    data = [calib(rng, samples, (6, 6, 1)), calib(rng, samples + 3, (6, 6, 1))]
    assert samples + 3 < VALIDATE_BELOW * (9 + 1)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", progress=False)
    before = [zipped.get_layer("head").get_task_weights(t) for t in range(2)]
    features = [_head_inputs(zipped, t, data) for t in range(2)]
    choices = {}
    refit_heads(zipped, align_models([a, b]), data, choices=choices)
    for task, (model, x) in enumerate(zip((a, b), data)):
        target = _head_preactivations(model, x).astype(np.float64)
        out = np.arange(len(x)) % 5 == 4
        p = head_probabilities(target[out], "softmax")

        def held_out_loss(kernel, bias):
            q = head_probabilities(features[task][out] @ kernel + bias, "softmax")
            return float(-np.mean(np.sum(p * np.log(np.maximum(q, 1e-300)), axis=1)))

        losses = {None: held_out_loss(*before[task])}
        for damping in VALIDATION_DAMPINGS:
            fitted = cross_entropy_refit(lambda: [(features[task][~out], target[~out])], *before[task], damping=damping)
            losses[damping] = held_out_loss(*fitted)
        chosen = choices["head"][task]["damping"]
        assert choices["head"][task] == {"loss": "softmax", "damping": chosen, "validated": True}
        assert losses[chosen] <= min(losses.values()) + 1e-6, (chosen, losses)  # the least loss (up to rounding ties)
        best = chosen
        after = zipped.get_layer("head").get_task_weights(task)
        if best is None:
            np.testing.assert_array_equal(after[0], before[task][0])
        else:
            expected = cross_entropy_refit(lambda: [(features[task], target)], *before[task], damping=best)
            np.testing.assert_allclose(after[0], expected[0], atol=1e-5)


def test_a_head_on_unchanged_features_with_few_samples_is_kept_and_the_choice_is_reported(rng):
    # Unchanged features: the head already gives the original probabilities, which no fit on four
    # samples in five beats on the fifth, so it is kept as it is.
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.zipping.head_refit import refit_heads

    a, b = mlp(51), mlp(52)
    few = [calib(rng, 40, (6, 6, 1)), calib(rng, 40, (6, 6, 1))]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=few, sharing=0.0, refit_heads=False, progress=False)
    before = [zipped.get_layer("head").get_task_weights(t) for t in range(2)]
    choices = {}
    refit_heads(zipped, align_models([a, b]), few, choices=choices)
    assert choices == {"head": [{"loss": "softmax", "damping": None, "validated": True}] * 2}
    for t in range(2):
        for got, kept in zip(zipped.get_layer("head").get_task_weights(t), before[t]):
            np.testing.assert_array_equal(got, kept)
    # zip_models reports the choice in the head's record
    for samples, validated in ((40, True), (400, False)):  # the head has 8 inputs: 90 samples decide
        data = (calib(rng, samples, (6, 6, 1)),) * 2
        record = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, progress=False).get_layer("head").zip_record
        assert [c["validated"] for c in record["head_refit"]] == [validated] * 2
        assert validated or [c["damping"] for c in record["head_refit"]] == [1e-3] * 2


def test_fewer_than_five_samples_keep_the_head(rng):
    # none held out, so no fit can be judged: the head stays as the zip left it
    a, b = mlp(61), mlp(62)
    data = (calib(rng, 4, (6, 6, 1)), calib(rng, 3, (6, 6, 1)))
    plain = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", progress=False)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0, method="mtz", refit_heads=True, progress=False)
    assert zipped.get_layer("head").zip_record["head_refit"] == [{"loss": "softmax", "damping": None, "validated": True}] * 2
    for t in range(2):
        for got, kept in zip(zipped.get_layer("head").get_task_weights(t), plain.get_layer("head").get_task_weights(t)):
            np.testing.assert_array_equal(got, kept)
