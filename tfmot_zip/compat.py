"""The one place tfmot_zip imports TensorFlow's Keras 2 (``tf_keras``).

TensorFlow 2.21 ships Keras 3 as ``keras``; TFMOT 0.8.1 only works with Keras 2 models
(``tf_keras``). Setting ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported makes
``tf.keras`` resolve to ``tf_keras`` too, so models built either way are compatible.
Every other module of the package imports ``keras`` and ``tf`` from here, and imports the
optional dependencies (LiteRT, matplotlib) through :func:`require`, which names the extra to install.

Example:
    >>> from tfmot_zip.compat import keras, tf
    >>> layer = keras.layers.Dense(3)
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf", "is_keras3_object", "check_tf_keras_model", "require"]


def require(module: str, extra: str, needed_for: str = "This feature") -> ModuleType:
    """Imports an optional dependency, or raises an ``ImportError`` naming the extra that installs it.

    Args:
        module: the module to import, e.g. ``"ai_edge_litert.interpreter"``.
        extra: the tfmot_zip extra that installs it (``"tflite"``, ``"report"``).
        needed_for: what needs it, to start the message (e.g. ``"Drawing plots"``).

    Returns:
        The imported module.

    Raises:
        ImportError: the module cannot be imported; the message says ``pip install 'tfmot_zip[extra]'``.

    Example:
        >>> require("json", "report").dumps([1])
        '[1]'
        >>> require("no_such_module_xyz", "tflite", "Running a TFLite file")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ImportError: Running a TFLite file needs 'no_such_module_xyz'... pip install 'tfmot_zip[tflite]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{needed_for} needs {module!r}, which is not installed ({err}). It comes with the "
            f"optional extra [{extra}]: pip install 'tfmot_zip[{extra}]'"
        ) from err


def is_keras3_object(obj: object) -> bool:
    """True when ``obj`` is a Keras 3 object (from the ``keras`` package, not ``tf_keras``).

    Example:
        >>> is_keras3_object(keras.layers.Dense(2))
        False
    """
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module == "keras" or module.startswith("keras."):
            return True
    return False


def check_tf_keras_model(model: object, argument: str = "model") -> "keras.Model":
    """Return ``model`` if it is a tf_keras model, else raise a ``TypeError`` that says how to fix it.

    This is the strict check of internal functions. The public entry points call
    :func:`tfmot_zip.model.keras3.as_tf_keras_model` instead, which converts a Keras 3 model first
    (the converter needs tf_keras from this module, so this module cannot call it without an import cycle).

    Example:
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> check_tf_keras_model(m) is m
        True
    """
    if is_keras3_object(model):
        raise TypeError(
            f"{argument} is a Keras 3 object ({type(model).__module__}.{type(model).__name__}); "
            "this function works only with Keras 2 (tf_keras) models. Convert it with "
            "`tfmot_zip.from_keras3(model)` (the public entry points such as zip_models do this for you), "
            "or build it with `import tf_keras as keras` (or `from tfmot_zip.compat import keras`)."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{argument} must be a tf_keras.Model; received {type(model).__name__}: {model!r:.80}. "
            "Pass a tf_keras Sequential or functional model."
        )
    return model
