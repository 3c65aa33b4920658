"""BatchNorm re-estimation: enough samples, never a zero variance, Dropout off, reported."""
import json
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib, tiny_resnet
from tfmot_zip.compat import keras, tf
from tfmot_zip.model.batchnorm import MIN_SAMPLES, BatchNormUpdate, recalibrate_batchnorm, warn_restored


def _bn_model(seed: int, dropout: float = 0.0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    x = keras.layers.Dense(5, name="fc")(inp)
    x = keras.layers.Dropout(dropout, name="drop")(x)
    out = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(5, 0.3, np.float32))
    bn.moving_variance.assign(np.full(5, 2.0, np.float32))
    return model


def few_samples(count: int) -> np.ndarray:
    return np.random.default_rng(count).normal(size=(count, 6)).astype(np.float32)


def zero_bias_bn_model(seed: int) -> keras.Model:
    model = _bn_model(seed)
    keras_bias = model.get_layer("fc")
    keras_bias.set_weights([keras_bias.get_weights()[0], np.zeros(5, np.float32)])
    return model


# (case, model, calibration data, pattern of the UserWarning): the trained statistics (mean 0.3,
# variance 2.0) must stay. Registry for docs/BAD_INPUTS.md; the tests below check what happened.
BATCHNORM_CASES = [
    (f"1 calibration sample (fewer than MIN_SAMPLES={MIN_SAMPLES})", lambda: _bn_model(0), lambda: few_samples(1), f"at least {MIN_SAMPLES}"),
    ("all-zero calibration data (zero variance)", lambda: zero_bias_bn_model(1), lambda: np.zeros((64, 6), np.float32), "degenerate"),
]
# (case, the two models, calibration samples per task, pattern of the UserWarning) for zip_models.
ZIP_TOO_FEW_SAMPLES = ("4 calibration samples per task of two models with BatchNorm", lambda: (tiny_resnet(7), tiny_resnet(8)), 4,
                       "not re-estimated")


@settings(max_examples=8, deadline=None)
@given(count=st.integers(1, MIN_SAMPLES - 1))
def test_too_few_samples_keep_the_trained_statistics(count):
    _, make_model, _, pattern = BATCHNORM_CASES[0]
    model = make_model()
    with pytest.warns(UserWarning, match=pattern):
        update = recalibrate_batchnorm(model, [few_samples(count)])
    bn = model.get_layer("bn")
    assert update.updated == [] and str(count) in update.kept_trained
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.float32(0.3))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 2.0)


def test_all_zero_data_never_sets_a_zero_variance():
    _, make_model, data, pattern = BATCHNORM_CASES[1]
    model = make_model()
    with pytest.warns(UserWarning, match=pattern):
        update = recalibrate_batchnorm(model, [data()])
    bn = model.get_layer("bn")
    assert update.restored_channels == {"bn": 5}
    assert np.all(bn.moving_variance.numpy() > 0)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 2.0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.float32(0.3))


def test_constant_channels_only_are_restored():
    model = _bn_model(2)
    fc = model.get_layer("fc")
    kernel, bias = fc.get_weights()
    kernel[:, 0] = 0.0  # channel 0 is constant (its bias) whatever the input
    fc.set_weights([kernel, bias])
    x = np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"in 1 channel of 1 layer \(bn: 1;"):
        update = recalibrate_batchnorm(model, [x], batch_size=32)
    var = model.get_layer("bn").moving_variance.numpy()
    assert update.restored_channels == {"bn": 1} and var[0] == 2.0
    np.testing.assert_allclose(var[1:], (x @ kernel[:, 1:]).var(0), rtol=0.15)


@settings(max_examples=30, deadline=None)
@given(counts=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.integers(1, 500), min_size=1, max_size=40))
def test_the_degenerate_channel_warning_names_the_worst_layers_and_counts_the_rest(counts):
    """A network of many BatchNorms (an EfficientNet: 90 layers) gets one readable line: the total,
    the five layers with the most restored channels, how many more, and where the whole list is."""
    with pytest.warns(UserWarning) as caught:
        warn_restored(BatchNormUpdate(updated=list(counts), samples=64, restored_channels=counts))
    message = str(caught[0].message)
    total = sum(counts.values())
    assert f"in {total} channel{'s' if total != 1 else ''} of {len(counts)} layer{'s' if len(counts) != 1 else ''} (" in message
    worst = sorted(counts, key=lambda n: (-counts[n], n))[:5]
    rest = len(counts) - len(worst)
    listed = re.search(r" layers? \((.*?); all of them", message).group(1)
    if rest:
        listed, more = listed.rsplit(" and ", 1)
        assert more == f"{rest} more layer{'s' if rest != 1 else ''}"
    named = [item.rsplit(": ", 1) for item in listed.split(", ")]
    assert [(n, int(c)) for n, c in named] == [(n, counts[n]) for n in worst]  # the worst five, no other
    assert "restored_channels" in message


def test_dropout_is_off_while_statistics_are_gathered():
    model = _bn_model(3, dropout=0.5)
    x = np.random.default_rng(1).normal(size=(500, 6)).astype(np.float32) + 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recalibrate_batchnorm(model, [x], batch_size=500)
    fc = model.get_layer("fc")
    inputs = fc(x).numpy()  # Dropout is the identity at inference
    bn = model.get_layer("bn")
    # with dropout active, the variance of the scaled-by-2 survivors would be far larger
    np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), inputs.var(0), rtol=1e-2)
    assert model.get_layer("drop").rate == 0.5


def test_zip_report_says_when_the_trained_statistics_stayed(rng):
    _, make_models, samples, pattern = ZIP_TOO_FEW_SAMPLES
    a, b = make_models()
    data = [calib(rng, samples, (8, 8, 1)), calib(rng, samples, (8, 8, 1))]
    with pytest.warns(UserWarning, match=pattern):
        zipped = tfmot_zip.zip_models(a, b, calibration_data=data, sharing=1.0)
    report = tfmot_zip.zip_summary(zipped).as_dict()
    assert json.loads(json.dumps(report))["batchnorm"] == report["batchnorm"]  # plain, JSON-serialisable
    assert report["batchnorm"]["updated"] == []
    assert "only 4 calibration samples" in report["batchnorm"]["kept_trained"]
    for t, task in enumerate(zipped.output_names):  # trained statistics kept, per task
        original = (a, b)[t].get_layer("stem_bn")
        np.testing.assert_array_equal(zipped.get_layer(f"stem_bn__{task}").moving_variance.numpy(),
                                      original.moving_variance.numpy())


def test_frozen_batchnorm_is_re_estimated_and_stays_frozen():
    model = _bn_model(4)
    model.get_layer("bn").trainable = False  # e.g. a transfer-learning base called with training=False
    x = np.random.default_rng(2).normal(size=(200, 6)).astype(np.float32) + 1.0
    update = recalibrate_batchnorm(model, [x], batch_size=200)
    bn = model.get_layer("bn")
    assert update.updated == ["bn"] and bn.trainable is False
    np.testing.assert_allclose(bn.moving_mean.numpy(), model.get_layer("fc")(x).numpy().mean(0), rtol=1e-4, atol=1e-5)


def test_recalibration_sees_layers_changed_after_an_earlier_recalibration():
    """The traced pass is rebuilt when the model gains weights (e.g. a zip layer's repair affine)."""
    from tfmot_zip.model.layers import ZipDense

    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    fc = ZipDense([3, 3], [4, 4], 4, name="fc")
    ya, yb = fc([a, b])
    model = keras.Model([a, b], [keras.layers.BatchNormalization(name="bn_a")(ya), keras.layers.BatchNormalization(name="bn_b")(yb)])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    recalibrate_batchnorm(model, [x, x])
    fc.set_repair(0, np.full(3, 3.0), np.full(3, 5.0))  # adds weights and changes what task 0 computes
    recalibrate_batchnorm(model, [x, x])
    expected = (fc.preactivation(tf.constant(x), 0).numpy() * 3.0 + 5.0).mean(0)
    np.testing.assert_allclose(model.get_layer("bn_a").moving_mean.numpy(), expected, rtol=1e-5, atol=1e-5)
