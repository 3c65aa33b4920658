"""The grouped multi-task network of PAM, held as numpy weights, and the tf_keras models built from it.

Each hidden Dense/Conv2D layer holds groups of units serving task subsets: ``shared`` (every task),
partial subsets ``"a+b"`` and single tasks. A group reads only groups serving a superset of its
tasks (:func:`tfmot_zip.core.pam_math.covers`), so a subset of tasks runs only the groups serving
one of its tasks, and a unit serving several tasks is computed once for all of them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core.pam_math import LayerShape, all_subsets, live_units, runs_for, subset_cost

__all__ = ["INPUT", "GroupLayer", "GroupedNetwork", "block_name"]

#: Key of the network input among the sources of a first layer's groups.
INPUT = "input"

L = keras.layers


@dataclass
class GroupLayer:
    """One grouped Dense/Conv2D layer: per group, a kernel block per source group and a bias.

    ``blocks[group][source]`` is a Conv2D kernel ``[k, k, n_src, n_out]`` or a Dense kernel
    ``[positions * n_src, n_out]`` (rows ordered position-major, channel-minor, as Flatten gives).

    Example:
        >>> import numpy as np
        >>> fc = GroupLayer("dense", "fc", {"activation": "relu"},
        ...                 blocks={"shared": {"input": np.ones((4, 2))}, "a": {"input": np.ones((4, 0))}},
        ...                 biases={"shared": np.zeros(2), "a": np.zeros(0)})
        >>> fc.units()
        {'shared': 2}
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
        """``{group: output units}`` of the groups that have at least one unit."""
        return {g: int(b.shape[0]) for g, b in self.biases.items() if b.shape[0] > 0}

    def empty_like(self) -> "GroupLayer":
        """A layer of the same kind, name, configuration and geometry without any group."""
        return GroupLayer(self.kind, self.name, dict(self.config), {}, {}, self.in_positions, self.out_hw, self.head)


@dataclass
class GroupedNetwork:
    """A PAM-structured multi-task network held as numpy weights (see the module docstring).

    Attributes:
        task_names: one per task; outputs are named after them.
        input_shape: shape of one example.
        ops: sequence of :class:`GroupLayer` and stateless ops ``("pool", config)``,
            ``("avgpool", config)``, ``("flatten",)``.
        history: one record per pruning round (see :func:`tfmot_zip.pam.pruning.prune_structured`).

    Example:
        >>> import numpy as np
        >>> ones = lambda *shape: np.ones(shape, np.float32)
        >>> fc = GroupLayer("dense", "fc", {"activation": "relu"},
        ...                 blocks={"shared": {"input": ones(4, 2)}, "a": {"input": ones(4, 1)}},
        ...                 biases={"shared": ones(2), "a": ones(1)})
        >>> head = GroupLayer("dense", "head", {"activation": "softmax"},
        ...                   blocks={"a": {"shared": ones(2, 3), "a": ones(1, 3)}, "b": {"shared": ones(2, 3)}},
        ...                   biases={"a": ones(3), "b": ones(3)}, head=True)
        >>> net = GroupedNetwork(["a", "b"], (4,), [fc, head])
        >>> net.subset_costs()[("b",)]  # shared fc (2*4-1)*2 + b's head (2*2-1)*3; params 10 + 9
        (23, 19)
        >>> net.to_keras(["b"], single_input=True).count_params()
        19
        >>> net.group_sizes()
        [{'shared': 2, 'a': 1, 'name': 'fc'}]
    """

    task_names: list
    input_shape: tuple
    ops: list
    history: list = field(default_factory=list)

    # -- structure ---------------------------------------------------------------------------
    def layers(self) -> list[GroupLayer]:
        """The :class:`GroupLayer` s, bottom-up (the head last)."""
        return [op for op in self.ops if isinstance(op, GroupLayer)]

    def layer_shapes(self) -> list[LayerShape]:
        """Per layer, what FLOPs counting needs (:class:`tfmot_zip.core.pam_math.LayerShape`)."""
        shapes = []
        for i, layer in enumerate(self.layers()):
            first_dense = layer.kind == "dense" and i == 0  # reads every input value
            shapes.append(
                LayerShape(
                    layer.kind,
                    layer.units(),
                    kernel_size=int(layer.config["kernel_size"][0]) if layer.kind == "conv" else 1,
                    out_hw=layer.out_hw,
                    in_positions=layer.in_positions,
                    input_units=int(self.input_shape[-1]) * (int(np.prod(self.input_shape[:-1])) if first_dense else 1),
                    head=layer.head,
                )
            )
        return shapes

    def hidden_sizes(self) -> list[dict]:
        """Per hidden layer, ``{group: units}`` (groups with units only)."""
        return [layer.units() for layer in self.layers() if not layer.head]

    def subset_costs(self) -> dict:
        """``{subset tuple: (flops, params)}`` for every non-empty task subset, on one shared input."""
        shapes = self.layer_shapes()
        return {s: subset_cost(shapes, s) for s in all_subsets(self.task_names)}

    def group_sizes(self) -> list[dict]:
        """Per hidden layer, ``{group: units}`` and the layer's ``name``."""
        return [dict(layer.units(), name=layer.name) for layer in self.layers() if not layer.head]

    def copy(self) -> "GroupedNetwork":
        """A deep copy (weights and history)."""
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
        named ``<layer>__<group>__from__<source>`` (:func:`block_name`); pass the same ``cache`` dict
        to several calls to build models that share layer objects (and weights).
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
                state = self.apply_op(op, state, path_tasks, cache)
            outputs.update({t: state[t] for t in path_tasks})
        return keras.Model(inputs, [outputs[t] for t in tasks], name=name)

    def prefix_model(self, stop: int, task: str) -> keras.Model:
        """tf_keras model: input -> ``{group: tensor}``, the inputs of GroupLayer ``stop`` on ``task``'s path."""
        x = keras.Input(self.input_shape)
        state, cache, seen = {INPUT: x}, {}, 0
        for op in self.ops:
            if isinstance(op, GroupLayer):
                if seen == stop:
                    break
                seen += 1
            state = self.apply_op(op, state, [task], cache)
        return keras.Model(x, state)

    def apply_op(self, op, state: dict, path_tasks: list, cache: dict) -> dict:
        """Applies one op to ``{group: tensor}``, running only the groups ``path_tasks`` need.

        Keras layers are taken from (or stored in) ``cache``, keyed by layer, group and source.
        """
        if not isinstance(op, GroupLayer):
            make = {"pool": lambda: L.MaxPooling2D(**op[1]), "avgpool": lambda: L.AveragePooling2D(**op[1]),
                    "flatten": L.Flatten}[op[0]]
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
            if len(terms) == 1:
                total = terms[0]
            else:
                total = _cached(cache, (op.name, group, "add"), lambda: L.Add(name=f"{op.name}__{_safe(group)}__add"))(terms)
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

    # -- removing units -----------------------------------------------------------------------
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
            for sources in nxt.blocks.values():
                if group not in sources:
                    continue
                kernel = sources[group]
                if nxt.kind == "conv":
                    sources[group] = kernel[:, :, keep, :]
                else:
                    n_out = kernel.shape[-1]
                    per = kernel.reshape(nxt.in_positions, kernel.shape[0] // nxt.in_positions, n_out)
                    sources[group] = per[:, keep, :].reshape(nxt.in_positions * len(keep), n_out)

    def drop_dead_groups(self) -> "GroupedNetwork":
        """Empties the hidden groups that compute a constant or that nothing above reads
        (:func:`tfmot_zip.core.pam_math.live_units`)."""
        sizes = self.hidden_sizes()
        for index, (units, live) in enumerate(zip(sizes, live_units(sizes))):
            for group in units:
                if live[group] == 0:
                    self.keep_units(index, group, np.zeros(0, np.int64))
        return self


def _safe(group: str) -> str:
    return group.replace("+", ".")  # Keras scope names may not hold "+"


def block_name(layer: str, group: str, source: str) -> str:
    """Name of the Keras layer holding ``group``'s weights from ``source`` (``+`` written ``.``).

    Example:
        >>> block_name("fc1", "a+b", "shared")
        'fc1__a.b__from__shared'
    """
    return f"{layer}__{_safe(group)}__from__{_safe(source)}"


def _cached(cache: dict, key: tuple, factory: Callable):
    if key not in cache:
        cache[key] = factory()
    return cache[key]
