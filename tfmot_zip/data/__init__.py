"""Fashion-MNIST from the local Debian files, tasks made from it, the multi-task pipeline, data specs.

The task names below (:mod:`tfmot_zip.data.tasks`: ``make_task``, ``multitask``, ``as_inputs``...)
resolve on first use, so that importing a numpy-only module of this package
(:mod:`tfmot_zip.data.fashion_mnist`, :mod:`tfmot_zip.data.specs`) does not import TensorFlow.

Example:
    >>> from tfmot_zip import data
    >>> data.make_task("classes_0_4").num_classes
    5
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TASK_NAMES", "Task", "as_inputs", "make_class_task", "make_task", "multitask", "transpose_images"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tfmot_zip.data.tasks"), name)
    raise AttributeError(f"module 'tfmot_zip.data' has no attribute {name!r}")
