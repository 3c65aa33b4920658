"""fold_batchnorm on functional graphs: residual Add, depthwise, squeeze-excitation, Concatenate, nested
models, keras.applications MobileNetV2 and ResNet50 (BatchNorm statistics randomised so the fold is
not the identity), against the unfolded model's numbers."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tfmot_zip.compat import keras
from tfmot_zip.model.fold import fold_batchnorm

L = keras.layers


def _randomise_batchnorm(model: keras.Model, seed: int, spread: float = 1.0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            values = {
                "gamma": rng.uniform(1 - 0.5 * spread, 1 + 0.5 * spread, n),
                "beta": rng.normal(scale=0.3 * spread, size=n),
                "moving_mean": rng.normal(scale=0.3 * spread, size=n),
                "moving_variance": rng.uniform(1 / (1 + spread), 1 + spread, n),
            }
            layer.set_weights([values[w.name.split("/")[-1].split(":")[0]] for w in layer.weights])


def _count(model: keras.Model, kind) -> int:
    return sum(type(layer) is kind for layer in model.layers)


def _assert_same_function(folded: keras.Model, model: keras.Model, x: np.ndarray, rtol: float = 1e-4) -> None:
    expected = model(x, training=False)
    got = folded(x, training=False)
    expected = expected if isinstance(expected, list) else [expected]
    got = got if isinstance(got, list) else [got]
    for a, b in zip(got, expected):
        b = np.asarray(b)
        np.testing.assert_allclose(np.asarray(a), b, rtol=rtol, atol=rtol * max(1.0, float(np.abs(b).max())))


# --- generated graphs ---------------------------------------------------------------------------------

BLOCKS = ("conv_bn", "conv_bn_relu", "nobias_conv_bn", "depthwise_bn", "residual", "concat", "squeeze", "bn_after_relu")


def _block(kind: str, x, channels: int, k: int, multiplier: int):
    """One block; returns (output, channels, BatchNormalizations that cannot be folded)."""
    if kind in ("conv_bn", "conv_bn_relu", "nobias_conv_bn"):
        y = L.Conv2D(channels + 1, 3, padding="same", use_bias=kind != "nobias_conv_bn", name=f"c{k}")(x)
        y = L.BatchNormalization(name=f"bn{k}")(y)
        if kind == "conv_bn_relu":
            y = L.ReLU(name=f"relu{k}")(y)
        return y, channels + 1, 0
    if kind == "depthwise_bn":
        y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=multiplier, use_bias=False, name=f"dw{k}")(x)
        y = L.BatchNormalization(name=f"bn{k}")(y)
        return L.ReLU(6.0, name=f"relu6_{k}")(y), channels * multiplier, 0
    if kind == "residual":  # MobileNetV2 style: expand, depthwise, project, add
        y = L.BatchNormalization(name=f"bne{k}")(L.Conv2D(2 * channels, 1, name=f"e{k}")(x))
        y = L.ReLU(6.0, name=f"re{k}")(y)
        y = L.BatchNormalization(name=f"bnd{k}")(L.DepthwiseConv2D(3, padding="same", name=f"d{k}")(y))
        y = L.BatchNormalization(name=f"bnp{k}")(L.Conv2D(channels, 1, use_bias=False, name=f"p{k}")(y))
        return L.Add(name=f"add{k}")([x, y]), channels, 0
    if kind == "concat":
        a = L.BatchNormalization(name=f"bna{k}")(L.Conv2D(2, 1, name=f"ca{k}")(x))
        b = L.BatchNormalization(name=f"bnb{k}")(L.Conv2D(3, 3, padding="same", name=f"cb{k}")(x))
        return L.Concatenate(name=f"cat{k}")([a, b]), 5, 0
    if kind == "squeeze":  # squeeze-excitation on a conv + BN
        y = L.BatchNormalization(name=f"bns{k}")(L.Conv2D(channels, 1, name=f"cs{k}")(x))
        s = L.GlobalAveragePooling2D(keepdims=True, name=f"gap{k}")(y)
        s = L.Conv2D(2, 1, activation="relu", name=f"sq{k}")(s)
        s = L.Conv2D(channels, 1, activation="sigmoid", name=f"ex{k}")(s)
        return L.Multiply(name=f"se{k}")([y, s]), channels, 0
    # a BatchNormalization after an activation stays
    y = L.Conv2D(channels, 3, padding="same", activation="relu", name=f"ca{k}")(x)
    return L.BatchNormalization(name=f"bnkeep{k}")(y), channels, 1


@st.composite
def graphs(draw):
    kinds = draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4))
    multiplier = draw(st.sampled_from([1, 2]))
    dense_head = draw(st.booleans())
    inputs = keras.Input((6, 6, 2), name="image")
    x, channels, kept = inputs, 2, 0
    for k, kind in enumerate(kinds):
        x, channels, unfoldable = _block(kind, x, channels, k, multiplier)
        kept += unfoldable
    if dense_head:
        x = L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="pool")(x))
        x = L.BatchNormalization(name="bn_fc")(x)
    return keras.Model(inputs, x, name="generated"), kept


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 1000))
def test_generated_graphs_fold_to_the_same_function(graph, seed):
    model, kept = graph
    _randomise_batchnorm(model, seed)
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batchnorm(model)
    assert _count(folded, L.BatchNormalization) == kept
    removed = {l.name for l in model.layers} - {l.name for l in folded.layers}
    assert all(isinstance(model.get_layer(n), (L.BatchNormalization, L.ReLU)) for n in removed)
    assert all(folded.get_layer(l.name).__class__ is l.__class__ for l in model.layers if l.name not in removed)
    x = np.random.default_rng(seed).normal(size=(4, 6, 6, 2)).astype("float32")
    _assert_same_function(folded, model, x)
    for a, b in zip(before, model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)
    assert _count(model, L.BatchNormalization) >= _count(folded, L.BatchNormalization)


# --- closed forms ---------------------------------------------------------------------------------------

def test_depthwise_fold_scales_axis_2_of_the_kernel_by_hand():
    x = keras.Input((1, 1, 2))
    depthwise = L.DepthwiseConv2D(1, use_bias=False, name="dw")
    bn = L.BatchNormalization(epsilon=0.0, name="bn")
    model = keras.Model(x, bn(depthwise(x)))
    depthwise.set_weights([np.array([[[[2.0], [-1.0]]]])])  # [1, 1, C=2, 1]
    bn.set_weights([np.array([3.0, 1.0]), np.array([0.0, 2.0]), np.array([1.0, 0.5]), np.array([4.0, 0.25])])
    folded = fold_batchnorm(model)
    kernel, bias = folded.get_layer("dw").get_weights()
    # scale = gamma / sqrt(var) = (1.5, 2.0); W' = W * scale on axis 2; b' = (0 - mean) * scale + beta
    np.testing.assert_allclose(kernel, [[[[3.0], [-2.0]]]])
    np.testing.assert_allclose(bias, [-1.5, 1.0])
    assert folded.get_layer("dw").use_bias


def test_depthwise_multiplier_channels_are_c_times_m_plus_j():
    x = keras.Input((1, 1, 2))
    depthwise = L.DepthwiseConv2D(1, depth_multiplier=2, use_bias=False, name="dw")
    bn = L.BatchNormalization(epsilon=0.0, center=False, scale=False, name="bn")
    model = keras.Model(x, bn(depthwise(x)))
    depthwise.set_weights([np.ones((1, 1, 2, 2))])
    bn.set_weights([np.zeros(4), np.array([1.0, 4.0, 9.0, 16.0])])  # scale 1/sqrt(var) = 1, 1/2, 1/3, 1/4
    kernel, _ = fold_batchnorm(model).get_layer("dw").get_weights()
    np.testing.assert_allclose(kernel[0, 0], [[1.0, 0.5], [1 / 3, 0.25]])


def test_conv_bn_relu_becomes_one_conv_with_relu_and_keeps_names():
    x = keras.Input((5, 5, 3), name="image")
    y = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="conv")(x)))
    y = L.Activation("relu", name="act")(L.Add(name="add")([y, L.Conv2D(4, 3, name="skip")(x)]))
    model = keras.Model(x, y, name="m")
    _randomise_batchnorm(model, 3)
    folded = fold_batchnorm(model)
    assert [l.name for l in folded.layers] == ["image", "conv", "skip", "add", "act"]
    assert folded.get_layer("conv").get_config()["activation"] == "relu"
    assert folded.get_layer("skip").get_config()["activation"] == "linear"  # its reader is Add, not a ReLU
    assert folded.name == "m_folded"
    _assert_same_function(folded, model, np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32"))
    assert _count(fold_batchnorm(model, fold_relu=False), L.ReLU) == 1


# --- what stays -----------------------------------------------------------------------------------------

def _branching_model():
    x = keras.Input((4, 4, 2), name="image")
    conv = L.Conv2D(3, 1, name="conv")(x)
    y = L.BatchNormalization(name="bn")(conv)  # conv's output is also read by the Add: cannot fold
    y = L.Add(name="add")([y, conv])
    z = L.BatchNormalization(name="bn_after_pool")(L.MaxPooling2D(name="pool")(y))
    t = L.BatchNormalization(name="bn_after_transpose")(L.Conv2DTranspose(3, 2, name="up")(y))
    return keras.Model(x, [z, t], name="branching")


def test_unfoldable_batchnorms_stay_in_a_functional_model():
    model = _branching_model()
    _randomise_batchnorm(model, 5)
    folded = fold_batchnorm(model)
    assert {l.name for l in folded.layers if isinstance(l, L.BatchNormalization)} == {"bn", "bn_after_pool", "bn_after_transpose"}
    _assert_same_function(folded, model, np.random.default_rng(0).normal(size=(2, 4, 4, 2)).astype("float32"))


def _one_unfoldable(kind: str) -> keras.Model:
    x = keras.Input((4, 4, 2), name="image")
    conv = L.Conv2D(3, 1, name="conv")(x)
    if kind == "shared_output":
        y = L.Add(name="add")([L.BatchNormalization(name="bn")(conv), conv])
    elif kind == "pool":
        y = L.BatchNormalization(name="bn")(L.MaxPooling2D(name="pool")(conv))
    elif kind == "transpose":
        y = L.BatchNormalization(name="bn")(L.Conv2DTranspose(3, 2, name="up")(conv))
    else:
        y = L.BatchNormalization(axis=1, name="bn")(conv)
    return keras.Model(x, y, name="branching")


@pytest.mark.parametrize("kind, reason", [
    ("shared_output", r"also read by \['add'\]"), ("pool", "MaxPooling2D"), ("transpose", "Conv2DTranspose"),
    ("axis", "axis=.*not the channel"),
])
def test_unfoldable_batchnorm_is_refused_on_request_with_the_reason(kind, reason):
    with pytest.raises(ValueError, match=f"Cannot fold BatchNormalization 'bn' of model 'branching': .*{reason}.*keep_unfoldable=True"):
        fold_batchnorm(_one_unfoldable(kind), keep_unfoldable=False)


def test_sequential_keeps_refusing_and_can_keep_on_request():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="relu", name="d"), L.BatchNormalization(name="bn")])
    with pytest.raises(ValueError, match="'bn'.*activation 'relu'"):
        fold_batchnorm(model)
    kept = fold_batchnorm(model, keep_unfoldable=True)
    assert isinstance(kept, keras.Sequential) and [l.name for l in kept.layers] == ["d", "bn"]


def test_nested_model_is_flattened_then_folded():
    base_in = keras.Input((6, 6, 3), name="base_in")
    base = keras.Model(base_in, L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="conv")(base_in)), name="base")
    inputs = keras.Input((6, 6, 3), name="image")
    outputs = L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="pool")(base(inputs, training=False)))
    model = keras.Model(inputs, outputs, name="outer")
    _randomise_batchnorm(base, 1)
    folded = fold_batchnorm(model)
    assert [l.name for l in folded.layers] == ["image", "conv", "pool", "head"]
    _assert_same_function(folded, model, np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32"))


# --- bad input ------------------------------------------------------------------------------------------

def test_bad_input_names_the_problem_and_the_fix():
    with pytest.raises(TypeError, match="needs a tf_keras .*model='not a model'"):
        fold_batchnorm("not a model")
    model = keras.Sequential([keras.Input((2,)), L.Dense(1)])
    with pytest.raises(TypeError, match="keep_unfoldable='yes'"):
        fold_batchnorm(model, keep_unfoldable="yes")
    with pytest.raises(TypeError, match="fold_relu=1"):
        fold_batchnorm(model, fold_relu=1)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model .*functional API"):
        fold_batchnorm(Subclassed())
    with pytest.raises(ValueError, match="no known input shape"):
        fold_batchnorm(keras.Sequential([L.Dense(1)]))


# --- keras.applications ---------------------------------------------------------------------------------

def test_mobilenet_v2_folds_every_batchnorm():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=5,
                                           classifier_activation=None)
    _randomise_batchnorm(model, 0)
    folded = fold_batchnorm(model)
    assert _count(model, L.BatchNormalization) == 52 and _count(folded, L.BatchNormalization) == 0
    assert _count(folded, L.ReLU) == _count(model, L.ReLU)  # ReLU6 (max_value=6) stays a layer
    assert folded.count_params() < model.count_params()  # 4 weights per channel become 1 bias
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    _assert_same_function(folded, model, x)


def test_resnet50_folds_every_batchnorm_and_its_relus():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=5, classifier_activation=None)
    _randomise_batchnorm(model, 1, spread=0.5)
    folded = fold_batchnorm(model)
    assert _count(model, L.BatchNormalization) == 53 and _count(folded, L.BatchNormalization) == 0
    # conv -> BN -> relu (stem, and two per block) become conv(relu); the relu after each block's Add stays
    assert _count(model, L.Activation) == 1 + 3 * 16 and _count(folded, L.Activation) == 16
    x = np.random.default_rng(1).uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    _assert_same_function(folded, model, x, rtol=1e-3)


# --- zipping folded models --------------------------------------------------------------------------------

def _weight_buffer_bytes(blob: bytes) -> int:
    from tfmot_zip.export.flatbuffer import _schema

    model = _schema().Model.GetRootAs(blob, 0)
    return sum(model.Buffers(b).DataLength() for b in range(model.BuffersLength()))


def test_folded_mobilenet_v2_pair_zips_into_one_shared_copy():
    import tfmot_zip
    from tfmot_zip.export import export_tflite

    models = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=5)
        _randomise_batchnorm(model, seed, spread=0.2)
        models.append(fold_batchnorm(model))
    rng = np.random.default_rng(0)
    calibration = [rng.uniform(-1, 1, size=(32, 32, 32, 3)).astype("float32") for _ in models]
    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=1.0, single_input=True,
                                  task_names=["a", "b"], calibration_samples=32, progress=False)
    stripped = tfmot_zip.strip_zipping(zipped)
    assert not any(isinstance(l, L.BatchNormalization) for l in stripped.layers)
    separate = sum(m.count_params() for m in models)
    heads = sum(m.get_layer("predictions").count_params() for m in models)
    # every hidden layer merged once: one network's hidden parameters plus both heads
    assert stripped.count_params() == pytest.approx((separate - heads) / 2 + heads, rel=0.02)
    assert stripped.count_params() / separate < 0.55
    mixed = np.concatenate(calibration)
    zipped_file = export_tflite(stripped, quantize="int8", representative_data=mixed, representative_samples=16)
    one_file = export_tflite(models[0], quantize="int8", representative_data=calibration[0], representative_samples=16)
    # the int8 weights of the four signatures are one copy: about one network's weight bytes (plus a head)
    assert _weight_buffer_bytes(zipped_file) < 1.1 * _weight_buffer_bytes(one_file)
