"""The bottom-up zipping procedure (DESIGN.md section 2), driving the numpy core.

For every hidden Dense/Conv2D position in topological order: compute each task's layer-wise
Hessian from its calibration data run through the already-zipped lower layers, score all
neuron pairs, select ``k`` pairs, apply the merge update, and re-index the layers that read
the zipped units. A residual stream (several layers writing into one ``Add``) is paired once,
from the summed costs of the writers whose inputs are already zipped when the stream is first
reached; its later writers follow that pairing with their own update.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core import HessianAccumulator, MergeSide, extract_patches, invert_hessian, select_pairs
from tfmot_zip.graph import AlignedNode, ModelGraph
from tfmot_zip.spaces import Feature, UnitSpace
from tfmot_zip.strategies import Strategy

__all__ = ["LayerRecord", "Zipper"]


@dataclass
class LayerRecord:
    """What happened at one zip-able layer."""

    name: str
    kind: str
    widths: list[int]
    shared: int = 0
    merge_cost: float = 0.0
    seconds: float = 0.0
    pairs: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class Zipper:
    """Holds the logical per-task weights and applies the zipping layer by layer."""

    model: keras.Model
    graph: ModelGraph
    features: dict[int, Feature]
    spaces: dict[int, UnitSpace]
    calibration: Sequence[np.ndarray]
    strategy: Strategy
    selection: str = "greedy"
    damping: float = 1e-4
    batch_size: int = 256
    seed: int = 0
    max_conv_rows: int = 2_000_000
    activation_samples: int = 2_000
    progress: Callable[[str], None] | None = None
    records: dict[int, LayerRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n_tasks = len(self.graph.models)
        self.rng = np.random.default_rng(self.seed)
        self.weights: dict[int, list[tuple[np.ndarray, np.ndarray | None]]] = {}
        self.merged: set[int] = set()
        self._hessian_cache: dict[int, list[np.ndarray]] = {}
        self._stats_cache: dict[int, dict] = {}
        for node in self.graph.zip_nodes():
            layer = self.layer(node)
            self.weights[node.index] = [layer.get_task_weights(t) for t in range(self.n_tasks)]
            self.records[node.index] = LayerRecord(node.name, node.kind, list(layer.task_units))

    # --- helpers --------------------------------------------------------------------------
    def layer(self, node: AlignedNode):
        return self.model.get_layer(node.name)

    def input_feature(self, node: AlignedNode) -> Feature:
        return self.features[node.inbound[0]]

    def input_ready(self, node: AlignedNode) -> bool:
        feature = self.input_feature(node)
        return feature.kind == "input" or self.spaces[feature.space].decided

    def consumers(self, space: UnitSpace) -> list[AlignedNode]:
        return [n for n in self.graph.zip_nodes() if self.input_feature(n).kind == "units" and self.input_feature(n).space == space.id]

    def _write(self, node: AlignedNode) -> None:
        layer = self.layer(node)
        for t, (kernel, bias) in enumerate(self.weights[node.index]):
            layer.set_task_weights(t, kernel, bias)

    # --- Hessians -------------------------------------------------------------------------
    def _layer_input_batches(self, node: AlignedNode):
        """Yields ``(task, batch)`` of layer inputs, every task on its own calibration data.

        One forward pass serves all tasks: each input gets its task's batch (a task whose data
        ran out gets zeros, and its outputs are dropped).
        """
        layer = self.layer(node)
        extractor = keras.Model(self.model.inputs, list(layer.input))
        single = len(self.model.inputs) == 1
        longest = max(len(d) for d in self.calibration)
        for start in range(0, longest, self.batch_size):
            if single:
                for t, data in enumerate(self.calibration):
                    if start < len(data):
                        outs = extractor(data[start : start + self.batch_size], training=False)
                        yield t, np.asarray(outs[t])
                continue
            size = min(self.batch_size, longest - start)
            feeds = []
            for data in self.calibration:
                chunk = data[start : start + size]
                if len(chunk) < size:
                    pad = np.zeros((size - len(chunk),) + data.shape[1:], data.dtype)
                    chunk = np.concatenate([chunk, pad]) if len(chunk) else pad
                feeds.append(chunk)
            outs = extractor(feeds, training=False)
            for t, data in enumerate(self.calibration):
                valid = max(0, min(size, len(data) - start))
                if valid:
                    yield t, np.asarray(outs[t])[:valid]

    def hessian_inverses(self, node: AlignedNode) -> list[np.ndarray]:
        """Inverse damped layer Hessian of every task (bias coordinate last when used)."""
        if node.index in self._hessian_cache:
            return self._hessian_cache[node.index]
        layer = self.layer(node)
        accumulators: list[HessianAccumulator | None] = [None] * self.n_tasks
        for t, batch in self._layer_input_batches(node):
            if node.kind == "conv":
                rows = extract_patches(batch, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
                n_batches = -(-len(self.calibration[t]) // self.batch_size)
                cap = max(1, self.max_conv_rows // n_batches)
                if rows.shape[0] > cap:  # evenly subsample positions to bound the cost
                    rows = rows[self.rng.choice(rows.shape[0], size=cap, replace=False)]
            else:
                rows = batch.reshape(batch.shape[0], -1)
            if accumulators[t] is None:
                accumulators[t] = HessianAccumulator(rows.shape[1])
            accumulators[t].update(rows)
        inverses = []
        for acc in accumulators:
            h = acc.hessian()
            if not layer.use_bias:
                h = h[:-1, :-1]
            inverses.append(invert_hessian(h, self.damping))
        self._hessian_cache[node.index] = inverses
        return inverses

    def statistics(self, node: AlignedNode) -> dict:
        """Extra inputs of a strategy: output-feature correlation on shared inputs when needed."""
        if not self.strategy.needs_activations:
            return {}
        if node.index in self._stats_cache:
            return self._stats_cache[node.index]
        from tfmot_zip.strategies import feature_correlation

        per_task = max(1, self.activation_samples // self.n_tasks)
        common = np.concatenate([d[:per_task] for d in self.calibration])
        extractor = keras.Model(self.model.inputs, list(self.layer(node).output))
        feats: list[list[np.ndarray]] = [[] for _ in range(self.n_tasks)]
        for start in range(0, len(common), self.batch_size):
            chunk = common[start : start + self.batch_size]
            outs = extractor(chunk if len(self.model.inputs) == 1 else [chunk] * self.n_tasks, training=False)
            for t in range(self.n_tasks):
                out = np.asarray(outs[t])
                feats[t].append(out.reshape(-1, out.shape[-1]))
        stats = {"correlation": feature_correlation(np.concatenate(feats[0]), np.concatenate(feats[1]))}
        self._stats_cache[node.index] = stats
        return stats

    # --- sides ------------------------------------------------------------------------------
    def _coordinate_ids(self, node: AlignedNode, task: int) -> np.ndarray:
        layer = self.layer(node)
        in_map, _ = layer.get_maps(task)
        if node.kind == "dense":
            return in_map
        positions = layer.kernel_size[0] * layer.kernel_size[1]
        return (np.arange(positions)[:, None] * layer.input_capacity + in_map[None, :]).reshape(-1)

    def _rows(self, node: AlignedNode, task: int) -> np.ndarray:
        kernel, bias = self.weights[node.index][task]
        n_out = kernel.shape[-1]
        rows = kernel.reshape(-1, n_out).T.astype(np.float64)
        if bias is not None:
            rows = np.hstack([rows, bias.astype(np.float64)[:, None]])
        return rows

    def sides(self, node: AlignedNode, a: int = 0, b: int = 1) -> tuple[MergeSide, MergeSide]:
        ids_a, ids_b = self._coordinate_ids(node, a), self._coordinate_ids(node, b)
        _, idx_a, idx_b = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
        rows_a, rows_b = self._rows(node, a), self._rows(node, b)
        if self.layer(node).use_bias:
            idx_a = np.append(idx_a, rows_a.shape[1] - 1)
            idx_b = np.append(idx_b, rows_b.shape[1] - 1)
        if self.strategy.needs_hessian:
            inv = self.hessian_inverses(node)
            inv_a, inv_b = inv[a], inv[b]
        else:
            inv_a, inv_b = np.eye(rows_a.shape[1]), np.eye(rows_b.shape[1])
        return (
            MergeSide.from_hessian_inverse(rows_a, inv_a, idx_a),
            MergeSide.from_hessian_inverse(rows_b, inv_b, idx_b),
        )

    def _store_rows(self, node: AlignedNode, task: int, rows: np.ndarray) -> None:
        kernel, bias = self.weights[node.index][task]
        has_bias = bias is not None
        body = rows[:, :-1] if has_bias else rows
        new_kernel = body.T.reshape(kernel.shape).astype(kernel.dtype)
        new_bias = rows[:, -1].astype(bias.dtype) if has_bias else None
        self.weights[node.index][task] = (new_kernel, new_bias)

    # --- the procedure --------------------------------------------------------------------------
    def merge_node(self, node: AlignedNode, rows: np.ndarray, cols: np.ndarray, sides=None) -> None:
        """Applies the strategy's update to the pairs of this layer's (decided) space."""
        start = time.perf_counter()
        side_a, side_b = sides if sides is not None else self.sides(node)
        record = self.records[node.index]
        if len(rows):
            costs = self.strategy.costs(side_a, side_b, self.rng, self.statistics(node))
            record.merge_cost = float(costs[rows, cols].sum())
            new_a, new_b = self.strategy.merge(side_a, side_b, rows, cols)
            self._store_rows(node, 0, new_a)
            self._store_rows(node, 1, new_b)
        record.shared = int(len(rows))
        record.pairs = (rows, cols)
        record.seconds += time.perf_counter() - start
        self.merged.add(node.index)

    def decide(self, space: UnitSpace, k: int, selection: str) -> None:
        """Chooses the pairing of a space and re-indexes every layer writing or reading it."""
        start = time.perf_counter()
        ready = [self.graph.nodes[w] for w in space.writers if self.input_ready(self.graph.nodes[w])]
        side_cache = {}
        rows = cols = np.zeros(0, np.int64)
        if k > 0:
            total = None
            for writer in ready:
                side_cache[writer.index] = self.sides(writer)
                costs = self.strategy.costs(*side_cache[writer.index], self.rng, self.statistics(writer))
                total = costs if total is None else total + costs
            rows, cols = select_pairs(total, k, selection)
        decide_seconds = time.perf_counter() - start
        for writer in ready:
            self.merge_node(writer, rows, cols, side_cache.get(writer.index))
        self.records[ready[0].index].seconds += decide_seconds
        space.pairs = (rows, cols)
        space.maps[1][cols] = space.maps[0][rows]
        space.decided = True
        for w in space.writers:
            layer = self.layer(self.graph.nodes[w])
            for t in range(self.n_tasks):
                layer.set_maps(t, out_map=space.maps[t])
        for consumer in self.consumers(space):
            layer = self.layer(consumer)
            for t in range(self.n_tasks):
                layer.set_maps(t, in_map=self.input_feature(consumer).in_map(self.spaces, t))
        for node_index in set(space.writers) | {c.index for c in self.consumers(space)}:
            self._write(self.graph.nodes[node_index])

    def run(self, shares: dict[str, int], selection: str | None = None) -> dict[int, LayerRecord]:
        """Zips every hidden layer bottom-up; ``shares`` maps layer names to pair counts."""
        selection = selection or self.selection
        for node in self.graph.hidden_zip_nodes():
            space = self.spaces[self.features[node.index].space]
            if self.progress:
                self.progress(node.name)
            if not space.decided:
                first = self.graph.nodes[space.writers[0]].name
                self.decide(space, shares.get(first, 0), selection)
            if node.index not in self.merged:
                self.merge_node(node, *space.pairs)
                self._write(node)
            self._hessian_cache.pop(node.index, None)
            self._stats_cache.pop(node.index, None)
        return self.records
