"""The geometry of a zip convolution: kernel size, strides, padding and dilation, checked, serialised,
and the output shapes they give (``ZipConv2D``, ``ZipDepthwiseConv2D``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from tfmot_zip.compat import tf

__all__ = ["ConvGeometryMixin", "int_pair"]


def int_pair(value: Any, name: str) -> tuple[int, int]:
    """``(a, b)`` from an int or a pair of positive ints (kernel sizes, strides); ``name`` is for the error.

    Example:
        >>> int_pair(3, "kernel_size")
        (3, 3)
    """
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"Expected an int or a pair of ints. Received: {name}={value!r}") from None
    if len(out) != 2 or min(out) <= 0:
        raise ValueError(f"Expected an int or a pair of positive ints. Received: {name}={value!r}")
    return out  # type: ignore[return-value]


class ConvGeometryMixin:
    """Kernel size, strides, padding and dilation of a zip convolution (``ZipConv2D``, ``ZipDepthwiseConv2D``).

    Example:
        >>> from tfmot_zip.model.layers import ZipConv2D
        >>> layer = ZipConv2D(task_units=[4], task_input_units=[1], input_capacity=1, kernel_size=3, strides=2,
        ...                   padding="same")
        >>> layer.compute_output_shape([(None, 8, 8, 1)])
        [[None, 4, 4, 4]]
    """

    def _init_geometry(self, kernel_size: Any, strides: Any, padding: str, dilation_rate: Any) -> None:
        self.kernel_size = int_pair(kernel_size, "kernel_size")
        self.strides = int_pair(strides, "strides")
        self.dilation_rate = int_pair(dilation_rate, "dilation_rate")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"Expected padding 'valid' or 'same'. Received: padding={padding!r}")
        self.padding = padding

    def _geometry_config(self) -> dict:
        return {
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
        }

    def compute_output_shape(self, input_shape: Any) -> list:
        from tfmot_zip.core.hessian import conv_output_size

        shapes = []
        for s, n in zip(input_shape, self.task_units):
            s = tf.TensorShape(s).as_list()
            h = None if s[1] is None else conv_output_size(s[1], self.kernel_size[0], self.strides[0], self.padding, self.dilation_rate[0])
            w = None if s[2] is None else conv_output_size(s[2], self.kernel_size[1], self.strides[1], self.padding, self.dilation_rate[1])
            shapes.append([s[0], h, w, n])
        return shapes
