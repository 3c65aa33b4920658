"""Models that differ in what a layer computes are refused before any work (issue 16).

Zip layers (Dense/Conv2D) compute one version for every task, so they must agree on every
setting but their widths and weights; layers copied per task (activations, BatchNorm, Dropout)
keep their own element-wise settings and must only agree on shapes and layout.
"""
import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.compat import keras
from tfmot_zip.model.graph import UnsupportedModelError

from builders import calib, cnn, mlp


def edited(model, layer_name, **changes):
    """A copy of ``model`` (same weights where shapes allow) with one layer's config changed."""
    config = model.get_config()
    for spec in config["layers"]:
        if spec["config"]["name"] == layer_name:
            spec["config"].update(changes)
    copy = type(model).from_config(config)
    for source, target in zip(model.layers, copy.layers):
        try:
            target.set_weights(source.get_weights())
        except ValueError:
            pass
    return copy


def zip_cnn(a, b, rng, **kw):
    return tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 16, (10, 10, 1)),) * 2, **kw)


@pytest.mark.parametrize("layer, key, value", [
    ("fc1", "activation", "tanh"),
    ("head", "activation", "sigmoid"),
    ("fc1", "use_bias", False),
    ("conv1", "padding", "valid"),
    ("conv2", "strides", (2, 2)),
    ("conv2", "dilation_rate", (2, 2)),
    ("conv1", "use_bias", False),
])
def test_zip_layer_settings_must_agree(rng, layer, key, value):
    a, b = cnn(1), edited(cnn(2), layer, **{key: value})
    before = [w.copy() for w in b.get_weights()]
    with pytest.raises(UnsupportedModelError, match=rf"'{layer}'.*{key}=.*{key}=.*Rebuild one model"):
        zip_cnn(a, b, rng)
    for w, v in zip(before, b.get_weights()):
        np.testing.assert_array_equal(w, v)


def test_use_bias_mismatch_is_refused_not_an_index_error(rng):
    a = mlp(1)
    b = edited(mlp(2), "fc2", use_bias=False)
    with pytest.raises(UnsupportedModelError, match="use_bias=False.*use_bias=True"):
        tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 8, (6, 6, 1)),) * 2)


def test_pool_size_and_batchnorm_axis_must_agree(rng):
    with pytest.raises(UnsupportedModelError, match="'pool1'.*pool_size"):
        zip_cnn(cnn(1), edited(cnn(2), "pool1", pool_size=(1, 1), strides=(1, 1)), rng)


def test_hidden_softmax_activation_in_one_model_is_refused(rng):
    x = inp = keras.Input((6, 6, 1))
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(8, name="fc1")(x)
    x = keras.layers.Activation("relu", name="act")(x)
    out = keras.layers.Dense(3, name="head")(x)
    relu = keras.Model(inp, out, name="relu")
    soft = edited(relu, "act", activation="softmax")
    soft._name = "soft"
    with pytest.raises(UnsupportedModelError, match="'act'.*element-wise"):
        tfmot_zip.zip_models(relu, soft, calibration_data=(calib(rng, 8, (6, 6, 1)),) * 2)


def test_per_task_layers_keep_their_own_elementwise_settings(rng):
    """Decision: BatchNorm epsilon/center, activation layers and Dropout rate may differ;
    each task computes its own copy, so sharing 0 reproduces both models exactly."""
    a = cnn(1, bn=True)
    b = edited(edited(cnn(2, bn=True), "bn1", epsilon=0.1), "relu1", max_value=0.5)
    zipped = zip_cnn(a, b, rng, sharing=0.0)
    xs = [calib(rng, 6, (10, 10, 1))] * 2
    outs = zipped(xs)
    for model, out in zip((a, b), outs):
        np.testing.assert_allclose(out.numpy(), model(xs[0]).numpy(), atol=1e-6)
    shared = zip_cnn(a, b, rng, sharing=0.5)
    plain = tfmot_zip.strip_zipping(shared)
    for z, p in zip(shared(xs), plain(xs)):
        np.testing.assert_allclose(z.numpy(), p.numpy(), atol=1e-5)


def test_dropout_rate_may_differ(rng):
    def model(seed, rate):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.layers.Flatten(input_shape=(6, 6, 1), name="flat"),
            keras.layers.Dense(8, activation="relu", name="fc1"),
            keras.layers.Dropout(rate, name="drop"),
            keras.layers.Dense(3, name="head"),
        ], name=f"m{seed}")
    a, b = model(1, 0.1), model(2, 0.5)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 8, (6, 6, 1)),) * 2, sharing=0.0)
    x = calib(rng, 4, (6, 6, 1))
    for model_, out in zip((a, b), zipped([x, x])):
        np.testing.assert_allclose(out.numpy(), model_(x).numpy(), atol=1e-6)
