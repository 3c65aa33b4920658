"""Re-estimating BatchNorm statistics after zipping.

Zipping changes the weights of the layers in front of each (per-task) BatchNorm, so the moving
mean and variance it learnt no longer describe its inputs. Running every task's calibration
data through the zipped model in training mode, with the BatchNorm momentum at 0 so that each
pass leaves its batch's statistics, and averaging those over the batches, restores them (the
"BN recalibration" used by model-merging methods). Only statistics change; no weight trains,
and Dropout is switched off while the statistics are gathered.

Safeguards (a wrong statistic silently breaks every later prediction):

- at least :data:`MIN_SAMPLES` calibration samples per task are needed; with fewer, the trained
  statistics stay and the returned :class:`BatchNormUpdate` says so;
- a channel whose re-estimated variance is zero, not finite, or below ``1e-6`` times its trained
  variance (constant or all-zero data) keeps its trained mean and variance; the update counts
  those channels.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from tfmot_zip.compat import keras, tf

# One traced training-mode pass per model (momentum 0, Dropout off, BatchNorm trainable: the
# settings every pass below runs with), so that re-estimating after every zipped layer does not
# run a deep model eagerly each time.
_PASSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _training_pass(model: keras.Model):
    # A trace bakes in Python state: traced again when the model gains weights or a layer's repair
    # affine is switched on (repair=True adds them after zipping).
    state = (len(model.weights), tuple(bool(getattr(l, "repair", False)) for l in model.layers))
    cached = _PASSES.get(model)
    if cached is None or cached[0] != state:
        ref = weakref.ref(model)  # the cache must not keep the model alive
        cached = (state, tf.function(lambda x: ref()(x, training=True), reduce_retracing=True))
        _PASSES[model] = cached
    return cached[1]


def forget_training_pass(model: keras.Model) -> None:
    """Drops ``model``'s traced training-mode pass (its layers' variables were replaced).

    Example:
        >>> forget_training_pass(keras.Sequential([keras.layers.Dense(1)]))  # nothing traced: nothing to drop
    """
    _PASSES.pop(model, None)


__all__ = ["BatchNormUpdate", "forget_training_pass", "MIN_SAMPLES", "degenerate_channels", "recalibrate_batchnorm", "warn_restored"]

#: Fewest calibration samples per task from which BatchNorm statistics are re-estimated.
MIN_SAMPLES = 32
#: A re-estimated variance below this fraction of the trained one is treated as degenerate.
RELATIVE_VARIANCE_FLOOR = 1e-6


@dataclass
class BatchNormUpdate:
    """What :func:`recalibrate_batchnorm` did.

    Attributes:
        updated: names of the BatchNorm layers whose statistics were re-estimated.
        samples: calibration samples per task used (0 when nothing was re-estimated).
        kept_trained: why the trained statistics were kept everywhere (``None`` when they were not).
        restored_channels: per layer, how many channels kept their trained statistics because the
            re-estimated variance was degenerate.
    """

    updated: list[str] = field(default_factory=list)
    samples: int = 0
    kept_trained: str | None = None
    restored_channels: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return {
            "updated": list(self.updated),
            "samples": int(self.samples),
            "kept_trained": self.kept_trained,
            "restored_channels": {k: int(v) for k, v in self.restored_channels.items()},
        }


def degenerate_channels(new_var: np.ndarray, old_var: np.ndarray) -> np.ndarray:
    """Channels whose re-estimated variance cannot be used (not finite, not positive, or below
    :data:`RELATIVE_VARIANCE_FLOOR` times the trained one).

    Example:
        >>> degenerate_channels(np.array([1.0, 0.0, 1e-9, np.nan]), np.array([1.0, 1.0, 1.0, 1.0])).tolist()
        [False, True, True, True]
    """
    floor = RELATIVE_VARIANCE_FLOOR * np.maximum(old_var, 0.0)
    return ~np.isfinite(new_var) | (new_var <= 0.0) | (new_var < floor)


def recalibrate_batchnorm(
    model: keras.Model,
    calibration: Sequence[np.ndarray],
    batch_size: int = 250,
    max_samples: int = 2000,
    min_samples: int = MIN_SAMPLES,
    sum_all: Callable[[list], list] | None = None,
) -> BatchNormUpdate:
    """Re-estimates the moving statistics of every BatchNorm layer of a multi-task model.

    Args:
        model: a model with one input per task (or one shared input) and per-task BatchNorm.
        calibration: one array of inputs per task.
        batch_size: samples per task per forward pass.
        max_samples: at most this many samples per task.
        min_samples: fewest samples per task to re-estimate from; with fewer the trained
            statistics stay (with a warning).
        sum_all: sums a list of arrays over the workers of a ``tf.distribute`` strategy (each
            worker passes its own calibration shard; the statistics are the average of every
            worker's batch statistics, and ``max_samples`` and ``min_samples`` count all workers'
            samples). None: this process only.

    Returns:
        A :class:`BatchNormUpdate` (no layers updated when the model has no BatchNorm).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> inp = keras.Input((4,))
        >>> model = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(3)(inp)))
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> recalibrate_batchnorm(model, [x]).updated
        ['bn']
        >>> update = recalibrate_batchnorm(model, [x[:3]])  # too few samples: trained statistics stay
        >>> update.updated, update.kept_trained
        ([], 'only 3 calibration samples per task; at least 32 are needed')
    """
    layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    if not layers:
        return BatchNormUpdate()
    if len(calibration) != len(model.outputs):
        raise ValueError(f"Expected one calibration array per task ({len(model.outputs)}); received {len(calibration)}.")
    count = min(min(len(c) for c in calibration), max_samples)
    total = count if sum_all is None else int(round(float(sum_all([count])[0])))
    if total < min_samples:
        reason = f"only {total} calibration samples per task; at least {min_samples} are needed"
        warnings.warn(
            f"BatchNorm statistics not re-estimated: {reason}. The trained statistics stay; pass more "
            "calibration data (or recalibrate_batchnorm=False to silence this).",
            UserWarning,
            stacklevel=2,
        )
        return BatchNormUpdate(kept_trained=reason)
    trained = {l.name: (l.moving_mean.numpy(), l.moving_variance.numpy()) for l in layers}
    dropouts = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    saved_momentum = [l.momentum for l in layers]
    saved_rates = [l.rate for l in dropouts]
    saved_trainable = [l.trainable for l in layers]  # a frozen layer would run in inference mode
    single = len(model.inputs) == 1
    try:
        for layer in dropouts:
            layer.rate = 0.0
        for layer in layers:
            layer.trainable = True
        for layer in layers:
            layer.momentum = 0.0  # each pass sets the moving statistics to its batch's statistics
        run = _training_pass(model)
        sums = {l.name: [np.zeros(l.moving_mean.shape), np.zeros(l.moving_variance.shape)] for l in layers}
        batches = 0
        for start in range(0, count, batch_size):
            chunks = [np.asarray(c[start : min(start + batch_size, count)], np.float32) for c in calibration]
            run(np.concatenate(chunks) if single else chunks)
            for layer in layers:  # moving = average of the batch statistics
                sums[layer.name][0] += layer.moving_mean.numpy().astype(np.float64)
                sums[layer.name][1] += layer.moving_variance.numpy().astype(np.float64)
            batches += 1
        if sum_all is not None:  # every worker's batch statistics, one all-reduce
            *reduced, batches = sum_all([s for layer in layers for s in sums[layer.name]] + [batches])
            sums = {layer.name: reduced[2 * i : 2 * i + 2] for i, layer in enumerate(layers)}
        for layer in layers:
            layer.moving_mean.assign((sums[layer.name][0] / batches).astype(np.float32))
            layer.moving_variance.assign((sums[layer.name][1] / batches).astype(np.float32))
    finally:
        for layer, momentum in zip(layers, saved_momentum):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, saved_rates):
            layer.rate = rate
        for layer, trainable in zip(layers, saved_trainable):
            layer.trainable = trainable
    update = BatchNormUpdate(updated=[l.name for l in layers], samples=total)
    for layer in layers:
        old_mean, old_var = trained[layer.name]
        new_mean, new_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        bad = degenerate_channels(new_var, old_var) | ~np.isfinite(new_mean)
        if bad.any():
            layer.moving_mean.assign(np.where(bad, old_mean, new_mean))
            layer.moving_variance.assign(np.where(bad, old_var, new_var))
            update.restored_channels[layer.name] = int(bad.sum())
    warn_restored(update)
    return update


_NAMED_LAYERS = 5  # layers a degenerate-channel warning names (the most channels first)


def warn_restored(update: BatchNormUpdate) -> None:
    """Warns when an update kept the trained statistics of degenerate channels (none: silent).

    Example:
        >>> warn_restored(BatchNormUpdate(updated=["bn"], samples=64))  # nothing restored: no warning
    """
    if update.restored_channels:
        counts = update.restored_channels
        named = sorted(counts, key=lambda name: (-counts[name], name))[:_NAMED_LAYERS]
        plural = lambda k, word: f"{k} {word}{'' if k == 1 else 's'}"
        more = f" and {plural(len(counts) - len(named), 'more layer')}" if len(counts) > len(named) else ""
        warnings.warn(
            "BatchNorm re-estimation found degenerate (zero or near-zero) variance in "
            f"{plural(sum(counts.values()), 'channel')} of {plural(len(counts), 'layer')} ({', '.join(f'{n}: {counts[n]}' for n in named)}{more}; "
            "all of them: restored_channels of the returned update, or zip_summary(zipped).extra['batchnorm']); "
            "those channels keep their trained statistics. Constant or all-zero calibration data causes this.",
            UserWarning,
            stacklevel=3,
        )
