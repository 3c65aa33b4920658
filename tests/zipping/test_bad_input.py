"""Bad input gets a clear error naming the problem, before any work, and models stay untouched."""
import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.compat import keras
from tfmot_zip.model.graph import UnsupportedModelError

from builders import calib, cnn, mlp


@pytest.fixture
def pair():
    return mlp(1), mlp(2)


@pytest.fixture
def data(rng):
    return calib(rng, 20, (6, 6, 1)), calib(rng, 20, (6, 6, 1))


def zip_(a, b, data, **kw):
    return tfmot_zip.zip_models(a, b, calibration_data=data, **kw)


def test_different_depth(data):
    with pytest.raises(UnsupportedModelError, match="different depths"):
        zip_(mlp(1, widths=(16, 8)), mlp(2, widths=(16,)), data)


def test_unsupported_layer(data):
    odd = keras.Sequential([
        keras.layers.Flatten(input_shape=(6, 6, 1), name="flat"),
        keras.layers.Dense(16, activation="relu", name="fc1"),
        keras.layers.LayerNormalization(name="norm"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ], name="odd")
    odd2 = keras.models.clone_model(odd)
    with pytest.raises(UnsupportedModelError, match=r"'norm' \(LayerNormalization\).*supported layers"):
        zip_(odd, odd2, data)


def test_mismatched_layer_types(data):
    a = mlp(1)
    b = keras.Sequential([
        keras.layers.Flatten(input_shape=(6, 6, 1), name="flat"),
        keras.layers.Dense(16, activation="relu", name="fc1"),
        keras.layers.Dropout(0.1, name="fc2"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ], name="other")
    with pytest.raises(UnsupportedModelError, match="same layer types"):
        zip_(a, b, data)


def test_mismatched_kernel_geometry(rng):
    a = cnn(1)
    b = keras.models.clone_model(cnn(2))
    config = b.get_config()
    for layer in config["layers"]:
        if layer["name"] == "conv2":
            layer["config"]["kernel_size"] = (5, 5)
    b = keras.Model.from_config(config)
    with pytest.raises(UnsupportedModelError, match=r"'conv2'.*kernel_size"):
        zip_(a, b, (calib(rng, 8, (10, 10, 1)),) * 2)


def test_depthwise_conv_on_the_raw_input_stays_per_task(rng):
    """A depthwise layer reading the model input has no unit space to follow: each task keeps its own."""
    def model(seed):
        keras.utils.set_random_seed(seed)
        x = inp = keras.Input((8, 8, 2))
        x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(4, activation="relu", name="fc")(x)
        return keras.Model(inp, keras.layers.Dense(2, name="head")(x), name=f"dw{seed}")
    a, b = model(1), model(2)
    x = calib(rng, 40, (8, 8, 2))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=1.0)
    assert {"dw__dw1", "dw__dw2"} <= {layer.name for layer in zipped.layers}
    np.testing.assert_array_equal(zipped.get_layer("dw__dw1").get_weights()[0], a.get_layer("dw").get_weights()[0])
    assert tfmot_zip.zip_summary(zipped).layers[0].shared_units == 4  # fc is shared


def test_calibration_shape_mismatch(pair, rng):
    with pytest.raises(ValueError, match=r"calibration_data\[1\].*\(5, 5, 1\).*\(6, 6, 1\)"):
        zip_(*pair, (calib(rng, 4, (6, 6, 1)), calib(rng, 4, (5, 5, 1))))


@pytest.mark.parametrize("bad", [1.5, -0.1, "half", True])
def test_sharing_out_of_range(pair, data, bad):
    with pytest.raises(ValueError, match="sharing"):
        zip_(*pair, data, sharing=bad)


def test_sharing_unknown_layer(pair, data):
    with pytest.raises(ValueError, match=r"unknown layers \['fc9'\].*\['fc1', 'fc2'\]"):
        zip_(*pair, data, sharing={"fc9": 0.5})
    with pytest.raises(ValueError, match="heads"):
        zip_(*pair, data, sharing={"head": 0.5})


def test_empty_calibration(pair):
    with pytest.raises(ValueError, match="empty"):
        zip_(*pair, (np.zeros((0, 6, 6, 1), "float32"), np.zeros((0, 6, 6, 1), "float32")))


def test_nan_calibration(pair, rng):
    bad = calib(rng, 4, (6, 6, 1))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        zip_(*pair, (bad, bad))


def test_nan_weights_and_model_untouched(data):
    a, b = mlp(1), mlp(2)
    w = a.get_layer("fc1").get_weights()
    w[0][0, 0] = np.inf
    a.get_layer("fc1").set_weights(w)
    before = [x.numpy().copy() for x in a.weights]
    with pytest.raises(ValueError, match="NaN or inf"):
        zip_(a, b, data)
    for x, y in zip(before, a.weights):
        np.testing.assert_array_equal(x, y.numpy())


def test_wrong_number_of_calibration_entries(pair, data):
    with pytest.raises(ValueError, match="one entry per model"):
        zip_(*pair, data[:1])


def test_unknown_method_and_selection(pair, data):
    with pytest.raises(ValueError, match="Unknown method 'best'"):
        zip_(*pair, data, method="best")
    with pytest.raises(ValueError, match="Unknown selection 'optimal'"):
        zip_(*pair, data, selection="optimal")


def test_subclassed_model(data):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(keras.layers.Flatten()(x))

    a, b = Net(), Net()
    a(data[0]); b(data[0])
    with pytest.raises(UnsupportedModelError, match="subclassed.*functional"):
        zip_(a, b, data)


def test_keras3_model_with_an_unconvertible_layer_is_refused_naming_it(data):
    keras3 = pytest.importorskip("keras")
    if keras3.__version__.startswith("2."):
        pytest.skip("keras resolves to Keras 2 here")
    model = keras3.Sequential([keras3.Input((6, 6, 1)), keras3.layers.Reshape((36, 1)),
                               keras3.layers.Conv1D(2, 3, name="temporal"), keras3.layers.Flatten(), keras3.layers.Dense(3)])
    with pytest.raises(UnsupportedModelError, match=r"'temporal' \(Conv1D\)"):
        zip_(model, mlp(2), data)


def test_not_a_model(data):
    with pytest.raises(TypeError, match="tf_keras.Model"):
        zip_("model.keras", mlp(2), data)


def test_strip_needs_zipped_model():
    with pytest.raises(ValueError, match="no zip layers"):
        tfmot_zip.strip_zipping(mlp(1))


def test_wider_layers_allowed_but_streams_checked(rng, data):
    a, b = mlp(1, widths=(16, 8)), mlp(2, widths=(12, 8))
    zipped = zip_(a, b, data, sharing=1.0)
    assert tfmot_zip.zip_summary(zipped).layers[0].shared_units == 12
