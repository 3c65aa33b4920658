"""Re-estimating BatchNorm statistics after zipping.

Zipping changes the weights of the layers in front of each (per-task) BatchNorm, so the moving
mean and variance it learnt no longer describe its inputs. Running every task's calibration
data through the zipped model once in training mode, with the BatchNorm momentum set so that
the moving statistics become the running average of the batch statistics, restores them (the
"BN recalibration" used by model-merging methods). Only statistics change; no weight trains.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(
    model: keras.Model, calibration: Sequence[np.ndarray], batch_size: int = 250, max_samples: int = 2000
) -> int:
    """Re-estimates the moving statistics of every BatchNorm layer of a multi-task model.

    Args:
        model: a model with one input per task (or one shared input) and per-task BatchNorm.
        calibration: one array of inputs per task.
        batch_size: samples per task per forward pass.
        max_samples: at most this many samples per task.

    Returns:
        The number of BatchNorm layers updated (0 when the model has none).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> recalibrate_batchnorm(zipped, [x_a, x_b])  # these models have no BatchNorm
        0
    """
    layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    if len(calibration) != len(model.outputs):
        raise ValueError(f"Expected one calibration array per task ({len(model.outputs)}); received {len(calibration)}.")
    count = min(min(len(c) for c in calibration), max_samples)
    if count == 0:
        raise ValueError("recalibrate_batchnorm needs at least one calibration sample per task.")
    saved = [l.momentum for l in layers]
    single = len(model.inputs) == 1
    try:
        for k, start in enumerate(range(0, count, batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1.0)  # moving = running average of the batch statistics
            chunks = [np.asarray(c[start : min(start + batch_size, count)]) for c in calibration]
            if single:
                model(np.concatenate(chunks), training=True)
            else:
                model(chunks, training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)
