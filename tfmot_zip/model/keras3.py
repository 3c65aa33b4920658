"""Keras 3 models and ``.keras`` files as tf_keras models, without importing Keras 3.

TensorFlow 2.21 ships Keras 3 as ``keras``; tfmot_zip and TFMOT work with tf_keras. A Keras 3
Sequential or functional model is described completely by its config (a plain dict) and its
weights (numpy arrays), so :func:`from_keras3` reads those (from the model object, or from a
``.keras`` archive's ``config.json`` and ``model.weights.h5``), translates each layer's config to
tf_keras, rebuilds the graph with tf_keras and copies the weights layer by layer. The Keras 3
package itself is never imported here. :func:`as_tf_keras_model` is what the entry points call on
every model argument: a Keras 3 model is converted (with one warning), anything else is checked.
"""
from __future__ import annotations

import inspect
import io
import json
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tfmot_zip.compat import check_tf_keras_model, is_keras3_object, keras
from tfmot_zip.model.activations import KERAS3_ACTIVATIONS
from tfmot_zip.model.graph import UnsupportedModelError

__all__ = ["SUPPORTED_LAYERS", "from_keras3", "as_tf_keras_model", "keras3_file_version"]

#: The Keras 3 layer classes :func:`from_keras3` converts (conversion only: what zips is another matter).
SUPPORTED_LAYERS = (
    "InputLayer", "Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization", "MaxPooling2D",
    "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dropout", "Activation",
    "ReLU", "Add", "Multiply", "Concatenate", "Reshape", "Rescaling", "Normalization", "ZeroPadding2D",
    "Cropping2D", "UpSampling2D",
)
# Keras 3 options without a tf_keras argument, dropped when they hold these (default) values.
_DROPPABLE = {"quantization_config": None, "lora_rank": None, "lora_alpha": None, "synchronized": False,
              "optional": False, "input_axes": None, "output_axes": None}
_BASE_KWARGS = {"name", "trainable", "dtype", "activity_regularizer"}
_OBJECT_NAMESPACES = {"_initializer": "initializers", "_regularizer": "regularizers", "_constraint": "constraints"}


def keras3_file_version(path: str | os.PathLike) -> str | None:
    """The Keras version a ``.keras`` archive was saved with, when it is Keras 3 (else None).

    Example:
        >>> keras3_file_version("missing.keras") is None
        True
    """
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
    except (KeyError, ValueError, OSError):
        return None
    version = str(meta.get("keras_version", ""))
    return version if version.startswith("3.") else None


def as_tf_keras_model(model: object, argument: str = "model") -> Any:
    """``model`` itself if it is a tf_keras model; a tf_keras copy (with a warning) if it is Keras 3.

    Every entry point calls this on each model argument and uses what it returns.

    Raises:
        UnsupportedModelError: a Keras 3 model that cannot be converted (the message says which layer and why).
        TypeError: ``model`` is neither a tf_keras nor a Keras 3 model.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> as_tf_keras_model(m) is m
        True
    """
    if is_keras3_object(model):
        converted = from_keras3(model)
        warnings.warn(f"converted Keras 3 model {converted.name!r} ({argument}) to tf_keras", UserWarning,
                      stacklevel=_caller_stacklevel())
        return converted
    return check_tf_keras_model(model, argument)


def _caller_stacklevel() -> int:
    """The ``warnings`` stack level of the first frame outside tfmot_zip (the user's call)."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def from_keras3(model_or_path: Any) -> Any:
    """A tf_keras copy of a Keras 3 Sequential or functional model (or ``.keras`` file): same names, weights, outputs.

    The input is only read. Layers are converted by their config (see :data:`SUPPORTED_LAYERS`).

    Args:
        model_or_path: a Keras 3 model, or the path of a ``.keras`` file saved by Keras 3.

    Returns:
        An uncompiled tf_keras model.

    Raises:
        UnsupportedModelError: a subclassed model, or a layer that cannot be converted (named, with its class).
        ValueError: a path that is not a Keras 3 ``.keras`` file.

    Example:
        >>> import io, json, tempfile, zipfile, h5py, numpy as np
        >>> weights = io.BytesIO()  # what Keras 3 writes for a 3 -> 2 Dense model, by hand
        >>> with h5py.File(weights, "w") as h5:
        ...     _ = h5.create_dataset("layers/dense/vars/0", data=np.ones((3, 2)))
        ...     _ = h5.create_dataset("layers/dense/vars/1", data=np.zeros(2))
        >>> layers = [{"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "x"}},
        ...           {"class_name": "Dense", "config": {"name": "fc", "units": 2}}]
        >>> path = Path(tempfile.mkdtemp()) / "k3.keras"
        >>> with zipfile.ZipFile(path, "w") as z:
        ...     z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        ...     z.writestr("config.json", json.dumps({"class_name": "Sequential",
        ...                                           "config": {"name": "k3", "layers": layers}}))
        ...     z.writestr("model.weights.h5", weights.getvalue())
        >>> model = from_keras3(path)
        >>> model.name, [l.name for l in model.layers], model(np.ones((1, 3))).numpy().tolist()
        ('k3', ['fc'], [[3.0, 3.0]])
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        class_name, config, weights = _read_keras3_file(Path(model_or_path))
    else:
        class_name, config, weights = _read_keras3_model(model_or_path)
    if class_name == "Sequential":
        return _build_sequential(config, weights)
    return _build_functional(config, weights)


def _refuse(layer: dict, reason: str) -> UnsupportedModelError:
    name = layer.get("config", {}).get("name", layer.get("name", "?"))
    return UnsupportedModelError(f"Cannot convert Keras 3 layer {name!r} ({layer.get('class_name')}) to tf_keras: {reason}")


def _read_keras3_model(model: Any) -> tuple[str, dict, dict]:
    if not is_keras3_object(model) or not hasattr(model, "get_config") or not hasattr(model, "layers"):
        raise TypeError(f"from_keras3 expects a Keras 3 model or a .keras path; received {type(model).__name__}.")
    cls = type(model)
    if cls.__name__ not in ("Sequential", "Functional") or not cls.__module__.startswith("keras"):
        raise UnsupportedModelError(
            f"Keras 3 model {getattr(model, 'name', '?')!r} is a subclassed model (class {cls.__name__}); its "
            "forward pass is Python code, not a config, so it cannot be converted. Rebuild it as a Sequential or "
            "functional model (keras.Model(inputs, outputs))."
        )
    weights = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers}
    return cls.__name__, model.get_config(), weights


def _snake_case(name: str) -> str:
    """Keras 3's key for a layer in ``model.weights.h5`` (its class name in snake case)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _read_keras3_file(path: Path) -> tuple[str, dict, dict]:
    import h5py

    if keras3_file_version(path) is None:
        raise ValueError(f"{str(path)!r} is not a .keras file saved by Keras 3 (no keras_version 3.x in metadata.json).")
    with zipfile.ZipFile(path) as archive:
        top = json.loads(archive.read("config.json"))
        class_name, config = top.get("class_name"), top.get("config", {})
        if class_name not in ("Sequential", "Functional", "Model"):
            raise UnsupportedModelError(
                f"{str(path)!r} holds a Keras 3 {class_name} model; only Sequential and functional models convert "
                "(a subclassed model's forward pass is Python code, not a config)."
            )
        layers = config.get("layers", [])
        if class_name == "Sequential":
            layers = [l for l in layers if l.get("class_name") != "InputLayer"]
        weights, used = {}, {}
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
            for layer in layers:
                key = _snake_case(layer.get("class_name", ""))
                count, used[key] = used.get(key, 0), used.get(key, 0) + 1
                key = key if count == 0 else f"{key}_{count}"
                group = h5.get(f"layers/{key}/vars")
                values = [] if group is None else [np.asarray(group[str(i)]) for i in range(len(group))]
                weights[layer["config"]["name"]] = values
    return ("Sequential" if class_name == "Sequential" else "Functional"), config, weights


def _plain(value: Any) -> Any:
    """A Keras 3 dtype policy dict becomes its name."""
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return value.get("config", {}).get("name", "float32")
    return value


def _init_parameters(cls: type) -> set:
    """The argument names of ``cls`` and of its bases' ``__init__`` (subclasses pass some on as ``**kwargs``)."""
    return {name for base in cls.__mro__ if "__init__" in vars(base) and base is not object
            for name in inspect.signature(base.__init__).parameters} - {"self", "kwargs", "args"}


def _keras_object(layer: dict, key: str, value: dict, namespace: str) -> Any:
    """A tf_keras initializer/regularizer/constraint from a Keras 3 serialized one."""
    module = getattr(keras, namespace)
    cls = getattr(module, str(value.get("class_name")), None)
    if cls is None or value.get("registered_name") not in (None, value.get("class_name")):
        raise _refuse(layer, f"{key} {value.get('class_name')!r} has no tf_keras equivalent.")
    config = dict(value.get("config") or {})
    params = _init_parameters(cls)
    unknown = {k: v for k, v in config.items() if k not in params and _DROPPABLE.get(k, ...) != v}
    if unknown:
        raise _refuse(layer, f"{key} options {unknown} have no tf_keras equivalent.")
    return cls(**{k: v for k, v in config.items() if k in params})


def tf_keras_layer(layer: dict) -> Any:
    """A new tf_keras layer (not built) from a Keras 3 layer's serialized config (``{"class_name", "config"}``).

    Example:
        >>> tf_keras_layer({"class_name": "ReLU", "config": {"name": "act", "max_value": 6.0,
        ...                 "dtype": {"class_name": "DTypePolicy", "config": {"name": "float32"}}}}).name
        'act'
    """
    class_name = layer.get("class_name")
    if class_name not in SUPPORTED_LAYERS or class_name == "InputLayer":
        raise _refuse(layer, f"tfmot_zip converts only the layers {', '.join(SUPPORTED_LAYERS)}.")
    if layer.get("module", "keras.layers") not in ("keras.layers", "keras"):
        raise _refuse(layer, f"it comes from module {layer.get('module')!r}, not keras.layers.")
    cls = getattr(keras.layers, class_name)
    params = _init_parameters(cls) | _BASE_KWARGS
    config = {}
    for key, value in (layer.get("config") or {}).items():
        value = _plain(value)
        if key not in params:
            if _DROPPABLE.get(key, ...) != value:
                raise _refuse(layer, f"the Keras 3 option {key}={value!r} has no tf_keras equivalent.")
            continue
        if key == "activation" and isinstance(value, str) and value in KERAS3_ACTIVATIONS:
            value = KERAS3_ACTIVATIONS[value]  # tf_keras lacks it, or means another curve by the name
        namespace = next((ns for suffix, ns in _OBJECT_NAMESPACES.items() if key.endswith(suffix)), None)
        if isinstance(value, dict) and namespace is not None:
            value = _keras_object(layer, key, value, namespace)
        elif isinstance(value, dict):
            raise _refuse(layer, f"option {key} is a serialized object ({value.get('class_name')}) tf_keras cannot read.")
        config[key] = value
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as err:
        raise _refuse(layer, f"tf_keras refuses its config ({err}).") from None


def _input(layer: dict) -> Any:
    config = layer.get("config", {})
    shape = config.get("batch_shape", config.get("batch_input_shape"))
    if shape is None or config.get("sparse") or config.get("ragged"):
        raise _refuse(layer, "only dense inputs with a known shape convert.")
    return keras.Input(shape=tuple(shape[1:]), batch_size=shape[0], dtype=_plain(config.get("dtype")), name=config["name"])


def _set_weights(new_layer: Any, layer: dict, weights: dict) -> None:
    values = weights.get(new_layer.name, [])
    expected = [tuple(w.shape) for w in new_layer.weights]
    if [tuple(v.shape) for v in values] != expected:
        raise _refuse(layer, f"its weights have shapes {[v.shape for v in values]}; tf_keras expects {expected}.")
    new_layer.set_weights(values)


def _build_sequential(config: dict, weights: dict) -> Any:
    layers = config.get("layers", [])
    model = keras.Sequential(name=config.get("name"))
    if layers and layers[0].get("class_name") == "InputLayer":
        model.add(_input(layers[0]))
        layers = layers[1:]
    elif config.get("build_input_shape"):
        model.add(keras.Input(shape=tuple(config["build_input_shape"][1:])))
    else:
        raise UnsupportedModelError(f"Keras 3 Sequential model {config.get('name')!r} is not built (no input shape).")
    for layer in layers:
        model.add(tf_keras_layer(layer))
    for layer, new_layer in zip(layers, model.layers):
        _set_weights(new_layer, layer, weights)
    if config.get("trainable") is False:
        model.trainable = False
    return model


def _history(value: Any, outputs: dict, layer: dict) -> Any:
    """The Keras 3 node arguments with each ``__keras_tensor__`` replaced by its tf_keras tensor."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        name, node, index = value["config"]["keras_history"]
        try:
            return outputs[name][node][index]
        except (KeyError, IndexError):
            raise _refuse(layer, f"its input {name!r} (node {node}) is not in the model.") from None
    if isinstance(value, (list, tuple)):
        return [_history(v, outputs, layer) for v in value]
    return value


def _flat_tensors(endpoints: list, outputs: dict) -> list:
    endpoints = [endpoints] if endpoints and isinstance(endpoints[0], str) else endpoints
    return [outputs[name][node][index] for name, node, index in endpoints]


def _unwrap(endpoints: list, tensors: list) -> Any:
    """One tensor where Keras 3 had one endpoint (``["name", 0, 0]``), else the list."""
    return tensors[0] if endpoints and isinstance(endpoints[0], str) else tensors


_OPS = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")


def keras3_op(layer: dict, args: list) -> Any:
    """The tf_keras output of a Keras 3 arithmetic operation node (``x + 3.0``, ``x * c``, ``a * b``).

    A tensor and a Python number become a scalar ``Rescaling`` (elementwise, zip-able anywhere); two
    tensors become ``Add``/``Subtract``/``Multiply``. Anything else is refused, naming the node.

    Example:
        >>> x = keras.Input((4,))
        >>> y = keras3_op({"class_name": "Add", "config": {"name": "plus3"}}, [x, 3.0])
        >>> y.node.layer.__class__.__name__, float(y.node.layer.offset)
        ('Rescaling', 3.0)
    """
    op, name = layer.get("class_name"), layer.get("config", {}).get("name")
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    tensors = [a for a in args if not isinstance(a, (int, float))]
    if len(args) == 2 and len(tensors) == 1 and len(numbers) == 1:
        c, tensor_first = float(numbers[0]), args[0] is tensors[0]
        if op == "Add":
            scale, offset = 1.0, c
        elif op == "Multiply":
            scale, offset = c, 0.0
        elif op == "Subtract":
            scale, offset = (1.0, -c) if tensor_first else (-1.0, c)
        elif op in ("Divide", "TrueDivide") and tensor_first and c != 0.0:
            scale, offset = 1.0 / c, 0.0
        else:
            raise _refuse(layer, f"the operation {op} of a number by a tensor has no tf_keras layer.")
        return keras.layers.Rescaling(scale, offset, name=name)(tensors[0])
    if len(args) == 2 and len(tensors) == 2 and op in ("Add", "Subtract", "Multiply"):
        return getattr(keras.layers, op)(name=name)(tensors)
    raise _refuse(layer, f"only {op} of a tensor and a number, or of two tensors, converts.")


def _build_functional(config: dict, weights: dict) -> Any:
    outputs: dict = {}  # layer name -> one list of output tensors per node
    built = []
    for layer in config.get("layers", []):
        if layer.get("class_name") == "InputLayer":
            outputs[layer["config"]["name"]] = [[_input(layer)]]
            continue
        if str(layer.get("module", "")).startswith("keras.src.ops") and layer.get("class_name") in _OPS:
            name = layer.get("config", {}).get("name")
            outputs[name] = [[keras3_op(layer, _history(node.get("args", []), outputs, layer))]
                             for node in layer.get("inbound_nodes", [])]
            continue
        new_layer = tf_keras_layer(layer)
        outputs[new_layer.name] = []
        for node in layer.get("inbound_nodes", []):
            args = _history(node.get("args", []), outputs, layer)
            # Keras 3 records ``training`` on nodes (False even where none was passed) but lets the model's own
            # training argument override it; tf_keras would make a recorded value override the model's
            # (a Dropout never active in fit), so the value is left to the model, as in Keras 3.
            kwargs = {k: _history(v, outputs, layer) for k, v in node.get("kwargs", {}).items()
                      if v is not None and k != "training"}
            result = new_layer(*args, **kwargs)
            outputs[new_layer.name].append(result if isinstance(result, (list, tuple)) else [result])
        built.append((layer, new_layer))
    if not isinstance(config.get("output_layers"), list) or not isinstance(config.get("input_layers"), list):
        raise UnsupportedModelError(f"Keras 3 model {config.get('name')!r} has dict inputs or outputs; use lists.")
    inputs = _flat_tensors(config["input_layers"], outputs)
    results = _flat_tensors(config["output_layers"], outputs)
    model = keras.Model(_unwrap(config["input_layers"], inputs), _unwrap(config["output_layers"], results),
                        name=config.get("name"))
    for layer, new_layer in built:
        _set_weights(new_layer, layer, weights)
    if config.get("trainable") is False:
        model.trainable = False
    return model
