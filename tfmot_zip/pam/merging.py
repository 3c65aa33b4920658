"""Hessian merge of one-task (e.g. separately pruned) networks into subset groups.

Layer by layer, bottom-up, each task's units are merged into the units built from the tasks before
it (MTZ's passes, docs/METHOD.md): a merged unit serves the union of its members' tasks, is one
computation (one weight vector) and reads only inputs computed for all of those tasks. No task's
path gains a unit, so no subset of tasks costs more than the separate networks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tfmot_zip.core.hessian import HessianAccumulator, extract_patches
from tfmot_zip.core.pam_math import SHARED, covers, group_key, group_order, merged_unit_costs, restricted_fits, sources_of
from tfmot_zip.core.selection import hungarian_pairs
from tfmot_zip.pam.network import INPUT, GroupedNetwork, GroupLayer

__all__ = ["merge_pruned_networks"]


@dataclass
class _Cluster:
    """Units of several tasks merged into one unit of the layer being built (at most one per task)."""

    members: dict  # task -> unit index in that task's network
    g: np.ndarray | None  # sum_t H_t a_t
    e: float  # sum_t a_t^T H_t a_t
    r: float = 0.0  # current least layer-wise error
    w: np.ndarray | None = None  # merged weight vector (None: the single member's own)

    @property
    def tasks(self) -> tuple:
        return tuple(sorted(self.members))


def _layout(groups: list, units: dict) -> dict:
    """Channel offset of every group in the concatenated (canonical-order) layer output."""
    offsets, start = {}, 0
    for g in groups:
        offsets[g] = start
        start += units[g]
    return offsets


def _layer_inputs(
    net: GroupedNetwork, stop: int, task: str, x: np.ndarray, groups: list, units: dict, max_rows: int, seed: int
) -> np.ndarray:
    """Rows of GroupLayer ``stop``'s inputs on ``task``'s data in merged coordinates (groups a task does not
    run are zero): conv patches or flattened dense inputs, without the bias coordinate."""
    op = net.layers()[stop]
    if stop == 0:
        tensor = np.asarray(x, np.float32)
    else:
        outs = net.prefix_model(stop, task).predict(x, batch_size=500, verbose=0)
        n = len(x)
        total = sum(units[g] for g in groups)
        if op.kind == "conv":
            shape = next(iter(outs.values())).shape[1:3]
            tensor = np.zeros((n, *shape, total), np.float32)
        else:
            tensor = np.zeros((n, op.in_positions, total), np.float32)
        for g, offset in _layout(groups, units).items():
            if g in outs:
                value = np.asarray(outs[g])
                value = value if op.kind == "conv" else value.reshape(n, op.in_positions, units[g])
                tensor[..., offset : offset + units[g]] = value
    if op.kind == "dense":
        return tensor.reshape(len(x), -1)
    rows = extract_patches(tensor, op.config["kernel_size"], op.config.get("strides", (1, 1)), op.config.get("padding", "valid"))
    if rows.shape[0] > max_rows:
        rows = rows[np.random.default_rng(seed).choice(rows.shape[0], max_rows, replace=False)]
    return rows


def _scatter_kernel(op: GroupLayer, kernel: np.ndarray, channel_index: np.ndarray, total: int) -> np.ndarray:
    """A task's kernel ``[.., n_own_in, n_out]`` placed at ``channel_index`` among ``total`` input channels,
    flattened to rows ``[d - 1, n_out]`` in merged coordinates."""
    n_out = kernel.shape[-1]
    if op.kind == "conv":
        full = np.zeros(kernel.shape[:2] + (total, n_out), np.float64)
        full[:, :, channel_index, :] = kernel
    else:
        per = kernel.reshape(op.in_positions, -1, n_out)
        full = np.zeros((op.in_positions, total, n_out), np.float64)
        full[:, channel_index, :] = per
    return full.reshape(-1, n_out)


def _allowed_mask(op: GroupLayer, group: str, groups: list, units: dict, dim: int) -> np.ndarray:
    """Inputs (merged coordinates, bias last; ``dim`` of them) a unit of ``group`` may read."""
    if not groups:  # first layer: the image is computed for every task
        return np.ones(dim, bool)
    channels = np.concatenate([np.full(units[g], covers(g, group)) for g in groups])
    positions = int(np.prod(op.config["kernel_size"])) if op.kind == "conv" else op.in_positions
    return np.concatenate([np.tile(channels, positions), [True]])


def merge_pruned_networks(
    nets: Sequence[GroupedNetwork],
    calibration_x: Sequence[np.ndarray],
    max_relative_error: float | dict = 0.5,
    damping: float = 1e-4,
    samples: int = 1000,
    max_rows: int = 200_000,
    seed: int = 0,
    keep_separate: Sequence[str] = (),
) -> GroupedNetwork:
    """Merge one-task networks (e.g. separately pruned) into subset groups by Hessian pairing.

    Layer by layer, bottom-up, task n's units are merged into the units built from tasks 0..n-1
    (MTZ's passes): a merged unit serves the union of its members' tasks, is one computation (one
    weight vector) and reads only inputs computed for all of those tasks (groups serving a superset).
    Its weight minimises the summed layer-wise error ``sum_t (w - a_t)^T H_t (w - a_t)`` of its members
    (:func:`tfmot_zip.core.pam_math.restricted_fit`, one solve per task set); the Hessians ``H_t`` come from each task's
    calibration images run through the already merged layers. A min-cost assignment
    (Hungarian) of the error increases (:func:`tfmot_zip.core.pam_math.merged_unit_costs`) picks
    the pairs; a pair is merged only if its increase is at most ``max_relative_error`` times its
    members' summed output energy ``sum_t a_t^T H_t a_t``. Heads stay per task.

    No task's path gains a unit: every merged unit replaces one unit of each member, so running any
    subset of tasks costs at most what the separate networks cost (fewer inputs per merged unit).

    Args:
        nets: one-task :class:`GroupedNetwork` s with the same layer chain (e.g. from
            :func:`tfmot_zip.pam.reading.separate_network` and
            :func:`tfmot_zip.pam.pruning.prune_structured`), their task names distinct.
        calibration_x: per network, images of its task.
        max_relative_error: merge threshold (0 keeps the networks separate, block-diagonal); a dict
            ``{layer name: threshold}`` sets it per hidden layer (layers not named: 0). Merging conv
            units saves far more FLOPs than merging dense units, so a higher conv threshold pays.
        damping: Hessian damping (relative to the mean diagonal).
        samples: calibration images per task.
        max_rows: conv patch rows per Hessian (a seeded random subset beyond that).
        seed: patch subsampling seed.
        keep_separate: task names whose units are never merged (their paths stay as they are, e.g.
            a task that lost accuracy when it was merged; see :func:`tfmot_zip.pam.search.merge_and_prune`).

    Returns:
        A :class:`GroupedNetwork` with groups ``shared``, ``a+b`` ... and per task.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> mlp = lambda name: keras.Sequential([keras.layers.Dense(3, "relu", input_shape=(4,), name="fc"),
        ...                                      keras.layers.Dense(2, "softmax", name="head")], name=name)
        >>> nets = [separate_network(mlp("a")), separate_network(mlp("b"))]
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> merge_pruned_networks(nets, [x, x], max_relative_error=0.0).group_sizes()
        [{'a': 3, 'b': 3, 'name': 'fc'}]
        >>> merge_pruned_networks(nets, [x, x], max_relative_error=100.0).group_sizes()
        [{'shared': 3, 'name': 'fc'}]
    """
    names = [n.task_names[0] if len(n.task_names) == 1 else None for n in nets]
    if len(nets) < 2 or None in names or len(set(names)) != len(names) or any("+" in t or t in (SHARED, INPUT) for t in names):
        raise ValueError(
            f"Expected two or more one-task networks with distinct task names without '+' (not 'shared'/'input'); "
            f"received task names {[n.task_names for n in nets]}."
        )
    if len(calibration_x) != len(nets):
        raise ValueError(f"Expected calibration images per network ({len(nets)}); received {len(calibration_x)}.")
    unknown_tasks = sorted(set(keep_separate) - set(names))
    if unknown_tasks:
        raise ValueError(f"keep_separate names unknown tasks {unknown_tasks}; the networks' tasks are {names}.")
    task_layers = [n.layers() for n in nets]
    thresholds = _layer_thresholds(max_relative_error, [op.name for op in task_layers[0] if not op.head])
    if len({len(t) for t in task_layers}) != 1:
        raise ValueError("The networks have different numbers of Dense/Conv2D layers; merge networks of one architecture.")
    xs = [np.asarray(x)[:samples] for x in calibration_x]
    ops = [op.empty_like() if isinstance(op, GroupLayer) else op for op in nets[0].ops]
    net = GroupedNetwork(list(names), tuple(nets[0].input_shape), ops)
    groups, units, index_of = [], {}, None  # previous layer: order, sizes, per task unit -> channel
    for li, op in enumerate(net.layers()):
        first = li == 0
        total = sum(units.values())
        # weight vectors (bias last) of every task's units in merged coordinates
        vectors = []
        for t, name in enumerate(names):
            own = task_layers[t][li]
            kernel = own.blocks[name][INPUT if first else name]
            rows = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64) if first else _scatter_kernel(op, kernel, index_of[t], total)
            vectors.append(np.vstack([rows, own.biases[name][None, :]]))
        if op.head:
            clusters_by_group = {name: [(_Cluster({name: u}, None, 0.0), vectors[t][:, u]) for u in range(vectors[t].shape[1])]
                                 for t, name in enumerate(names)}
        else:
            clusters_by_group = _merge_layer(net, li, op, names, xs, vectors, groups, units, thresholds[op.name], damping,
                                             max_rows, seed, frozenset(keep_separate))
        new_groups = group_order(list(clusters_by_group), names)
        new_units = {g: len(clusters_by_group[g]) for g in new_groups}
        input_kernel_shape = task_layers[0][0].blocks[names[0]][INPUT].shape
        for g in new_groups:
            weights = np.stack([w for _, w in clusters_by_group[g]], axis=1)  # [d, n]
            op.biases[g] = weights[-1].astype(np.float32)
            if first:
                op.blocks[g] = {INPUT: weights[:-1].reshape(input_kernel_shape[:-1] + (-1,)).astype(np.float32)}
            else:
                op.blocks[g] = _source_blocks(op, g, weights[:-1], groups, units)
        offsets = _layout(new_groups, new_units)
        index_of = [np.zeros(vectors[t].shape[1], np.int64) for t in range(len(names))]
        for g in new_groups:
            for i, (cluster, _) in enumerate(clusters_by_group[g]):
                for name, u in cluster.members.items():
                    index_of[names.index(name)][u] = offsets[g] + i
        groups, units = new_groups, new_units
    return net.drop_dead_groups()  # e.g. a task's units whose every reader above was merged away


def _layer_thresholds(max_relative_error: float | dict, hidden: list) -> dict:
    """``{hidden layer name: merge threshold}``, checked."""
    if isinstance(max_relative_error, dict):
        unknown = sorted(set(max_relative_error) - set(hidden))
        if unknown:
            raise ValueError(f"max_relative_error names unknown layers {unknown}; hidden layers: {hidden}.")
        thresholds = {name: float(max_relative_error.get(name, 0.0)) for name in hidden}
    else:
        thresholds = {name: float(max_relative_error) for name in hidden}
    if any(not v >= 0.0 for v in thresholds.values()):
        raise ValueError(f"Expected max_relative_error >= 0. Received: {max_relative_error!r}")
    return thresholds


def _source_blocks(op: GroupLayer, group: str, body: np.ndarray, groups: list, units: dict) -> dict:
    """Group ``group``'s weight rows ``body`` (``[d - 1, n]``, merged coordinates) cut into one kernel
    block per source group it may read."""
    offsets = _layout(groups, units)
    positions = int(np.prod(op.config["kernel_size"])) if op.kind == "conv" else op.in_positions
    per = body.reshape(positions, sum(units.values()), -1)
    blocks = {}
    for src in sources_of(group, groups):
        block = per[:, offsets[src] : offsets[src] + units[src], :]
        if op.kind == "conv":
            block = block.reshape(tuple(op.config["kernel_size"]) + (units[src], -1))
        else:
            block = block.reshape(positions * units[src], -1)
        blocks[src] = block.astype(np.float32)
    return blocks


def _merge_layer(net, li, op, names, xs, vectors, groups, units, max_relative_error, damping, max_rows, seed, alone) -> dict:
    """Clusters of one hidden layer: ``{group: [(cluster, weight vector), ...]}``."""
    hessians = {}
    for t, name in enumerate(names):
        rows = _layer_inputs(net, li, name, xs[t], groups, units, max_rows, seed)
        acc = HessianAccumulator(rows.shape[1], batch_dtype=np.float32)
        for start in range(0, rows.shape[0], 50_000):
            acc.update(rows[start : start + 50_000])
        hessians[(name,)] = acc.hessian()
    dim = vectors[0].shape[0]

    def summed(tasks: tuple) -> np.ndarray:  # one summed Hessian per task set, shared by its clusters
        if tasks not in hessians:
            hessians[tasks] = sum(hessians[(t,)] for t in tasks)
        return hessians[tasks]

    def single(t: int, u: int) -> _Cluster:
        a = vectors[t][:, u]
        ha = hessians[(names[t],)] @ a
        return _Cluster({names[t]: u}, ha, float(a @ ha))

    clusters = [single(0, u) for u in range(vectors[0].shape[1])]
    for t in range(1, len(names)):
        new = [single(t, u) for u in range(vectors[t].shape[1])]
        types: dict = {}
        for index, c in enumerate(clusters):
            types.setdefault(c.tasks, []).append(index)
        costs = np.full((len(clusters), len(new)), np.inf)
        g_new = np.stack([c.g for c in new])
        e_new = np.array([c.e for c in new])
        for tasks, members in types.items():
            if names[t] in alone or alone.intersection(tasks):  # a task kept separate merges with nobody
                continue
            allowed = _allowed_mask(op, group_key(list(tasks) + [names[t]], names), groups, units, dim)
            if allowed.sum() <= 1:  # no input computed for all of them: the merged unit would be a constant
                continue
            side = [clusters[i] for i in members]
            costs[members] = merged_unit_costs(
                summed(tasks), np.stack([c.g for c in side]), np.array([c.e for c in side]), np.array([c.r for c in side]),
                hessians[(names[t],)], g_new, e_new, np.zeros(len(new)), allowed, damping,
            )
        energy = np.array([c.e for c in clusters])[:, None] + e_new[None, :]
        relative = costs / np.maximum(energy, 1e-30)
        feasible = relative <= max_relative_error
        accepted = []
        if feasible.any():
            rows_i, cols_j = hungarian_pairs(np.where(feasible, relative, 1e6), min(costs.shape))
            accepted = [(i, j) for i, j in zip(rows_i, cols_j) if feasible[i, j]]
        by_tasks: dict = {}
        for i, j in accepted:
            c, n = clusters[i], new[j]
            clusters[i] = _Cluster(dict(c.members, **n.members), c.g + n.g, c.e + n.e)
            by_tasks.setdefault(clusters[i].tasks, []).append(i)
        for tasks, members in by_tasks.items():  # merged weights: one factorisation per task set
            allowed = _allowed_mask(op, group_key(list(tasks), names), groups, units, dim)
            gs = np.stack([clusters[i].g for i in members])
            ws, errors = restricted_fits(summed(tasks), gs, [clusters[i].e for i in members], allowed, damping)
            for i, w, r in zip(members, ws, errors):
                clusters[i].w, clusters[i].r = w, float(r)
        taken = {j for _, j in accepted}
        clusters.extend(n for j, n in enumerate(new) if j not in taken)
    out: dict = {}
    for c in clusters:
        if c.w is None:
            (name, u), = c.members.items()
            weight = vectors[names.index(name)][:, u]
        else:
            weight = c.w
        out.setdefault(group_key(list(c.members), names), []).append((c, weight))
    return out
