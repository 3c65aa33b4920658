"""Reading tf_keras models as layer graphs and aligning several models layer by layer.

Every model becomes a list of nodes in topological order (``model.layers`` order), each with
the indices of the nodes feeding it. Models to be zipped must have the same graph: the same
layer types in the same order, wired the same way, with matching convolution geometry. Widths
(Dense units, Conv2D filters) may differ. Errors name the offending layer and say what is
supported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tfmot_zip.compat import check_tf_keras_model, keras
from tfmot_zip.model.flatten import UnsupportedModelError, flatten_model
from tfmot_zip.model.layers import ZipConv2D, ZipDense

__all__ = ["AlignedNode", "ModelGraph", "UnsupportedModelError", "align_models", "config_difference", "SUPPORTED_LAYERS"]

L = keras.layers

ZIP_KINDS = {L.Dense: "dense", L.Conv2D: "conv"}
CHANNELWISE = (
    L.Activation,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Dropout,
    L.MaxPooling2D,
    L.AveragePooling2D,
    L.ZeroPadding2D,
    L.Cropping2D,
    L.UpSampling2D,
    L.BatchNormalization,
)
#: Per-channel input preprocessing: supported on a task's input, before its first Dense/Conv2D.
INPUT_ONLY = (L.Normalization, L.Rescaling)
SUPPORTED_LAYERS = (
    "InputLayer, Dense, Conv2D (groups=1), DepthwiseConv2D and SeparableConv2D (depth_multiplier=1), BatchNormalization, Activation/ReLU/LeakyReLU/ELU "
    "(elementwise), Dropout, MaxPooling2D, AveragePooling2D, ZeroPadding2D, Cropping2D, UpSampling2D, Flatten, "
    "GlobalAveragePooling2D, GlobalMaxPooling2D (keepdims or not), Add, Multiply (e.g. squeeze-and-excitation gates), "
    "Concatenate on the channel (last) axis of layer outputs (e.g. DenseNet blocks), Rescaling (scalar), Reshape adding or removing "
    "size-1 axes before the channels, elementwise TF-op layers with one scalar (x + 3.0, x * c, "
    "tf.nn.relu6, ...), nested models (flattened); Normalization and per-channel Rescaling on the "
    "input before the first Dense/Conv2D; any single-input layer after the last Dense/Conv2D of a "
    "task (e.g. Softmax)"
)
NOT_ELEMENTWISE = {"softmax", "log_softmax"}


@dataclass
class AlignedNode:
    """One layer position, with the layer of every model at that position.

    Attributes:
        index: position in topological order.
        layers: the layer of each model at this position.
        inbound: indices of the nodes feeding this one (the same for every model).
        kind: "input", "dense", "conv", "depthwise", "channelwise", "flatten", "global_pool", "add",
            "multiply", "concat" (channel axis) or "tail". A depthwise convolution is not a zip node: its channels follow the pairing of
            the space it reads (``tfmot_zip.model.depthwise``).
        is_head: for a dense/conv node, whether a model output is reached from it without
            passing through another dense/conv layer (heads stay task-specific by default).
    """

    index: int
    layers: list
    inbound: list[int]
    kind: str
    is_head: bool = False
    consumers: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.layers[0].name

    @property
    def is_zip(self) -> bool:
        return self.kind in ("dense", "conv")


@dataclass
class ModelGraph:
    """The aligned graph of several models."""

    nodes: list[AlignedNode]
    input_nodes: list[int]
    output_nodes: list[int]
    models: list

    def zip_nodes(self) -> list[AlignedNode]:
        return [n for n in self.nodes if n.is_zip]

    def hidden_zip_nodes(self) -> list[AlignedNode]:
        return [n for n in self.nodes if n.is_zip and not n.is_head]


def _describe(model, layer) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__}) of model {model.name!r}"


def inbound_tensors(layer_config: dict) -> list[tuple[str, int, int]]:
    """``(layer name, node index, tensor index)`` of each input of a layer in a functional config.

    Reads both tf_keras serialisations of ``inbound_nodes`` (lists, and the newer dicts).

    Example:
        >>> inbound_tensors({"inbound_nodes": [[["dense", 0, 0, {}]]]})
        [('dense', 0, 0)]
        >>> inbound_tensors({"inbound_nodes": []})
        []
        >>> inbound_tensors({"inbound_nodes": [["conv", 0, 0, {"y": 3.0}]]})  # a TF-op layer's call
        [('conv', 0, 0)]
    """
    nodes = layer_config.get("inbound_nodes", [])
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # newer serialisation
        args = node.get("args", [])
        flat = args[0] if args and isinstance(args[0], list) else args
        return [tuple(a["config"]["keras_history"]) for a in flat]
    if node and isinstance(node[0], str):  # TF-op layers keep their first argument's structure
        node = [node]
    return [tuple(item[:3]) for item in node if item[0] != "_CONSTANT_VALUE"]


def _graph_of(model) -> tuple[list, list[list[int]], list[int], list[int]]:
    """(layers, inbound indices, input indices, output indices) of one model."""
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "_is_graph_network", True) or not model.inputs:
            raise UnsupportedModelError(
                f"Sequential model {model.name!r} has no known input shape; build it first "
                "(give the first layer input_shape=..., or call model.build(input_shape))."
            )
        first = model.inputs[0]._keras_history.layer if hasattr(model.inputs[0], "_keras_history") else None
        layers = ([first] if first is not None else []) + list(model.layers)
        inbound = [[]] + [[i] for i in range(len(layers) - 1)]
        return layers, inbound, [0], [len(layers) - 1]
    if not getattr(model, "_is_graph_network", False):
        raise UnsupportedModelError(
            f"Model {model.name!r} is a subclassed model ({type(model).__name__}); tfmot_zip "
            "needs a Sequential or functional tf_keras model whose layer graph it can read. "
            "Rebuild it with the functional API."
        )
    config = model.get_config()
    names = [spec["name"] for spec in config["layers"]]
    position = {name: i for i, name in enumerate(names)}
    layers = [model.get_layer(name) for name in names]
    inbound: list[list[int]] = []
    for spec, layer in zip(config["layers"], layers):
        nodes = spec.get("inbound_nodes", [])
        if len(nodes) > 1:
            raise UnsupportedModelError(
                f"{_describe(model, layer)} is called {len(nodes)} times (a shared layer); "
                "tfmot_zip supports layers called once."
            )
        if isinstance(layer, keras.Model):
            raise UnsupportedModelError(
                f"{_describe(model, layer)} is a model nested in a model; flatten it into one "
                "functional model first."
            )
        inbound.append([position[name] for name, _, _ in inbound_tensors(spec)])
    inputs = [position[item[0]] for item in config["input_layers"]]
    outputs = [position[item[0]] for item in config["output_layers"]]
    return layers, inbound, inputs, outputs


def _kind(layer, model) -> str:
    if isinstance(layer, L.InputLayer):
        return "input"
    if isinstance(layer, L.SeparableConv2D):
        raise UnsupportedModelError(
            f"{_describe(model, layer)} is a SeparableConv2D with depth_multiplier={layer.depth_multiplier} and "
            f"data_format={layer.data_format!r}; tfmot_zip zips a SeparableConv2D as its DepthwiseConv2D and 1x1 "
            "Conv2D when depth_multiplier=1 and data_format='channels_last'. Rebuild the layer that way, or as the "
            "two layers (DepthwiseConv2D(kernel_size, strides, padding, use_bias=False) then Conv2D(filters, 1, "
            "activation=..., use_bias=...)) with depthwise_kernel, pointwise_kernel and bias copied into them."
        )
    if isinstance(layer, L.DepthwiseConv2D):
        if int(layer.depth_multiplier) != 1:
            raise UnsupportedModelError(
                f"{_describe(model, layer)} has depth_multiplier={layer.depth_multiplier}; tfmot_zip zips depthwise "
                "convolutions with depth_multiplier=1 (one output channel per input channel, as in MobileNets "
                "and EfficientNets). Use depth_multiplier=1, or a Conv2D with groups=1."
            )
        if layer.data_format != "channels_last":
            raise UnsupportedModelError(
                f"{_describe(model, layer)} uses data_format={layer.data_format!r}; only channels_last is supported."
            )
        return "depthwise"
    if isinstance(layer, L.Conv2DTranspose):
        raise UnsupportedModelError(
            f"{_describe(model, layer)} is not supported ({type(layer).__name__}); "
            f"supported layers: {SUPPORTED_LAYERS}."
        )
    if isinstance(layer, L.Conv2D):
        if getattr(layer, "groups", 1) != 1:
            raise UnsupportedModelError(
                f"{_describe(model, layer)} is a grouped convolution (groups={layer.groups}); "
                "grouped convolutions are not supported; use groups=1, or a DepthwiseConv2D (zip-able) when groups equals the input channels."
            )
        if layer.data_format != "channels_last":
            raise UnsupportedModelError(
                f"{_describe(model, layer)} uses data_format={layer.data_format!r}; only channels_last is supported."
            )
        return "conv"
    if isinstance(layer, L.Dense):
        return "dense"
    if isinstance(layer, L.Flatten):
        return "flatten"
    if isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
        return "global_pool"  # keepdims=True (MobileNet) keeps the channels last too
    if isinstance(layer, L.Add):
        return "add"
    if isinstance(layer, L.Multiply):
        return "multiply"  # e.g. a squeeze-and-excitation gate: its inputs share one unit space
    if isinstance(layer, L.Concatenate):
        rank = len(layer.input_shape[0])
        if layer.axis not in (-1, rank - 1):
            raise UnsupportedModelError(
                f"{_describe(model, layer)} concatenates along axis={layer.axis} of rank-{rank} tensors; tfmot_zip "
                "zips concatenations on the channel (last) axis only, where each part keeps its own units. "
                "Concatenate along axis=-1 (channels_last), or reshape so that the joined axis is last."
            )
        return "concat"  # the parts' unit spaces side by side (tfmot_zip.model.spaces)
    if isinstance(layer, L.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(layer.input_shape)
        if axis is None or axis not in (-1, rank - 1):
            raise UnsupportedModelError(
                f"{_describe(model, layer)} normalises axis {layer.axis}; only the last (channel) axis is supported."
            )
        return "channelwise"
    if isinstance(layer, INPUT_ONLY):
        return "channelwise" if _scalar_rescaling(layer) else "input_only"
    if isinstance(layer, L.Reshape) and _regroups_unit_axes(layer):
        return "channelwise"
    if isinstance(layer, CHANNELWISE):
        if isinstance(layer, L.Activation) and _activation_name(layer.activation) in NOT_ELEMENTWISE:
            return "tail_only"
        return "channelwise"
    return "other"


def _scalar_rescaling(layer) -> bool:
    """A Rescaling by one scale and one offset (the same for every channel)."""
    return isinstance(layer, L.Rescaling) and all(
        np.size(getattr(layer, key)) == 1 for key in ("scale", "offset")
    )


def _regroups_unit_axes(layer) -> bool:
    """A Reshape that keeps the channel axis last and only adds or removes axes of size 1."""
    before, after = tuple(layer.input_shape[1:]), tuple(layer.output_shape[1:])
    return before[-1:] == after[-1:] and all(d == 1 for d in before[:-1] + after[:-1])


def _activation_name(activation) -> str:
    return getattr(activation, "__name__", str(activation))


GEOMETRY = {
    "channelwise": ("pool_size", "strides", "padding", "padding_config", "axis", "data_format"),
    "flatten": ("data_format",),
    "global_pool": ("data_format", "keepdims"),
    "concat": ("axis",),
}
# Config keys a zip layer (Dense/Conv2D) may differ in: the widths it merges, and what only
# sets or constrains the weights. Everything else (activation, use_bias, kernel_size, strides,
# padding, dilation_rate, data_format, groups, ...) must agree, because one zip layer computes
# one version of it for every task.
ZIP_FREE_KEYS = frozenset({"name", "units", "filters", "trainable", "dtype", "batch_input_shape", "input_shape"})


def _free_key(key: str) -> bool:
    return key in ZIP_FREE_KEYS or key.endswith(("_initializer", "_regularizer", "_constraint"))


def config_difference(ref_config: dict, config: dict, kind: str) -> str | None:
    """The first config key in which two layers at one position disagree where they must not.

    Zip layers (``kind`` "dense"/"conv") must agree on every key but names, widths,
    initializers, regularizers and constraints. Every other layer is copied per task in the
    zipped model, so it keeps its own element-wise settings (an activation, BatchNorm
    ``epsilon``/``momentum``/``center``/``scale``, a Dropout ``rate``: each task computes its own);
    those layers must only agree on what fixes the shapes and the channel axis (pool sizes,
    strides, padding, axis, data_format), since the zip layers after them read one layout.

    Example:
        >>> config_difference({"units": 4, "activation": "relu"}, {"units": 8, "activation": "relu"}, "dense")
        >>> config_difference({"activation": "relu"}, {"activation": "tanh"}, "dense")
        'activation'
        >>> config_difference({"rate": 0.1}, {"rate": 0.5}, "channelwise")
    """
    if kind in ("dense", "conv", "depthwise"):
        keys = [k for k in {**ref_config, **config} if not _free_key(k)]
    else:
        keys = list(GEOMETRY.get(kind, ()))
    for key in keys:
        if _normalised(ref_config.get(key)) != _normalised(config.get(key)):
            return key
    return None


def _normalised(value):
    """Tuples and lists compare equal (configs of loaded models hold lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_normalised(v) for v in value)
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items() if k != "registered_name"}
    return value


def align_models(models: Sequence) -> ModelGraph:
    """Reads and aligns ``models``; raises ``UnsupportedModelError`` naming the first problem.

    Example:
        >>> from tfmot_zip.apps import zoo
        >>> g = align_models([zoo.lenet_300_100(), zoo.lenet_300_100()])
        >>> [n.name for n in g.hidden_zip_nodes()]
        ['fc1', 'fc2']
    """
    models = [flatten_model(check_tf_keras_model(m, f"models[{i}]")) for i, m in enumerate(models)]
    if len(models) < 2:
        raise ValueError(f"zip needs at least two models. Received {len(models)}.")
    for i, model in enumerate(models):
        zip_layers = [l.name for l in model.layers if isinstance(l, (ZipDense, ZipConv2D))]
        if zip_layers:
            raise UnsupportedModelError(
                f"models[{i}] ({model.name!r}) is already zipped (zip layers {zip_layers[:3]}); zip_models "
                "takes the original single-task models. Zip the originals together with the new model "
                "(all of them in one call), or pass tfmot_zip.extract_task_models(zipped) "
                "(one plain model per task, with the zipped weights) to zip them again."
            )
    graphs = []
    for model in models:
        graphs.append(_graph_of(model))
    ref_layers, ref_inbound, ref_inputs, ref_outputs = graphs[0]
    for m, (layers, inbound, inputs, outputs) in enumerate(graphs[1:], start=1):
        if len(layers) != len(ref_layers):
            raise UnsupportedModelError(
                f"Models {models[0].name!r} and {models[m].name!r} have different depths "
                f"({len(ref_layers)} and {len(layers)} layers); zipping merges layer by layer, "
                "so the models need the same architecture (widths may differ)."
            )
        if len(inputs) != 1 or len(outputs) != 1 or len(ref_inputs) != 1 or len(ref_outputs) != 1:
            raise UnsupportedModelError(
                f"Each model needs exactly one input and one output; model {models[m].name!r} has "
                f"{len(inputs)} inputs and {len(outputs)} outputs."
            )
        if inbound != ref_inbound:
            k = next(i for i, (a, b) in enumerate(zip(ref_inbound, inbound)) if a != b)
            raise UnsupportedModelError(
                f"{_describe(models[m], layers[k])} is wired differently from "
                f"{_describe(models[0], ref_layers[k])}: the models need the same block structure."
            )
    shapes = [tuple(m.input_shape[1:]) for m in models]
    if len(set(shapes)) != 1:
        raise UnsupportedModelError(
            f"Models have different input shapes {shapes}; every task's input must have the same "
            "shape (each task still keeps its own input). Resize or pad the inputs first."
        )
    nodes: list[AlignedNode] = []
    for k in range(len(ref_layers)):
        per_model = [g[0][k] for g in graphs]
        kinds = [_kind(layer, model) for layer, model in zip(per_model, models)]
        for m, layer in enumerate(per_model):
            if type(layer) is not type(per_model[0]):
                raise UnsupportedModelError(
                    f"{_describe(models[m], layer)} is at the position of "
                    f"{_describe(models[0], per_model[0])}; the models need the same layer types in the same order."
                )
        kind = kinds[0]
        if len(set(kinds)) > 1:
            m = next(i for i, k in enumerate(kinds) if k != kind)
            raise UnsupportedModelError(
                f"{_describe(models[m], per_model[m])} is not element-wise while "
                f"{_describe(models[0], per_model[0])} is (or the reverse); the layers at one position "
                "must be of the same kind. Use an element-wise activation below the head in both models."
            )
        ref_config = per_model[0].get_config()
        for m, layer in enumerate(per_model[1:], start=1):
            key = config_difference(ref_config, layer.get_config(), kind)
            if key is not None:
                ref_value, value = ref_config.get(key), layer.get_config().get(key)
                raise UnsupportedModelError(
                    f"{_describe(models[m], layer)} has {key}={value!r} but "
                    f"{_describe(models[0], per_model[0])} has {key}={ref_value!r}; the layers at one "
                    "position must compute the same thing (only weights and widths may differ), because "
                    "the zipped layer computes one version for every task. Rebuild one model with "
                    f"{key}={ref_value!r} (or {key}={value!r} in both) and retrain it, or zip models of "
                    "the same architecture."
                )
        nodes.append(AlignedNode(k, per_model, list(ref_inbound[k]), kind))
    for node in nodes:
        for src in node.inbound:
            nodes[src].consumers.append(node.index)
    _mark_heads_and_tails(nodes, ref_outputs[0], models)
    return ModelGraph(nodes, [ref_inputs[0]], [ref_outputs[0]], models)


def _mark_heads_and_tails(nodes: list[AlignedNode], output: int, models) -> None:
    """Heads: zip nodes that reach the output without another zip node; after them: tail."""
    tail = set()
    frontier = [output]
    while frontier:
        k = frontier.pop()
        node = nodes[k]
        if node.is_zip:
            node.is_head = True
            continue
        if node.kind == "input":
            raise UnsupportedModelError(
                f"Model {models[0].name!r} has a path from its input to its output without any Dense "
                "or Conv2D layer; every task needs its own head layer."
            )
        tail.add(k)
        frontier.extend(node.inbound)
    for k in sorted(tail):
        node = nodes[k]
        if len(node.inbound) != 1:
            raise UnsupportedModelError(
                f"Layer {node.name!r} ({type(node.layers[0]).__name__}) after the head combines several "
                "tensors; after the last Dense/Conv2D only single-input layers are supported."
            )
        node.kind = "tail"
    _check_input_only(nodes, models)
    for node in nodes:
        if node.kind == "other" and type(node.layers[0]).__name__ == "TFOpLambda":
            layer = node.layers[0]
            raise UnsupportedModelError(
                f"{_describe(models[0], layer)} is a TensorFlow op ({layer.get_config().get('function')}) "
                "between zip-able layers; tfmot_zip turns elementwise TF ops of one tensor and at most one "
                "Python scalar (x + 3.0, x * c, tf.nn.relu6(x), ...) into Keras layers, not this one. "
                "Replace it by a Keras layer (Activation, ReLU, Rescaling, ...) and copy the weights over."
            )
        if node.kind == "other" or node.kind == "tail_only":
            layer = node.layers[0]
            raise UnsupportedModelError(
                f"{_describe(models[0], layer)} is not supported between zip-able layers; supported "
                f"layers: {SUPPORTED_LAYERS}."
            )
        if node.is_zip and not node.is_head:
            for model, layer in zip(models, node.layers):
                if _activation_name(layer.activation) in NOT_ELEMENTWISE:
                    raise UnsupportedModelError(
                        f"{_describe(model, layer)} is a hidden layer with a softmax activation, which "
                        "mixes units; only elementwise activations are supported below the head."
                    )


def _check_input_only(nodes: list[AlignedNode], models) -> None:
    """Per-channel preprocessing must read a task's input, not the output of a zip-able layer."""
    after_zip: set[int] = set()
    for node in nodes:
        if node.is_zip or any(i in after_zip for i in node.inbound):
            after_zip.add(node.index)
        if node.kind == "input_only":
            if node.index in after_zip:
                raise UnsupportedModelError(
                    f"{_describe(models[0], node.layers[0])} normalises channels after a Dense/Conv2D layer; "
                    "per-channel Normalization/Rescaling is supported only as input preprocessing, before "
                    "the first Dense/Conv2D (each task keeps its own). Fold it into the next layer's "
                    "weights, or use a BatchNormalization."
                )
            node.kind = "channelwise"
