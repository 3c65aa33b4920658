"""Depthwise convolutions in the zipper: merged when the unit space they read is zipped.

A ``ZipDepthwiseConv2D`` has no pairing of its own (channel ``c`` reads only channel ``c``). Once
the writers of the space it reads that come before it are merged in a pass, each pair ``(physical unit u, channel j
of the task being merged)`` of that space merges the two channels' ``kh x kw`` (+ bias) weights
with the strategy's rule, every coordinate shared, using each channel's own patch Hessian
(:mod:`tfmot_zip.core.depthwise`); the merge cost is summed into the layer's record. Mixed into
:class:`~tfmot_zip.zipping.zipper.Zipper` (uses its fields).
"""
from __future__ import annotations

import time

import numpy as np

from tfmot_zip.core import MergeSide, center_hessian, extract_patches, merge_cost_matrix
from tfmot_zip.core.depthwise import ChannelHessianAccumulator, channel_patches, invert_channel_hessians
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.graph import AlignedNode
from tfmot_zip.model.spaces import UnitSpace

__all__ = ["DepthwiseMixin"]


class DepthwiseMixin:
    """Depthwise layers of the zipper: found, measured and merged after their space."""

    def _init_depthwise(self, record_type: type) -> None:
        """Finds the zipped model's depthwise layers; ``record_type`` makes their ``LayerRecord``."""
        names = {layer.name for layer in self.model.layers}
        self.depthwise_nodes = [  # not one reading the raw input: that one is copied per task
            n for n in self.graph.nodes
            if n.kind == "depthwise" and n.name in names and isinstance(self.model.get_layer(n.name), ZipDepthwiseConv2D)
        ]
        self.merged_depthwise: set[int] = set()
        for node in self.depthwise_nodes:
            layer = self.model.get_layer(node.name)
            self._layers[node.index] = layer
            self.weights[node.index] = [layer.get_task_weights(t) for t in range(self.n_tasks)]
            self.records[node.index] = record_type(node.name, "depthwise", list(layer.task_units))

    def depthwise_space(self, node: AlignedNode) -> UnitSpace:
        return self.spaces[self.features[node.inbound[0]].space]

    def depthwise_hessians(self, node: AlignedNode) -> list[np.ndarray]:
        """``[channels, d, d]`` per-channel Hessians of every task up to the current one."""
        if self.hessian_provider is not None:
            raise ValueError(
                f"Depthwise layer {node.name!r} needs calibration data to be zipped: its channels' Hessians "
                "are measured on it. Pass ZipCallback(calibration_data=(x_a, x_b, ...))."
            )
        layer = self.layer(node)
        positions = layer.kernel_size[0] * layer.kernel_size[1]
        tasks = list(range(self.task + 1))
        accumulators = {t: ChannelHessianAccumulator(positions, layer.task_units[t]) for t in tasks}
        for t, batch in self._layer_input_batches(node, tasks):
            rows = extract_patches(batch, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
            accumulators[t].update(channel_patches(rows, positions))
        out = []
        for t in tasks:
            accumulators[t].reduce(self.activations().replicas.sum_all)  # over the workers of a tf.distribute strategy
            h = accumulators[t].hessians()
            if self.strategy.centered:
                h = np.stack([center_hessian(block) for block in h])
            out.append(h if layer.use_bias else h[:, :-1, :-1])
        return out

    def _channel_rows(self, node: AlignedNode, task: int) -> np.ndarray:
        """``[channels, d]`` weights of each of ``task``'s channels (bias last)."""
        kernel, bias = self.weights[node.index][task]
        rows = kernel[:, :, :, 0].reshape(-1, kernel.shape[2]).T.astype(np.float64)
        return rows if bias is None else np.hstack([rows, bias.astype(np.float64)[:, None]])

    def _store_channels(self, node: AlignedNode, task: int, channels: np.ndarray, rows: np.ndarray) -> None:
        kernel, bias = (None if w is None else w.copy() for w in self.weights[node.index][task])
        kh, kw = kernel.shape[:2]
        kernel[:, :, channels, 0] = rows[:, : kh * kw].T.reshape(kh, kw, len(channels))
        if bias is not None:
            bias[channels] = rows[:, -1]
        self.weights[node.index][task] = (kernel, bias)

    def _channel_inverses(self, node: AlignedNode, groups: list[dict], cols: np.ndarray) -> list[tuple]:
        """``(merged side's inverse, new task's inverse)`` per pair: identity for strategies without
        Hessians; else the sum of the group's inverses, or the inverse of its summed Hessians ("exact")."""
        d = self._channel_rows(node, self.task).shape[1]
        if not self.strategy.needs_hessian:
            return [(np.eye(d), np.eye(d))] * len(cols)
        hessians = self.depthwise_hessians(node)
        if self.merged_hessian == "exact":
            summed = np.stack([sum(hessians[t][c] for t, c in group.items()) for group in groups])
            return list(zip(invert_channel_hessians(summed, self.damping),
                            invert_channel_hessians(hessians[self.task][cols], self.damping)))
        inverses = [invert_channel_hessians(h, self.damping) for h in hessians]
        return [(sum(inverses[t][c] for t, c in group.items()), inverses[self.task][j]) for group, j in zip(groups, cols)]

    def merge_depthwise(self, node: AlignedNode) -> None:
        """Merges the channels the current pass paired in the space this layer reads."""
        start = time.perf_counter()
        space = self.depthwise_space(node)
        units, cols = space.pairs if space.pairs is not None else (np.zeros(0, np.int64),) * 2
        n, record, layer = self.task, self.records[node.index], self.layer(node)
        if len(units):
            rows = {t: self._channel_rows(node, t) for t in range(n + 1)}
            channel_of = [{int(u): c for c, u in enumerate(space.maps[t])} for t in range(n)]
            # The tasks (and their channels) already sharing each paired physical unit.
            groups = [{t: channel_of[t][int(u)] for t in range(n) if int(u) in channel_of[t]} for u in units]
            everything = np.arange(rows[n].shape[1])
            for group, j, (inv_g, inv_n) in zip(groups, cols, self._channel_inverses(node, groups, cols)):
                first, c = next(iter(group.items()))
                side_g = MergeSide.from_hessian_inverse(rows[first][c][None], inv_g, everything)
                side_n = MergeSide.from_hessian_inverse(rows[n][j][None], inv_n, everything)
                if self.strategy.needs_hessian:
                    record.merge_cost += float(merge_cost_matrix(side_g, side_n)[0, 0])
                else:
                    record.merge_cost += float(np.sum((side_g.weights - side_n.weights) ** 2))
                g_new, n_new = self.strategy.merge(side_g, side_n, np.zeros(1, np.int64), np.zeros(1, np.int64))
                for t, c in group.items():
                    rows[t][c] = g_new[0]
                rows[n][j] = n_new[0]
            for t in range(n + 1):
                changed = np.asarray(sorted({c for group in groups for tt, c in group.items() if tt == t}), np.int64)
                changed = np.asarray(cols, np.int64) if t == n else changed
                if len(changed):
                    self._store_channels(node, t, changed, rows[t][changed])
        layer.set_maps(n, in_map=space.maps[n])
        self._write(node)
        record.shared += int(len(units))
        record.pairs.append((n, units, cols))
        record.seconds += time.perf_counter() - start
        layer.zip_record = record.as_config()  # kept with the layer, so a saved ZipCallback run resumes
        self.merged_depthwise.add(node.index)

    def merge_ready_depthwise(self) -> None:
        """Merges every depthwise layer whose space is decided and whose input is merged in this pass."""
        for node in self.depthwise_nodes:
            if node.index in self.merged_depthwise:
                continue
            space = self.depthwise_space(node)
            # The writers it reads through (those before it); a later writer (a squeeze-and-excitation
            # gate reading this layer's output) merges after it.
            if space.id in self.decided and all(w in self.merged for w in space.writers if w < node.index):
                self.merge_depthwise(node)
