"""What the zipper measures at a layer: its inputs' Hessians on every task's calibration data
(exact or per-kernel-position blocks for convolutions) and, for strategies that need them, its
output features on common inputs. Mixed into :class:`~tfmot_zip.zipping.zipper.Zipper`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras, tf
from tfmot_zip.core import BlockHessianAccumulator, HessianAccumulator, center_hessian, extract_patches
from tfmot_zip.model.graph import AlignedNode

__all__ = ["LayerStatisticsMixin"]


class LayerStatisticsMixin:
    """Hessians and activation statistics of the zipper's layers (uses the zipper's fields)."""

    def _batch_size_for(self, node: AlignedNode) -> int:
        """Smaller batches for convolutions so that one batch's patch matrix stays ~64 MB."""
        if node.kind not in ("conv", "depthwise"):
            return self.batch_size
        layer = self.layer(node)
        shape = layer.output[0].shape
        floats = int(shape[1]) * int(shape[2]) * layer.kernel_size[0] * layer.kernel_size[1] * max(layer.task_input_units)
        return int(max(8, min(self.batch_size, 16_000_000 // max(1, floats))))

    def _layer_input_batches(self, node: AlignedNode, tasks: Sequence[int]):
        """Yields ``(task, batch)`` of layer inputs, every task on its own calibration data.

        One forward pass serves all tasks: each input gets its task's batch (a task whose data
        ran out gets zeros, and its outputs are dropped).
        """
        first, count = self._input_slots()[node.index]
        extractor = self._extract_all

        def pick(outs):
            return outs[first : first + count]

        single = len(self.model.inputs) == 1
        longest = max(len(self.calibration[t]) for t in tasks)
        batch_size = self._batch_size_for(node)
        for start in range(0, longest, batch_size):
            if single:
                for t in tasks:
                    data = self.calibration[t]
                    if start < len(data):
                        outs = pick(extractor(data[start : start + batch_size]))
                        yield t, np.asarray(outs[t])
                continue
            size = min(batch_size, longest - start)
            feeds = []
            for data in self.calibration:
                chunk = data[start : start + size]
                if len(chunk) < size:
                    pad = np.zeros((size - len(chunk),) + data.shape[1:], data.dtype)
                    chunk = np.concatenate([chunk, pad]) if len(chunk) else pad
                feeds.append(chunk)
            outs = pick(extractor(feeds))
            for t in tasks:
                valid = max(0, min(size, len(self.calibration[t]) - start))
                if valid:
                    yield t, np.asarray(outs[t])[:valid]

    def _input_slots(self) -> dict[int, tuple[int, int]]:
        """Builds, once, one traced function giving the inputs of every zip and depthwise layer.

        Returns ``{node index: (first output, tasks)}``. One function for the whole zip: the layers'
        weights and maps are variables, so merges change what it computes without tracing it again
        (a model and a trace per layer used to cost seconds per layer on deep networks).
        """
        slots = getattr(self, "_slots", None)
        if slots is None:
            outputs, slots = [], {}
            for index in sorted(self._layers):
                inputs = list(self._layers[index].input)
                slots[index] = (len(outputs), len(inputs))
                outputs.extend(inputs)
            model = keras.Model(self.model.inputs, outputs)
            self._extract_all = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            self._slots = slots
        return slots

    def hessians(self, node: AlignedNode) -> list[np.ndarray]:
        """Layer Hessians ``E[x~ x~^T]`` of every task up to the current one (bias last when used).

        Undamped: the damping is added where they are inverted (:meth:`_invert`)."""
        if node.index in self._hessian_cache:
            return self._hessian_cache[node.index]
        layer = self.layer(node)
        tasks = list(range(self.task + 1))
        if self.hessian_provider is not None:
            hessians = []
            for t in tasks:
                h = self._centered(self.hessian_provider(layer, t))
                hessians.append(h if layer.use_bias else h[:-1, :-1])
            self._hessian_cache[node.index] = hessians
            return hessians
        accumulators: dict[int, HessianAccumulator] = {}
        self.records[node.index].hessian_rows = [0, 0]  # of this measurement (every task so far)
        for t, batch in self._layer_input_batches(node, tasks):
            if node.kind == "conv":
                rows = extract_patches(batch, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
                available = rows.shape[0]
                if self.max_conv_rows is not None:
                    n_batches = -(-len(self.calibration[t]) // self._batch_size_for(node))
                    cap = max(1, self.max_conv_rows // n_batches)
                    if rows.shape[0] > cap:  # evenly subsample positions to bound the cost (reported)
                        rows = rows[self.rng.choice(rows.shape[0], size=cap, replace=False)]
                record = self.records[node.index].hessian_rows
                record[0], record[1] = record[0] + rows.shape[0], record[1] + available
                dtype = np.float32
            else:
                rows = batch.reshape(batch.shape[0], -1)
                dtype = np.float64
            if t not in accumulators:
                if node.kind == "conv" and self.uses_block_hessian(node):
                    positions = layer.kernel_size[0] * layer.kernel_size[1]
                    accumulators[t] = BlockHessianAccumulator(positions, rows.shape[1] // positions)
                else:
                    accumulators[t] = HessianAccumulator(rows.shape[1], batch_dtype=dtype)
            accumulators[t].update(rows)
        hessians = []
        for t in tasks:
            h = self._centered(accumulators[t].hessian())
            if not layer.use_bias:
                h = h[:-1, :-1]
            hessians.append(h)
        self._hessian_cache[node.index] = hessians
        return hessians

    def _centered(self, hessian: np.ndarray) -> np.ndarray:
        """The Hessian the strategy scores with (the covariance form for ``mtz-centered``)."""
        return center_hessian(hessian) if self.strategy.centered else hessian

    def uses_block_hessian(self, node: AlignedNode) -> bool:
        """Whether this conv layer's Hessian uses the per-kernel-position block approximation."""
        if node.kind != "conv" or self.conv_hessian == "exact":
            return False
        if self.conv_hessian == "block":
            return True
        layer = self.layer(node)
        widest = max(layer.task_input_units) * layer.kernel_size[0] * layer.kernel_size[1] + 1
        return widest > self.block_threshold

    def statistics(self, node: AlignedNode) -> dict:
        """Extra inputs of a strategy: output features on common inputs when needed."""
        if not self.strategy.needs_activations:
            return {}
        if node.index in self._stats_cache:
            return self._stats_cache[node.index]
        per_task = max(1, self.activation_samples // (self.task + 1))
        common = np.concatenate([self.calibration[t][:per_task] for t in range(self.task + 1)])
        extractor = keras.Model(self.model.inputs, list(self.layer(node).output))
        feats: list[list[np.ndarray]] = [[] for _ in range(self.n_tasks)]
        for start in range(0, len(common), self.batch_size):
            chunk = common[start : start + self.batch_size]
            outs = extractor(chunk if len(self.model.inputs) == 1 else [chunk] * self.n_tasks, training=False)
            for t in range(self.task + 1):
                out = np.asarray(outs[t])
                feats[t].append(out.reshape(-1, out.shape[-1]))
        stats = {"features": [np.concatenate(f) if f else None for f in feats]}
        self._stats_cache[node.index] = stats
        return stats
