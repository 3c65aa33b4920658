"""Grouped networks read from tf_keras models: one model alone, several block-diagonally, or a zipped model.

PAM handles plain chains of Conv2D, Dense, MaxPooling2D, AveragePooling2D, Flatten and Dropout layers
(fold BatchNormalization first: :func:`tfmot_zip.model.fold.fold_batchnorm`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import check_tf_keras_model, keras
from tfmot_zip.core.pam_math import SHARED, allowed_sources
from tfmot_zip.pam.network import INPUT, GroupedNetwork, GroupLayer

__all__ = [
    "plain_layers",
    "read_chain",
    "original_weights",
    "check_task_names",
    "separate_network",
    "block_diagonal_network",
    "shared_network_from_zip",
]

L = keras.layers
_SUPPORTED = (L.Conv2D, L.Dense, L.MaxPooling2D, L.AveragePooling2D, L.Flatten, L.Dropout, L.InputLayer)


def plain_layers(model: keras.Model, argument: str) -> list:
    """The layers of ``model`` (input layer excluded), checked to be a chain PAM supports.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,), name="fc")])
        >>> [layer.name for layer in plain_layers(model, "model")]
        ['fc']
    """
    check_tf_keras_model(model, argument)
    layers = [layer for layer in model.layers if not isinstance(layer, L.InputLayer)]
    for layer in layers:
        if not isinstance(layer, _SUPPORTED) or isinstance(layer, L.Conv2D) and layer.dilation_rate != (1, 1):
            raise ValueError(
                f"PAM supports plain chains of Conv2D, Dense, MaxPooling2D, AveragePooling2D, Flatten and "
                f"Dropout layers; {argument} has layer {layer.name!r} of type {type(layer).__name__}. "
                "Use zip_models for other architectures."
            )
    return layers


def _activation_name(layer) -> str:
    activation = keras.activations.serialize(layer.activation)
    return activation.get("config", {}).get("name", "linear") if isinstance(activation, dict) else activation


def read_chain(models: Sequence[keras.Model]) -> tuple[list, list]:
    """Per-model layer lists and an op skeleton (GroupLayers without weights), checked for shape.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> model = keras.Sequential([keras.layers.Flatten(input_shape=(2, 2, 1)), keras.layers.Dense(3, name="fc"),
        ...                           keras.layers.Dense(2, name="head")])
        >>> chains, ops = read_chain([model])
        >>> ops[0], [(op.name, op.in_positions, op.head) for op in ops[1:]]
        (('flatten',), [('fc', 4, False), ('head', 1, True)])
    """
    chains = [plain_layers(m, f"models[{i}]") for i, m in enumerate(models)]
    kinds = [[type(layer).__name__ for layer in chain] for chain in chains]
    if any(k != kinds[0] for k in kinds):
        raise ValueError(f"PAM needs models with the same layer sequence; received {kinds}.")
    shapes = [tuple(m.input_shape[1:]) for m in models]
    if len(set(shapes)) != 1:
        raise ValueError(f"PAM needs models with one input shape; received {shapes}.")
    param = [i for i, layer in enumerate(chains[0]) if isinstance(layer, (L.Conv2D, L.Dense))]
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
            cfg = {"activation": _activation_name(layer)}
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


def original_weights(chains: list) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per model, per Dense/Conv2D layer, its ``(kernel, bias)``."""
    return [[tuple(layer.get_weights()) for layer in chain if isinstance(layer, (L.Conv2D, L.Dense))] for chain in chains]


def check_task_names(models: Sequence[keras.Model], task_names: Sequence[str] | None) -> list[str]:
    """``task_names`` (default the models' names), checked: two or more models, distinct names other
    than ``shared`` and ``input``.

    Example:
        >>> check_task_names([None, None], ["a", "b"])
        ['a', 'b']
    """
    if len(models) < 2:
        raise ValueError(f"PAM merges two or more models; received {len(models)}.")
    names = [m.name for m in models] if task_names is None else list(task_names)
    if len(names) != len(models) or len(set(names)) != len(names) or SHARED in names or INPUT in names:
        raise ValueError(f"Expected {len(models)} distinct task names other than 'shared'/'input'; received {names}.")
    return names


def separate_network(model: keras.Model, task_name: str | None = None) -> GroupedNetwork:
    """One original model as a one-task :class:`GroupedNetwork` (all units in its task group).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="fc"),
        ...                           keras.layers.Dense(2, name="head")], name="a")
        >>> separate_network(model).group_sizes()
        [{'a': 3, 'name': 'fc'}]
    """
    name = task_name or model.name
    chains, ops = read_chain([model])
    weights = original_weights(chains)[0]
    for index, (op, (kernel, bias)) in enumerate(zip([o for o in ops if isinstance(o, GroupLayer)], weights)):
        op.biases[name] = bias
        op.blocks[name] = {INPUT if index == 0 else name: kernel}
    return GroupedNetwork([name], tuple(model.input_shape[1:]), ops)


def block_diagonal_network(
    models: Sequence[keras.Model], groups: Sequence[np.ndarray], task_names: Sequence[str] | None = None
) -> GroupedNetwork:
    """The models regrouped and rewired into one :class:`GroupedNetwork`, weights block-diagonal.

    ``groups[l]`` gives every pooled unit of hidden layer l (model 0's units first) its group:
    ``-1`` dropped, ``t`` task t's, ``T`` shared (:func:`tfmot_zip.pam.grouping.pam_grouping`). Every
    unit keeps its incoming weights from its own network's units; allowed blocks between different
    networks' units start at zero (trainable); forbidden connections do not exist. Heads stay per task.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> mlp = lambda name: keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="fc"),
        ...                                      keras.layers.Dense(2, name="head")], name=name)
        >>> net = block_diagonal_network([mlp("a"), mlp("b")], [np.array([2, 2, 0, 1, 1, -1])])
        >>> net.group_sizes()
        [{'a': 1, 'b': 2, 'shared': 2, 'name': 'fc'}]
    """
    names = check_task_names(models, task_names)
    chains, ops = read_chain(models)
    weights = original_weights(chains)
    previous = None  # the layer below: (owner model, index in it, {group: pooled units}) of its pooled units
    for index, op in enumerate([op for op in ops if isinstance(op, GroupLayer)]):
        layer_weights = [w[index] for w in weights]
        widths = [bias.shape[0] for _, bias in layer_weights]
        owner = np.concatenate([np.full(n, m) for m, n in enumerate(widths)])
        local = np.concatenate([np.arange(n) for n in widths])
        if op.head:
            members = {name: np.flatnonzero(owner == t) for t, name in enumerate(names)}
        else:
            members = {(names + [SHARED])[g]: np.flatnonzero(groups[index] == g) for g in range(len(names) + 1)}
        for key, units in members.items():
            biases = [layer_weights[owner[u]][1][local[u] : local[u] + 1] for u in units]
            op.biases[key] = np.concatenate(biases) if len(units) else np.zeros(0, np.float32)
            if previous is None:
                kernel = layer_weights[0][0]
                columns = [layer_weights[owner[u]][0][..., local[u]] for u in units]
                op.blocks[key] = {INPUT: np.stack(columns, -1) if units.size else np.zeros(kernel.shape[:-1] + (0,), np.float32)}
            else:
                op.blocks[key] = {
                    src: _own_network_block(op, layer_weights, owner, local, units, previous, previous[2][src])
                    for src in allowed_sources(key)
                }
        previous = (owner, local, members)
    return GroupedNetwork(names, tuple(models[0].input_shape[1:]), ops).drop_dead_groups()


def _own_network_block(op: GroupLayer, layer_weights: list, owner, local, units, previous: tuple, rows) -> np.ndarray:
    """Kernel block from pooled units ``rows`` below into pooled units ``units``: each unit's original
    weights from its own network's units, zero across networks."""
    prev_owner, prev_local, _ = previous
    positions = op.in_positions
    shape = (op.config["kernel_size"] + (len(rows), len(units))) if op.kind == "conv" else (positions, len(rows), len(units))
    block = np.zeros(shape, np.float32)
    for j, u in enumerate(units):
        m = owner[u]
        original = layer_weights[m][0]
        if op.kind == "dense":
            original = original.reshape(positions, -1, original.shape[-1])
        for i, r in enumerate(rows):
            if prev_owner[r] == m:  # same network: keep the original weight
                block[..., i, j] = original[..., prev_local[r], local[u]]
    return block if op.kind == "conv" else block.reshape(positions * len(rows), len(units))


def shared_network_from_zip(zipped: keras.Model, originals: Sequence[keras.Model], task_names: Sequence[str]) -> GroupedNetwork:
    """A fully shared zipped model (``zip_models(..., sharing=1.0)``) as a :class:`GroupedNetwork`.

    Hidden layers become one shared group (task 0's view of the shared units); heads stay per task,
    their rows reordered to task 0's unit order. Raises if a hidden layer is not fully shared.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip import zip_models
        >>> from tfmot_zip.compat import keras
        >>> mlp = lambda name: keras.Sequential([keras.layers.Dense(3, "relu", input_shape=(4,), name="fc"),
        ...                                      keras.layers.Dense(2, name="head")], name=name)
        >>> models = [mlp("a"), mlp("b")]
        >>> x = np.random.default_rng(0).random((32, 4)).astype("float32")
        >>> zipped = zip_models(*models, calibration_data=(x, x), sharing=1.0)
        >>> shared_network_from_zip(zipped, models, ["a", "b"]).group_sizes()
        [{'shared': 3, 'name': 'fc'}]
    """
    from tfmot_zip.model.layers import ZipLayerMixin

    names = list(task_names)
    _, ops = read_chain([originals[0]])
    zip_layers = [layer for layer in zipped.layers if isinstance(layer, ZipLayerMixin)]
    group_layers = [o for o in ops if isinstance(o, GroupLayer)]
    if len(zip_layers) != len(group_layers):
        raise ValueError(f"Expected {len(group_layers)} zipped layers, found {len(zip_layers)}.")
    for i, (layer, op) in enumerate(zip(zip_layers, group_layers)):
        if not op.head:
            outs = [np.sort(layer.get_maps(t)[1]) for t in range(len(names))]
            if any(not np.array_equal(o, outs[0]) for o in outs):
                raise ValueError(f"Layer {layer.name!r} is not fully shared; use sharing=1.0.")
            kernel, bias = layer.get_task_weights(0)
            op.biases[SHARED] = bias
            op.blocks[SHARED] = {INPUT if i == 0 else SHARED: kernel}
        else:
            base = zip_layers[i - 1].get_maps(0)[1]
            for t, name in enumerate(names):
                kernel, bias = layer.get_task_weights(t)
                theirs = zip_layers[i - 1].get_maps(t)[1]
                order = [int(np.flatnonzero(theirs == p)[0]) for p in base]
                op.biases[name] = bias
                op.blocks[name] = {SHARED: kernel[order]}
    return GroupedNetwork(names, tuple(originals[0].input_shape[1:]), ops)
