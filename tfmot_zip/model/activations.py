"""Keras 3 activations that tf_keras lacks or defines differently, as registered tf_keras functions.

Keras 3's ``hard_sigmoid`` is ``relu6(x + 3) / 6``; tf_keras's ``hard_sigmoid`` is another curve
(``0.2 x + 0.5``, clipped), so a converted model must not use the name as is. ``hard_silu`` (alias
``hard_swish``, MobileNetV3) is ``x * hard_sigmoid(x)`` and has no tf_keras name. Both are registered
(``tfmot_zip>hard_sigmoid``, ``tfmot_zip>hard_silu``), so zipped models that use them save and load.
"""
from __future__ import annotations

from tfmot_zip.compat import keras, tf

__all__ = ["hard_sigmoid", "hard_silu", "KERAS3_ACTIVATIONS"]


@keras.utils.register_keras_serializable(package="tfmot_zip")
def hard_sigmoid(x: tf.Tensor) -> tf.Tensor:
    """Keras 3's hard sigmoid, ``relu6(x + 3) / 6``.

    Example:
        >>> [round(float(v), 3) for v in hard_sigmoid(tf.constant([-4.0, 0.0, 1.5, 4.0]))]
        [0.0, 0.5, 0.75, 1.0]
    """
    return tf.nn.relu6(x + 3.0) / 6.0


@keras.utils.register_keras_serializable(package="tfmot_zip")
def hard_silu(x: tf.Tensor) -> tf.Tensor:
    """Keras 3's hard SiLU (hard swish), ``x * relu6(x + 3) / 6``.

    Example:
        >>> [round(float(v), 3) for v in hard_silu(tf.constant([-4.0, 1.0, 4.0]))]
        [-0.0, 0.667, 4.0]
    """
    return x * hard_sigmoid(x)


#: Keras 3 activation name -> the tf_keras name to use in a converted layer's config.
KERAS3_ACTIVATIONS = {
    "hard_sigmoid": "tfmot_zip>hard_sigmoid",
    "hard_silu": "tfmot_zip>hard_silu",
    "hard_swish": "tfmot_zip>hard_silu",
}
