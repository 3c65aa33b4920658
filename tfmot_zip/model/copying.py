"""Copies of models and layers with their weights (never the user's objects themselves)."""
from __future__ import annotations

from typing import Any

from tfmot_zip.compat import keras

__all__ = ["copy_model", "call_copy"]


def copy_model(model: Any) -> Any:
    """A new model of the same structure with copies of the weights (no optimizer state).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> copy_model(m) is not m
        True
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def call_copy(layer: Any, name: str, inputs: Any) -> Any:
    """Calls a renamed copy of ``layer`` (same config and weights) on ``inputs``; returns the output.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> dense = keras.layers.Dense(2, name="fc")
        >>> x = keras.Input((3,))
        >>> _ = dense(x)
        >>> call_copy(dense, "fc_copy", x).shape.as_list()
        [None, 2]
    """
    clone = type(layer).from_config({**layer.get_config(), "name": name})
    out = clone(inputs)
    clone.set_weights(layer.get_weights())
    return out
