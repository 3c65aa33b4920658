"""Per-task head refit after zipping: each task's head re-solved by damped least squares from the
zipped network's last hidden features to the original model's pre-activations (docs/METHOD.md).

Heads stay per task, so this costs no parameters; it repairs what the merged hidden layers changed
in the features each head reads. The mathematics is :class:`tfmot_zip.core.refit.LinearRefit`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core.refit import LinearRefit
from tfmot_zip.model.graph import ModelGraph

__all__ = ["refit_heads"]


def _task_feeds(zipped: keras.Model, task: int, batch: np.ndarray) -> list | np.ndarray:
    """Inputs of the zipped model that run ``batch`` through ``task`` (other task inputs zero)."""
    if len(zipped.inputs) == 1:
        return batch
    return [batch if i == task else np.zeros_like(batch) for i in range(len(zipped.inputs))]


def refit_heads(
    zipped: keras.Model,
    graph: ModelGraph,
    calibration: Sequence[np.ndarray],
    damping: float = 1e-3,
    batch_size: int = 1000,
) -> list[str]:
    """Re-solves every task's Dense head of ``zipped`` in place; returns the names of the heads refit.

    Args:
        zipped: the zipped model (its zip layers are updated).
        graph: the aligned original models it was zipped from.
        calibration: one array of inputs per task (the calibration data of the zip).
        damping: relative pull towards the head's current weights (see ``LinearRefit.solve``).
        batch_size: samples per forward pass.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.0)
        >>> from tfmot_zip.model.graph import align_models
        >>> refit_heads(zipped, align_models([model_a, model_b]), [x_a, x_b], damping=1e-6)
        ['head']
        >>> bool(np.allclose(zipped.predict([x_a, x_b], verbose=0)[0], model_a.predict(x_a, verbose=0), atol=1e-4))
        True
    """
    refit_names = []
    for node in graph.zip_nodes():
        if not node.is_head or node.kind != "dense":
            continue
        layer = zipped.get_layer(node.name)
        merged_features = keras.Model(zipped.inputs, list(layer.input))
        for task, original_layer in enumerate(node.layers):
            original_model = graph.models[task]
            original_features = keras.Model(original_model.inputs, original_layer.input)
            kernel, bias = layer.get_task_weights(task)
            original_kernel, *rest = original_layer.get_weights()
            original_bias = rest[0] if rest else np.zeros(original_kernel.shape[1], original_kernel.dtype)
            refit = LinearRefit(kernel.shape[0], kernel.shape[1])
            data = calibration[task]
            for start in range(0, len(data), batch_size):
                batch = data[start : start + batch_size]
                merged = np.asarray(merged_features(_task_feeds(zipped, task, batch), training=False)[task])
                target = np.asarray(original_features(batch, training=False)) @ original_kernel + original_bias
                refit.update(merged, target)
            new_kernel, new_bias = refit.solve(kernel, bias, damping=damping)
            layer.set_task_weights(task, new_kernel.astype(kernel.dtype), None if new_bias is None else new_bias.astype(bias.dtype))
        refit_names.append(node.name)
    return refit_names
