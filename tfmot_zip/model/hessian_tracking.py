"""Hessian accumulation inside zip layers, for zipping during ``fit`` (:class:`~tfmot_zip.ZipCallback`).

A scheduled zip layer accumulates ``sum x~ x~^T`` of its inputs on the training batches, per task,
in ``ON_READ``/``SUM`` variables (summed over replicas under ``tf.distribute``), plus the flags and
counters of the schedule, so that checkpoints and ``.keras`` files carry the zipping state.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tfmot_zip.compat import keras, tf

__all__ = ["HessianTrackingMixin"]


class HessianTrackingMixin:
    """The schedule state and streaming Hessians of a zip layer (mixed into the zip layers)."""

    def _init_schedule(self, track_hessians: bool, zip_options: Any, max_rows_per_step: int, zip_record: Any) -> None:
        self.track_hessians = bool(track_hessians)
        self.zip_options = dict(zip_options) if zip_options else None
        self.zip_record = zip_record
        if not isinstance(max_rows_per_step, (int, np.integer)) or max_rows_per_step <= 0:
            raise ValueError(f"Expected a positive max_rows_per_step. Received: {max_rows_per_step!r}")
        self.max_rows_per_step = int(max_rows_per_step)

    @property
    def zip_record(self) -> dict | None:
        """What zipping did at this layer (shared units, merge cost, pairs, seconds): part of the
        layer config, so it survives cloning, saving and loading (read by ``zip_summary``)."""
        return self._zip_record

    @zip_record.setter
    def zip_record(self, record: Any) -> None:
        # Kept out of Keras' attribute tracking: a tracked dict is walked, pair by pair, by every
        # read of ``layer.weights`` (a ResNet50 zip layer's ``get_weights`` took 7 ms, not 0.5 ms).
        object.__setattr__(self, "_zip_record", dict(record) if record else None)

    def _task_input_dim(self, task: int) -> int:
        return self.task_input_units[task]

    def _build_schedule_state(self) -> None:
        """Variables of layer-wise zipping: flags, counters and streaming Hessian sums.

        The sums are ``ON_READ``/``SUM`` variables: under ``tf.distribute`` each replica
        accumulates its own batches and reading them gives the total over replicas.
        """
        if not self.track_hessians:
            return
        scalar = dict(shape=(), trainable=False)
        self.zip_pending = self.add_weight(name="zip_pending", dtype="bool", initializer=keras.initializers.Constant(False), **scalar)
        self.zip_accumulate = self.add_weight(name="zip_accumulate", dtype="bool", initializer=keras.initializers.Constant(False), **scalar)
        self.zip_step = self.add_weight(name="zip_step", dtype="int64", initializer=keras.initializers.Constant(-1), **scalar)
        self.zip_done = self.add_weight(name="zip_done", dtype="int64", initializer="zeros", **scalar)
        self.zip_counter = self.add_weight(name="zip_counter", dtype="int64", initializer="zeros", **scalar)
        on_read = dict(
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
            initializer="zeros",
            dtype="float64",
        )
        self.hessian_sums = []
        self.hessian_counts = []
        for t in range(self.num_tasks):
            d = self._task_input_dim(t) + 1
            self.hessian_sums.append(self.add_weight(name=f"hessian_sum_{t}", shape=(d, d), **on_read))
            self.hessian_counts.append(self.add_weight(name=f"hessian_count_{t}", shape=(), **on_read))

    def _layer_rows(self, x: tf.Tensor) -> tf.Tensor:
        """``[rows, d]`` layer inputs (patches for convolutions) of one batch."""
        return tf.reshape(x, (-1, x.shape[-1]))

    def _accumulate(self, task: int, x: tf.Tensor) -> tf.Operation:
        rows = tf.cast(self._layer_rows(x), tf.float32)
        n = tf.shape(rows)[0]
        if self.max_rows_per_step:
            keep = tf.minimum(n, self.max_rows_per_step)
            idx = tf.random.shuffle(tf.range(n))[:keep]
            rows = tf.gather(rows, idx)
        ones = tf.ones((tf.shape(rows)[0], 1), rows.dtype)
        rows = tf.concat([rows, ones], axis=1)
        product = tf.cast(tf.matmul(rows, rows, transpose_a=True), tf.float64)
        return tf.group(
            self.hessian_sums[task].assign_add(product),
            self.hessian_counts[task].assign_add(tf.cast(tf.shape(rows)[0], tf.float64)),
        )

    def _schedule_hook(self, inputs: list, training: Any) -> list:
        """Checks that ``ZipCallback`` drives a pending layer and accumulates Hessians."""
        if not self.track_hessians or not training:
            return []
        check = tf.debugging.Assert(
            tf.logical_or(tf.logical_not(self.zip_pending), self.zip_step >= 0),
            [
                f"Layer {self.name!r} still has units to zip, but no tfmot_zip.ZipCallback is "
                "driving the training. Add callbacks=[tfmot_zip.ZipCallback()] to model.fit."
            ],
        )
        ops = [check]
        for t, x in enumerate(inputs):
            ops.append(tf.cond(self.zip_accumulate, lambda t=t, x=x: self._accumulate(t, x), tf.no_op))
        return ops

    def hessian(self, task: int) -> np.ndarray:
        """The accumulated ``E[x~ x~^T]`` of ``task`` (summed over replicas)."""
        count = float(self.hessian_counts[task].numpy())
        if count <= 0:
            raise ValueError(f"Layer {self.name!r} has not accumulated any input for task {task}.")
        return self.hessian_sums[task].numpy() / count

    def reset_hessians(self) -> None:
        for var in self.hessian_sums + self.hessian_counts:
            var.assign(tf.zeros(var.shape, var.dtype))

    def _schedule_config(self) -> dict:
        return {
            "track_hessians": self.track_hessians,
            "zip_options": self.zip_options,
            "max_rows_per_step": self.max_rows_per_step,
            "zip_record": self.zip_record,
        }
