"""Pruning-Aware Merging (PAM): merge so that pruning lowers the cost of every subset of tasks.

Each hidden Dense/Conv2D layer of the merged network holds groups of units serving task subsets:
``shared`` (every task), partial subsets ``"a+b"`` and single tasks (DESIGN.md section 2, PAM). A
group reads only groups serving a superset of its tasks (``shared <- shared``, ``a+b <- shared,
a+b``, ``a <- shared, a+b, a``), so a subset of tasks runs only the groups serving one of its tasks,
and a unit serving several tasks is computed once for all of them. Flow (docs/PAM.md)::

    result = merge_and_prune(models, train_sets, val_sets, targets)  # prune, Hessian-merge, prune
    result.net.subset_costs()                                       # FLOPs/params per task subset
    export_subsets_tflite(result.net, "pam.tflite")                 # one signature per subset
    sparse = prune_unstructured(result.net, train_sets, 0.8)         # TFMOT magnitude pruning (size)

:func:`merge_and_prune` (the default heuristic): each task's own structured pruning decides which
units are relevant to it; :func:`merge_pruned_networks` merges relevant units across tasks by
MTZ's Hessian pairing, a merged unit reading only inputs computed for all its tasks; the merged
network is fine-tuned and pruned again. No task's path gains a unit, so no subset costs more
than the separately pruned networks.

The published PAM grouping is also here (:func:`merge_pam_network`, :func:`merge_pam`): every
original network's units are scored by binned mutual information with each task's labels
(:func:`tfmot_zip.core.pam_math.binned_mutual_information`); per task, the smallest set of most
informative units holding ``threshold`` of its information is relevant to it; units relevant to two
or more tasks are shared, to one are that task's, to none are dropped; weights start
block-diagonal. The network lives as numpy weights in a :class:`GroupedNetwork`; Keras models are
built from it (:meth:`GroupedNetwork.to_keras`) and read back (:meth:`GroupedNetwork.read_weights`).
"""
from __future__ import annotations

import copy
import heapq
import os
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tfmot_zip.compat import check_tf_keras_model, keras, tf
from tfmot_zip.core.pam_math import (
    SHARED,
    LayerShape,
    all_subsets,
    allowed_sources,
    group_flops,
    assign_groups,
    binned_mutual_information,
    relevant_units,
    covers,
    group_key,
    group_order,
    merged_unit_costs,
    restricted_fits,
    runs_for,
    sources_of,
    subset_cost,
)
from tfmot_zip.core.hessian import HessianAccumulator, extract_patches
from tfmot_zip.core.selection import hungarian_pairs
from tfmot_zip.data.tasks import multitask
from tfmot_zip.io import atomic_write_bytes
from tfmot_zip.training import compile_multitask, evaluate_tasks

__all__ = [
    "GroupLayer",
    "GroupedNetwork",
    "pam_grouping",
    "taylor_grouping",
    "merge_pam_network",
    "merge_pam",
    "separate_network",
    "merge_pruned_networks",
    "merge_and_prune",
    "PamResult",
    "shared_network_from_zip",
    "finetune",
    "taylor_importance",
    "prune_structured",
    "prune_unstructured",
    "export_subsets_tflite",
]

L = keras.layers
INPUT = "input"
_SUPPORTED = (L.Conv2D, L.Dense, L.MaxPooling2D, L.AveragePooling2D, L.Flatten, L.Dropout, L.InputLayer)


@dataclass
class GroupLayer:
    """One grouped Dense/Conv2D layer: per group, a kernel block per source group and a bias.

    ``blocks[group][source]`` is a Conv2D kernel ``[k, k, n_src, n_out]`` or a Dense kernel
    ``[positions * n_src, n_out]`` (rows ordered position-major, channel-minor, as Flatten gives).
    """

    kind: str
    name: str
    config: dict
    blocks: dict
    biases: dict
    in_positions: int = 1
    out_hw: tuple = (1, 1)
    head: bool = False

    def units(self) -> dict:
        return {g: int(b.shape[0]) for g, b in self.biases.items() if b.shape[0] > 0}


@dataclass
class GroupedNetwork:
    """A PAM-structured multi-task network held as numpy weights (see module docstring).

    Attributes:
        task_names: one per task; outputs are named after them.
        input_shape: shape of one example.
        ops: sequence of :class:`GroupLayer` and stateless ops ``("pool", config)``, ``("flatten",)``.
    """

    task_names: list
    input_shape: tuple
    ops: list
    history: list = field(default_factory=list)

    # -- structure ---------------------------------------------------------------------------
    def layers(self) -> list:
        return [op for op in self.ops if isinstance(op, GroupLayer)]

    def layer_shapes(self) -> list[LayerShape]:
        shapes = []
        for i, layer in enumerate(self.layers()):
            shapes.append(
                LayerShape(
                    layer.kind,
                    layer.units(),
                    kernel_size=int(layer.config.get("kernel_size", (1, 1))[0]) if layer.kind == "conv" else 1,
                    out_hw=layer.out_hw,
                    in_positions=layer.in_positions,
                    input_units=int(self.input_shape[-1]) * (int(np.prod(self.input_shape[:-1])) if layer.kind == "dense" and i == 0 else 1),
                    head=layer.head,
                )
            )
        return shapes

    def subset_costs(self) -> dict:
        """``{subset tuple: (flops, params)}`` for every non-empty task subset, on one shared input.

        Example:
            >>> net.subset_costs()[("classes_0_2",)]  # doctest: +SKIP
            (512345, 40123)
        """
        shapes = self.layer_shapes()
        return {s: subset_cost(shapes, s) for s in all_subsets(self.task_names)}

    def group_sizes(self) -> list[dict]:
        """Per hidden layer, ``{group: units}``."""
        return [dict(layer.units(), name=layer.name) for layer in self.layers() if not layer.head]

    def copy(self) -> "GroupedNetwork":
        return copy.deepcopy(self)

    # -- Keras --------------------------------------------------------------------------------
    def to_keras(
        self,
        tasks: Sequence[str] | None = None,
        single_input: bool = False,
        cache: dict | None = None,
        name: str = "pam",
    ) -> keras.Model:
        """Standard tf_keras functional model of ``tasks`` (default all) using only their groups.

        With ``single_input`` all tasks read one input and shared groups run once; otherwise each
        task has its own input ``<task>_input`` and calls the same shared layers on it. Layers are
        named ``<layer>__<group>__from__<source>`` (:func:`block_name`); pass the same ``cache`` dict to several calls to
        build models that share layer objects (and weights).
        """
        tasks = list(self.task_names if tasks is None else tasks)
        unknown = [t for t in tasks if t not in self.task_names]
        if unknown or not tasks:
            raise ValueError(f"Unknown or no tasks: tasks={tasks!r}. Known tasks: {self.task_names}.")
        cache = {} if cache is None else cache
        if single_input:
            x = keras.Input(self.input_shape, name="image")
            paths = [(x, tasks)]
            inputs = [x]
        else:
            inputs = [keras.Input(self.input_shape, name=f"{t}_input") for t in tasks]
            paths = [(x, [t]) for x, t in zip(inputs, tasks)]
        outputs = {}
        for x, path_tasks in paths:
            state = {INPUT: x}
            for op in self.ops:
                state = self._apply(op, state, path_tasks, cache)
            outputs.update({t: state[t] for t in path_tasks})
        return keras.Model(inputs, [outputs[t] for t in tasks], name=name)

    def _apply(self, op, state: dict, path_tasks: list, cache: dict) -> dict:
        if not isinstance(op, GroupLayer):
            kind = op[0]
            make = {"pool": lambda: L.MaxPooling2D(**op[1]), "avgpool": lambda: L.AveragePooling2D(**op[1]), "flatten": L.Flatten}[kind]
            return {g: make()(t) for g, t in state.items()}
        new = {}
        for group in [g for g in op.biases if runs_for(g, path_tasks)]:
            if op.biases[group].shape[0] == 0:
                continue
            terms = []
            for src, kernel in op.blocks[group].items():
                if src not in state or kernel.shape[-1] == 0 or kernel.shape[-2] == 0:
                    continue
                key = (op.name, group, src)
                if key not in cache:
                    cache[key] = self._block(op, group, src, kernel, with_bias=not terms)
                terms.append(cache[key](state[src]))
            if not terms:
                continue
            total = terms[0] if len(terms) == 1 else _cached(cache, (op.name, group, "add"), lambda: L.Add(name=f"{op.name}__{_safe(group)}__add"))(terms)
            activation = op.config.get("activation", "linear")
            act_name = group if op.head else f"{op.name}__{_safe(group)}__act"
            new[group] = _cached(cache, (op.name, group, "act"), lambda: L.Activation(activation, name=act_name))(total)
        return new

    def _block(self, op: GroupLayer, group: str, src: str, kernel: np.ndarray, with_bias: bool):
        name = block_name(op.name, group, src)
        if op.kind == "conv":
            layer = L.Conv2D(
                kernel.shape[-1], kernel.shape[:2], strides=op.config.get("strides", (1, 1)),
                padding=op.config.get("padding", "valid"), use_bias=with_bias, name=name,
            )
            layer.build((None, None, None, kernel.shape[2]))
        else:
            layer = L.Dense(kernel.shape[-1], use_bias=with_bias, name=name)
            layer.build((None, kernel.shape[0]))
        layer.set_weights([kernel, op.biases[group]] if with_bias else [kernel])
        return layer

    def read_weights(self, model: keras.Model) -> "GroupedNetwork":
        """Copies trained weights of ``model`` (built by :meth:`to_keras`) back into this network."""
        by_name = {layer.name: layer for layer in model.layers}
        for op in self.layers():
            for group, sources in op.blocks.items():
                for src in list(sources):
                    layer = by_name.get(block_name(op.name, group, src))
                    if layer is None:
                        continue
                    weights = layer.get_weights()
                    sources[src] = weights[0]
                    if layer.use_bias:
                        op.biases[group] = weights[1]
        return self

    # -- pruning ------------------------------------------------------------------------------
    def keep_units(self, layer_index: int, group: str, keep: np.ndarray) -> None:
        """Keeps only output units ``keep`` of one group, and the matching input rows above it."""
        layers = self.layers()
        op = layers[layer_index]
        keep = np.asarray(keep, dtype=np.int64)
        op.biases[group] = op.biases[group][keep]
        for src in op.blocks[group]:
            op.blocks[group][src] = op.blocks[group][src][..., keep]
        if layer_index + 1 < len(layers):
            nxt = layers[layer_index + 1]
            for reader, sources in nxt.blocks.items():
                if group not in sources:
                    continue
                kernel = sources[group]
                if nxt.kind == "conv":
                    sources[group] = kernel[:, :, keep, :]
                else:
                    n_out = kernel.shape[-1]
                    per = kernel.reshape(nxt.in_positions, kernel.shape[0] // nxt.in_positions, n_out)
                    sources[group] = per[:, keep, :].reshape(nxt.in_positions * len(keep), n_out)


def _safe(group: str) -> str:
    return group.replace("+", ".")  # Keras scope names may not hold "+"


def block_name(layer: str, group: str, source: str) -> str:
    """Name of the Keras layer holding ``group``'s weights from ``source`` (``+`` written ``.``).

    Example:
        >>> block_name("fc1", "a+b", "shared")
        'fc1__a.b__from__shared'
    """
    return f"{layer}__{_safe(group)}__from__{_safe(source)}"


def _cached(cache: dict, key: tuple, factory):
    if key not in cache:
        cache[key] = factory()
    return cache[key]


# --------------------------------------------------------------------------------------------------
# Reading the original models
# --------------------------------------------------------------------------------------------------


def _plain_layers(model: keras.Model, argument: str) -> list:
    check_tf_keras_model(model, argument)
    layers = [l for l in model.layers if not isinstance(l, L.InputLayer)]
    for layer in layers:
        if not isinstance(layer, _SUPPORTED) or isinstance(layer, L.Conv2D) and layer.dilation_rate != (1, 1):
            raise ValueError(
                f"PAM supports plain chains of Conv2D, Dense, MaxPooling2D, AveragePooling2D, Flatten and "
                f"Dropout layers; {argument} has layer {layer.name!r} of type {type(layer).__name__}. "
                "Use zip_models for other architectures."
            )
    return layers


def _skeleton(models: Sequence[keras.Model], task_names: list) -> tuple[list, list]:
    """Per-model layer lists and an op skeleton (GroupLayers without weights), checked for shape."""
    chains = [_plain_layers(m, f"models[{i}]") for i, m in enumerate(models)]
    kinds = [[type(l).__name__ for l in c] for c in chains]
    if any(k != kinds[0] for k in kinds):
        raise ValueError(f"PAM needs models with the same layer sequence; received {kinds}.")
    shapes = [tuple(m.input_shape[1:]) for m in models]
    if len(set(shapes)) != 1:
        raise ValueError(f"PAM needs models with one input shape; received {shapes}.")
    param = [i for i, l in enumerate(chains[0]) if isinstance(l, (L.Conv2D, L.Dense))]
    ops, positions = [], 1
    for i, layer in enumerate(chains[0]):
        if isinstance(layer, L.Dropout):
            continue
        if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
            cfg = {k: layer.get_config()[k] for k in ("pool_size", "strides", "padding")}
            ops.append(("pool" if isinstance(layer, L.MaxPooling2D) else "avgpool", cfg))
        elif isinstance(layer, L.Flatten):
            positions = int(np.prod(layer.input_shape[1:-1]))
            ops.append(("flatten",))
        else:
            conv = isinstance(layer, L.Conv2D)
            cfg = {"activation": keras.activations.serialize(layer.activation)}
            if isinstance(cfg["activation"], dict):
                cfg["activation"] = cfg["activation"].get("config", {}).get("name", "linear")
            if conv:
                cfg.update(kernel_size=layer.kernel_size, strides=layer.strides, padding=layer.padding)
            ops.append(
                GroupLayer(
                    "conv" if conv else "dense", layer.name, cfg, {}, {},
                    in_positions=1 if conv else positions,
                    out_hw=tuple(layer.output_shape[1:3]) if conv else (1, 1),
                    head=i == param[-1],
                )
            )
            if not conv:
                positions = 1
    return chains, ops


def _hidden_activations(model: keras.Model, layers: list, x: np.ndarray) -> list[np.ndarray]:
    probe = keras.Model(model.inputs, [l.output for l in layers])
    outs = probe.predict(x, batch_size=500, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return [o.mean(axis=(1, 2)) if o.ndim == 4 else o for o in outs]


def pam_grouping(
    models: Sequence[keras.Model],
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.9,
    bins: int = 8,
    samples: int = 2000,
) -> list[np.ndarray]:
    """Group of every pooled unit of every hidden layer (see :func:`tfmot_zip.core.pam_math.assign_groups`).

    Pooled units are ordered model by model (model 0's units first). Returns, per hidden layer, an
    int array: ``-1`` dropped, ``t`` task t's group, ``T`` shared.

    Example:
        >>> groups = pam_grouping([m1, m2, m3], [(x1, y1), (x2, y2), (x3, y3)])  # doctest: +SKIP
    """
    chains, _ = _skeleton(models, [m.name for m in models])
    hidden = [[l for l in c if isinstance(l, (L.Conv2D, L.Dense))][:-1] for c in chains]
    if len(calibration_data) != len(models):
        raise ValueError(f"Expected one (x, y) calibration pair per model ({len(models)}); received {len(calibration_data)}.")
    per_layer = [[[] for _ in models] for _ in hidden[0]]  # [layer][task] -> list of model scores
    for t, pair in enumerate(calibration_data):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"calibration_data[{t}] must be an (x, y) pair of numpy arrays (labels are needed).")
        x, y = np.asarray(pair[0])[:samples], np.asarray(pair[1])[:samples]
        for m, model in enumerate(models):
            for l, acts in enumerate(_hidden_activations(model, hidden[m], x)):
                per_layer[l][t].append(binned_mutual_information(acts, y, bins=bins))
    return [assign_groups(relevant_units(np.stack([np.concatenate(s) for s in tasks]), threshold)) for tasks in per_layer]


def taylor_grouping(
    models: Sequence[keras.Model],
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.9,
    warmup_steps: int = 100,
    batches: int = 8,
) -> list[np.ndarray]:
    """Grouping from per-task first-order Taylor importance in an all-shared merged network.

    Every pooled unit is put in one shared group (block-diagonal start; cross-network blocks zero),
    the network is trained jointly for ``warmup_steps`` so cross-network weights can grow, then each
    unit's group-Taylor importance for each task's loss alone is its relevance to that task.
    Same output convention as :func:`pam_grouping`.

    Example:
        >>> groups = taylor_grouping([m1, m2, m3], [(x1, y1), (x2, y2), (x3, y3)])  # doctest: +SKIP
    """
    chains, _ = _skeleton(models, [m.name for m in models])
    widths = [sum(l.units if isinstance(l, L.Dense) else l.filters for l in [c[i] for c in chains])
              for i, l in enumerate(chains[0]) if isinstance(l, (L.Conv2D, L.Dense))][:-1]
    names = [f"task{t}" for t in range(len(models))]
    net = merge_pam_network(models, calibration_data, task_names=names, groups=[np.full(w, len(models)) for w in widths])
    finetune(net, calibration_data, warmup_steps)
    per_task = []
    for t in range(len(models)):
        onehot = [1.0 if s == t else 0.0 for s in range(len(models))]
        scores = taylor_importance(net, calibration_data, batches=batches, seed=t, task_weights=onehot)
        per_task.append([scores[(l, SHARED)] for l in range(len(widths))])
    return [assign_groups(relevant_units(np.stack([p[l] for p in per_task]), threshold)) for l in range(len(widths))]


def _original_weights(chains: list) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[tuple(l.get_weights()) for l in c if isinstance(l, (L.Conv2D, L.Dense))] for c in chains]


def merge_pam_network(
    models: Sequence[keras.Model],
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.9,
    task_names: Sequence[str] | None = None,
    groups: list[np.ndarray] | None = None,
    bins: int = 8,
    relevance: str = "mutual_information",
) -> GroupedNetwork:
    """Regroup and rewire the models into a :class:`GroupedNetwork` (block-diagonal start).

    Every unit keeps its incoming weights from its own network's units; allowed blocks between
    different networks' units start at zero (trainable); forbidden connections do not exist.

    Args:
        models: T tf_keras models with the same chain of Conv2D/Dense/pooling/Flatten layers.
        calibration_data: per task an ``(x, y)`` pair (labels needed for relevance).
        threshold: fraction of each task's information its relevant units must hold (0..1].
        task_names: default the models' names.
        groups: precomputed :func:`pam_grouping` result (skips the relevance pass).
        bins: quantile bins of the mutual-information estimate.
        relevance: "mutual_information" (:func:`pam_grouping`) or "taylor" (:func:`taylor_grouping`).

    Example:
        >>> net = merge_pam_network([m1, m2, m3], [(x1, y1), (x2, y2), (x3, y3)])  # doctest: +SKIP
    """
    if len(models) < 2:
        raise ValueError(f"PAM merges two or more models; received {len(models)}.")
    names = [m.name for m in models] if task_names is None else list(task_names)
    if len(names) != len(models) or len(set(names)) != len(names) or SHARED in names or INPUT in names:
        raise ValueError(f"Expected {len(models)} distinct task names other than 'shared'/'input'; received {names}.")
    chains, ops = _skeleton(models, names)
    if relevance not in ("mutual_information", "taylor"):
        raise ValueError(f"Unknown relevance={relevance!r}; supported: 'mutual_information', 'taylor'.")
    if groups is None and relevance == "taylor":
        groups = taylor_grouping(models, calibration_data, threshold=threshold)
    elif groups is None:
        groups = pam_grouping(models, calibration_data, threshold=threshold, bins=bins)
    weights = _original_weights(chains)
    T = len(models)
    keys = names + [SHARED]
    # owner[l]: for each pooled unit, (model, index); members[l][key] = pooled indices in that group
    previous = None  # (owner array, members dict)
    layer_ops = [op for op in ops if isinstance(op, GroupLayer)]
    for l, op in enumerate(layer_ops):
        widths = [w[l][1].shape[0] for w in weights]
        owner = np.concatenate([np.full(n, m) for m, n in enumerate(widths)])
        local = np.concatenate([np.arange(n) for n in widths])
        if op.head:
            members = {names[t]: np.flatnonzero(owner == t) for t in range(T)}
        else:
            members = {keys[g] if g < T else SHARED: np.flatnonzero(groups[l] == g) for g in range(T + 1)}
        for key, units in members.items():
            op.biases[key] = np.concatenate([weights[owner[u]][l][1][local[u] : local[u] + 1] for u in units]) if len(units) else np.zeros(0, np.float32)
            op.blocks[key] = {}
            sources = [INPUT] if previous is None else list(allowed_sources(key))
            for src in sources:
                if previous is None:
                    kernel_cols = [weights[owner[u]][l][0][..., local[u]] for u in units]
                    shape = weights[0][l][0].shape[:-1]
                    op.blocks[key][src] = np.stack(kernel_cols, -1) if units.size else np.zeros(shape + (0,), np.float32)
                    continue
                prev_owner, prev_local, prev_members = previous
                rows = prev_members[src]
                positions = op.in_positions
                shape_in = (op.config["kernel_size"] + (len(rows), len(units))) if op.kind == "conv" else (positions, len(rows), len(units))
                block = np.zeros(shape_in, np.float32)
                for j, u in enumerate(units):
                    m = owner[u]
                    original = weights[m][l][0]
                    if op.kind == "dense":
                        original = original.reshape(positions, -1, original.shape[-1])
                    for i, r in enumerate(rows):
                        if prev_owner[r] == m:  # same network: keep the original weight
                            block[..., i, j] = original[..., prev_local[r], local[u]]
                op.blocks[key][src] = block if op.kind == "conv" else block.reshape(positions * len(rows), len(units))
        previous = (owner, local, members)
    net = GroupedNetwork(names, tuple(models[0].input_shape[1:]), ops)
    _drop_dead_groups(net)
    return net


def _drop_dead_groups(net: GroupedNetwork) -> None:
    """Removes groups that compute a constant (every source empty) or that no group of the next layer reads."""
    layers = net.layers()
    for l in range(1, len(layers)):
        if layers[l].head:
            continue
        prev_units = layers[l - 1].units()
        for group in list(layers[l].units()):
            if sum(prev_units[s] for s in sources_of(group, list(prev_units))) == 0:
                net.keep_units(l, group, np.zeros(0, np.int64))
    for l in range(len(layers) - 2, -1, -1):
        readers = layers[l + 1].units()
        for group in list(layers[l].units()):
            if not any(group in layers[l + 1].blocks.get(reader, {}) for reader in readers):
                net.keep_units(l, group, np.zeros(0, np.int64))


def separate_network(model: keras.Model, task_name: str | None = None) -> GroupedNetwork:
    """One original model as a one-task :class:`GroupedNetwork` (all units in its task group)."""
    name = task_name or model.name
    chains, ops = _skeleton([model], [name])
    weights = _original_weights(chains)[0]
    for index, (op, (kernel, bias)) in enumerate(zip([o for o in ops if isinstance(o, GroupLayer)], weights)):
        op.biases[name] = bias
        op.blocks[name] = {INPUT if index == 0 else name: kernel}
    return GroupedNetwork([name], tuple(model.input_shape[1:]), ops)


def shared_network_from_zip(zipped: keras.Model, originals: Sequence[keras.Model], task_names: Sequence[str]) -> GroupedNetwork:
    """A fully shared zipped model (``zip_models(..., sharing=1.0)``) as a :class:`GroupedNetwork`.

    Hidden layers become one shared group (task 0's view of the shared units); heads stay per task,
    their rows reordered to task 0's unit order. Raises if a hidden layer is not fully shared.
    """
    from tfmot_zip.model.layers import ZipLayerMixin

    names = list(task_names)
    chains, ops = _skeleton([originals[0]], [names[0]])
    zl = [l for l in zipped.layers if isinstance(l, ZipLayerMixin)]
    gls = [o for o in ops if isinstance(o, GroupLayer)]
    if len(zl) != len(gls):
        raise ValueError(f"Expected {len(gls)} zipped layers, found {len(zl)}.")
    for i, (layer, op) in enumerate(zip(zl, gls)):
        if not op.head:
            outs = [np.sort(layer.get_maps(t)[1]) for t in range(len(names))]
            if any(not np.array_equal(o, outs[0]) for o in outs):
                raise ValueError(f"Layer {layer.name!r} is not fully shared; use sharing=1.0.")
            kernel, bias = layer.get_task_weights(0)
            op.biases[SHARED] = bias
            op.blocks[SHARED] = {INPUT if i == 0 else SHARED: kernel}
        else:
            base = zl[i - 1].get_maps(0)[1]
            for t, name in enumerate(names):
                kernel, bias = layer.get_task_weights(t)
                theirs = zl[i - 1].get_maps(t)[1]
                order = [int(np.flatnonzero(theirs == p)[0]) for p in base]
                op.biases[name] = bias
                op.blocks[name] = {SHARED: kernel[order]}
    return GroupedNetwork(names, tuple(originals[0].input_shape[1:]), ops)


# --------------------------------------------------------------------------------------------------
# Hessian merge of per-task (pruned) networks into subset groups
# --------------------------------------------------------------------------------------------------


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


def _prefix_state_model(net: GroupedNetwork, stop: int, task: str) -> keras.Model:
    """tf_keras model: image -> ``{group: tensor}`` inputs of GroupLayer ``stop`` on ``task``'s path."""
    x = keras.Input(net.input_shape)
    state, cache, seen = {INPUT: x}, {}, 0
    for op in net.ops:
        if isinstance(op, GroupLayer):
            if seen == stop:
                break
            seen += 1
        state = net._apply(op, state, [task], cache)
    return keras.Model(x, state)


def _layer_inputs(
    net: GroupedNetwork, stop: int, task: str, x: np.ndarray, groups: list, units: dict, max_rows: int, seed: int
) -> np.ndarray:
    """Rows of GroupLayer ``stop``'s inputs on ``task``'s data in merged coordinates (groups a task does not
    run are zero): conv patches or flattened dense inputs, without the bias coordinate."""
    op = net.layers()[stop]
    if stop == 0:
        tensor = np.asarray(x, np.float32)
    else:
        outs = _prefix_state_model(net, stop, task).predict(x, batch_size=500, verbose=0)
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
            :func:`separate_network` and :func:`prune_structured`), their task names distinct.
        calibration_x: per network, images of its task.
        max_relative_error: merge threshold (0 keeps the networks separate, block-diagonal); a dict
            ``{layer name: threshold}`` sets it per hidden layer (layers not named: 0). Merging conv
            units saves far more FLOPs than merging dense units, so a higher conv threshold pays.
        damping: Hessian damping (relative to the mean diagonal).
        samples: calibration images per task.
        max_rows: conv patch rows per Hessian (a seeded random subset beyond that).
        seed: patch subsampling seed.
        keep_separate: task names whose units are never merged (their paths stay as they are, e.g.
            a task that lost accuracy when it was merged; see :func:`merge_and_prune`).

    Returns:
        A :class:`GroupedNetwork` with groups ``shared``, ``a+b`` ... and per task.

    Example:
        >>> merged = merge_pruned_networks([net_a, net_b, net_c], [xa, xb, xc])  # doctest: +SKIP
        >>> merged.group_sizes()[0]  # doctest: +SKIP
        {'shared': 2, 'a+c': 1, 'c': 1, 'name': 'conv1'}
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
    hidden = [op.name for op in task_layers[0] if not op.head]
    if isinstance(max_relative_error, dict):
        unknown = sorted(set(max_relative_error) - set(hidden))
        if unknown:
            raise ValueError(f"max_relative_error names unknown layers {unknown}; hidden layers: {hidden}.")
        thresholds = {name: float(max_relative_error.get(name, 0.0)) for name in hidden}
    else:
        thresholds = {name: float(max_relative_error) for name in hidden}
    if any(not v >= 0.0 for v in thresholds.values()):
        raise ValueError(f"Expected max_relative_error >= 0. Received: {max_relative_error!r}")
    if len({len(t) for t in task_layers}) != 1:
        raise ValueError("The networks have different numbers of Dense/Conv2D layers; merge networks of one architecture.")
    xs = [np.asarray(x)[:samples] for x in calibration_x]
    ops = []
    for op in nets[0].ops:
        ops.append(GroupLayer(op.kind, op.name, dict(op.config), {}, {}, op.in_positions, op.out_hw, op.head)
                   if isinstance(op, GroupLayer) else op)
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
        for g in new_groups:
            weights = np.stack([w for _, w in clusters_by_group[g]], axis=1)  # [d, n]
            op.biases[g] = weights[-1].astype(np.float32)
            body = weights[:-1]
            op.blocks[g] = {}
            if first:
                op.blocks[g][INPUT] = body.reshape(nets[0].layers()[0].blocks[names[0]][INPUT].shape[:-1] + (-1,)).astype(np.float32)
                continue
            offsets = _layout(groups, units)
            positions = int(np.prod(op.config["kernel_size"])) if op.kind == "conv" else op.in_positions
            per = body.reshape(positions, total, -1)
            for src in sources_of(g, groups):
                block = per[:, offsets[src] : offsets[src] + units[src], :]
                if op.kind == "conv":
                    block = block.reshape(tuple(op.config["kernel_size"]) + (units[src], -1))
                else:
                    block = block.reshape(positions * units[src], -1)
                op.blocks[g][src] = block.astype(np.float32)
        offsets = _layout(new_groups, new_units)
        index_of = [np.zeros(vectors[t].shape[1], np.int64) for t in range(len(names))]
        for g in new_groups:
            for i, (cluster, _) in enumerate(clusters_by_group[g]):
                for name, u in cluster.members.items():
                    index_of[names.index(name)][u] = offsets[g] + i
        groups, units = new_groups, new_units
    _drop_dead_groups(net)  # e.g. a task's units whose every reader above was merged away
    return net


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


# --------------------------------------------------------------------------------------------------
# Training, importance, pruning
# --------------------------------------------------------------------------------------------------


def finetune(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    steps: int,
    learning_rate: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    task_weights: Sequence[float] | None = None,
) -> GroupedNetwork:
    """Joint training (each step one batch per task, summed losses, ``task_weights`` per task), weights
    written back in place."""
    if steps <= 0:
        return net
    model = net.to_keras()
    compile_multitask(model, learning_rate, decay_steps=int(steps), loss_weights=task_weights)
    data = multitask(*train_sets, batch_size=batch_size, seed=seed)
    if len(train_sets) == 1:  # a one-output model wants plain (x, y) batches
        data = data.map(lambda xs, ys: (xs[0], ys[0]))
    model.fit(data, steps_per_epoch=int(steps), epochs=1, verbose=0)
    return net.read_weights(model)


def prune_unstructured(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    sparsity: float = 0.8,
    steps: int = 300,
    learning_rate: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
) -> GroupedNetwork:
    """TFMOT magnitude pruning of every kernel while training jointly (the size route; a copy is returned).

    ``tfmot.sparsity.keras.prune_low_magnitude`` wraps the network's Keras model (a polynomial
    schedule from 0 to ``sparsity`` over the first 70% of ``steps``, updated every ``steps // 20``
    steps), ``strip_pruning`` removes the wrappers and the sparse weights are read back. Zeros
    shrink the gzipped TFLite file; they do not remove FLOPs on dense kernels (structured pruning,
    :func:`prune_structured`, does).

    Example:
        >>> sparse = prune_unstructured(net, trains, sparsity=0.8, steps=300)  # doctest: +SKIP
    """
    import tensorflow_model_optimization as tfmot

    if not 0.0 < float(sparsity) < 1.0:
        raise ValueError(f"Expected 0 < sparsity < 1. Received: sparsity={sparsity!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"Expected an integer steps >= 2. Received: steps={steps!r}")
    sk = tfmot.sparsity.keras
    schedule = sk.PolynomialDecay(0.0, float(sparsity), begin_step=0, end_step=max(1, int(0.7 * steps)),
                                  frequency=max(1, steps // 20))
    wrapped = sk.prune_low_magnitude(net.to_keras(), pruning_schedule=schedule)
    compile_multitask(wrapped, learning_rate)
    data = multitask(*train_sets, batch_size=batch_size, seed=seed)
    if len(train_sets) == 1:
        data = data.map(lambda xs, ys: (xs[0], ys[0]))
    wrapped.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[sk.UpdatePruningStep()])
    return net.copy().read_weights(sk.strip_pruning(wrapped))


def evaluate(net: GroupedNetwork, sets: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Accuracy (%) of every task on its own ``(x, y)``."""
    return evaluate_tasks(net.to_keras(), list(sets))


def taylor_importance(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    batches: int = 8,
    batch_size: int = 128,
    seed: int = 0,
    task_weights: Sequence[float] | None = None,
) -> dict:
    """First-order Taylor importance of every hidden unit: mean over batches of ``(sum_w w * dL/dw)^2``.

    ``w`` runs over the unit's incoming kernel weights (from every source block) and its bias; ``L``
    is the summed loss of all tasks, each on its own data (Molchanov et al. 2019, group Taylor).

    Args:
        task_weights: per task, the weight of its loss in ``L`` (default all 1; a one-hot vector
            measures one task's importance).

    Returns:
        ``{(layer_index, group): [units] scores}`` for every non-head group.
    """
    weights_of_tasks = [1.0] * len(train_sets) if task_weights is None else [float(w) for w in task_weights]
    model = net.to_keras()
    by_name = {l.name: l for l in model.layers}
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    rng = np.random.default_rng(seed)
    layers = net.layers()
    targets = []  # (key, layer object)
    for li, op in enumerate(layers):
        if op.head:
            continue
        for group in op.units():
            for src in op.blocks[group]:
                layer = by_name.get(block_name(op.name, group, src))
                if layer is not None:
                    targets.append(((li, group), layer))
    variables = [v for _, layer in targets for v in layer.trainable_variables]
    scores = {key: np.zeros(layers[key[0]].units()[key[1]]) for key, _ in targets}
    for _ in range(batches):
        feeds, labels = [], []
        for x, y in train_sets:
            idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
            feeds.append(x[idx])
            labels.append(y[idx])
        with tf.GradientTape() as tape:
            outs = model(feeds, training=False)
            outs = outs if isinstance(outs, list) else [outs]
            loss = tf.add_n([w * loss_fn(y, o) for w, y, o in zip(weights_of_tasks, labels, outs)])
        grads = tape.gradient(loss, variables)
        grad_of = {v.ref(): g for v, g in zip(variables, grads)}
        batch = {key: 0.0 for key in scores}
        for key, layer in targets:
            for v in layer.trainable_variables:
                g = grad_of[v.ref()]
                if g is None:
                    continue
                prod = (v * g).numpy()
                axes = tuple(range(prod.ndim - 1))
                batch[key] = batch[key] + (prod.sum(axis=axes) if axes else prod)
        for key in scores:
            scores[key] += np.asarray(batch[key]) ** 2 / batches
    return scores


def _unit_costs(net: GroupedNetwork) -> dict:
    """Per (layer, group): FLOPs of one more output unit, weighted by how many subsets run it."""
    shapes = net.layer_shapes()
    costs = {}
    for li, (op, shape) in enumerate(zip(net.layers(), shapes)):
        if op.head:
            continue
        for group, n in shape.units.items():
            previous = shapes[li - 1].units if li else {}
            n_in = shape.input_units if li == 0 else sum(previous[s] for s in sources_of(group, list(previous)))
            f = group_flops(LayerShape(shape.kind, {}, shape.kernel_size, shape.out_hw, shape.in_positions), n_in, 1)[0]
            costs[(li, group)] = max(f, 1) * _subsets_running(group, net.task_names)
    return costs


def _subsets_running(group: str, task_names: Sequence[str]) -> int:
    """How many non-empty task subsets run ``group``."""
    served = len(task_names) if group == SHARED else len(group.split("+"))
    return 2 ** len(task_names) - 2 ** (len(task_names) - served)


def _effective_cost(shapes: Sequence[LayerShape], sizes: Sequence[dict], subset: Sequence[str]) -> int:
    """FLOPs of ``subset`` with ``sizes[l][group]`` hidden units left, groups cut off from the input
    or read by nothing above counted as removed (as :func:`_drop_dead_groups` will remove them)."""
    live = [dict(units) for units in sizes]
    for l in range(1, len(live)):
        previous = live[l - 1]
        for g in live[l]:
            if not any(previous[s] > 0 for s in sources_of(g, list(previous))):
                live[l][g] = 0
    for l in range(len(live) - 2, -1, -1):
        above = {g for g, n in live[l + 1].items() if n > 0}
        for g in live[l]:
            if not any(covers(g, reader) for reader in above):
                live[l][g] = 0
    if len(shapes) > len(live):  # the head reads the last hidden layer
        for g in live[-1]:
            if not any(covers(g, t) for t in shapes[-1].units):
                live[-1][g] = 0
    new = [LayerShape(s.kind, units, s.kernel_size, s.out_hw, s.in_positions, s.input_units, s.head)
           for s, units in zip(shapes, live)] + list(shapes[len(live):])
    return subset_cost(new, subset)[0]


def _task_paths_alive(sizes: Sequence[dict], task_names: Sequence[str]) -> bool:
    """True when, with ``sizes[l][group]`` units left in hidden layer l, every task still has a unit
    in every layer that is fed, through groups it may read, from the input, and its head has one to read.

    Example:
        >>> _task_paths_alive([{"shared": 0, "a": 1, "b": 1}, {"a+b": 2, "b": 1}], ["a", "b"])
        False
    """
    previous: dict | None = None
    for units in sizes:
        alive = {g: n for g, n in units.items() if n > 0
                 and (previous is None or any(previous[s] > 0 for s in sources_of(g, list(previous))))}
        if not all(any(runs_for(g, [t]) for g in alive) for t in task_names):
            return False
        previous = alive
    return previous is None or all(any(previous[s] > 0 for s in sources_of(t, list(previous))) for t in task_names)


def prune_step(net: GroupedNetwork, scores: dict, fraction: float) -> GroupedNetwork:
    """Removes the hidden units with the lowest importance per FLOP, ``fraction`` of the FLOPs (a new network).

    Importance is normalised per layer (divided by the layer's mean score), then divided by the
    unit's subset-weighted FLOPs, so cheap-to-keep and informative units survive. Every task keeps
    a connected path: a unit in every layer fed from the input through groups it may read.
    """
    net = net.copy()
    costs = _unit_costs(net)
    layers = net.layers()
    entries = []
    for (li, group), s in scores.items():
        layer_scores = np.concatenate([v for (lj, _), v in scores.items() if lj == li])
        norm = s / (layer_scores.mean() + 1e-30)
        for u, value in enumerate(norm):
            entries.append((value / costs[(li, group)], li, group, u))
    entries.sort(key=lambda e: e[0])
    shapes = net.layer_shapes()
    every = tuple(net.task_names)
    target = (1.0 - fraction) * subset_cost(shapes, every)[0]  # all-tasks FLOPs after this step
    removed: dict = {}
    sizes = [dict(op.units()) for op in layers if not op.head]
    for _, li, group, u in entries:
        sizes[li][group] -= 1
        if not _task_paths_alive(sizes, net.task_names):  # every task keeps a connected path
            sizes[li][group] += 1
            continue
        removed.setdefault((li, group), set()).add(u)
        if _effective_cost(shapes, sizes, every) <= target:  # readers' input rows and dead groups counted
            break
    for (li, group), gone in removed.items():
        if gone:
            keep = np.array([u for u in range(layers[li].units()[group]) if u not in gone], np.int64)
            net.keep_units(li, group, keep)
    _drop_dead_groups(net)
    return net


def prune_structured(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    val_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    targets: Sequence[float],
    fraction: float = 0.2,
    min_fraction: float = 0.02,
    finetune_steps: int = 150,
    max_rounds: int = 30,
    learning_rate: float = 5e-4,
    verbose: bool = False,
) -> GroupedNetwork:
    """Iterative Taylor channel pruning with short fine-tuning while every task stays on target.

    Each round removes units worth ``fraction`` of the all-tasks FLOPs (:func:`prune_step`), fine-tunes
    ``finetune_steps`` joint steps and checks every task's accuracy on ``val_sets`` against
    ``targets`` (percent). A failing round is undone and the fraction halved; pruning stops when
    it falls below ``min_fraction`` or after ``max_rounds``.

    Returns:
        The smallest network that met every target (``history`` records each round).

    Example:
        >>> small = prune_structured(net, trains, vals, targets=[96.5, 96.0, 97.0])  # doctest: +SKIP
    """
    if len(targets) != len(net.task_names) or len(val_sets) != len(net.task_names):
        raise ValueError(f"Expected one target and one validation set per task ({len(net.task_names)}).")
    best = net.copy()
    for round_index in range(max_rounds):
        if fraction < min_fraction:
            break
        scores = taylor_importance(best, train_sets, seed=round_index)
        candidate = prune_step(best, scores, fraction)
        finetune(candidate, train_sets, finetune_steps, learning_rate=learning_rate, seed=round_index)
        accs = evaluate(candidate, val_sets)
        ok = all(a >= t for a, t in zip(accs, targets))
        flops = candidate.subset_costs()[tuple(net.task_names)][0]
        best.history.append({"round": round_index, "fraction": fraction, "accuracy": accs, "flops": flops, "accepted": ok})
        if verbose:
            print(f"round {round_index}: fraction {fraction:.3f} acc {np.round(accs, 2)} flops {flops} {'ok' if ok else 'undo'}")
        if ok:
            candidate.history = best.history
            best = candidate
        else:
            fraction /= 2
    return best


@dataclass
class PamResult:
    """What :func:`merge_and_prune` did: the final network and each stage's figures.

    Attributes:
        net: the pruned merged :class:`GroupedNetwork`.
        separate: each task's network pruned on its own (the relevance step and the baseline).
        threshold: the merge threshold that was accepted (``None``: every candidate failed, the
            separate networks were kept side by side).
        tried: per candidate, in the order run, ``{"threshold", "kept_separate", "accuracy", "accepted",
            "flops"}`` (validation accuracy; all-tasks FLOPs before the final pruning).
        merged: the accepted merged network before the final pruning.
        kept_separate: tasks the accepted merge left unmerged (they lost accuracy when merged).
    """

    net: GroupedNetwork
    separate: list
    threshold: float | dict | None
    tried: list
    merged: GroupedNetwork
    kept_separate: list


DEFAULT_MERGE_LEVELS = (1.0, 0.3, 0.15, 0.05)


def default_thresholds(net: GroupedNetwork, levels: Sequence[float] = DEFAULT_MERGE_LEVELS) -> list:
    """The merge candidates :func:`merge_and_prune` tries by default: each level for every hidden
    layer, and each level for the conv layers only (dense units kept per task).

    Conv units carry nearly all the FLOPs of a CNN while dense units carry most of the accuracy
    loss of a merge, so a conv-only merge often saves most of the computation at a fraction of
    the loss (LeNet-5: 1.0 everywhere loses 0.6 point on a task, 1.0 on the convs meets every target).

    Example:
        >>> default_thresholds(separate_network(lenet, "a"))[:2]  # doctest: +SKIP
        [1.0, {'conv1': 1.0, 'conv2': 1.0}]
    """
    convs = [op.name for op in net.layers() if op.kind == "conv" and not op.head]
    dense = [op.name for op in net.layers() if op.kind != "conv" and not op.head]
    out: list = []
    for level in levels:
        out.append(float(level))
        if convs and dense:
            out.append({name: float(level) for name in convs})
    return out


def merge_and_prune(
    models: Sequence[keras.Model],
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    val_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    targets: Sequence[float],
    thresholds: Sequence[float | dict] | None = None,
    task_names: Sequence[str] | None = None,
    finetune_steps: int = 3000,
    prune_steps: int = 200,
    learning_rate: float = 1e-3,
    separate: Sequence[GroupedNetwork] | None = None,
    protect: bool = True,
    verbose: bool = False,
) -> PamResult:
    """Pruning-aware merge: prune each task's network, merge the survivors into subset groups, prune again.

    1. Relevance: each model is pruned on its own (:func:`prune_structured`, whole units) while its
       task stays on target; the units it keeps are the ones relevant to its task.
    2. Merge: :func:`merge_pruned_networks` shares relevant units across tasks by Hessian pairing,
       so that a shared unit is computed once for every subset that needs it. Every candidate
       threshold is merged (seconds) and the candidates are fine-tuned (``finetune_steps`` joint
       steps) in order of their all-tasks FLOPs, fewest first; the first whose every task meets its
       target on ``val_sets`` is kept. Task protection (``protect``): a candidate on which some tasks
       miss their targets is merged again with those tasks kept out (their units stay their own)
       and queued by its FLOPs like the others.
    3. Prune the merged network again (every group, :func:`prune_structured`).

    Since merging never adds a unit to any task's path, every subset costs at most what the
    separately pruned networks cost; sharing makes subsets of several tasks cheaper.

    Args:
        models: T tf_keras models with one Conv2D/Dense/pooling/Flatten chain (fold BatchNormalization
            first: :func:`tfmot_zip.model.fold.fold_batchnorm`).
        train_sets, val_sets: per task ``(x, y)``.
        targets: per task the least validation accuracy (percent) to keep.
        thresholds: candidate ``max_relative_error`` values (floats or per-layer dicts); default
            :func:`default_thresholds` (each level everywhere and on the conv layers only).
        task_names: default the models' names.
        finetune_steps: joint steps after merging; prune_steps: steps after each pruning round.
        learning_rate: fine-tuning learning rate (cosine decay to 0).
        separate: already pruned one-task networks (skips step 1).
        protect: queue a failed candidate again with the tasks that missed their targets kept separate.
        verbose: print each stage.

    Returns:
        A :class:`PamResult`.

    Example:
        >>> result = merge_and_prune([m1, m2, m3], trains, vals, targets=[96.0, 95.0, 96.5])  # doctest: +SKIP
        >>> result.net.subset_costs()[("classes_0_2",)]  # doctest: +SKIP
        (150123, 21000)
    """
    names = [m.name for m in models] if task_names is None else list(task_names)
    if not (len(names) == len(models) == len(train_sets) == len(val_sets) == len(targets)) or len(models) < 2:
        raise ValueError(
            f"Expected two or more models with one name, train set, validation set and target each; received "
            f"{len(models)} models, {len(names)} names, {len(train_sets)} train sets, {len(val_sets)} validation "
            f"sets, {len(targets)} targets."
        )
    if separate is None:
        separate = [
            prune_structured(separate_network(m, n), [tr], [va], [tg], finetune_steps=prune_steps, verbose=verbose)
            for m, n, tr, va, tg in zip(models, names, train_sets, val_sets, targets)
        ]
    calibration = [x for x, _ in train_sets]
    if thresholds is None:
        thresholds = default_thresholds(separate[0])
    queue, seen, tried, chosen, merged, kept = [], set(), [], None, None, []

    def push(threshold, keep):
        candidate = merge_pruned_networks(separate, calibration, max_relative_error=threshold, keep_separate=keep)
        flops = candidate.subset_costs()[tuple(names)][0]
        layout = (flops, repr(candidate.group_sizes()))
        if layout not in seen:  # two thresholds can give the same merge
            seen.add(layout)
            heapq.heappush(queue, (flops, len(seen), threshold, keep, candidate))

    for threshold in thresholds:
        push(threshold, [])
    while queue and merged is None:
        flops, _, threshold, keep, candidate = heapq.heappop(queue)
        finetune(candidate, train_sets, finetune_steps, learning_rate=learning_rate)
        accs = evaluate(candidate, val_sets)
        failing = [n for n, a, t in zip(names, accs, targets) if a < t]
        tried.append({"threshold": threshold, "kept_separate": keep, "accuracy": accs, "accepted": not failing, "flops": flops})
        if verbose:
            print(f"merge threshold {threshold} keeping {keep or 'none'} separate: val acc {np.round(accs, 2)} "
                  f"all-tasks FLOPs {flops} {'ok' if not failing else 'too lossy for ' + str(failing)}")
        if not failing:
            chosen, merged, kept = threshold, candidate, keep
        elif protect and not set(failing) <= set(keep) and len(set(names) - set(keep) - set(failing)) >= 2:
            push(threshold, keep + [n for n in failing if n not in keep])  # the others may still share
    if merged is None:  # keep the separate networks side by side (no sharing, never worse)
        merged = merge_pruned_networks(separate, calibration, max_relative_error=0.0)
    pruned = prune_structured(merged.copy(), train_sets, val_sets, targets, finetune_steps=prune_steps,
                              learning_rate=5e-4, verbose=verbose)
    return PamResult(pruned, list(separate), chosen, tried, merged, list(kept))


# --------------------------------------------------------------------------------------------------
# One-call API and export
# --------------------------------------------------------------------------------------------------


def merge_pam(
    *models: keras.Model,
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    relevance: str = "mutual_information",
    threshold: float = 0.9,
    task_names: Sequence[str] | None = None,
    single_input: bool = False,
) -> keras.Model:
    """Pruning-aware merge of T models into one tf_keras model (one output per task, named after it).

    Args:
        *models: two or more tf_keras models with the same Conv2D/Dense/pooling/Flatten chain.
        calibration_data: per model, ``(x, y)`` of its task (labels are needed).
        relevance: "mutual_information" (binned per-unit MI with the task's labels, the default) or
            "taylor" (per-task Taylor importance after a short all-shared joint warm-up).
        threshold: each task's relevant units hold this fraction of its summed information.
        task_names: default the models' names.
        single_input: one input for all tasks (shared groups computed once) instead of one per task.

    Returns:
        A standard functional tf_keras model (groups as separate Conv2D/Dense blocks summed with
        Add). For pruning and per-subset export use :func:`merge_pam_network` instead.

    Example:
        >>> merged = merge_pam(m1, m2, m3, calibration_data=[(x1, y1), (x2, y2), (x3, y3)])  # doctest: +SKIP
        >>> merged.output_names  # doctest: +SKIP
        ['classes_0_2', 'classes_3_5', 'classes_6_9']
    """
    net = merge_pam_network(list(models), calibration_data, threshold=threshold, task_names=task_names,
                            relevance=relevance)
    return net.to_keras(single_input=single_input)


def _signature_key(subset: Sequence[str]) -> str:
    return "tasks__" + "__".join(subset)


def export_subsets_tflite(net: GroupedNetwork, path: str | os.PathLike, subsets: Sequence[Sequence[str]] | None = None) -> dict:
    """One TFLite file with a signature per task subset, each running only that subset's groups.

    Signature key ``tasks__<a>__<b>``, input ``image``, outputs named after the tasks. All
    signatures call the same layer objects, so each weight is stored once.

    Returns:
        ``{subset: signature key}``.

    Example:
        >>> keys = export_subsets_tflite(net, "/tmp/pam.tflite")  # doctest: +SKIP
        >>> keys[("classes_0_2",)]  # doctest: +SKIP
        'tasks__classes_0_2'
    """
    subsets = [tuple(s) for s in (subsets or all_subsets(net.task_names))]
    cache: dict = {}
    module = tf.Module()
    signatures, keys = {}, {}
    module.models = []
    for subset in subsets:
        model = net.to_keras(subset, single_input=True, cache=cache, name=_signature_key(subset))
        module.models.append(model)
        spec = tf.TensorSpec([None, *net.input_shape], tf.float32, name="image")

        def run(image, model=model, subset=subset):
            outs = model(image, training=False)
            outs = outs if isinstance(outs, list) else [outs]
            return {t: o for t, o in zip(subset, outs)}

        key = _signature_key(subset)
        signatures[key] = tf.function(run, input_signature=[spec], autograph=False).get_concrete_function()
        keys[subset] = key
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        flat = converter.convert()
    atomic_write_bytes(path, flat)
    return keys
