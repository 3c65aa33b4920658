"""The zoo's architectures: LeNet-300-100, two LeNet-5, a small VGG, CIFAR ResNets, MobileNetV2, a tiny pair.

Plain, uncompiled tf_keras models with readable layer names (``fc1``, ``conv1``, ``head``...);
:mod:`tfmot_zip.apps.zoo` trains and caches them on Fashion-MNIST tasks. MobileNetV2 lives in
:mod:`tfmot_zip.apps.mobilenet` and is re-exported here.

Example:
    >>> lenet5().count_params()
    61706
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from tfmot_zip.apps.builder_checks import Shape, check_image_shape, check_num_classes
from tfmot_zip.apps.mobilenet import KERAS_MOBILENET_V2_STAGES, MOBILENET_V2_STAGES, mobilenet_v2
from tfmot_zip.compat import keras

__all__ = [
    "KERAS_MOBILENET_V2_STAGES",
    "MOBILENET_V2_STAGES",
    "example_pair",
    "lenet5",
    "lenet5_caffe",
    "lenet_300_100",
    "mobilenet_v2",
    "resnet",
    "resnet110",
    "resnet20",
    "resnet32",
    "resnet56",
    "small_vgg",
]



def example_pair(samples: int = 64, seed: int = 0) -> tuple["keras.Model", "keras.Model", tuple[np.ndarray, np.ndarray]]:
    """Two tiny MLPs of one architecture (random weights) and calibration inputs: for examples.

    Each model is ``Flatten`` -> Dense 16 relu ``fc1`` -> Dense 8 relu ``fc2`` -> softmax ``head``
    (3 classes) on 6x6x1 inputs, named ``task_a`` and ``task_b``; the inputs are uniform noise.
    They zip in well under a second, which is what docstring examples need; use the other
    builders and :func:`train_on_task` for real models.

    Example:
        >>> model_a, model_b, (x_a, x_b) = example_pair(samples=10)
        >>> model_a.name, model_b.name, x_a.shape
        ('task_a', 'task_b', (10, 6, 6, 1))
    """
    models = []
    for offset, name in enumerate(("task_a", "task_b")):
        keras.utils.set_random_seed(seed + offset)
        models.append(keras.Sequential([
            keras.layers.Flatten(input_shape=(6, 6, 1), name="flat"),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(8, activation="relu", name="fc2"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ], name=name))
    rng = np.random.default_rng(seed)
    x_a, x_b = (rng.random((samples, 6, 6, 1)).astype("float32") for _ in range(2))
    return models[0], models[1], (x_a, x_b)


def lenet_300_100(
    num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "lenet_300_100"
) -> "keras.Model":
    """LeNet-300-100: Flatten -> Dense 300 relu ``fc1`` -> Dense 100 relu ``fc2`` -> softmax ``head``.

    Args:
        num_classes: outputs of the softmax head.
        input_shape: image shape (height, width, channels).
        name: model name.

    Returns:
        An uncompiled ``keras.Sequential``.

    Example:
        >>> lenet_300_100().count_params()  # 784*300+300 + 300*100+100 + 100*10+10
        266610
    """
    num_classes = check_num_classes(num_classes)
    input_shape = check_image_shape(input_shape, "lenet_300_100")
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=input_shape, name="input"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(300, activation="relu", name="fc1"),
            keras.layers.Dense(100, activation="relu", name="fc2"),
            keras.layers.Dense(num_classes, activation="softmax", name="head"),
        ],
        name=name,
    )


def lenet5(num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "lenet5") -> "keras.Model":
    """LeNet-5: conv 6@5x5 same, pool, conv 16@5x5 valid, pool, Dense 120, Dense 84, softmax head.

    Layers: ``conv1``, ``pool1``, ``conv2``, ``pool2``, ``flatten``, ``fc1``, ``fc2``, ``head``.

    Args:
        num_classes: outputs of the softmax head.
        input_shape: image shape (height, width, channels); at least 12x12.
        name: model name.

    Returns:
        An uncompiled ``keras.Sequential``.

    Example:
        >>> lenet5().count_params()  # 156 + 2416 + 48120 + 10164 + 850
        61706
    """
    num_classes = check_num_classes(num_classes)
    input_shape = check_image_shape(input_shape, "lenet5", min_side=12)
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=input_shape, name="input"),
            keras.layers.Conv2D(6, 5, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(16, 5, padding="valid", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(120, activation="relu", name="fc1"),
            keras.layers.Dense(84, activation="relu", name="fc2"),
            keras.layers.Dense(num_classes, activation="softmax", name="head"),
        ],
        name=name,
    )


def lenet5_caffe(
    num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "lenet5_caffe"
) -> "keras.Model":
    """Caffe LeNet-5: conv 20@5x5 valid, pool, conv 50@5x5 valid, pool, Dense 500 ``fc1``, softmax head.

    The "LeNet-5" of the Caffe example, of Han et al. and L-OBS, and the one the MTZ paper zips;
    seven times the parameters of :func:`lenet5`. Layers: ``conv1``, ``pool1``, ``conv2``, ``pool2``,
    ``flatten``, ``fc1``, ``head``.

    Args:
        num_classes: outputs of the softmax head.
        input_shape: image shape (height, width, channels); at least 16x16.
        name: model name.

    Returns:
        An uncompiled ``keras.Sequential``.

    Example:
        >>> lenet5_caffe().count_params()  # 520 + 25050 + 400500 + 5010
        431080
    """
    num_classes = check_num_classes(num_classes)
    input_shape = check_image_shape(input_shape, "lenet5_caffe", min_side=16)
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=input_shape, name="input"),
            keras.layers.Conv2D(20, 5, padding="valid", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(50, 5, padding="valid", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(500, activation="relu", name="fc1"),
            keras.layers.Dense(num_classes, activation="softmax", name="head"),
        ],
        name=name,
    )


def small_vgg(
    num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "small_vgg"
) -> "keras.Model":
    """A small VGG: [conv 32, conv 32, pool, conv 64, conv 64, pool], Dense 128, softmax head.

    Each conv is 3x3 ``same`` with a bias, followed by BatchNormalization and ReLU
    (``conv1_1`` -> ``bn1_1`` -> ``relu1_1``, ...); then ``flatten``, ``fc1`` and ``head``.

    Args:
        num_classes: outputs of the softmax head.
        input_shape: image shape (height, width, channels); at least 4x4.
        name: model name.

    Returns:
        An uncompiled ``keras.Sequential``.

    Example:
        >>> model = small_vgg()
        >>> [layer.name for layer in model.layers][:3]
        ['conv1_1', 'bn1_1', 'relu1_1']
    """
    num_classes = check_num_classes(num_classes)
    input_shape = check_image_shape(input_shape, "small_vgg", min_side=4)
    layers: list = [keras.layers.InputLayer(input_shape=input_shape, name="input")]
    for stage, filters in ((1, 32), (2, 64)):
        for index in (1, 2):
            suffix = f"{stage}_{index}"
            layers += [
                keras.layers.Conv2D(filters, 3, padding="same", use_bias=True, name=f"conv{suffix}"),
                keras.layers.BatchNormalization(name=f"bn{suffix}"),
                keras.layers.ReLU(name=f"relu{suffix}"),
            ]
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool{stage}"))
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", name="fc1"),
        keras.layers.Dense(num_classes, activation="softmax", name="head"),
    ]
    return keras.Sequential(layers, name=name)


def _conv_bn(x, filters: int, kernel_size: int, strides: int, name: str, relu: bool):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def _check_resnet_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        below = None
        if isinstance(depth, (int, np.integer)) and not isinstance(depth, bool):
            below = max(8, 6 * ((int(depth) - 2) // 6) + 2)
        hint = f" The nearest depths are {below} and {below + 6}." if below is not None else ""
        raise ValueError(
            "A CIFAR ResNet has depth 6n+2 with n >= 1 basic blocks per stage (8, 14, 20, 32, 44, 56, "
            f"110...); received depth={depth!r}.{hint}"
        )
    return int(depth)


def resnet(
    depth: int, num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: Optional[str] = None
) -> "keras.Model":
    """CIFAR-style ResNet of depth 6n+2 (He et al. 2016): 3 stages x n basic blocks, 16/32/64 filters.

    A 28x28 input is zero-padded to 32x32 first (``pad``). Stem ``stem_conv``/``stem_bn``/``stem_relu``;
    block ``stage{s}_block{b}`` (s = 1..3, b = 1..n) has ``_1_conv``/``_1_bn``/``_1_relu``,
    ``_2_conv``/``_2_bn``, a 1x1 ``_proj_conv``/``_proj_bn`` shortcut where the shape changes (the first
    block of stages 2 and 3, stride 2), ``_add`` and ``_out`` (ReLU). Then ``gap`` and the softmax
    ``head``. Convolutions have no bias (BatchNormalization follows each). Depth counts the stem, the
    6n block convolutions and the head: 20, 32, 56 and 110 are the paper's (n = 3, 5, 9, 18).

    Args:
        depth: 6n+2 with n >= 1.
        num_classes: outputs of the softmax head.
        input_shape: image shape (height, width, channels); at least 4x4.
        name: model name; default ``f"resnet{depth}"``.

    Returns:
        An uncompiled functional ``keras.Model``.

    Raises:
        ValueError: ``depth`` not of the form 6n+2 (the message names the nearest valid depths).

    Example:
        >>> model = resnet(14, num_classes=5)
        >>> model.name, model.count_params()
        ('resnet14', 175765)
        >>> resnet(21)
        Traceback (most recent call last):
        ...
        ValueError: A CIFAR ResNet has depth 6n+2 ... received depth=21. The nearest depths are 20 and 26.
    """
    depth = _check_resnet_depth(depth)
    num_classes = check_num_classes(num_classes)
    arch = f"resnet{depth}"
    input_shape = check_image_shape(input_shape, arch, min_side=4)
    blocks_per_stage = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if input_shape[:2] == (28, 28):
        x = keras.layers.ZeroPadding2D(2, name="pad")(x)
    x = _conv_bn(x, 16, 3, 1, "stem", relu=True)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks_per_stage + 1):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            y = _conv_bn(x, filters, 3, strides, f"{prefix}_1", relu=True)
            y = _conv_bn(y, filters, 3, 1, f"{prefix}_2", relu=False)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = _conv_bn(shortcut, filters, 1, strides, f"{prefix}_proj", relu=False)
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{prefix}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=name if name is not None else arch)


def resnet20(
    num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "resnet20"
) -> "keras.Model":
    """CIFAR-style ResNet-20: :func:`resnet` with depth 20 (3 stages x 3 basic blocks, 16/32/64 filters).

    Layer names as in :func:`resnet` (``pad``, ``stem_conv``, ``stage2_block1_proj_conv``, ...,
    ``gap``, ``head``); cached zoo models and benchmarks rely on them.

    Args:
        num_classes: outputs of the softmax head.
        input_shape: image shape (height, width, channels); at least 4x4.
        name: model name.

    Returns:
        An uncompiled functional ``keras.Model``.

    Example:
        >>> resnet20().count_params()
        273754
    """
    return resnet(20, num_classes=num_classes, input_shape=input_shape, name=name)


def resnet32(
    num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "resnet32"
) -> "keras.Model":
    """CIFAR-style ResNet-32: :func:`resnet` with depth 32 (5 basic blocks per stage).

    Example:
        >>> resnet32().count_params()
        469082
    """
    return resnet(32, num_classes=num_classes, input_shape=input_shape, name=name)


def resnet56(
    num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "resnet56"
) -> "keras.Model":
    """CIFAR-style ResNet-56: :func:`resnet` with depth 56 (9 basic blocks per stage).

    Example:
        >>> resnet56().count_params()
        859738
    """
    return resnet(56, num_classes=num_classes, input_shape=input_shape, name=name)


def resnet110(
    num_classes: int = 10, input_shape: Shape = (28, 28, 1), name: str = "resnet110"
) -> "keras.Model":
    """CIFAR-style ResNet-110: :func:`resnet` with depth 110 (18 basic blocks per stage).

    Example:
        >>> resnet110().count_params()
        1738714
    """
    return resnet(110, num_classes=num_classes, input_shape=input_shape, name=name)
