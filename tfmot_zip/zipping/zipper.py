"""The bottom-up zipping procedure (docs/METHOD.md), driving the numpy core.

Models are merged one at a time: pass ``n`` merges task ``n`` into the network already serving
tasks ``0..n-1``. In each pass, for every hidden Dense/Conv2D position in topological order:
compute each task's layer-wise Hessian from its calibration data run through the already
zipped lower layers, score every (merged unit, neuron of task ``n``) pair, select ``k`` pairs,
apply the merge update, and re-index the layers that read the zipped units.

A merged unit may serve several tasks ``Q``; its side of the merge uses an inverse Hessian
built from those tasks' (docs/METHOD.md: the sum of their inverse Hessians, ``merged_hessian=
"sum_of_inverses"``; or the inverse of the summed Hessians, ``"exact"``, the curvature of the
summed layer-wise errors). A depthwise convolution follows the pairing of the space it reads
(:mod:`tfmot_zip.zipping.depthwise`). A residual stream (several layers writing into one ``Add``) is
paired once per pass, from the summed costs of the writers whose inputs are already zipped
when the stream is first reached; its later writers follow that pairing with their own update.
A layer reading a channel concatenation reads its parts' spaces side by side: it is re-indexed
whenever one part is paired, and merged once every part is (:meth:`Zipper.input_ready`).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core import MergeSide, SingularHessianError, invert_hessian, select_pairs
from tfmot_zip.core.hessian import damping_shift
from tfmot_zip.model.graph import AlignedNode, ModelGraph
from tfmot_zip.model.spaces import Feature, UnitSpace
from tfmot_zip.core.strategies import Strategy, get_strategy
from tfmot_zip.zipping.depthwise import DepthwiseMixin
from tfmot_zip.zipping.least_squares import LeastSquaresMixin
from tfmot_zip.zipping.options import ZipOptions
from tfmot_zip.zipping.stagewise import StagewiseMixin
from tfmot_zip.zipping.statistics import LayerStatisticsMixin

__all__ = ["LayerRecord", "Zipper", "zipper_options"]


@dataclass
class LayerRecord:
    """What happened at one zip-able layer (summed over passes)."""

    name: str
    kind: str
    widths: list[int]
    shared: int = 0
    merge_cost: float = 0.0
    seconds: float = 0.0
    pairs: list = field(default_factory=list)
    hessian_rows: list = field(default_factory=lambda: [0, 0])  # patch rows used, rows available (conv)

    def as_config(self, **extra: Any) -> dict:
        """A JSON-serialisable dict (pairs as ``[pass, units, columns]`` lists), plus ``extra``."""
        return {
            "shared": int(self.shared),
            "merge_cost": None if extra.get("is_head") else float(self.merge_cost),
            "seconds": round(float(self.seconds), 6),
            "pairs": [[int(n), [int(u) for u in units], [int(c) for c in cols]] for n, units, cols in self.pairs],
            **({"hessian_rows": [int(r) for r in self.hessian_rows]} if self.hessian_rows[1] else {}),
            **extra,
        }


@dataclass
class _Group:
    """Merged-side units that serve the same task set ``tasks`` at one layer."""

    tasks: tuple[int, ...]
    units: np.ndarray  # physical units
    coords: np.ndarray  # physical coordinate ids of the union of the tasks' inputs


@dataclass
class Zipper(LayerStatisticsMixin, StagewiseMixin, DepthwiseMixin, LeastSquaresMixin):
    """Holds the logical per-task weights and applies the zipping layer by layer."""

    DEFER_WRITES = True  # run(): a re-indexed reader's weights written when it is merged, not also before

    model: keras.Model
    graph: ModelGraph
    features: dict[int, Feature]
    spaces: dict[int, UnitSpace]
    calibration: Sequence[np.ndarray]
    strategy: Strategy
    selection: str = "hungarian"
    damping: float = 1e-4
    merged_hessian: str = "sum_of_inverses"
    batch_size: int = 1000
    seed: int = 0
    max_conv_rows: int | None = 200_000
    conv_hessian: str = "auto"
    block_threshold: int = 1200
    activation_samples: int = 2_000
    progress: Callable[[str], None] | None = None
    records: dict[int, LayerRecord] = field(default_factory=dict)
    hessian_provider: Callable[[object, int], np.ndarray] | None = None
    batchnorm_layerwise: bool = False  # re-estimate the BatchNorm statistics downstream of each zipped layer
    activation_memory_mb: float | None = None  # cached activations beyond this go to temporary files (None: no limit)
    spill: object | None = None  # a SpillPolicy to use (e.g. the one the calibration data was streamed into)

    def __post_init__(self) -> None:
        self.n_tasks = len(self.graph.models)
        self.rng = np.random.default_rng(self.seed)
        self.weights: dict[int, list[tuple[np.ndarray, np.ndarray | None]]] = {}
        self.merged: set[int] = set()
        self.decided: set[int] = set()
        self.task = 1  # the task being merged in this pass
        self._hessian_cache: dict[int, list[np.ndarray]] = {}
        # Layers re-indexed by a pairing (readers of a paired space) whose weights are not written yet:
        # during :meth:`run` a reader is written once it is merged, or before anything runs it
        # (:meth:`flush_writes`), not also when the space it reads is paired.
        self._unwritten: set[int] = set()
        self.defer_writes = False
        self._fixed_input_hessians: dict[int, dict] = {}  # Hessians of layers reading the model inputs, by task
        self._stats_cache: dict[int, dict] = {}
        # sum [x 1]^T [x 1] of every task at Dense layers reading the model's inputs, by layer name (for the refit)
        self.input_grams: dict[str, dict[int, np.ndarray]] = {}
        self._layers = {node.index: self.model.get_layer(node.name) for node in self.graph.zip_nodes()}
        for node in self.graph.zip_nodes():
            layer = self.layer(node)
            self.weights[node.index] = list(layer.get_tasks_weights(range(self.n_tasks)).values())
            self.records[node.index] = LayerRecord(node.name, node.kind, list(layer.task_units))
        self._init_depthwise(LayerRecord)

    # --- helpers --------------------------------------------------------------------------
    def layer(self, node: AlignedNode):
        return self._layers[node.index]

    def input_feature(self, node: AlignedNode) -> Feature:
        return self.features[node.inbound[0]]

    def input_ready(self, node: AlignedNode) -> bool:
        """Whether every space the layer reads (each part of a concatenation) is paired in this pass."""
        return all(s in self.decided for s in self.input_feature(node).space_ids)

    def consumers(self, space: UnitSpace) -> list[AlignedNode]:
        """Zip layers reading ``space``, directly or as one part of a channel concatenation."""
        return [n for n in self.graph.zip_nodes() if space.id in self.input_feature(n).space_ids]

    def _write(self, node: AlignedNode) -> None:
        """Writes every task's logical weights; lower-numbered tasks win shared cells."""
        self._unwritten.discard(node.index)
        self.layer(node).set_tasks_weights({t: self.weights[node.index][t] for t in reversed(range(self.n_tasks))})

    def flush_writes(self, layers: Sequence | None = None) -> None:
        """Writes the layers whose writes were deferred (of those, the ones among ``layers``; None: all).
        The activation cache calls it with the layers it is about to run."""
        ids = None if layers is None else {id(layer) for layer in layers}
        for index in sorted(self._unwritten):
            if ids is None or id(self._layers[index]) in ids:
                self._write(self.graph.nodes[index])

    # --- coordinates and sides -------------------------------------------------------------------
    def coordinate_ids(self, node: AlignedNode, task: int) -> np.ndarray:
        """Physical input coordinate of each of ``task``'s kernel rows (bias excluded)."""
        layer = self.layer(node)
        in_map, _ = layer.get_maps(task)
        if node.kind == "dense":
            return in_map
        positions = layer.kernel_size[0] * layer.kernel_size[1]
        return (np.arange(positions)[:, None] * layer.input_capacity + in_map[None, :]).reshape(-1)

    def task_rows(self, node: AlignedNode, task: int) -> np.ndarray:
        """``[n_units, d (+1)]`` incoming weights of every neuron of ``task`` (bias last)."""
        kernel, bias = self.weights[node.index][task]
        rows = kernel.reshape(-1, kernel.shape[-1]).T.astype(np.float64)
        if bias is not None:
            rows = np.hstack([rows, bias.astype(np.float64)[:, None]])
        return rows

    def _store_rows(self, node: AlignedNode, task: int, columns: np.ndarray, rows: np.ndarray) -> None:
        kernel, bias = self.weights[node.index][task]
        kernel, bias = kernel.copy(), None if bias is None else bias.copy()
        flat = kernel.reshape(-1, kernel.shape[-1])
        flat[:, columns] = rows[:, : flat.shape[0]].T
        kernel = flat.reshape(kernel.shape)
        if bias is not None:
            bias[columns] = rows[:, -1]
        self.weights[node.index][task] = (kernel, bias)

    def merged_groups(self, node: AlignedNode, space: UnitSpace) -> list[_Group]:
        """Units used by tasks ``< self.task`` grouped by the task set they serve."""
        owners: dict[int, list[int]] = {}
        for t in range(self.task):
            for unit in space.maps[t]:
                owners.setdefault(int(unit), []).append(t)
        by_tasks: dict[tuple, list[int]] = {}
        for unit, tasks in sorted(owners.items()):
            by_tasks.setdefault(tuple(tasks), []).append(unit)
        groups = []
        for tasks, units in sorted(by_tasks.items()):
            coords = np.unique(np.concatenate([self.coordinate_ids(node, t) for t in tasks]))
            groups.append(_Group(tasks, np.asarray(units, np.int64), coords))
        return groups

    @contextmanager
    def _naming(self, node: AlignedNode, tasks: Sequence[int]) -> Iterator[None]:
        """A ``SingularHessianError`` raised inside names the layer and the tasks."""
        try:
            yield
        except SingularHessianError as err:
            names = ", ".join(self.model.output_names[t] for t in tasks)
            raise SingularHessianError(f"Layer {node.name!r} (task {names}): {err}") from None

    def _invert(self, node: AlignedNode, hessian: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """The inverse of the damped ``hessian``."""
        with self._naming(node, tasks):
            return invert_hessian(hessian, self.damping)

    def _damping(self, node: AlignedNode, hessian: np.ndarray, tasks: Sequence[int]) -> float:
        """What the damping adds to ``hessian``'s diagonal. A Hessian the zip summed itself is finite
        (every batch was checked): only a provided one (``ZipCallback``'s, from training) is scanned."""
        with self._naming(node, tasks):
            return damping_shift(hessian, self.damping, check_finite=self.hessian_provider is not None)

    def _inverse_for(self, node: AlignedNode, tasks: Sequence[int], coords: np.ndarray) -> np.ndarray:
        """Inverse Hessian over ``coords`` (+ bias) of a side serving ``tasks``."""
        has_bias = self.layer(node).use_bias
        dim = len(coords) + (1 if has_bias else 0)
        if not self.strategy.needs_hessian:
            return np.eye(dim)
        hessians = self.hessians(node)
        total = np.zeros((dim, dim))
        for t in tasks:
            ids = self.coordinate_ids(node, t)
            pos = np.searchsorted(coords, ids)
            if has_bias:
                pos = np.append(pos, dim - 1)
            if len(tasks) == 1 and len(pos) == dim and np.all(pos == np.arange(dim)):
                return self._invert(node, hessians[t], tasks)  # one task reading every coordinate in order
            if self.merged_hessian == "exact":
                total[np.ix_(pos, pos)] += hessians[t]
            else:
                total[np.ix_(pos, pos)] += self._invert(node, hessians[t], [t])
        if self.merged_hessian == "exact":
            return self._invert(node, total, tasks)
        return total

    def group_sides(self, node: AlignedNode, space: UnitSpace) -> list[tuple[_Group, MergeSide, MergeSide]]:
        """For every merged group: (group, merged side, side of the task being merged)."""
        n = self.task
        self.fit_before_pairing(node)
        has_bias = self.layer(node).use_bias
        ids_n = self.coordinate_ids(node, n)
        rows_n = self.task_rows(node, n)
        groups = self.merged_groups(node, space)
        # one task on each side and every coordinate shared: the sides hold Hessians, nothing is inverted
        from_hessians = self._hessian_sides(node, groups, ids_n)
        inv_n = None
        out = []
        for group in groups:
            weights = np.zeros((len(group.units), len(group.coords) + (1 if has_bias else 0)))
            for t in reversed(group.tasks):  # tasks of a group agree on shared cells
                columns = self._columns_of(space, t, group.units)
                task_rows = self.task_rows(node, t)[columns]
                pos = np.searchsorted(group.coords, self.coordinate_ids(node, t))
                weights[:, pos] = task_rows[:, : len(pos)]
                if has_bias:
                    weights[:, -1] = task_rows[:, -1]
            _, idx_g, idx_n = np.intersect1d(group.coords, ids_n, assume_unique=True, return_indices=True)
            if has_bias:
                idx_g = np.append(idx_g, weights.shape[1] - 1)
                idx_n = np.append(idx_n, rows_n.shape[1] - 1)
            if from_hessians:
                hessians, task = self.hessians(node), group.tasks[0]
                sides = (MergeSide.from_hessian(weights, hessians[task], idx_g, self._damping(node, hessians[task], [task])),
                         MergeSide.from_hessian(rows_n, hessians[n], idx_n, self._damping(node, hessians[n], [n])))
            else:
                if inv_n is None:
                    inv_n = (self._invert(node, self.hessians(node)[n], [n]) if self.strategy.needs_hessian
                             else np.eye(rows_n.shape[1]))
                sides = (MergeSide.from_hessian_inverse(weights, self._inverse_for(node, group.tasks, group.coords), idx_g),
                         MergeSide.from_hessian_inverse(rows_n, inv_n, idx_n))
            out.append((group, *sides))
        return out

    def _hessian_sides(self, node: AlignedNode, groups: list[_Group], ids_n: np.ndarray) -> bool:
        """Whether the merge can work from the damped Hessians (:meth:`MergeSide.from_hessian`, no inverse):
        a Hessian strategy with damping, one merged group serving one task that reads every coordinate in
        order, and the new task reading exactly the same coordinates."""
        if not (self.strategy.needs_hessian and self.damping > 0 and len(groups) == 1 and len(groups[0].tasks) == 1):
            return False
        coords = groups[0].coords
        ids_t = self.coordinate_ids(node, groups[0].tasks[0])
        return (len(ids_t) == len(coords) == len(ids_n) and bool(np.all(ids_t == coords))
                and bool(np.all(np.sort(ids_n) == coords)))

    @staticmethod
    def _columns_of(space: UnitSpace, task: int, units: np.ndarray) -> np.ndarray:
        """Positions in ``task``'s neurons of the given physical units."""
        lookup = {int(u): c for c, u in enumerate(space.maps[task])}
        return np.asarray([lookup[int(u)] for u in units], np.int64)

    def _group_costs(self, node: AlignedNode, sides) -> np.ndarray:
        stats = self.statistics(node)
        blocks = []
        for group, side_g, side_n in sides:
            extra = {}
            if stats:
                space = self.spaces[self.features[node.index].space]
                feats_g = stats["features"][group.tasks[0]][:, self._columns_of(space, group.tasks[0], group.units)]
                from tfmot_zip.core.strategies import feature_correlation

                extra = {"correlation": feature_correlation(feats_g, stats["features"][self.task])}
            blocks.append(self.strategy.costs(side_g, side_n, self.rng, extra))
        return np.vstack(blocks)

    # --- the procedure --------------------------------------------------------------------------
    def merge_node(self, node: AlignedNode, space: UnitSpace, units: np.ndarray, cols: np.ndarray, sides=None,
                   costs: np.ndarray | None = None) -> None:
        """Applies the strategy's update to this layer for the pairs (merged unit, task-n neuron);
        ``sides`` and ``costs``, when the pairing already computed them, are reused."""
        start = time.perf_counter()
        record = self.records[node.index]
        n = self.task
        if len(units):
            sides = sides if sides is not None else self.group_sides(node, space)
            costs = costs if costs is not None else self._group_costs(node, sides)
            all_units = np.concatenate([g.units for g, _, _ in sides])
            row_of = {int(u): r for r, u in enumerate(all_units)}
            record.merge_cost += float(sum(costs[row_of[int(u)], j] for u, j in zip(units, cols)))
            new_n = self.task_rows(node, n)
            for group, side_g, side_n in sides:
                in_group = np.isin(units, group.units)
                if not in_group.any():
                    continue
                local = np.searchsorted(group.units, units[in_group])
                g_new, n_rows = self.strategy.merge(side_g, side_n, local, cols[in_group])
                new_n[cols[in_group]] = n_rows[cols[in_group]]
                has_bias = self.layer(node).use_bias
                for t in group.tasks:
                    pos = np.searchsorted(group.coords, self.coordinate_ids(node, t))
                    if has_bias:
                        pos = np.append(pos, g_new.shape[1] - 1)
                    columns = self._columns_of(space, t, units[in_group])
                    self._store_rows(node, t, columns, g_new[local][:, pos])
            self._store_rows(node, n, cols, new_n[cols])
        record.shared += int(len(units))
        record.pairs.append((n, units, cols))
        record.seconds += time.perf_counter() - start
        self.merged.add(node.index)

    def decide(self, space: UnitSpace, k: int, selection: str) -> None:
        """Chooses this pass's pairing of a space and re-indexes every layer writing or reading it."""
        start = time.perf_counter()
        ready = [self.graph.nodes[w] for w in space.writers if self.input_ready(self.graph.nodes[w])]
        side_cache, cost_cache = {}, {}
        units = cols = np.zeros(0, np.int64)
        if k > 0:
            total = None
            for writer in ready:
                side_cache[writer.index] = self.group_sides(writer, space)
                costs = cost_cache[writer.index] = self._group_costs(writer, side_cache[writer.index])
                total = costs if total is None else total + costs
            all_units = np.concatenate([g.units for g, _, _ in side_cache[ready[0].index]])
            k = min(k, len(all_units), total.shape[1])
            rows, cols = select_pairs(total, k, selection)
            units = all_units[rows]
        decide_seconds = time.perf_counter() - start
        # Pairs ordered by unit so that groups index them consistently.
        order = np.argsort(units, kind="stable")
        units, cols = units[order], cols[order]
        for writer in ready:
            self.merge_node(writer, space, units, cols, side_cache.get(writer.index), cost_cache.get(writer.index))
        self.records[ready[0].index].seconds += decide_seconds
        space.pairs = (units, cols)
        space.maps[self.task][cols] = units
        self.decided.add(space.id)
        for w in space.writers:
            layer = self.layer(self.graph.nodes[w])
            layer.set_maps(self.task, out_map=space.maps[self.task])
        for consumer in self.consumers(space):
            layer = self.layer(consumer)
            layer.set_maps(self.task, in_map=self.input_feature(consumer).in_map(self.spaces, self.task))
        for node_index in set(space.writers) | {c.index for c in self.consumers(space)}:
            if self.defer_writes and node_index not in space.writers and node_index not in self.merged:
                self._unwritten.add(node_index)  # written when merged (or before it runs)
            else:
                self._write(self.graph.nodes[node_index])

    def zip_stage(self, node: AlignedNode, shares: dict[str, float], selection: str | None = None) -> list[AlignedNode]:
        """Zips one layer of the current pass; returns the layers it merged."""
        selection = selection or self.selection
        before, before_depthwise = set(self.merged), set(self.merged_depthwise)
        space = self.spaces[self.features[node.index].space]
        deciding = space.id not in self.decided
        if self.progress:
            self.progress(node.name if self.n_tasks == 2 else f"{node.name} (task {self.task})")
        if space.id not in self.decided:
            first = self.graph.nodes[space.writers[0]].name
            merged_units = np.unique(np.concatenate(space.maps[: self.task]))
            k = int(round(shares.get(first, 0.0) * min(space.widths[self.task], len(merged_units))))
            self.decide(space, k, selection)
        if node.index not in self.merged:
            self.merge_node(node, space, *space.pairs)
            self._write(node)
        self.merge_ready_depthwise()
        self._hessian_cache.clear()
        self._stats_cache.clear()
        # layers whose weights or maps changed: a pairing re-indexes the space's writers and readers
        touched = (set(space.writers) | {c.index for c in self.consumers(space)}) if deciding else {node.index}
        touched |= (self.merged - before) | (self.merged_depthwise - before_depthwise)
        if getattr(self, "_activation_cache", None) is not None:
            self._activation_cache.invalidate([self._layers[i] for i in touched if i in self._layers])
        return [self.graph.nodes[i] for i in sorted(self.merged - before)]

    def run(self, shares: dict[str, float], selection: str | None = None) -> dict[int, LayerRecord]:
        """Zips every hidden layer bottom-up, merging one task per pass.

        ``shares`` maps the first writer of each space to its sharing fraction; a pass shares
        ``round(fraction * min(width of the new task, units of the merged network))`` pairs.
        """
        self.defer_writes = self.DEFER_WRITES
        try:
            for n in range(1, self.n_tasks):
                self.begin_pass(n)
                for node in self.graph.hidden_zip_nodes():
                    self.zip_stage(node, shares, selection)
        finally:
            self.defer_writes = False
            self.flush_writes()
        return self.records


def zipper_options(options: ZipOptions) -> dict:
    """The :class:`Zipper` arguments that ``options`` sets.

    Example:
        >>> sorted(zipper_options(ZipOptions()))
        ['activation_memory_mb', 'conv_hessian', 'damping', 'max_conv_rows', 'merged_hessian', 'seed', 'selection', 'strategy']
    """
    return {
        "strategy": get_strategy(options.method), "selection": options.selection, "damping": options.damping,
        "merged_hessian": options.merged_hessian, "conv_hessian": options.conv_hessian, "seed": options.seed,
        "max_conv_rows": options.max_conv_rows, "activation_memory_mb": options.activation_memory_mb,
    }
