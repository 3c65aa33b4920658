"""MobileNetV2 for the zoo: keras.applications' graph written out flat, sized for 32x32 images on a CPU.

Re-exported by :mod:`tfmot_zip.apps.architectures` and :mod:`tfmot_zip.apps.zoo` (registered as
``"mobilenet_v2"``).

Example:
    >>> [stage[2] for stage in MOBILENET_V2_STAGES]  # repeats per stage (keras: 1, 2, 3, 4, 3, 3, 1)
    [1, 2, 2, 2, 1, 1, 1]
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tfmot_zip.apps.builder_checks import Shape, check_image_shape, check_num_classes
from tfmot_zip.compat import keras

__all__ = ["KERAS_MOBILENET_V2_STAGES", "MOBILENET_V2_STAGES", "Stage", "mobilenet_v2"]

#: One MobileNetV2 stage: (expansion t, output channels c before ``alpha``, repeats n, first stride s).
Stage = tuple[int, int, int, int]


#: keras.applications.MobileNetV2's stage table (Sandler et al. 2018, table 2): 17 inverted residual
#: blocks. ``mobilenet_v2(stages=KERAS_MOBILENET_V2_STAGES, last_filters=1280)`` has its structure.
KERAS_MOBILENET_V2_STAGES: tuple[Stage, ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
#: The zoo's reduced table: every keras stage, with 1 or 2 repeats (10 blocks instead of 17).
MOBILENET_V2_STAGES: tuple[Stage, ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 2, 2),
    (6, 64, 2, 2),
    (6, 96, 1, 1),
    (6, 160, 1, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """keras.applications' channel rounding: nearest multiple of ``divisor``, never 10% below ``value``."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def _check_stages(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    checked = []
    for index, stage in enumerate(stages):
        values = tuple(stage) if isinstance(stage, (tuple, list)) else ()
        if (
            len(values) != 4
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in values)
            or values[3] not in (1, 2)
        ):
            raise ValueError(
                "mobilenet_v2 stages are (expansion, channels, repeats, stride) tuples of positive ints "
                f"with stride 1 or 2; received stages[{index}]={stage!r}. See MOBILENET_V2_STAGES."
            )
        checked.append(tuple(int(v) for v in values))
    if not checked:
        raise ValueError(f"mobilenet_v2 needs at least one stage; received stages={stages!r}.")
    return tuple(checked)  # type: ignore[return-value]


def _bn(x, name: str):
    # keras.applications' epsilon; tf_keras' default momentum (0.99, not 0.999: see mobilenet_v2).
    return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)(x)


def _inverted_residual(x, expansion: int, filters: int, stride: int, prefix: str):
    in_channels = int(x.shape[-1])
    block_input = x
    if expansion != 1:
        x = keras.layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{prefix}_expand")(x)
        x = _bn(x, f"{prefix}_expand_bn")
        x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=stride, padding="same", depth_multiplier=1, use_bias=False, name=f"{prefix}_dw"
    )(x)
    x = _bn(x, f"{prefix}_dw_bn")
    x = keras.layers.ReLU(6.0, name=f"{prefix}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_project")(x)
    x = _bn(x, f"{prefix}_project_bn")
    if stride == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{prefix}_add")([block_input, x])
    return x


def mobilenet_v2(
    num_classes: int = 10,
    input_shape: Shape = (28, 28, 1),
    name: str = "mobilenet_v2",
    alpha: float = 0.35,
    *,
    stages: Optional[Sequence[Stage]] = None,
    last_filters: int = 256,
    dropout: float = 0.0,
) -> "keras.Model":
    """MobileNetV2 (Sandler et al. 2018), written out flat, sized for 32x32 images on a CPU.

    The graph of ``keras.applications.MobileNetV2`` (not called: built here layer by layer, one flat
    functional model), with a reduced stage table and last convolution by default:

    - a 28x28 input is zero-padded to 32x32 (``pad``); channels are kept (grayscale stays 1 channel);
    - stem ``stem_conv`` (3x3, stride 2, ``same``, no bias, ``_make_divisible(32 * alpha, 8)``
      filters) -> ``stem_bn`` -> ``stem_relu`` (ReLU 6);
    - inverted residual blocks ``block{i}`` (i from 0, as keras' ``block_id``), one per repeat of each
      stage ``(t, c, n, s)`` of ``stages``, the first repeat of a stage with stride s, the others 1:
      ``block{i}_expand`` (1x1, t x input channels, no bias) -> ``_expand_bn`` -> ``_expand_relu``
      (ReLU 6), omitted when t == 1; ``block{i}_dw`` (DepthwiseConv2D 3x3, depth_multiplier 1, no
      bias, ``same`` padding at both strides: for even sizes the same as keras' ZeroPadding2D
      ((0, 1), (0, 1)) + ``valid``) -> ``_dw_bn`` -> ``_dw_relu`` (ReLU 6); ``block{i}_project``
      (1x1, ``_make_divisible(int(c * alpha), 8)`` filters, no bias) -> ``_project_bn`` (linear);
      ``block{i}_add`` (input + projection) only when the stride is 1 and the channels match;
    - ``last_conv`` (1x1, no bias; ``last_filters``, or ``_make_divisible(last_filters * alpha, 8)``
      when alpha > 1, as keras does with its 1280) -> ``last_bn`` -> ``last_relu`` (ReLU 6);
    - ``gap`` (GlobalAveragePooling2D), ``dropout`` (only when ``dropout`` > 0), softmax ``head``.

    Defaults: :data:`MOBILENET_V2_STAGES`, keras' table with the repeats cut from (1, 2, 3, 4, 3, 3, 1)
    to (1, 2, 2, 2, 1, 1, 1): 10 blocks, 3 of them residual (``block2_add``, ``block4_add``,
    ``block6_add``); ``last_filters=256`` instead of 1280; alpha 0.35, so the block outputs have
    8, 8, 8, 16, 16, 24, 24, 32, 56, 112 channels. A 32x32 input ends at 1x1 (strides 2 x 2^4). BatchNorm
    uses keras.applications' epsilon 1e-3 but tf_keras' default momentum 0.99 (keras.applications:
    0.999, whose running statistics lag far behind a few hundred training steps).
    ``stages=KERAS_MOBILENET_V2_STAGES, last_filters=1280`` gives keras.applications' structure
    (same layers, same parameter count).

    Args:
        num_classes: outputs of the softmax head.
        input_shape: image shape (height, width, channels); at least 4x4.
        name: model name.
        alpha: width multiplier (keras' ``alpha``), > 0.
        stages: ``(expansion, channels, repeats, stride)`` per stage; default
            :data:`MOBILENET_V2_STAGES`.
        last_filters: filters of the last 1x1 convolution (before ``alpha`` > 1 scaling).
        dropout: rate of a Dropout before the head, in [0, 1); 0 adds no layer.

    Returns:
        An uncompiled functional ``keras.Model`` with no nested model.

    Raises:
        ValueError: a bad ``num_classes``, ``input_shape``, ``alpha``, ``stages``, ``last_filters`` or
            ``dropout`` (the message names the value).

    Example:
        >>> model = mobilenet_v2()
        >>> model.count_params()
        151530
        >>> sum(type(layer).__name__ == "DepthwiseConv2D" for layer in model.layers)
        10
        >>> [layer.name for layer in model.layers if type(layer).__name__ == "Add"]
        ['block2_add', 'block4_add', 'block6_add']
    """
    num_classes = check_num_classes(num_classes)
    input_shape = check_image_shape(input_shape, "mobilenet_v2", min_side=4)
    real = (int, float, np.integer, np.floating)
    if isinstance(alpha, bool) or not isinstance(alpha, real) or not alpha > 0:
        raise ValueError(f"mobilenet_v2 needs a width multiplier alpha > 0; received alpha={alpha!r}.")
    alpha = float(alpha)
    stages = _check_stages(MOBILENET_V2_STAGES if stages is None else stages)
    if isinstance(last_filters, bool) or not isinstance(last_filters, (int, np.integer)) or last_filters < 1:
        raise ValueError(f"Expected a positive integer. Received: last_filters={last_filters!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout is a rate in [0, 1); received dropout={dropout!r}.")

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if input_shape[:2] == (28, 28):
        x = keras.layers.ZeroPadding2D(2, name="pad")(x)
    x = keras.layers.Conv2D(
        _make_divisible(32 * alpha, 8), 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = _bn(x, "stem_bn")
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    block = 0
    for expansion, channels, repeats, stride in stages:
        filters = _make_divisible(int(channels * alpha), 8)
        for repeat in range(repeats):
            x = _inverted_residual(x, expansion, filters, stride if repeat == 0 else 1, f"block{block}")
            block += 1
    last = _make_divisible(last_filters * alpha, 8) if alpha > 1.0 else int(last_filters)
    x = keras.layers.Conv2D(last, 1, use_bias=False, name="last_conv")(x)
    x = _bn(x, "last_bn")
    x = keras.layers.ReLU(6.0, name="last_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout > 0:
        x = keras.layers.Dropout(float(dropout), name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=name)
