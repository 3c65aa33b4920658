"""The per-task statistics repair of a zip layer: an affine on each task's pre-activation.

With ``repair=True`` a zip layer holds, per task ``t``, ``repair_scale_t`` and ``repair_shift_t``
(one entry per task neuron) and computes ``activation(scale_t * (x W + b) + shift_t)``. The
weights exist only when repair is on, so layers (and ``.keras`` files) without it are unchanged;
``repair`` is part of the layer config, so clones and loaded models rebuild them.
:func:`tfmot_zip.zipping.repair.repair_statistics` fits them; :func:`tfmot_zip.strip_zipping` keeps
every non-identity affine as a per-task ``BatchNormalization`` in inference form (4 values per
unit: ``gamma = s``, ``beta = c``, moving mean 0, moving variance 1), which
:meth:`RepairMixin.repair_params` counts.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tfmot_zip.compat import keras, tf

__all__ = ["RepairMixin", "REPAIR_PARAMS_PER_UNIT"]

REPAIR_PARAMS_PER_UNIT = 4  # a BatchNormalization channel: gamma, beta, moving mean, moving variance


class RepairMixin:
    """Per-task repair affine of a zip layer (mixed into ``ZipDense``/``ZipConv2D``)."""

    def _init_repair(self, repair: Any) -> None:
        if not isinstance(repair, (bool, np.bool_)):
            raise ValueError(f"Expected True or False. Received: repair={repair!r}")
        self.repair = bool(repair)

    def _build_repair(self) -> None:
        self.repair_scales, self.repair_shifts = [], []
        if not self.repair:
            return
        for t, units in enumerate(self.task_units):
            self.repair_scales.append(self.add_weight(name=f"repair_scale_{t}", shape=(units,), initializer="ones", trainable=True))
            self.repair_shifts.append(self.add_weight(name=f"repair_shift_{t}", shape=(units,), initializer="zeros", trainable=True))

    def enable_repair(self) -> None:
        """Turns repair on (identity affines; weights added now if the layer is built). Idempotent.

        Example:
            >>> from tfmot_zip.model.layers import ZipDense
            >>> layer = ZipDense(task_units=[2, 3], task_input_units=[4, 4], input_capacity=4)
            >>> layer.enable_repair()
            >>> layer.build((None, 4)); [w.shape.as_list() for w in layer.repair_scales]
            [[2], [3]]
        """
        if self.repair:
            return
        self.repair = True
        if self.built:
            self._build_repair()

    def _apply_repair(self, y: tf.Tensor, task: int) -> tf.Tensor:
        if not self.repair:
            return y
        return y * tf.cast(self.repair_scales[task], y.dtype) + tf.cast(self.repair_shifts[task], y.dtype)

    def get_repair(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, shift)`` of ``task``, one entry per task neuron (identity when repair is off).

        Example:
            >>> from tfmot_zip.model.layers import ZipDense
            >>> layer = ZipDense(task_units=[2], task_input_units=[3], input_capacity=3)
            >>> layer.build((None, 3)); layer.get_repair(0)[0].tolist()
            [1.0, 1.0]
        """
        if not self.repair:
            units = self.task_units[task]
            return np.ones(units, np.float32), np.zeros(units, np.float32)
        return self.repair_scales[task].numpy(), self.repair_shifts[task].numpy()

    def set_repair(self, task: int, scale: np.ndarray, shift: np.ndarray) -> None:
        """Sets the affine of ``task`` (turns repair on if needed).

        Example:
            >>> from tfmot_zip.model.layers import ZipDense
            >>> layer = ZipDense(task_units=[2], task_input_units=[3], input_capacity=3)
            >>> layer.build((None, 3)); layer.set_repair(0, [2.0, 1.0], [0.5, 0.0])
            >>> layer.get_repair(0)[1].tolist()
            [0.5, 0.0]
        """
        scale, shift = np.asarray(scale, np.float32), np.asarray(shift, np.float32)
        units = self.task_units[task]
        if scale.shape != (units,) or shift.shape != (units,) or not (np.all(np.isfinite(scale)) and np.all(np.isfinite(shift))):
            raise ValueError(
                f"Expected finite scale and shift of shape ({units},) for task {task} of {self.name!r}; "
                f"received shapes {scale.shape} and {shift.shape}."
            )
        self.enable_repair()
        self.repair_scales[task].assign(scale)
        self.repair_shifts[task].assign(shift)

    def repaired_groups(self) -> list[tuple[frozenset, int, np.ndarray, np.ndarray]]:
        """``(tasks, task, physical units, task neurons)`` of each unit group whose affine for ``task``
        is not the identity (what ``strip_zipping`` keeps as a per-task BatchNormalization)."""
        if not self.repair:
            return []
        out = []
        for tasks, units in self.unit_groups().items():
            for t in sorted(tasks):
                neurons = _neurons_of(self.get_maps(t)[1], units)
                scale, shift = self.get_repair(t)
                if np.any(scale[neurons] != 1.0) or np.any(shift[neurons] != 0.0):
                    out.append((tasks, t, units, neurons))
        return out

    def repair_params(self) -> int:
        """Parameters the repair adds once stripped (``REPAIR_PARAMS_PER_UNIT`` per repaired unit and task).

        Example:
            >>> from tfmot_zip.model.layers import ZipDense
            >>> layer = ZipDense(task_units=[2], task_input_units=[3], input_capacity=3, repair=True)
            >>> layer.build((None, 3)); layer.repair_params()
            0
            >>> layer.set_repair(0, [2.0, 1.0], [0.0, 0.0]); layer.repair_params()
            8
        """
        return REPAIR_PARAMS_PER_UNIT * sum(len(units) for _, _, units, _ in self.repaired_groups())


def _neurons_of(out_map: np.ndarray, units: np.ndarray) -> np.ndarray:
    """The task neurons that read the physical ``units`` (in the order of ``units``)."""
    inverse = {int(u): n for n, u in enumerate(out_map)}
    return np.asarray([inverse[int(u)] for u in units], dtype=np.int64)
