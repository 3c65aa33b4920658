"""Builds the multi-task (virtual) zipped model from aligned source models.

The new model replays the common layer graph once per task: every Dense/Conv2D position
becomes one :class:`~tfmot_zip.model.layers.ZipDense`/:class:`~tfmot_zip.model.layers.ZipConv2D` that
serves all tasks, every DepthwiseConv2D reading a zip layer's units one
:class:`~tfmot_zip.model.depthwise.ZipDepthwiseConv2D`; every other layer is cloned per task with that task's weights (BatchNorm
statistics stay per task; a channel ``Concatenate`` joins each task's parts in that task's own unit order, which
the next zip layer's ``in_map`` reads through the parts' offsets). Source models are only read, never modified.
"""
from __future__ import annotations

import keyword
import re
from typing import Callable, Sequence

from tfmot_zip.compat import keras
from tfmot_zip.model.graph import AlignedNode, ModelGraph, inbound_tensors
from tfmot_zip.model.copying import call_copy
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.layers import ZipConv2D, ZipDense
from tfmot_zip.model.spaces import Feature, UnitSpace

__all__ = ["build_zipped_model", "task_layer_name", "sanitize_task_names"]


def sanitize_task_names(names: Sequence[str], strict: bool = False) -> list[str]:
    """Task names that every later stage accepts: Python identifiers (they become TF name
    scopes, SavedModel/TFLite signature names and ``<name>_input`` function arguments).

    Characters other than letters, digits and ``_`` become ``_``; a name starting with a digit
    (or a Python keyword) gets a ``t_`` prefix. Names that end up equal are refused when
    ``strict`` (names the user chose), otherwise numbered (``a``, ``a`` -> ``a``, ``a_2``).

    Raises:
        ValueError: ``strict`` and two names become the same name.

    Example:
        >>> sanitize_task_names(["shirts & shoes", "2nd", "a"])
        ['shirts___shoes', 't_2nd', 'a']
        >>> sanitize_task_names(["a", "a"])
        ['a', 'a_2']
        >>> sanitize_task_names(["a-b", "a b"], strict=True)
        Traceback (most recent call last):
        ...
        ValueError: task_names 'a-b' and 'a b' both become 'a_b' (names are made valid Python identifiers: letters, digits and '_'); choose names that differ in letters or digits.
    """
    out: list[str] = []
    for i, name in enumerate(names):
        base = re.sub(r"\W", "_", str(name), flags=re.ASCII) or "task"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = f"t_{base}"
        candidate, k = base, 2
        if strict and candidate in out:
            first = list(names)[out.index(candidate)]
            raise ValueError(
                f"task_names {first!r} and {name!r} both become {candidate!r} (names are made valid Python "
                "identifiers: letters, digits and '_'); choose names that differ in letters or digits."
            )
        while candidate in out:
            candidate, k = f"{base}_{k}", k + 1
        out.append(candidate)
    return out


def task_layer_name(layer_name: str, task_name: str) -> str:
    """Name of the per-task copy of a layer in the zipped model."""
    return f"{layer_name}__{task_name}"


def _zip_layer(node: AlignedNode, feature: Feature, spaces: dict[int, UnitSpace], extra: dict | None = None):
    layer = node.layers[0]
    widths = [int(l.units if node.kind == "dense" else l.filters) for l in node.layers]
    task_inputs = [feature.task_width(spaces, t) for t in range(len(node.layers))]
    common = dict(
        task_units=widths,
        task_input_units=task_inputs,
        input_capacity=feature.capacity(spaces),
        activation=keras.activations.serialize(layer.activation),
        use_bias=layer.use_bias,
        kernel_initializer="zeros",  # every used cell is written from the source models
        name=node.name,
        **(extra or {}),
    )
    if node.kind == "dense":
        return ZipDense(**common)
    return ZipConv2D(
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        **common,
    )


def _zip_depthwise(node: AlignedNode, space: UnitSpace) -> ZipDepthwiseConv2D:
    layer = node.layers[0]
    return ZipDepthwiseConv2D(
        task_units=list(space.widths),
        capacity=space.capacity,
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        activation=keras.activations.serialize(layer.activation),
        use_bias=layer.use_bias,
        kernel_initializer="zeros",
        name=node.name,
    )


def _copy_weights(layer, node, maps: Callable[[int], dict]) -> None:
    """Sets each task's maps (``maps(task)``: ``set_maps`` arguments) and copies its original
    layer's kernel and bias into the zip layer, assigning the physical weights once."""
    weights = {}
    for t, source_layer in enumerate(node.layers):
        values = source_layer.get_weights()
        layer.set_maps(t, **maps(t))
        weights[t] = (values[0], values[1] if layer.use_bias else None)
    layer.set_tasks_weights(weights, unwritten_zero=True)  # built with zero initialisers: nothing to read


def build_zipped_model(
    graph: ModelGraph,
    features: dict[int, Feature],
    spaces: dict[int, UnitSpace],
    task_names: Sequence[str],
    single_input: bool = False,
    name: str = "zipped",
    layer_options: dict[str, dict] | None = None,
) -> keras.Model:
    """The multi-task model with every task's original weights and nothing shared yet.

    ``layer_options`` maps layer names to extra zip-layer arguments (e.g. the schedule state).
    """
    models = graph.models
    n_tasks = len(models)
    shape = tuple(models[0].input_shape[1:])
    dtype = models[0].inputs[0].dtype
    if single_input:
        shared_input = keras.Input(shape=shape, dtype=dtype, name="input")
        inputs = [shared_input]
        task_inputs = [shared_input] * n_tasks
    else:
        inputs = [keras.Input(shape=shape, dtype=dtype, name=f"{t}_input") for t in task_names]
        task_inputs = inputs
    tensors: dict[int, list] = {}
    for node in graph.nodes:
        if node.kind == "input":
            tensors[node.index] = list(task_inputs)
            continue
        sources = [tensors[i] for i in node.inbound]
        if node.is_zip:
            layer = _zip_layer(node, features[node.inbound[0]], spaces, (layer_options or {}).get(node.name))
            tensors[node.index] = layer(sources[0])
            _copy_weights(layer, node, lambda t: {"in_map": features[node.inbound[0]].in_map(spaces, t),
                                                  "out_map": spaces[features[node.index].space].maps[t]})
            continue
        if node.kind == "depthwise" and features[node.inbound[0]].kind == "units":
            space = spaces[features[node.inbound[0]].space]
            layer = _zip_depthwise(node, space)
            tensors[node.index] = layer(sources[0])
            _copy_weights(layer, node, lambda t: {"in_map": space.maps[t]})
            continue
        outs = []
        for t, (task, source_layer) in enumerate(zip(task_names, node.layers)):
            args = [s[t] for s in sources]
            outs.append(call_copy(source_layer, task_layer_name(node.name, task), args if node.kind in ("add", "multiply", "concat") else args[0]))
        tensors[node.index] = outs
    outputs = [
        keras.layers.Activation("linear", name=task)(tensors[graph.output_nodes[0]][t])
        for t, task in enumerate(task_names)
    ]
    return keras.Model(inputs, outputs, name=name)


def extract_task_models(zipped: keras.Model) -> list:
    """One standard tf_keras model per task, computing exactly what that task computes.

    Zip layers become ordinary ``Dense``/``Conv2D``/``DepthwiseConv2D`` layers (named like the zip layer) holding
    the task's current kernel; per-task copies of other layers get their original names back.
    Used to rebuild the zipping plan of a saved or checkpointed zipped model, and handy to
    ship a single task.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> task_a, task_b = extract_task_models(zipped)
        >>> task_a.count_params() == model_a.count_params()
        True
    """

    task_names = list(zipped.output_names)
    config = zipped.get_config()
    single = len(zipped.inputs) == 1
    models = []
    for t, task in enumerate(task_names):
        tensors: dict = {}
        model_input = None
        suffix = f"__{task}"
        for spec in config["layers"]:
            name = spec["name"]
            layer = zipped.get_layer(name)
            inbound = inbound_tensors(spec)
            if isinstance(layer, keras.layers.InputLayer):
                if single or name == f"{task}_input":
                    shape = layer.get_config()["batch_input_shape"][1:]
                    model_input = keras.Input(shape=shape, dtype=layer.dtype, name=f"{task}_input")
                    tensors[(name, 0)] = model_input
                continue
            if isinstance(layer, (ZipDense, ZipConv2D, ZipDepthwiseConv2D)):
                source = inbound[t]
                if (source[0], source[2]) not in tensors:
                    continue
                x = tensors[(source[0], source[2])]
                kernel, bias = layer.get_task_weights(t)
                common = dict(activation=layer.activation, use_bias=layer.use_bias, name=layer.name)
                if isinstance(layer, ZipDense):
                    clone = keras.layers.Dense(layer.task_units[t], **common)
                elif isinstance(layer, ZipDepthwiseConv2D):
                    clone = keras.layers.DepthwiseConv2D(
                        layer.kernel_size, strides=layer.strides, padding=layer.padding,
                        dilation_rate=layer.dilation_rate, **common,
                    )
                else:
                    clone = keras.layers.Conv2D(
                        layer.task_units[t], layer.kernel_size, strides=layer.strides, padding=layer.padding,
                        dilation_rate=layer.dilation_rate, **common,
                    )
                y = clone(x)
                clone.set_weights([kernel] + ([bias] if layer.use_bias else []))
                tensors[(name, t)] = y
                continue
            if name == task:
                tensors[(name, 0)] = tensors[(inbound[0][0], inbound[0][2])]
                continue
            if not name.endswith(suffix):
                continue
            args = [tensors[(i[0], i[2])] for i in inbound]
            tensors[(name, 0)] = call_copy(layer, name[: -len(suffix)], args if len(args) > 1 else args[0])
        models.append(keras.Model(model_input, tensors[(task, 0)], name=task))
    return models
