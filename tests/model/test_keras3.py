"""tfmot_zip.model.keras3: Keras 3 models and .keras files become tf_keras models with the same names,
weights and outputs (within 1e-6); what cannot be converted is refused by layer name and class; the
entry points (zip_models, export_tflite, ...) convert Keras 3 models with one warning."""
import warnings

import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.compat import is_keras3_object, keras
from tfmot_zip.model.graph import UnsupportedModelError
from tfmot_zip.model.keras3 import SUPPORTED_LAYERS, as_tf_keras_model, from_keras3, tf_keras_layer

k3 = pytest.importorskip("keras")
if not k3.__version__.startswith("3."):
    pytest.skip("the keras package is not Keras 3 here", allow_module_level=True)
L3 = k3.layers


def randomize(model, seed=0):
    """Every weight perturbed at its own scale (BatchNorm variances kept positive), so a misplaced weight
    shows while deep models keep their activations in range."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([w if not np.issubdtype(w.dtype, np.floating)  # a Normalization's sample count
                           else rng.uniform(0.5, 2.0, size=w.shape).astype("float32") if "variance" in v.path
                           else (w + rng.normal(scale=0.2 * np.std(w) + 0.05, size=w.shape)).astype("float32")
                           for v, w in zip(layer.weights, layer.get_weights())])
        if hasattr(layer, "finalize_state"):  # as adapt() and loading do: a Normalization reads its new weights
            layer.finalize_state()
    return model


def image(layers, shape=(8, 8, 3), name="m"):
    x = inp = k3.Input(shape, name="img")
    for layer in layers:
        x = layer(x)
    return k3.Model(inp, x, name=name)


def residual(merge):
    x = k3.Input((8, 8, 4), name="img")
    a = L3.Conv2D(4, 3, padding="same", name="a")(x)
    b = L3.DepthwiseConv2D(3, padding="same", depth_multiplier=1, name="b")(x)
    return k3.Model(x, merge(name="merge")([a, b]), name=f"res_{merge.__name__}")


def shared_layer():
    a, b = k3.Input((5,), name="a_in"), k3.Input((5,), name="b_in")
    dense = L3.Dense(4, activation="tanh", name="shared")
    return k3.Model([a, b], [L3.Dense(2, name="ha")(dense(a)), L3.Dense(3, name="hb")(dense(b))], name="two")


MODELS = {
    "Dense/Dropout/Activation (Sequential)": lambda: k3.Sequential(
        [k3.Input((6,)), L3.Dense(5, activation="relu", kernel_regularizer="l2", name="fc"), L3.Dropout(0.3, name="drop"),
         L3.Dense(3, name="head"), L3.Activation("softmax", name="act")], name="seq"),
    "Conv2D/BatchNormalization/ReLU/pooling/Flatten": lambda: image(
        [L3.Conv2D(4, 3, strides=2, padding="same", name="conv"), L3.BatchNormalization(name="bn"),
         L3.ReLU(max_value=6.0, name="relu6"), L3.MaxPooling2D(2, name="maxpool"),
         L3.AveragePooling2D(1, name="avgpool"), L3.Flatten(name="flat"), L3.Dense(2, name="head")]),
    "Rescaling/ZeroPadding2D/DepthwiseConv2D/GlobalAveragePooling2D": lambda: image(
        [L3.Rescaling(1 / 255.0, offset=-0.5, name="rescale"), L3.ZeroPadding2D(((1, 0), (0, 1)), name="pad"),
         L3.DepthwiseConv2D(3, depth_multiplier=2, use_bias=True, name="dw"), L3.GlobalAveragePooling2D(name="gap"),
         L3.Dense(3, name="head")]),
    "SeparableConv2D/UpSampling2D/Cropping2D": lambda: image(
        [L3.SeparableConv2D(4, 3, depth_multiplier=2, padding="same", activation="relu", name="sep"),
         L3.UpSampling2D(2, name="up"), L3.Cropping2D(((1, 0), (2, 1)), name="crop"), L3.Conv2D(2, 1, name="pw")]),
    "Normalization (adapted weights; mean and variance given)": lambda: image(
        [L3.Normalization(axis=-1, name="norm"), L3.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0],
                                                                  name="norm_given"), L3.Conv2D(2, 1, name="pw")]),
    "Reshape/GlobalMaxPooling2D": lambda: image(
        [L3.Reshape((4, 16, 3), name="reshape"), L3.Conv2D(2, 1, name="pw"), L3.GlobalMaxPooling2D(name="gmp")]),
    "Add": lambda: residual(L3.Add),
    "Multiply": lambda: residual(L3.Multiply),
    "Concatenate": lambda: residual(L3.Concatenate),
    "shared layer, two inputs and outputs": shared_layer,
}


def inputs_for(model, seed=1):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(4,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


def assert_same(model3, converted):
    assert not is_keras3_object(converted) and isinstance(converted, keras.Model)
    assert converted.name == model3.name
    assert [l.name for l in converted.layers if not isinstance(l, keras.layers.InputLayer)] == \
        [l.name for l in model3.layers if type(l).__name__ != "InputLayer"]
    for a, b in zip(converted.get_weights(), model3.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = inputs_for(model3)
    expected, got = model3(x), converted(x)
    expected, got = (expected, got) if isinstance(expected, (list, tuple)) else ([expected], [got])
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.numpy(), np.asarray(e), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", list(MODELS))
def test_each_supported_layer_converts_with_the_same_outputs(kind):
    model3 = randomize(MODELS[kind]())
    before = [w.copy() for w in model3.get_weights()]
    assert_same(model3, from_keras3(model3))
    for a, b in zip(model3.get_weights(), before):  # the input is not modified
        np.testing.assert_array_equal(a, b)


def test_every_listed_layer_class_is_tested():
    tested = {type(l).__name__ for build in MODELS.values() for l in build().layers}
    assert tested == set(SUPPORTED_LAYERS)


def test_a_keras3_file_converts_like_the_model(tmp_path):
    model3 = randomize(MODELS["Conv2D/BatchNormalization/ReLU/pooling/Flatten"](), seed=3)
    path = tmp_path / "k3.keras"
    model3.save(path)
    before = path.read_bytes()
    assert_same(model3, from_keras3(path))
    assert_same(model3, from_keras3(str(path)))
    assert path.read_bytes() == before


def test_per_layer_trainable_flags_survive():
    model3 = MODELS["Conv2D/BatchNormalization/ReLU/pooling/Flatten"]()
    model3.get_layer("bn").trainable = False
    converted = from_keras3(model3)
    assert converted.get_layer("bn").trainable is False and converted.get_layer("conv").trainable is True


@pytest.mark.parametrize("build, shape", [
    (lambda: k3.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=5), (32, 32, 3)),
    (lambda: k3.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=5), (32, 32, 3)),
], ids=["MobileNetV2", "ResNet50"])
def test_keras_applications_convert_with_the_same_outputs(build, shape):
    model3 = randomize(build(), seed=5)
    converted = from_keras3(model3)
    assert_same(model3, converted)
    assert converted.count_params() == model3.count_params()


def test_unsupported_layer_is_refused_by_name_and_class():
    model3 = k3.Sequential([k3.Input((5, 3)), L3.Conv1D(2, 2, name="temporal"), L3.Flatten()], name="seq1d")
    with pytest.raises(UnsupportedModelError, match=r"'temporal' \(Conv1D\).*converts only the layers"):
        from_keras3(model3)


def test_keras3_only_option_with_a_non_default_value_is_refused():
    with pytest.raises(UnsupportedModelError, match=r"'fc' \(Dense\).*lora_rank=4.*no tf_keras equivalent"):
        tf_keras_layer({"class_name": "Dense", "config": {"name": "fc", "units": 2, "lora_rank": 4}})
    assert tf_keras_layer({"class_name": "Dense", "config": {"name": "fc", "units": 2, "lora_rank": None}}).units == 2


def test_subclassed_model_is_refused_by_name_and_class():
    class TwoLayers(k3.Model):
        def __init__(self):
            super().__init__(name="custom")
            self.fc = L3.Dense(2)

        def call(self, x):
            return self.fc(x)

    model3 = TwoLayers()
    model3(np.ones((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match=r"'custom' is a subclassed model \(class TwoLayers\)"):
        from_keras3(model3)
    with pytest.raises(UnsupportedModelError, match="subclassed"):
        tfmot_zip.zip_models(model3, model3, calibration_data=(np.ones((4, 3)),) * 2)


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match="from_keras3 expects a Keras 3 model"):
        from_keras3(L3.Dense(2))
    with pytest.raises(TypeError, match="must be a tf_keras.Model"):
        as_tf_keras_model(object())


def mlp3(seed, name):
    k3.utils.set_random_seed(seed)
    return k3.Sequential([k3.Input((6, 6, 1)), L3.Flatten(name="flat"), L3.Dense(16, activation="relu", name="fc1"),
                          L3.Dense(8, activation="relu", name="fc2"), L3.Dense(3, activation="softmax", name="head")],
                         name=name)


def test_zip_models_and_export_accept_keras3_models_and_say_so():
    a3, b3 = mlp3(1, "task_a"), mlp3(2, "task_b")
    x = np.random.default_rng(0).random((32, 6, 6, 1)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zipped = tfmot_zip.zip_models(a3, b3, calibration_data=(x, x), sharing=0.5)
    messages = [str(w.message) for w in caught if "Keras 3" in str(w.message)]
    assert messages == ["converted Keras 3 model 'task_a' (models[0]) to tf_keras",
                        "converted Keras 3 model 'task_b' (models[1]) to tf_keras"]
    twin = tfmot_zip.zip_models(from_keras3(a3), from_keras3(b3), calibration_data=(x, x), sharing=0.5)
    for a, b in zip(zipped.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(UserWarning, match="converted Keras 3 model 'task_a'"):
        data = tfmot_zip.export_tflite(a3)
    with pytest.warns(UserWarning, match="converted Keras 3 model 'task_a' \\(keras_model\\)"):
        report = tfmot_zip.verify_tflite(data, a3, x[:8])
    assert report and max(r["max_abs_error"] for r in report.values()) < 1e-5
    with pytest.warns(UserWarning, match="converted Keras 3"), pytest.raises(ValueError, match="no zip layers"):
        tfmot_zip.strip_zipping(a3)


@pytest.mark.parametrize("activation", ["hard_sigmoid", "hard_silu", "hard_swish"])
def test_keras3_hard_activations_keep_their_keras3_curve(activation):
    """tf_keras's hard_sigmoid is another curve; the converted layer must compute Keras 3's."""
    x = k3.Input((5,))
    model = k3.Model(x, k3.layers.Activation(activation, name="act")(x))
    data = np.linspace(-5, 5, 50, dtype="float32").reshape(10, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = from_keras3(model)
    np.testing.assert_allclose(converted(data), np.asarray(model(data)), atol=1e-6)


@pytest.mark.parametrize("expression", [
    lambda x: x + 3.0, lambda x: x * 0.25, lambda x: x - 1.5, lambda x: 2.0 - x, lambda x: x / 4.0,
    lambda x: x * k3.layers.ReLU(6.0)(x + 3.0),
])
def test_keras3_arithmetic_nodes_convert(expression):
    x = k3.Input((6,))
    model = k3.Model(x, k3.layers.Dense(3, name="fc")(expression(k3.layers.Dense(6, name="d")(x))))
    data = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = from_keras3(model)
    np.testing.assert_allclose(converted(data), np.asarray(model(data)), atol=1e-5)


def test_keras3_arithmetic_node_of_a_number_by_a_tensor_is_refused():
    x = k3.Input((6,))
    model = k3.Model(x, 1.0 / k3.layers.Dense(6, name="d")(x))
    with pytest.raises(UnsupportedModelError, match="Divide|TrueDivide"):
        from_keras3(model)


def test_keras3_mobilenet_v3_small_converts_and_zips():
    """Hard-swish activations and the squeeze-and-excitation gates' arithmetic nodes of Keras 3's MobileNetV3."""
    k3.utils.set_random_seed(1)
    a = k3.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=5)
    k3.utils.set_random_seed(2)
    b = k3.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=5)
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zipped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=0.0, progress=False)
    za, zb = zipped([x, x])
    np.testing.assert_allclose(za, np.asarray(a(x)), atol=1e-5)
    np.testing.assert_allclose(zb, np.asarray(b(x)), atol=1e-5)


def test_keras3_dropout_follows_the_models_training_argument():
    """Keras 3 records training=False on every Dropout node but lets the model's training argument win; a
    tf_keras node argument would win over the model's, so the converted model must not carry it."""
    x = k3.Input((1000,))
    model3 = k3.Model(x, L3.Dropout(0.5, name="drop")(L3.Dense(1000, name="fc")(x)), name="drop3")
    assert model3.get_config()["layers"][2]["inbound_nodes"][0]["kwargs"] == {"training": False}
    converted = from_keras3(model3)
    assert all("training" not in node.call_kwargs for l in converted.layers for node in l._inbound_nodes)
    data = np.ones((2, 1000), "float32")
    for training in (True, False):
        dropped3 = np.mean(np.asarray(model3(data, training=training)) == 0)
        dropped = np.mean(converted(data, training=training).numpy() == 0)
        assert (dropped3 > 0.3) == (dropped > 0.3) == training


def efficientnet_like(seed, name):
    """The blocks of Keras 3's EfficientNet: Rescaling and Normalization in front, a squeeze-and-excitation
    gate, a Dropout Keras 3 records with training=False, and a residual Add."""
    k3.utils.set_random_seed(seed)
    inputs = k3.Input((8, 8, 3), name="image")
    x = L3.Normalization(axis=-1, name="norm")(L3.Rescaling(1 / 255.0, name="rescale")(inputs))
    x = L3.Activation("swish", name="stem_act")(L3.BatchNormalization(name="stem_bn")(L3.Conv2D(8, 3, padding="same",
                                                                                                 name="stem")(x)))
    y = L3.Activation("swish", name="dw_act")(L3.BatchNormalization(name="dw_bn")(
        L3.DepthwiseConv2D(3, padding="same", name="dw")(x)))
    gate = L3.Conv2D(2, 1, activation="swish", name="se_reduce")(L3.GlobalAveragePooling2D(keepdims=True, name="se")(y))
    y = L3.Multiply(name="se_excite")([y, L3.Conv2D(8, 1, activation="sigmoid", name="se_expand")(gate)])
    y = L3.BatchNormalization(name="project_bn")(L3.Conv2D(8, 1, name="project")(y))
    x = L3.Add(name="add")([L3.Dropout(0.2, noise_shape=(None, 1, 1, 1), name="drop")(y), x])
    outputs = L3.Dense(4, activation="softmax", name="head")(L3.GlobalAveragePooling2D(name="gap")(x))
    model = randomize(k3.Model(inputs, outputs, name=name), seed)
    model.get_layer("norm").adapt(np.random.default_rng(seed).uniform(0.2, 0.8, (64, 8, 8, 3)).astype("float32"))
    return model


@pytest.mark.parametrize("sharing", [0.0, 0.5, 1.0])
def test_keras3_efficientnet_blocks_zip(sharing):
    """Keras 3 EfficientNets were refused (Normalization) and then crashed at sharing > 0 (the Dropout's
    recorded training argument); the blocks now zip, and sharing 0 reproduces the Keras 3 models."""
    a, b = efficientnet_like(1, "effnet_a"), efficientnet_like(2, "effnet_b")
    x = np.random.default_rng(0).uniform(0, 255, (48, 8, 8, 3)).astype("float32")
    before = [w.copy() for w in a.get_weights()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zipped = tfmot_zip.zip_models(a, b, calibration_data=(x, x), sharing=sharing, recalibrate_batchnorm=False,
                                      progress=False)
    za, zb = zipped([x, x])
    if sharing == 0.0:
        np.testing.assert_allclose(za, np.asarray(a(x)), atol=1e-5)
        np.testing.assert_allclose(zb, np.asarray(b(x)), atol=1e-5)
    else:
        assert tfmot_zip.zip_summary(zipped).layers[0].shared_units > 0
        assert np.allclose(np.sum(za, axis=1), 1.0, atol=1e-5) and np.isfinite(zb).all()
    assert isinstance(zipped.get_layer("drop__effnet_a"), keras.layers.Dropout)  # kept: it acts when the model trains
    assert all(np.array_equal(w, v) for w, v in zip(a.get_weights(), before))
