"""Tests for the zoo's MobileNetV2 and CIFAR ResNets of depth 6n+2 (tfmot_zip.apps.architectures).

Parameter counts are recomputed here from the layer recipe (an independent count, not the builder's),
and the full-table MobileNetV2 is compared layer by layer with keras.applications (weights=None).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmot_zip.apps import architectures as arch
from tfmot_zip.apps import zoo
from tfmot_zip.compat import keras

L = keras.layers


def conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def dense(n_in, n_out):
    return n_in * n_out + n_out


def kinds(model):
    return Counter(type(layer).__name__ for layer in model.layers)


def round8(value):
    """keras.applications' _make_divisible(value, 8), restated."""
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def expected_mobilenet_params(stages, alpha, channels_in, num_classes, last_filters):
    """Closed-form parameter count of mobilenet_v2, block by block."""
    c = round8(32 * alpha)
    total = conv(3, channels_in, c) + bn(c)
    for t, channels, repeats, _ in stages:
        out = round8(int(channels * alpha))
        for _ in range(repeats):
            hidden = t * c
            if t != 1:
                total += conv(1, c, hidden) + bn(hidden)
            total += 9 * hidden + bn(hidden)  # depthwise 3x3, no bias
            total += conv(1, hidden, out) + bn(out)
            c = out
    last = round8(last_filters * alpha) if alpha > 1 else last_filters
    return total + conv(1, c, last) + bn(last) + dense(last, num_classes)


def blocks(model):
    """{block index: (input tensor shape, output tensor shape, has_add)} from the layer names."""
    names = [layer.name for layer in model.layers]
    result = {}
    index = 0
    while any(n.startswith(f"block{index}_") for n in names):
        first = f"block{index}_expand" if f"block{index}_expand" in names else f"block{index}_dw"
        last = f"block{index}_add" if f"block{index}_add" in names else f"block{index}_project_bn"
        shape_in = tuple(model.get_layer(first).input.shape)
        result[index] = (shape_in, tuple(model.get_layer(last).output.shape), last.endswith("add"))
        index += 1
    return result


# --------------------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------------------


def test_mobilenet_v2_default_structure_and_parameter_count():
    model = zoo.mobilenet_v2(num_classes=5)
    expected = expected_mobilenet_params(arch.MOBILENET_V2_STAGES, 0.35, 1, 5, 256)
    assert model.count_params() == expected == 150_245
    assert expected_mobilenet_params(arch.MOBILENET_V2_STAGES, 0.35, 1, 10, 256) == 151_530  # docstring
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat
    assert model.get_layer("pad").output_shape == (None, 32, 32, 1)  # grayscale stays 1 channel
    assert model.get_layer("stem_conv").strides == (2, 2)
    assert model.get_layer("last_relu").output_shape == (None, 1, 1, 256)
    assert [layer.name for layer in model.layers][-2:] == ["gap", "head"]  # dropout=0: no layer
    assert model.get_layer("head").activation is keras.activations.softmax
    assert "block0_expand" not in [layer.name for layer in model.layers]  # expansion 1
    counts = kinds(model)
    assert counts["DepthwiseConv2D"] == 10 and counts["Add"] == 3 and counts["Conv2D"] == 1 + 9 + 10 + 1
    for layer in model.layers:
        if isinstance(layer, L.DepthwiseConv2D):
            assert layer.kernel_size == (3, 3) and layer.depth_multiplier == 1 and not layer.use_bias
            assert layer.padding == "same"
        if isinstance(layer, L.Conv2D):
            assert not layer.use_bias
        if isinstance(layer, L.ReLU):
            assert float(layer.max_value) == 6.0
    dropout = zoo.mobilenet_v2(input_shape=(8, 8, 1), stages=[(1, 16, 1, 1)], last_filters=8, dropout=0.2)
    assert [layer.name for layer in dropout.layers][-3:] == ["gap", "dropout", "head"]
    assert dropout.get_layer("dropout").rate == 0.2


def test_mobilenet_v2_full_table_matches_keras_applications_layer_by_layer():
    ours = zoo.mobilenet_v2(
        num_classes=7, input_shape=(32, 32, 3), stages=arch.KERAS_MOBILENET_V2_STAGES, last_filters=1280
    )
    reference = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=7)
    assert ours.count_params() == reference.count_params() == expected_mobilenet_params(
        arch.KERAS_MOBILENET_V2_STAGES, 0.35, 3, 7, 1280
    )
    reference_kinds = kinds(reference)
    assert reference_kinds.pop("ZeroPadding2D") == 4  # keras pads stride-2 depthwise convs; ours use "same"
    assert kinds(ours) == reference_kinds

    def weight_shapes(model):
        return [
            (type(layer).__name__, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers
            if layer.weights
        ]

    assert weight_shapes(ours) == weight_shapes(reference)


def test_mobilenet_v2_computes_the_same_function_as_keras_applications_given_its_weights():
    # 'same' padding at stride 2 on even sizes pads (0, 1), like keras' ZeroPadding2D + 'valid'.
    ours = zoo.mobilenet_v2(num_classes=3, input_shape=(32, 32, 3), alpha=0.35,
                            stages=arch.KERAS_MOBILENET_V2_STAGES[:3], last_filters=64)
    reference = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=3)
    rng = np.random.default_rng(0)
    ours_weighted = [layer for layer in ours.layers if layer.weights][:-3]  # up to block5 (6 blocks)
    reference_weighted = [layer for layer in reference.layers if layer.weights][: len(ours_weighted)]
    assert reference_weighted[-1].name == "block_5_project_BN"
    for mine, theirs in zip(ours_weighted, reference_weighted):
        positive = isinstance(theirs, L.BatchNormalization)  # keeps the moving variances positive
        weights = [(rng.uniform(0.5, 1.5, w.shape) if positive else rng.normal(0, 0.3, w.shape)).astype("float32")
                   for w in theirs.get_weights()]
        theirs.set_weights(weights)
        mine.set_weights(weights)
    ours_trunk = keras.Model(ours.input, ours.get_layer("block5_add").output)
    reference_trunk = keras.Model(reference.input, reference.get_layer("block_5_add").output)
    x = rng.random((2, 32, 32, 3)).astype("float32")
    expected = reference_trunk(x, training=False).numpy()
    assert np.abs(expected).max() > 0.1  # a real signal, not a dead network
    np.testing.assert_allclose(ours_trunk(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)


stage_strategy = st.tuples(
    st.sampled_from([1, 6]), st.integers(8, 40), st.integers(1, 2), st.sampled_from([1, 2])
)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    stages=st.lists(stage_strategy, min_size=1, max_size=3),
    alpha=st.sampled_from([0.35, 0.5, 1.0, 1.4]),
    side=st.sampled_from([8, 12, 28]),
)
def test_mobilenet_v2_add_exactly_where_block_shapes_match(stages, alpha, side):
    model = zoo.mobilenet_v2(num_classes=4, input_shape=(side, side, 2), alpha=alpha, stages=stages,
                             last_filters=16)
    assert model.count_params() == expected_mobilenet_params(stages, alpha, 2, 4, 16)
    found = blocks(model)
    assert len(found) == sum(repeats for _, _, repeats, _ in stages)
    assert kinds(model)["DepthwiseConv2D"] == len(found)
    for index, (shape_in, shape_out, has_add) in found.items():
        assert has_add == (shape_in == shape_out), (index, shape_in, shape_out)
    for layer in model.layers:
        if isinstance(layer, L.Add):
            assert len({tuple(t.shape) for t in layer.input}) == 1


@pytest.mark.parametrize("kwargs, pattern", [
    ({"alpha": 0}, "alpha=0"),
    ({"alpha": -0.5}, "alpha=-0.5"),
    ({"stages": [(6, 24, 2, 3)]}, r"stages\[0\]=\(6, 24, 2, 3\)"),
    ({"stages": [(6, 24, 2)]}, r"stages\[0\]=\(6, 24, 2\)"),
    ({"stages": []}, r"stages=\[\]"),
    ({"last_filters": 0}, "last_filters=0"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"num_classes": 0}, "num_classes=0"),
    ({"input_shape": (3, 3, 1)}, "at least 4x4"),
])
def test_mobilenet_v2_refuses_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        zoo.mobilenet_v2(**kwargs)


def test_mobilenet_v2_saves_and_loads_with_the_same_outputs(tmp_path):
    model = zoo.mobilenet_v2(num_classes=3, input_shape=(12, 12, 1))
    path = tmp_path / "mobilenet_v2.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    x = np.random.default_rng(1).random((4, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


# --------------------------------------------------------------------------------------------------
# ResNets of depth 6n+2
# --------------------------------------------------------------------------------------------------


def expected_resnet_params(n, channels_in, num_classes):
    def block(c_in, c_out):
        params = conv(3, c_in, c_out) + bn(c_out) + conv(3, c_out, c_out) + bn(c_out)
        if c_in != c_out:
            params += conv(1, c_in, c_out) + bn(c_out)
        return params

    total = conv(3, channels_in, 16) + bn(16) + dense(64, num_classes)
    for c_in, c_out in ((16, 16), (16, 32), (32, 64)):
        total += block(c_in, c_out) + (n - 1) * block(c_out, c_out)
    return total


@settings(max_examples=4, deadline=None, derandomize=True)
@given(n=st.integers(1, 4))
def test_resnet_depth_6n_plus_2_structure(n):
    depth = 6 * n + 2
    model = zoo.resnet(depth, num_classes=3, input_shape=(8, 8, 1))
    assert model.name == f"resnet{depth}"
    counts = kinds(model)
    projections = [layer.name for layer in model.layers if layer.name.endswith("_proj_conv")]
    assert projections == ["stage2_block1_proj_conv", "stage3_block1_proj_conv"]
    # depth = weighted layers on the main path: stem + 2 per block + head.
    assert counts["Conv2D"] - len(projections) + counts["Dense"] == depth
    assert counts["BatchNormalization"] == counts["Conv2D"] == 6 * n + 3
    assert counts["Add"] == 3 * n and counts["ReLU"] == 1 + 6 * n
    assert model.count_params() == expected_resnet_params(n, 1, 3)
    assert model.get_layer(f"stage3_block{n}_out").output_shape == (None, 2, 2, 64)
    assert f"stage1_block{n + 1}_add" not in [layer.name for layer in model.layers]


def test_resnet20_unchanged_and_named_resnets_registered():
    model = zoo.resnet20()
    assert model.count_params() == 273_754 and model.name == "resnet20"
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["input", "pad", "stem_conv", "stem_bn", "stem_relu"]
    assert len(names) == 74 and names[-2:] == ["gap", "head"]
    assert names.index("stage2_block1_proj_conv") < names.index("stage2_block1_add")
    for arch_name, n in (("resnet32", 5),):
        model = zoo.build_model(arch_name, num_classes=5)
        assert model.name == arch_name
        assert model.count_params() == expected_resnet_params(n, 1, 5)
    assert zoo.ARCHITECTURES["resnet110"] is arch.resnet110
    assert zoo.ARCHITECTURES["mobilenet_v2"] is arch.mobilenet_v2
    assert set(zoo.DEFAULT_EPOCHS) == set(zoo.ARCHITECTURES)


@pytest.mark.parametrize("depth", [0, 2, 7, 19, 21, 111, -4, 20.0, "20", True, None])
def test_resnet_refuses_depths_not_6n_plus_2(depth):
    with pytest.raises(ValueError, match=r"6n\+2") as error:
        zoo.resnet(depth)
    assert f"depth={depth!r}" in str(error.value)


def test_resnet_bad_depth_message_names_the_nearest_depths():
    with pytest.raises(ValueError, match="nearest depths are 20 and 26"):
        zoo.resnet(21)
    with pytest.raises(ValueError, match="nearest depths are 8 and 14"):
        zoo.resnet(3)
