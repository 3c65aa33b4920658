"""Per-task statistics repair after zipping (REPAIR, Jordan et al. ICLR 2023, without BatchNorm).

Bottom-up over the hidden zip layers: for each task, the pre-activation of every unit (``x W + b``,
before the activation; per channel over samples and positions for a convolution) is measured on
the task's calibration data twice: in the original model, and in the zipped model with the layers
below already repaired. Each unit then gets the affine ``s * z + c`` that gives it the original
mean and standard deviation (:func:`tfmot_zip.core.repair.fit_affine`).

A unit read by several tasks keeps one affine per task in the zip layer
(:mod:`tfmot_zip.model.repair_weights`). A unit that only one task reads is repaired too (MTZ's
update compensates its weights and its inputs have moved, so its statistics drift as well), but its
affine is folded into its own weight column and bias, exactly and at no cost in parameters (a layer
without bias keeps it in the affine instead).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras, tf
from tfmot_zip.core.repair import MomentAccumulator, fit_affine
from tfmot_zip.model.graph import ModelGraph
from tfmot_zip.zipping.activations import ZipActivations

__all__ = ["repair_statistics", "original_preactivation"]


def original_preactivation(layer: keras.layers.Layer, x: tf.Tensor) -> tf.Tensor:
    """``x W + b`` of a standard Dense or Conv2D layer (its output before the activation).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> dense = keras.layers.Dense(2, activation="relu", kernel_initializer="ones", bias_initializer="ones")
        >>> dense.build((None, 3))
        >>> original_preactivation(dense, -np.ones((1, 3), np.float32)).numpy().tolist()
        [[-2.0, -2.0]]
    """
    if isinstance(layer, keras.layers.Conv2D):
        y = layer.convolution_op(x, layer.kernel)
    else:
        y = tf.tensordot(x, layer.kernel, axes=1)
    return tf.nn.bias_add(y, layer.bias) if layer.use_bias else y


def _moments(values: np.ndarray, preactivation, units: int, batch_size: int, sum_all) -> MomentAccumulator:
    """Moments of ``preactivation(batch)`` over ``values`` taken ``batch_size`` samples at a time,
    combined over the workers of a ``tf.distribute`` strategy by ``sum_all``."""
    accumulator = MomentAccumulator(units)
    for start in range(0, len(values), batch_size):
        accumulator.update(np.asarray(preactivation(values[start : start + batch_size])))
    accumulator.reduce(sum_all)
    return accumulator


def _fold_private(layer, task: int, scale: np.ndarray, shift: np.ndarray, private: np.ndarray) -> None:
    """Folds the affine of ``task``'s private neurons into their own columns; leaves them identity."""
    columns = layer.get_maps(task)[1][private]
    kernel = layer.physical_kernel().numpy()
    kernel[..., columns] *= scale[private].astype(kernel.dtype)
    layer.assign_physical_kernel(kernel)
    bias = layer.bias.numpy()
    bias[columns] = scale[private] * bias[columns] + shift[private]
    layer.bias.assign(bias)
    scale[private], shift[private] = 1.0, 0.0


def repair_statistics(
    zipped: keras.Model,
    graph: ModelGraph,
    calibration: Sequence[np.ndarray],
    batch_size: int = 500,
    min_std: float = 1e-6,
    private_units: bool = True,
    layers: Sequence[str] | None = None,
    activations: ZipActivations | None = None,
) -> dict[str, dict]:
    """Repairs every hidden zip layer of ``zipped`` in place, bottom-up; returns what it did per layer.

    Args:
        zipped: the zipped model (its hidden zip layers get ``repair=True`` and fitted affines).
        graph: the aligned original models it was zipped from.
        calibration: one array of inputs per task (the calibration data of the zip).
        batch_size: samples per forward pass.
        min_std: a merged unit whose pre-activation std is at most this keeps scale 1 (guarded).
        private_units: also repair units that only one task reads (folded into their weights).
        layers: repair only these hidden layers (names), still bottom-up; None: all.
        activations: the zip's activation caches (None: built here).

    Returns:
        ``{layer name: {"repaired": [units per task], "guarded": [...], "folded": [...]}}``.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> from tfmot_zip.model.graph import align_models
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=1.0)
        >>> sorted(repair_statistics(zipped, align_models([model_a, model_b]), [x_a, x_b]))
        ['fc1', 'fc2']
        >>> zipped.get_layer("fc1").repair
        True
    """
    acts = activations if activations is not None else ZipActivations(zipped, graph.models, calibration)
    report = {}
    for node in graph.hidden_zip_nodes():
        if layers is not None and node.name not in layers:
            continue
        layer = zipped.get_layer(node.name)
        layer.enable_repair()
        owners = layer.unit_tasks()
        info = {"repaired": [], "guarded": [], "folded": []}
        for task, original_layer in enumerate(node.layers):
            units = int(original_layer.kernel.shape[-1])
            sum_all = acts.merged.replicas.sum_all
            original = _moments(acts.original_input(original_layer, task), lambda x: original_preactivation(original_layer, x), units, batch_size, sum_all)
            merged = _moments(acts.merged_inputs(layer, task), lambda x: layer.preactivation(x, task), units, batch_size, sum_all)
            fit = fit_affine(original.mean, original.std, merged.mean, merged.std, min_std=min_std)
            scale, shift = fit.scale, fit.shift
            private = np.asarray([len(owners[int(u)]) == 1 for u in layer.get_maps(task)[1]])
            if not private_units:
                scale[private], shift[private] = 1.0, 0.0
            elif layer.use_bias and private.any():
                _fold_private(layer, task, scale, shift, private)
            layer.set_repair(task, scale, shift)
            info["repaired"].append(int(np.sum(~private)) + (int(np.sum(private)) if private_units else 0))
            info["guarded"].append(int(np.sum(fit.guarded)))
            info["folded"].append(int(np.sum(private)) if private_units and layer.use_bias else 0)
        report[node.name] = info
        acts.changed(layer)
    zipped.make_predict_function(force=True)  # a predict function traced before repair would skip it
    return report
