"""Argument checks shared by the zoo's model builders (architectures and mobilenet).

Example:
    >>> check_image_shape((28, 28, 1), "lenet5", min_side=12)
    (28, 28, 1)
    >>> check_num_classes(0)
    Traceback (most recent call last):
    ...
    ValueError: Expected a positive integer. Received: num_classes=0
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["Shape", "check_image_shape", "check_num_classes"]

#: An image shape (height, width, channels).
Shape = Sequence[int]


def check_num_classes(num_classes: int) -> int:
    """``num_classes`` as an int, or a ValueError naming it when it is not a positive integer."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"Expected a positive integer. Received: num_classes={num_classes!r}")
    return int(num_classes)


def check_image_shape(input_shape: Shape, arch: str, min_side: int = 1) -> tuple[int, int, int]:
    """``input_shape`` as a tuple of 3 positive ints at least ``min_side`` high and wide, else a ValueError."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(
            f"{arch} expects input_shape=(height, width, channels) of positive ints; received "
            f"input_shape={input_shape!r}. Fashion-MNIST images are (28, 28, 1)."
        )
    if min(shape[:2]) < min_side:
        raise ValueError(
            f"{arch} needs images of at least {min_side}x{min_side}; received input_shape={shape}. "
            "Resize or pad the images."
        )
    return tuple(int(d) for d in shape)  # type: ignore[return-value]
