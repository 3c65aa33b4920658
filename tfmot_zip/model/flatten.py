"""Flattening the models people ship into one functional model of plain Keras layers.

The transfer-learning pattern of the Keras guides puts a whole model inside another one
(``Sequential([base, GlobalAveragePooling2D(), Dense(k)])``, or ``base(x, training=False)`` in a
functional model), and tf_keras builds some activations as TensorFlow-op layers (``TFOpLambda``:
``x + 3.0``, ``x * (1 / 6)``, ``tf.nn.relu6(x)`` in MobileNetV3's hard-sigmoid). Zipping reads a
model layer by layer, so :func:`flatten_model` first rewrites such a model into one functional
model computing the same thing:

- every nested model (nested any number of times) is replaced by copies of its layers, wired to
  the tensors the nested model was called on; its layers keep their own names (sharing keys and
  reports use them), and two layers of one name are refused;
- a nested model called with ``training=False`` runs in inference mode whatever the outer model
  does, so its BatchNormalization copies get ``trainable=False`` (tf_keras then always runs them
  in inference mode: forward results are identical in training and inference, but their
  ``gamma``/``beta`` no longer train) and its Dropout/noise layers, which never act there, are
  left out; ``training=True`` and other call arguments of a nested model are refused;
- a layer called with ``training=False`` (``Dropout(0.2)(x, training=False)``; Keras 3 models keep it
  on their nodes) is treated the same way: the argument is dropped, a Dropout/noise layer with it is
  left out and a BatchNormalization with it gets ``trainable=False``; a layer called with
  ``training=True`` (always in training mode, as Monte-Carlo dropout) is refused;
- an elementwise TF-op layer of one tensor and at most one Python scalar becomes the Keras layer
  computing the same (``Rescaling`` for ``+ - * /`` by a scalar, ``ReLU``/``Activation`` for
  ``tf.nn.relu``, ``relu6``, ``sigmoid``, ``tanh``, ``silu``/``swish``, ``elu``); other TF-op
  layers stay and the graph reader refuses them with the fix;
- a ``Reshape`` that only adds or removes axes of size 1 in front of the channels gets ``-1`` as
  its channel size, so it applies to any group of channels.
- a ``SeparableConv2D`` (depth_multiplier 1, channels last, as in Xception) becomes the two
  layers it computes, a ``DepthwiseConv2D`` named ``<name>_depthwise`` (its kernel size, strides,
  padding and dilation, no bias) and a 1x1 ``Conv2D`` keeping the name, the bias and the activation,
  so both zip; the sum is the same as ``tf.nn.separable_conv2d``'s, which runs those two convolutions.

A nested model called more than once (shared weights) is refused. Models needing none of this are
returned unchanged (the same object); otherwise the result holds copies (same config and
weights) and the user's model is never modified.
"""
from __future__ import annotations

import numbers
from typing import Any

from tfmot_zip.compat import keras

__all__ = ["UnsupportedModelError", "flatten_model", "needs_flattening", "TF_OP_LAYERS"]

L = keras.layers
_CONSTANT = "_CONSTANT_VALUE"

#: TF-op layer functions (``TFOpLambda`` ``function``) that become a Keras layer: elementwise
#: functions of one tensor, and arithmetic with one Python scalar.
TF_OP_LAYERS = {
    "nn.relu": ("ReLU", {}),
    "nn.relu6": ("ReLU", {"max_value": 6.0}),
    "math.sigmoid": ("Activation", {"activation": "sigmoid"}),
    "nn.sigmoid": ("Activation", {"activation": "sigmoid"}),
    "math.tanh": ("Activation", {"activation": "tanh"}),
    "nn.tanh": ("Activation", {"activation": "tanh"}),
    "nn.silu": ("Activation", {"activation": "swish"}),
    "nn.swish": ("Activation", {"activation": "swish"}),
    "nn.elu": ("Activation", {"activation": "elu"}),
    "__operators__.add": "add",
    "math.add": "add",
    "math.subtract": "subtract",
    "math.multiply": "multiply",
    "math.truediv": "divide",
    "math.divide": "divide",
}
NOISE_LAYERS = (L.Dropout, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout)


class UnsupportedModelError(ValueError):
    """A model (or a layer of it) cannot be zipped; the message says which and why.

    Defined here because flattening is the first reading of a model; ``tfmot_zip.model.graph``
    (and the package root) re-export it.
    """


def _describe(model: Any, layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__}) of model {model.name!r}"


def _is_model(layer: Any) -> bool:
    return isinstance(layer, keras.Model)


def _unit_reshape(layer: Any) -> bool:
    """A Reshape that only adds/removes size-1 axes in front of a fixed channel axis."""
    if not isinstance(layer, L.Reshape) or not layer.built:
        return False
    try:
        before, after = tuple(layer.input_shape[1:]), tuple(layer.output_shape[1:])
    except AttributeError:
        return False
    return (
        bool(before) and bool(after) and before[-1] == after[-1] and before[-1] is not None
        and all(d == 1 for d in before[:-1] + after[:-1])
    )


def _passes_training(layer: Any) -> bool:
    """Whether some call of ``layer`` passes a ``training`` argument."""
    return any("training" in (getattr(node, "call_kwargs", None) or {}) for node in getattr(layer, "_inbound_nodes", []))


def _splits(layer: Any) -> bool:
    """A SeparableConv2D that becomes a DepthwiseConv2D and a 1x1 Conv2D (others are refused by the graph reader)."""
    return (isinstance(layer, L.SeparableConv2D) and int(layer.depth_multiplier) == 1
            and layer.data_format == "channels_last")


def needs_flattening(model: Any) -> bool:
    """Whether :func:`flatten_model` would rewrite ``model`` (nested models, TF-op layers, unit Reshapes,
    layers called with a ``training`` argument, SeparableConv2D layers).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> base = keras.Sequential([keras.layers.Dense(3, input_shape=(4,))], name="base")
        >>> needs_flattening(base), needs_flattening(keras.Sequential([base, keras.layers.Dense(2)]))
        (False, True)
    """
    if not getattr(model, "_is_graph_network", False) or not model.inputs:
        return False
    return any(
        _is_model(l) or type(l).__name__ == "TFOpLambda" or (_unit_reshape(l) and l.target_shape[-1] != -1)
        or _passes_training(l) or _splits(l)
        for l in model.layers
    )


def flatten_model(model: Any) -> Any:
    """One functional model of plain layers computing what ``model`` computes (see the module doc).

    Returns ``model`` itself when there is nothing to rewrite.

    Raises:
        UnsupportedModelError: a nested model called twice or with ``training=True``, a layer
            called with ``training=True``, or two layers of one name once flattened.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> base = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="fc")], name="base")
        >>> model = keras.Sequential([base, keras.layers.Dense(2, name="head")], name="outer")
        >>> [layer.name for layer in flatten_model(model).layers]
        ['base_input', 'fc', 'head']
        >>> flatten_model(base) is base
        True
    """
    if not needs_flattening(model):
        return model
    flattener = _Flattener(model)
    config = flattener.config()
    custom = {}
    for layer in flattener.sources.values():
        custom[type(layer).__name__] = type(layer)
        custom[keras.utils.get_registered_name(type(layer))] = type(layer)
    flat = keras.Model.from_config(config, custom_objects=custom)
    for layer in flat.layers:
        source = flattener.sources.get(layer.name)
        if layer.name in flattener.weights:
            layer.set_weights(flattener.weights[layer.name])
        elif source is not None and layer.weights:
            layer.set_weights(source.get_weights())
    return flat


def _without_training(model: Any, layer: Any, nodes: list) -> tuple[list, bool]:
    """``nodes`` (a layer's calls, in config form) without their ``training`` argument, and whether every
    call passed ``training=False``; ``training=True``, another value, or ``False`` in some calls only is refused."""
    values, stripped = [], []
    for node in nodes:
        node_values, entries = set(), []
        for entry in node:
            if isinstance(entry, list) and len(entry) > 3 and isinstance(entry[0], str) and isinstance(entry[3], dict):
                kwargs = dict(entry[3])
                if "training" in kwargs:
                    value = kwargs.pop("training")
                    node_values.add(value if isinstance(value, (bool, type(None))) else repr(value))
                entry = [*entry[:3], kwargs]
            entries.append(entry)
        stripped.append(entries)
        values.append(node_values.pop() if len(node_values) == 1 else (None if not node_values else "mixed"))
    if all(v is None for v in values):  # training=None (or nothing) follows the model's mode
        return stripped, False
    if any(v is not False for v in values):
        raise UnsupportedModelError(
            f"{_describe(model, layer)} is called with training={values[0] if len(values) == 1 else values!r}; "
            "tfmot_zip zips layers that follow the model's training mode, or are called with training=False in "
            "every call. Rebuild the model without the training argument of this layer (or with training=False), "
            f"e.g. {type(layer).__name__}(...)(x) instead of {type(layer).__name__}(...)(x, training=True)."
        )
    return stripped, True


class _Flattener:
    """Builds the functional config of the flat model, layer spec by layer spec."""

    def __init__(self, model: Any):
        self.model = model
        self.specs: list[dict] = []
        self.sources: dict[str, Any] = {}  # layer name -> the layer whose weights it takes
        self.weights: dict[str, list] = {}  # layer name -> its weights, for the layers split in two
        self.owner: dict[str, str] = {}  # layer name -> name of the model it came from
        self.alias: dict[tuple[str, int], list] = {}  # (layer, tensor index) -> the ref it stands for

    def config(self) -> dict:
        model = self.model
        input_layers = [t._keras_history.layer for t in model.inputs]
        refs = []
        for layer in input_layers:
            self._claim(layer, model)
            self.specs.append({**keras.layers.serialize(layer), "name": layer.name, "inbound_nodes": []})
            refs.append([layer.name, 0, 0])
        outputs = self._walk(model, refs, inference=False)
        return {"name": model.name, "layers": self.specs, "input_layers": refs, "output_layers": outputs}

    # --- references -------------------------------------------------------------------------
    def _resolve(self, ref: list) -> list:
        key = (ref[0], ref[2])
        while key in self.alias:
            ref = self.alias[key]
            key = (ref[0], ref[2])
        return list(ref)

    def _rewrite(self, value: Any) -> Any:
        """Rewrites every tensor reference ``[name, node, tensor]`` inside call arguments."""
        if isinstance(value, (list, tuple)):
            if (
                len(value) in (3, 4) and isinstance(value[0], str) and isinstance(value[2], int)
                and (value[0], value[2]) in self.alias
            ):
                return self._resolve(value) + [self._rewrite(v) for v in value[3:]]
            return [self._rewrite(v) for v in value]
        if isinstance(value, dict):
            return {k: self._rewrite(v) for k, v in value.items()}
        return value

    def _claim(self, layer: Any, model: Any) -> None:
        if layer.name in self.owner:
            raise UnsupportedModelError(
                f"Flattening model {self.model.name!r} gives two layers named {layer.name!r} (one from model "
                f"{self.owner[layer.name]!r}, one from model {model.name!r}); zipping names layers by their "
                "names, so rename one of them (e.g. build the head with name=... arguments)."
            )
        self.owner[layer.name] = model.name

    # --- walking ----------------------------------------------------------------------------
    def _walk(self, model: Any, input_refs: list, inference: bool) -> list:
        """Adds the layers of ``model`` called on ``input_refs``; returns its output refs."""
        if isinstance(model, keras.Sequential):
            ref = input_refs[0]
            for layer in model.layers:
                ref = self._add(model, layer, [[[*ref, {}]]], inference)[0]
            return [ref]
        config = model.get_config()
        for (name, _, tensor), ref in zip(config["input_layers"], input_refs):
            if (name, tensor) != (ref[0], ref[2]):  # the outermost model's inputs stand for themselves
                self.alias[(name, tensor)] = ref
        for spec in config["layers"]:
            layer = model.get_layer(spec["name"])
            if not isinstance(layer, L.InputLayer):
                self._add(model, layer, spec["inbound_nodes"], inference)
        return [self._resolve(ref) for ref in config["output_layers"]]

    def _add(self, model: Any, layer: Any, nodes: list, inference: bool) -> list:
        """Adds one layer (its calls ``nodes``, in config form); returns its first call's output refs."""
        if _is_model(layer):
            return self._inline(model, layer, nodes, inference)
        nodes, called_in_inference = _without_training(model, layer, nodes)
        inference = inference or called_in_inference
        if inference and isinstance(layer, NOISE_LAYERS) and len(nodes) == 1:
            self.alias[(layer.name, 0)] = self._resolve(nodes[0][0][:3])
            return [self._resolve(nodes[0][0][:3])]
        self._claim(layer, model)
        nodes = self._rewrite(nodes)
        if _splits(layer):
            return self._separable(model, layer, nodes)
        spec = {**keras.layers.serialize(layer), "name": layer.name}
        if type(layer).__name__ == "TFOpLambda" and len(nodes) == 1:
            nodes = self._plain_op(spec, nodes[0]) or nodes
        if _unit_reshape(layer):
            spec["config"] = {**spec["config"], "target_shape": tuple(layer.target_shape[:-1]) + (-1,)}
        if inference and isinstance(layer, L.BatchNormalization):
            spec["config"] = {**spec["config"], "trainable": False}
        spec["inbound_nodes"] = nodes
        self.specs.append(spec)
        self.sources[layer.name] = layer
        return [[layer.name, 0, 0]]

    def _separable(self, model: Any, layer: Any, nodes: list) -> list:
        """Adds ``layer`` (a SeparableConv2D) as a DepthwiseConv2D and a 1x1 Conv2D of the same weights."""
        config = layer.get_config()
        base = {k: config[k] for k in ("trainable", "dtype") if k in config}
        depthwise = L.DepthwiseConv2D(
            config["kernel_size"], strides=config["strides"], padding=config["padding"],
            data_format=config["data_format"], dilation_rate=config["dilation_rate"], use_bias=False,
            depthwise_initializer=config["depthwise_initializer"], depthwise_regularizer=config["depthwise_regularizer"],
            depthwise_constraint=config["depthwise_constraint"], name=f"{layer.name}_depthwise", **base)
        pointwise = L.Conv2D(
            config["filters"], 1, data_format=config["data_format"], activation=config["activation"],
            use_bias=config["use_bias"], kernel_initializer=config["pointwise_initializer"],
            bias_initializer=config["bias_initializer"], kernel_regularizer=config["pointwise_regularizer"],
            bias_regularizer=config["bias_regularizer"], activity_regularizer=config["activity_regularizer"],
            kernel_constraint=config["pointwise_constraint"], bias_constraint=config["bias_constraint"],
            name=layer.name, **base)
        weights = layer.get_weights()
        self._claim(depthwise, model)
        self.specs.append({**keras.layers.serialize(depthwise), "name": depthwise.name, "inbound_nodes": nodes})
        self.specs.append({**keras.layers.serialize(pointwise), "name": layer.name,
                           "inbound_nodes": [[[depthwise.name, 0, 0, {}]]]})
        self.weights[depthwise.name], self.weights[layer.name] = weights[:1], weights[1:]
        return [[layer.name, 0, 0]]

    def _inline(self, model: Any, nested: Any, nodes: list, inference: bool) -> list:
        if len(nodes) != 1:
            raise UnsupportedModelError(
                f"{_describe(model, nested)} is a nested model called {len(nodes)} times (shared weights); "
                "tfmot_zip flattens nested models called once. Build the model with one call of it, or "
                "with separate copies (keras.models.clone_model) if the weights need not be shared."
            )
        entries = nodes[0]
        kwargs = dict(entries[0][3]) if len(entries[0]) > 3 else {}
        training = kwargs.pop("training", None)
        if kwargs.pop("mask", None) is not None or kwargs or training not in (None, False):
            raise UnsupportedModelError(
                f"{_describe(model, nested)} is a nested model called with "
                f"{dict(entries[0][3])!r}; tfmot_zip flattens nested models called with no arguments "
                "or with training=False only."
            )
        refs = [self._resolve(entry[:3]) for entry in entries]
        outputs = self._walk(nested, refs, inference or training is False)
        for k, ref in enumerate(outputs):
            self.alias[(nested.name, k)] = ref
        return outputs

    def _plain_op(self, spec: dict, entries: list) -> list | None:
        """Turns ``spec`` (a TF-op layer) into the Keras layer computing the same; the new nodes, or None.

        ``entries`` is the layer's one call in config form (TF-op layers keep the structure of their
        first argument, so it is one ``[name, node, tensor, kwargs]`` entry or a list of them).
        """
        plan = TF_OP_LAYERS.get(spec["config"].get("function"))
        first = entries if isinstance(entries[0], str) else (entries[0] if len(entries) == 1 else None)
        if plan is None or not isinstance(first, list) or not isinstance(first[0], str):
            return None
        kwargs = {k: v for k, v in (first[3] if len(first) > 3 else {}).items() if k != "name"}
        if first[0] == _CONSTANT:  # a scalar on the left: c - x, c + x, c * x
            constant, tensor, tensor_first = first[2], kwargs.pop("y", None), False
        else:
            constant, tensor, tensor_first = kwargs.pop("y", None), first[:3], True
        if kwargs or not (isinstance(tensor, list) and len(tensor) == 3):
            return None
        if isinstance(plan, tuple):
            if constant is not None:
                return None
            class_name, config = plan
        else:
            if not isinstance(constant, numbers.Real) or isinstance(constant, bool):
                return None
            scale_offset = {
                "add": (1.0, constant),
                "subtract": (1.0, -constant) if tensor_first else (-1.0, constant),
                "multiply": (constant, 0.0),
                "divide": (1.0 / constant, 0.0) if tensor_first and constant != 0 else None,
            }[plan]
            if scale_offset is None:
                return None
            class_name, config = "Rescaling", {"scale": float(scale_offset[0]), "offset": float(scale_offset[1])}
        base = {k: spec["config"][k] for k in ("name", "trainable", "dtype") if k in spec["config"]}
        spec.clear()
        spec.update(keras.layers.serialize(getattr(L, class_name)(**config, **base)))
        spec["name"] = base["name"]
        return [[[*tensor, {}]]]
