"""``strip_zipping``: a zipped model rebuilt from standard tf_keras layers only.

Every zipped layer's physical units are grouped by the set of tasks that read them (for two
tasks: shared, only-A, only-B). Each group becomes its own tensor, and each weight block
``input group -> output group`` becomes one standard ``Dense``/``Conv2D`` layer that every task
reading both groups calls (a depthwise layer: one ``DepthwiseConv2D`` per group of the space it reads), so shared weights are stored once and stay shared under further
training (e.g. TFMOT pruning). Block outputs are summed with ``Add``; BatchNorm stays per task
(sliced per group), stateless layers are applied per group. A channel ``Concatenate`` keeps every
part's groups as separate groups (keys :class:`PartKey`, physical units shifted by the capacities of
the parts before), so a layer reading it gets one block per part and group. With one input for all
tasks, a block whose inputs are all shared is computed once.
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.model.graph import inbound_tensors
from tfmot_zip.model.keras3 import as_tf_keras_model
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.layers import ZipConv2D, ZipDense, ZipLayerMixin

__all__ = ["strip_zipping", "group_units"]

L = keras.layers


@dataclass
class Grouped:
    """One task's view of a tensor whose units are split into physical groups."""

    capacity: int
    groups: dict  # key (frozenset of tasks) -> sorted physical units
    tensors: dict  # key -> keras tensor of this task
    task_map: np.ndarray  # task channel -> physical unit
    positions: int = 1
    flat: bool = False


@dataclass
class Raw:
    tensor: Any


class PartKey(NamedTuple):
    """Group key of one part of a channel concatenation: the part's index and its tasks."""

    part: int
    tasks: frozenset


def _tasks(key) -> frozenset:
    """The tasks reading a unit group (``key``: a frozenset of tasks or a :class:`PartKey`)."""
    return key.tasks if isinstance(key, PartKey) else key


def group_units(layer: ZipLayerMixin) -> dict:
    """``{frozenset(tasks): sorted physical units}`` of a zip layer's used output units."""
    return layer.unit_groups()


def _activation_label(activation) -> str:
    """A layer-name-safe label of an activation function (a registered function serialises to a dict).

    Example:
        >>> _activation_label(keras.activations.relu), _activation_label(lambda x: x)
        ('relu', '_lambda_')
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", getattr(activation, "__name__", "activation"))


def _group_label(key, task_names: list[str]) -> str:
    if isinstance(key, PartKey):
        return f"p{key.part}_{_group_label(key.tasks, task_names)}"
    if len(key) == len(task_names):
        return "shared"
    return "_and_".join(task_names[t] for t in sorted(key))


class _Stripper:
    def __init__(self, model: keras.Model):
        self.model = model
        self.task_names = list(model.output_names)
        self.n_tasks = len(self.task_names)
        self.memo: dict = {}
        self.blocks: dict = {}

    def call(self, key: tuple, factory, inputs):
        """Calls a (new or cached) layer, reusing the output when inputs are the same tensors."""
        ids = tuple(id(t) for t in (inputs if isinstance(inputs, list) else [inputs]))
        memo_key = (key, ids)
        if memo_key not in self.memo:
            layer = self.blocks.get(key)
            if layer is None:
                layer = self.blocks[key] = factory()
            self.memo[memo_key] = layer(inputs)
        return self.memo[memo_key]

    def new_layer(self, source, name: str, channels: int | None = None):
        """A copy of ``source`` named ``name``; a unit-axis ``Reshape`` gets its channel count spelled out
        (``channels``), as TFLite needs static channels (a zipped model's copies say -1 there)."""
        config = source.get_config()
        config["name"] = name
        if channels is not None and isinstance(source, L.Reshape) and config["target_shape"][-1] == -1:
            config["target_shape"] = tuple(config["target_shape"][:-1]) + (int(channels),)
        return type(source).from_config(config)

    # --- zip layers ---------------------------------------------------------------------------
    def zip_layer(self, layer, inputs: list) -> list:
        groups = group_units(layer)
        repaired = {(tasks, t): neurons for tasks, t, _, neurons in layer.repaired_groups()}
        kernel = layer.physical_kernel().numpy()
        bias = layer.bias.numpy() if layer.use_bias else None
        outputs = []
        for t in range(self.n_tasks):
            _, out_map = layer.get_maps(t)
            tensors = {}
            for gkey, units in groups.items():
                if t not in gkey:
                    continue
                terms = []
                source_groups = self._input_groups(layer, inputs[t], t)
                bias_home = self._bias_home(layer, inputs, gkey)
                for hkey, rows, tensor, htasks in source_groups:
                    with_bias = bias is not None and (bias_home == hkey or (bias_home is None and hkey == source_groups[0][0]))
                    private = bias is not None and bias_home is None and hkey == source_groups[0][0]
                    block_key = (layer.name, hkey, gkey, t if private else None, with_bias)
                    label = f"{layer.name}_{self._label(hkey)}_to_{_group_label(gkey, self.task_names)}"
                    if private:
                        label += f"_{self.task_names[t]}"
                    terms.append(self.call(block_key, lambda: self._block(layer, kernel, bias, rows, units, with_bias, label), tensor))
                z = self._sum(layer, gkey, t, terms)
                if (gkey, t) in repaired:
                    z = self._repair(layer, gkey, t, repaired[(gkey, t)], z)
                act = keras.activations.serialize(layer.activation)
                if act not in ("linear", None):
                    z = self.call(("act", layer.name, gkey, id(z)), lambda: L.Activation(layer.activation, name=f"{layer.name}_{_group_label(gkey, self.task_names)}_{_activation_label(layer.activation)}_{len(self.blocks)}"), z)
                tensors[gkey] = z
            outputs.append(Grouped(layer.capacity, groups, tensors, out_map))
        return outputs

    def depthwise_layer(self, layer: ZipDepthwiseConv2D, views: list) -> list:
        """A depthwise layer per unit group of the space it reads, shared by the tasks of the group."""
        kernel = layer.kernel.numpy()
        bias = layer.bias.numpy() if layer.use_bias else None
        repaired = {(tasks, t): neurons for tasks, t, _, neurons in layer.repaired_groups()}
        outputs = []
        for t, view in enumerate(views):
            channel_map = layer.get_maps(t)[0]
            position = {int(u): c for c, u in enumerate(view.task_map)}
            tensors = {}
            for gkey, x in view.tensors.items():
                neurons = np.asarray([position[int(u)] for u in view.groups[gkey]], np.int64)
                physical = channel_map[neurons]
                label = f"{layer.name}_{_group_label(gkey, self.task_names)}"
                key = ("depthwise", layer.name, gkey, tuple(physical.tolist()))
                z = self.call(key, lambda: self._depthwise_block(layer, kernel, bias, physical, f"{label}_{len(self.blocks)}"), x)
                if (gkey, t) in repaired:
                    z = self._repair(layer, gkey, t, repaired[(gkey, t)], z)
                if keras.activations.serialize(layer.activation) not in ("linear", None):
                    z = self.call(("act", layer.name, gkey, id(z)), lambda: L.Activation(layer.activation, name=f"{label}_act_{len(self.blocks)}"), z)
                tensors[gkey] = z
            outputs.append(Grouped(view.capacity, view.groups, tensors, view.task_map, view.positions, view.flat))
        return outputs

    @staticmethod
    def _depthwise_block(layer, kernel, bias, channels, name):
        block = L.DepthwiseConv2D(
            layer.kernel_size, strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate,
            use_bias=bias is not None, name=name,
        )
        block.build((None, None, None, len(channels)))
        block.set_weights([kernel[:, :, channels]] + ([bias[channels]] if bias is not None else []))
        return block

    def _sum(self, layer, gkey, t, terms):
        if len(terms) == 1:
            return terms[0]
        ids = tuple(id(x) for x in terms)
        return self.call(("sum", layer.name, gkey, ids), lambda: L.Add(name=f"{layer.name}_{_group_label(gkey, self.task_names)}_add_{len(self.blocks)}"), terms)

    def _repair(self, layer, gkey, t, neurons, z):
        """Task ``t``'s repair affine of one unit group: a frozen BatchNormalization in inference form."""
        scale, shift = (w[neurons] for w in layer.get_repair(t))
        epsilon = 1e-6
        name = f"{layer.name}_{_group_label(gkey, self.task_names)}_repair_{self.task_names[t]}"
        bn = L.BatchNormalization(epsilon=epsilon, name=name)
        bn.build(z.shape)
        # (z - 0) / sqrt(1 + eps) * gamma + beta == s * z + c; trainable=False keeps it in inference
        # mode during fit (a training-mode BatchNorm would normalise by the batch statistics).
        gamma = scale.astype(np.float64) * np.sqrt(np.float32(1.0) + np.float32(epsilon), dtype=np.float64)
        ones, zeros = np.ones(len(neurons), np.float32), np.zeros(len(neurons), np.float32)
        bn.set_weights([gamma.astype(np.float32), shift.astype(np.float32), zeros, ones])
        bn.trainable = False
        self.blocks[("repair", layer.name, gkey, t)] = bn
        return bn(z)

    def _label(self, hkey) -> str:
        return "input" if hkey == "input" else _group_label(hkey, self.task_names)

    def _bias_home(self, layer, inputs, gkey):
        """The input group whose tasks cover the output group's tasks (carries the shared bias)."""
        first = inputs[0]
        if isinstance(first, Raw):
            return "input"
        for hkey in first.groups:
            if _tasks(hkey) >= gkey:
                return hkey
        return None

    def _input_groups(self, layer, view, t):
        """[(key, physical rows, tensor, tasks)] of task ``t``'s input to ``layer``."""
        if isinstance(view, Raw):
            return [("input", np.arange(layer.input_capacity), view.tensor, frozenset(range(self.n_tasks)))]
        out = []
        for hkey, units in view.groups.items():
            if t not in _tasks(hkey):
                continue
            rows = units
            if view.flat:
                rows = (np.arange(view.positions)[:, None] * view.capacity + units[None, :]).reshape(-1)
            out.append((hkey, rows, view.tensors[hkey], _tasks(hkey)))
        return out

    def _block(self, layer, kernel, bias, rows, units, with_bias, name):
        if isinstance(layer, ZipDense):
            block = L.Dense(len(units), use_bias=with_bias, name=name)
            block.build((None, len(rows)))
            weights = [kernel[np.ix_(rows, units)]]
        else:
            block = L.Conv2D(
                len(units),
                layer.kernel_size,
                strides=layer.strides,
                padding=layer.padding,
                dilation_rate=layer.dilation_rate,
                use_bias=with_bias,
                name=name,
            )
            block.build((None, None, None, len(rows)))
            weights = [kernel[:, :, rows][:, :, :, units]]
        if with_bias:
            weights.append(bias[units])
        block.set_weights(weights)
        return block

    # --- per-task layers ------------------------------------------------------------------------
    def per_task(self, layer, view, t: int, args: list):
        name = layer.name
        if isinstance(layer, (L.Add, L.Multiply)):
            first = args[0]
            if isinstance(first, Raw):
                return Raw(self.new_layer(layer, name)([a.tensor for a in args]))
            tensors = {}
            for gkey in first.tensors:
                terms = [a.tensors[gkey] for a in args]
                tensors[gkey] = self.call(("add", name, gkey, tuple(id(x) for x in terms)), lambda: type(layer)(name=f"{name}_{_group_label(gkey, self.task_names)}"), terms)
            return Grouped(first.capacity, first.groups, tensors, first.task_map, first.positions, first.flat)
        if isinstance(layer, L.Concatenate):
            return self.concatenate(layer, t, args)
        if isinstance(view, Raw):
            return Raw(self._clone_call(layer, name, view.tensor))
        tensors = {}
        positions, flat = view.positions, view.flat
        for gkey, units in view.groups.items():
            if gkey not in view.tensors:
                continue
            x = view.tensors[gkey]
            label = f"{name}_{_group_label(gkey, self.task_names)}"
            if isinstance(layer, L.BatchNormalization):
                inverse = {int(u): c for c, u in enumerate(view.task_map)}
                channels = [inverse[int(u)] for u in units]
                bn = self.new_layer(layer, label)
                bn.build((None, len(units)) if len(x.shape) == 2 else (None, None, None, len(units)))
                bn.set_weights([w[channels] for w in layer.get_weights()])
                tensors[gkey] = bn(x)
            else:
                if isinstance(layer, L.Flatten):
                    positions, flat = int(np.prod(x.shape[1:-1])), True
                tensors[gkey] = self.call(("stateless", name, gkey, id(x)), lambda: self.new_layer(layer, f"{label}_{len(self.blocks)}", x.shape[-1]), x)
        return Grouped(view.capacity, view.groups, tensors, view.task_map, positions, flat)

    def concatenate(self, layer, t: int, views: list) -> Grouped:
        """Task ``t``'s view of a channel concatenation: its parts' groups side by side, kept apart.

        Part ``p``'s units are shifted by the capacities of the parts before it; nested
        concatenations are flattened (part indices run over the innermost parts).
        """
        groups, tensors, maps, offset, part = {}, {}, [], 0, 0
        for view in views:
            if not isinstance(view, Grouped) or view.flat:
                raise ValueError(
                    f"Layer {layer.name!r} concatenates a tensor that is not a zip layer's channels; strip_zipping "
                    "supports channel concatenations of zip layer outputs only."
                )
            parts = sorted({k.part for k in view.groups if isinstance(k, PartKey)})
            renumber = {p: part + i for i, p in enumerate(parts)}
            for key, units in view.groups.items():
                new = PartKey(renumber[key.part], key.tasks) if isinstance(key, PartKey) else PartKey(part, key)
                groups[new] = units + offset
                if key in view.tensors:
                    tensors[new] = view.tensors[key]
            maps.append(view.task_map + offset)
            offset += view.capacity
            part += max(1, len(parts))
        return Grouped(offset, groups, tensors, np.concatenate(maps))

    def _clone_call(self, layer, name, tensor):
        if not layer.weights:  # stateless: tasks feeding the same tensor share one call
            config = {k: v for k, v in layer.get_config().items() if k != "name"}
            key = ("stateless_raw", type(layer).__name__, repr(sorted(config.items())))
            base = name.split("__")[0]
            return self.call(key, lambda: self.new_layer(layer, f"{base}_{len(self.blocks)}", tensor.shape[-1]), tensor)
        clone = self.new_layer(layer, f"{name}_{len(self.blocks)}")
        self.blocks[("clone", name, len(self.blocks))] = clone
        out = clone(tensor)
        clone.set_weights(layer.get_weights())
        return out

    def run(self) -> keras.Model:
        config = self.model.get_config()
        single = len(self.model.inputs) == 1
        views: dict = {}  # (layer name, tensor index) -> list per task (or "all") of Raw/Grouped
        new_inputs = []
        for spec in config["layers"]:
            name = spec["name"]
            layer = self.model.get_layer(name)
            inbound = inbound_tensors(spec)
            if isinstance(layer, L.InputLayer):
                x = keras.Input(shape=layer.input_shape[0][1:] if isinstance(layer.input_shape, list) else layer.input_shape[1:], dtype=layer.dtype, name=name)
                new_inputs.append(x)
                task = None if single else len(new_inputs) - 1
                views[(name, 0)] = (task, Raw(x))
                continue
            if isinstance(layer, ZipDepthwiseConv2D):
                views_in = [views[(item[0], item[2])][1] for item in inbound]
                for t, out in enumerate(self.depthwise_layer(layer, views_in)):
                    views[(name, t)] = (t, out)
                continue
            if isinstance(layer, (ZipDense, ZipConv2D)):
                per_task = []
                for t, item in enumerate(inbound):
                    task, view = views[(item[0], item[2])]
                    per_task.append(view)
                outs = self.zip_layer(layer, per_task)
                for t, out in enumerate(outs):
                    views[(name, t)] = (t, out)
                continue
            sources = [views[(item[0], item[2])] for item in inbound]
            task = sources[0][0]
            args = [s[1] for s in sources]
            if name in self.task_names:
                view = args[0]
                if isinstance(view, Grouped):
                    view = self._to_raw(view, task)
                views[(name, 0)] = (task, Raw(L.Activation("linear", name=name)(view.tensor)))
                continue
            views[(name, 0)] = (task, self.per_task(layer, args[0], task, args))
        outputs = [views[(n, 0)][1].tensor for n in self.task_names]
        return keras.Model(new_inputs, outputs, name=f"{self.model.name}_stripped")

    def _to_raw(self, view: Grouped, task: int) -> Raw:
        keys = list(view.tensors)
        if len(keys) == 1 and np.array_equal(np.sort(view.task_map), view.groups[keys[0]]) and np.all(np.diff(view.task_map) > 0):
            return Raw(view.tensors[keys[0]])
        raise ValueError(
            f"The output of task {self.task_names[task]!r} is not task-specific (its head shares units); "
            "heads must stay task-specific to be stripped."
        )


def strip_zipping(model: keras.Model) -> keras.Model:
    """Returns an equivalent model made only of standard tf_keras layers.

    Shared weights become layers called by several tasks, so they are stored once; outputs
    equal the zipped model's within float tolerance. The zipped model is not modified.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> plain = strip_zipping(zipped)
        >>> plain.output_names == zipped.output_names
        True
    """
    model = as_tf_keras_model(model)
    if not any(isinstance(l, (ZipDense, ZipConv2D)) for l in model.layers):
        raise ValueError(
            f"Model {model.name!r} has no zip layers; strip_zipping expects a model returned by "
            "tfmot_zip.zip_models (it is already stripped, or was never zipped)."
        )
    return _Stripper(model).run()
