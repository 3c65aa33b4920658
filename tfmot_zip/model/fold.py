"""Fold inference-mode BatchNormalization (and a following ReLU) into the preceding Conv2D/Dense.

PAM (:mod:`tfmot_zip.pam`) works on plain chains of Conv2D/Dense/pooling layers; a VGG-style
``conv -> BatchNormalization -> ReLU`` block is, at inference, the same function as one conv with
scaled weights, a shifted bias and a ReLU activation:
``scale = gamma / sqrt(var + eps)``, ``W' = W * scale``, ``b' = (b - mean) * scale + beta``.
"""
from __future__ import annotations

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.model.keras3 import as_tf_keras_model

__all__ = ["fold_batchnorm"]

L = keras.layers


def _activation_name(layer) -> str:
    name = keras.activations.serialize(layer.activation)
    return name.get("config", {}).get("name", "linear") if isinstance(name, dict) else str(name)


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A new plain ``keras.Sequential`` computing ``model``'s inference function without BatchNormalization.

    Each BatchNormalization directly after a linear Conv2D/Dense is folded into it; a ReLU layer (or
    ``Activation("relu")``) directly after such a layer becomes its activation. ``model`` is not
    modified. Training behaviour differs (no batch statistics): fine-tune the folded model with a
    small learning rate.

    Args:
        model: a tf_keras Sequential-style chain (each layer reads the previous one).

    Returns:
        An uncompiled ``keras.Sequential`` with the same input shape, output and layer names (folded
        BatchNormalization/ReLU layers disappear).

    Raises:
        ValueError: a BatchNormalization that does not follow a linear Conv2D/Dense (or normalises
            another axis than the last). A Keras 3 model is converted first.

    Example:
        >>> from tfmot_zip.apps.zoo import small_vgg
        >>> [l.name for l in fold_batchnorm(small_vgg(3)).layers][:3]
        ['conv1_1', 'conv1_2', 'pool1']
    """
    model = as_tf_keras_model(model, "model")
    layers = [l for l in model.layers if not isinstance(l, L.InputLayer)]
    plan: list = []  # [config-making layer, kernel, bias, activation]
    for layer in layers:
        previous = plan[-1] if plan else None
        foldable = previous is not None and isinstance(previous[0], (L.Conv2D, L.Dense))
        if isinstance(layer, L.BatchNormalization):
            axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
            rank = len(layer.input_shape)
            if not foldable or previous[3] != "linear" or previous[4] or axis not in (-1, rank - 1):
                raise ValueError(
                    f"Cannot fold BatchNormalization {layer.name!r}: it must directly follow a Conv2D/Dense "
                    f"without activation and normalise the last axis (axis={layer.axis!r}). Fold it by hand "
                    "or rebuild the model without it."
                )
            weights = dict(zip([w.name.split("/")[-1].split(":")[0] for w in layer.weights], layer.get_weights()))
            n = previous[1].shape[-1]
            gamma = weights.get("gamma", np.ones(n, np.float32))
            beta = weights.get("beta", np.zeros(n, np.float32))
            scale = gamma / np.sqrt(weights["moving_variance"] + layer.epsilon)
            previous[1] = previous[1] * scale
            previous[2] = (previous[2] - weights["moving_mean"]) * scale + beta
            previous[4] = True
            continue
        relu = isinstance(layer, L.ReLU) and layer.max_value is None and not layer.negative_slope and not layer.threshold
        relu = relu or isinstance(layer, L.Activation) and _activation_name(layer) == "relu"
        if relu and foldable and previous[3] == "linear":
            previous[3] = "relu"
            continue
        if isinstance(layer, (L.Conv2D, L.Dense)):
            weights = layer.get_weights()
            bias = weights[1] if layer.use_bias else np.zeros(weights[0].shape[-1], np.float32)
            plan.append([layer, weights[0].copy(), bias.copy(), _activation_name(layer), False])
        else:
            plan.append([layer, None, None, None, False])
    rebuilt = [L.InputLayer(input_shape=model.input_shape[1:], name="input")]
    for layer, kernel, bias, activation, _ in plan:
        if kernel is None:
            rebuilt.append(layer.__class__.from_config(layer.get_config()))
            continue
        config = layer.get_config()
        config.update(activation=activation, use_bias=True)
        rebuilt.append(layer.__class__.from_config(config))
    folded = keras.Sequential(rebuilt, name=f"{model.name}_folded")
    for new, (_, kernel, bias, _, _) in zip(folded.layers, plan):
        if kernel is not None:
            new.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return folded
