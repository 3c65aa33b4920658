"""Fold inference-mode BatchNormalization (and a following ReLU) into the preceding Conv2D/Dense/DepthwiseConv2D.

At inference a ``conv -> BatchNormalization`` pair is the same function as one conv with scaled
weights and a shifted bias: ``scale = gamma / sqrt(var + eps)``, ``W' = W * scale`` on the
output-channel axis, ``b' = (b - mean) * scale + beta``. Two readers need it:

- PAM (:mod:`tfmot_zip.pam`) works on plain chains of Conv2D/Dense/pooling layers, so a VGG-style
  ``conv -> BatchNormalization -> ReLU`` block must become one conv with a ReLU activation;
- zipping a functional model (MobileNetV2, ResNet) keeps one BatchNormalization per task after
  every shared convolution; the TFLite converter then folds each task's BatchNorm into its own
  copy of the shared weights, so nothing stays shared in the file. Folding before zipping leaves
  shared units truly shared (one weight copy, computed once on a shared input).

:func:`fold_batchnorm` reads the model's functional graph (nested models are flattened first with
:func:`tfmot_zip.model.flatten.flatten_model`), folds every BatchNormalization whose input is a
linear Conv2D / Dense / DepthwiseConv2D read by that BatchNormalization only, and rebuilds the
model from its config with the new weights.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.model.flatten import flatten_model
from tfmot_zip.model.keras3 import as_tf_keras_model

__all__ = ["fold_batchnorm"]

L = keras.layers
#: Layers a following BatchNormalization folds into (exact types: Conv2DTranspose and
#: SeparableConv2D subclass Conv2D but keep their output channels elsewhere).
FOLDABLE_TYPES = (L.Conv2D, L.Dense, L.DepthwiseConv2D)


def _activation_name(layer) -> str:
    name = keras.activations.serialize(layer.activation)
    return name.get("config", {}).get("name", "linear") if isinstance(name, dict) else str(name)


def _is_plain_relu(layer) -> bool:
    if type(layer) is L.ReLU:
        return layer.max_value is None and not layer.negative_slope and not layer.threshold
    return type(layer) is L.Activation and _activation_name(layer) == "relu"


def _is_ref(value: Any, names: set) -> bool:
    """A tensor reference ``[layer name, node index, tensor index(, kwargs)]`` of a functional config."""
    return (
        isinstance(value, (list, tuple)) and len(value) in (3, 4) and isinstance(value[0], str)
        and value[0] in names and isinstance(value[1], int) and isinstance(value[2], int)
    )


def _refs(value: Any, names: set) -> list:
    """Every tensor reference inside ``value`` (a layer's ``inbound_nodes``, call kwargs included)."""
    if _is_ref(value, names):
        return [value] + _refs(list(value[3:]), names)
    if isinstance(value, (list, tuple)):
        return [ref for item in value for ref in _refs(item, names)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _refs(item, names)]
    return []


def _rewrite(value: Any, alias: dict, names: set) -> Any:
    """``value`` with every reference to an aliased layer replaced by the reference it stands for."""
    if _is_ref(value, names):
        head = list(alias[value[0]]) if value[0] in alias else list(value[:3])
        return head + [_rewrite(v, alias, names) for v in value[3:]]
    if isinstance(value, (list, tuple)):
        return [_rewrite(v, alias, names) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, alias, names) for k, v in value.items()}
    return value


def _graph_model(model) -> keras.Model:
    """``model`` as a functional model over the same layers (a built Sequential is one already)."""
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Sequential model {model.name!r} has no known input shape, so fold_batchnorm cannot read its "
                "graph; build it first (give the first layer input_shape=..., or start with keras.Input)."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model ({type(model).__name__}); fold_batchnorm needs a "
            "Sequential or functional tf_keras model whose layer graph it can read. Rebuild it with the "
            "functional API."
        )
    return model


def _fold_into(kernel: np.ndarray, bias: np.ndarray, layer, batchnorm) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel, bias)`` of ``layer`` with ``batchnorm`` (inference mode) folded in."""
    channels = kernel.shape[-2] * kernel.shape[-1] if isinstance(layer, L.DepthwiseConv2D) else kernel.shape[-1]
    ones, zeros = np.ones(channels), np.zeros(channels)
    gamma = batchnorm.gamma.numpy().astype(np.float64) if batchnorm.gamma is not None else ones
    beta = batchnorm.beta.numpy().astype(np.float64) if batchnorm.beta is not None else zeros
    mean = batchnorm.moving_mean.numpy().astype(np.float64)
    variance = batchnorm.moving_variance.numpy().astype(np.float64)
    scale = gamma / np.sqrt(variance + batchnorm.epsilon)
    if isinstance(layer, L.DepthwiseConv2D):  # kernel [kh, kw, C, m]: output channel c * m + j
        folded = kernel.astype(np.float64) * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        folded = kernel.astype(np.float64) * scale
    new_bias = (bias.astype(np.float64) - mean) * scale + beta
    return folded.astype(kernel.dtype), new_bias.astype(kernel.dtype)


def _batchnorm_problem(bn, spec: dict, producer, producer_spec: dict | None, readers: dict, outputs: set,
                       activation: str | None) -> str | None:
    """Why ``bn`` cannot be folded into ``producer`` (None if it can)."""
    if len(spec["inbound_nodes"]) != 1:
        return f"it is called {len(spec['inbound_nodes'])} times (a shared layer)"
    if producer is None:
        return "its input is not the output of one layer"
    if type(producer) not in FOLDABLE_TYPES:
        return f"its input comes from {producer.name!r} ({type(producer).__name__}), not from a Conv2D/Dense/DepthwiseConv2D"
    if activation != "linear":
        return f"its input layer {producer.name!r} has activation {activation!r} (the BatchNorm must come before it)"
    if len(producer_spec["inbound_nodes"]) != 1:
        return f"its input layer {producer.name!r} is called {len(producer_spec['inbound_nodes'])} times (a shared layer)"
    if readers.get(producer.name, []) != [bn.name] or producer.name in outputs:
        others = [name for name in readers.get(producer.name, []) if name != bn.name]
        return (f"the output of {producer.name!r} is also read by {others or 'the model output'}; folding would "
                "change what they read")
    if getattr(producer, "data_format", "channels_last") != "channels_last":
        return f"its input layer {producer.name!r} is {producer.data_format} (channels_last only)"
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    rank = len(bn.input_shape)
    if axis not in (-1, rank - 1):
        return f"it normalises axis={bn.axis!r}, not the channel (last) axis"
    return None


def _check_arguments(model: Any, fold_relu: Any, keep_unfoldable: Any) -> None:
    if not isinstance(fold_relu, bool):
        raise TypeError(f"fold_relu must be True or False. Received: fold_relu={fold_relu!r}.")
    if keep_unfoldable is not None and not isinstance(keep_unfoldable, bool):
        raise TypeError(
            f"keep_unfoldable must be None, True or False. Received: keep_unfoldable={keep_unfoldable!r}."
        )
    if not hasattr(model, "layers") or not hasattr(model, "get_config"):
        raise TypeError(
            f"fold_batchnorm needs a tf_keras (or Keras 3) model. Received: model={model!r} "
            f"({type(model).__name__}); build a keras.Sequential or functional keras.Model first."
        )


def fold_batchnorm(model: keras.Model, *, fold_relu: bool = True, keep_unfoldable: bool | None = None) -> keras.Model:
    """A new model computing ``model``'s inference function with its BatchNormalizations folded away.

    Every BatchNormalization whose input is a linear ``Conv2D``, ``Dense`` or ``DepthwiseConv2D``
    (called once, its output read by that BatchNormalization only) is folded into that layer:
    ``scale = gamma / sqrt(moving_variance + epsilon)``, ``W' = W * scale`` on the output-channel axis
    (for DepthwiseConv2D, axis 2 of its ``[kh, kw, C, depth_multiplier]`` kernel), ``b' = (b -
    moving_mean) * scale + beta`` (a bias is added where the layer had none). With ``fold_relu`` a
    plain ``ReLU`` (or ``Activation("relu")``) reading only such a linear layer becomes its
    activation. Works on functional graphs (residual ``Add``, MobileNetV2 inverted residuals,
    squeeze-excitation, ``Concatenate``); nested models are flattened first. Layer names are kept
    (folded BatchNormalization/ReLU layers disappear); ``model`` is never modified. Training
    behaviour differs (no batch statistics): fine-tune the folded model with a small learning rate.

    Args:
        model: a built tf_keras Sequential or functional model (a Keras 3 model is converted first).
        fold_relu: also fold a plain ReLU after a linear Conv2D/Dense/DepthwiseConv2D into it.
        keep_unfoldable: what to do with a BatchNormalization that cannot be folded (after an
            activation, after a pooling or Add, ...): True keeps it, False raises. None (default)
            keeps it in a functional model and raises for a Sequential one (a plain chain is what
            :mod:`tfmot_zip.pam` reads, and it cannot hold a BatchNormalization).

    Returns:
        An uncompiled model named ``<name>_folded``: a ``keras.Sequential`` if ``model`` is a
        Sequential chain, else a functional ``keras.Model``, with the same inputs and outputs.

    Raises:
        ValueError: a BatchNormalization that cannot be folded (when refused; the message says why),
            or a model whose graph cannot be read (subclassed, or a Sequential without input shape).
        TypeError: ``model`` is not a model, or a flag is not a bool.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> x = keras.Input((8, 8, 3), name="image")
        >>> y = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(x))
        >>> y = keras.layers.Add(name="add")([y, keras.layers.Conv2D(4, 3, name="skip")(x)])
        >>> [layer.name for layer in fold_batchnorm(keras.Model(x, y)).layers]
        ['image', 'conv', 'skip', 'add']
    """
    _check_arguments(model, fold_relu, keep_unfoldable)
    model = flatten_model(as_tf_keras_model(model, "model"))
    sequential = isinstance(model, keras.Sequential)
    strict = sequential if keep_unfoldable is None else not keep_unfoldable
    graph = _graph_model(model)
    config = copy.deepcopy(graph.get_config())
    specs = config["layers"]
    layers = {spec["name"]: graph.get_layer(spec["name"]) for spec in specs}
    by_name = {spec["name"]: spec for spec in specs}
    names = set(by_name)
    readers: dict[str, list[str]] = {name: [] for name in names}
    for spec in specs:
        for ref in _refs(spec.get("inbound_nodes", []), names):
            readers[ref[0]].append(spec["name"])
    outputs = {ref[0] for ref in config["output_layers"]}
    alias: dict[str, list] = {}  # removed layer -> the reference [name, node, tensor] it stands for
    weights: dict[str, list[np.ndarray]] = {}  # folded layer -> its new [kernel, bias]
    removed: set[str] = set()

    def single_input(spec: dict) -> list | None:
        refs = _refs(spec.get("inbound_nodes", []), names)
        if len(spec.get("inbound_nodes", [])) != 1 or len(refs) != 1:
            return None
        ref = list(alias.get(refs[0][0], refs[0][:3]))
        return ref if ref[2] == 0 else None

    def remove(name: str, ref: list) -> None:  # ``name``'s readers now read ``ref``
        alias[name] = ref
        readers[ref[0]] = [r for r in readers[ref[0]] if r != name] + readers.pop(name)
        if name in outputs:
            outputs.add(ref[0])
        removed.add(name)

    for spec in specs:
        name, layer = spec["name"], layers[spec["name"]]
        if isinstance(layer, L.BatchNormalization):
            ref = single_input(spec)
            producer = layers[ref[0]] if ref else None
            producer_spec = by_name[ref[0]] if ref else None
            activation = producer_spec["config"].get("activation", "linear") if producer_spec else None
            activation = activation if isinstance(activation, str) else _activation_name(producer) if producer else None
            problem = _batchnorm_problem(layer, spec, producer, producer_spec, readers, outputs, activation)
            if problem is not None:
                if strict:
                    raise ValueError(
                        f"Cannot fold BatchNormalization {name!r} of model {model.name!r}: {problem}. It must "
                        "directly follow a Conv2D/Dense/DepthwiseConv2D without activation whose output only it "
                        "reads, and normalise the last axis. Fold it by hand, rebuild the model without it, or "
                        "pass keep_unfoldable=True to keep it."
                    )
                continue
            kernel, bias = weights.get(producer.name) or _kernel_and_bias(producer)
            weights[producer.name] = list(_fold_into(kernel, bias, producer, layer))
            producer_spec["config"]["use_bias"] = True
            remove(name, ref)
        elif fold_relu and _is_plain_relu(layer):
            ref = single_input(spec)
            if ref is None or type(layers[ref[0]]) not in FOLDABLE_TYPES:
                continue
            producer, producer_spec = layers[ref[0]], by_name[ref[0]]
            current = producer_spec["config"].get("activation", "linear")
            current = current if isinstance(current, str) else _activation_name(producer)
            if (current != "linear" or len(producer_spec["inbound_nodes"]) != 1
                    or readers[producer.name] != [name] or producer.name in outputs):
                continue
            producer_spec["config"]["activation"] = "relu"
            remove(name, ref)

    config["layers"] = [
        {**spec, "inbound_nodes": _rewrite(spec.get("inbound_nodes", []), alias, names)}
        for spec in specs if spec["name"] not in removed
    ]
    config["output_layers"] = _rewrite(config["output_layers"], alias, names)
    config["name"] = f"{model.name}_folded"
    return _build(config, layers, weights, sequential)


def _kernel_and_bias(layer) -> tuple[np.ndarray, np.ndarray]:
    values = layer.get_weights()
    channels = values[0].shape[-2] * values[0].shape[-1] if isinstance(layer, L.DepthwiseConv2D) else values[0].shape[-1]
    bias = values[1] if layer.use_bias else np.zeros(channels, values[0].dtype)
    return values[0].copy(), bias.copy()


def _build(config: dict, sources: dict, weights: dict, sequential: bool) -> keras.Model:
    """The model of ``config`` with each layer's weights: ``weights[name]`` or its source layer's."""
    custom: dict[str, Any] = {}
    for layer in sources.values():
        custom[type(layer).__name__] = type(layer)
        custom[keras.utils.get_registered_name(type(layer))] = type(layer)
    if sequential:  # the folded chain is still a chain: keep it a Sequential (PAM reads those)
        layers = [keras.layers.deserialize({k: v for k, v in spec.items() if k != "inbound_nodes"}, custom_objects=custom)
                  for spec in config["layers"]]
        input_layer = layers[0]
        folded = keras.Sequential(name=config["name"])
        folded.add(keras.Input(batch_shape=input_layer.get_config()["batch_input_shape"],
                               dtype=input_layer.dtype, name=input_layer.name))
        for layer in layers[1:]:
            folded.add(layer)
    else:
        folded = keras.Model.from_config(config, custom_objects=custom)
    for layer in folded.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights:
            layer.set_weights(sources[layer.name].get_weights())
    return folded
