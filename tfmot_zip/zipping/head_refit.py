"""The per-task head refit after zipping (beyond the paper; docs/REFIT.md).

Heads stay per task, so each task's Dense head can be re-solved from the zipped network's last
hidden features to the original model's outputs at no cost in parameters: a softmax or sigmoid head
by its damped cross-entropy to the original probabilities
(:func:`tfmot_zip.core.head_fit.cross_entropy_refit`), any other by damped least squares to the
original logits (:class:`tfmot_zip.core.refit.LinearRefit`). Both start from, and are pulled
towards, the head the zip left.

A head with more weights than its calibration data can pin down overfits them: on a pair of
MobileNetV2s (1,280 features, 1,000 calibration images per task) either fit lost test accuracy
against the head left as it was. So when a task has fewer than :data:`VALIDATE_BELOW` samples per
head input, the damping is chosen on held-out samples: every fifth sample is held out, the head is
fitted on the others with each damping of :data:`VALIDATION_DAMPINGS`, and the damping whose fit
loses least on the held-out samples (cross-entropy, or squared error for least squares) is used on
every sample; if the head as the zip left it loses less than every fit, it is kept.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core.head_fit import HEAD_FITS, HEAD_LOSSES, cross_entropy, cross_entropy_refit
from tfmot_zip.core.refit import LinearRefit
from tfmot_zip.model.graph import ModelGraph
from tfmot_zip.zipping.activations import ZipActivations
from tfmot_zip.zipping.refit import rows_per_block

__all__ = ["VALIDATE_BELOW", "VALIDATION_DAMPINGS", "head_loss", "refit_heads"]

#: A task with fewer calibration samples than this many per head input (and bias) chooses its damping on held-out samples.
VALIDATE_BELOW = 10
#: The dampings tried then, against keeping the head the zip left.
VALIDATION_DAMPINGS = (1e-3, 1e-2, 1e-1, 1.0)
_HOLD_OUT_EVERY = 5  # sample i is held out when i % 5 == 4

Blocks = Callable[[], list]


def head_loss(layer: keras.layers.Layer, fit: str = "auto") -> str:
    """What :func:`refit_heads` fits for an original head ``layer``: ``"least_squares"``,
    ``"softmax"`` or ``"sigmoid"`` (``fit="auto"`` reads the layer's activation).

    Example:
        >>> head_loss(keras.layers.Dense(3, activation="softmax")), head_loss(keras.layers.Dense(3))
        ('softmax', 'least_squares')
        >>> head_loss(keras.layers.Dense(3, activation="softmax"), "least_squares")
        'least_squares'
    """
    if fit not in HEAD_FITS:
        raise ValueError(f"Unknown head fit {fit!r}; expected one of {list(HEAD_FITS)}.")
    if fit != "auto":
        return fit
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return name if name in HEAD_LOSSES else "least_squares"


def _fit(loss: str, blocks: Blocks, kernel, bias, damping: float, reduce) -> tuple:
    if loss == "least_squares":
        refit = LinearRefit(kernel.shape[0], kernel.shape[1])
        for x, target in blocks():
            refit.update(x, target)
        refit.reduce(reduce)
        return refit.solve(kernel, bias, damping=damping)
    return cross_entropy_refit(blocks, kernel, bias, loss=loss, damping=damping, reduce=reduce)


def _mean_loss(loss: str, blocks: Blocks, kernel, bias, reduce) -> float:
    """The head's loss per sample on ``blocks`` (summed over the workers)."""
    total, count = 0.0, 0
    for x, target in blocks():
        if len(x) == 0:
            continue
        logits = np.asarray(x, np.float64).reshape(len(x), -1) @ kernel + (0.0 if bias is None else bias)
        total += float(np.sum((logits - target) ** 2)) if loss == "least_squares" else cross_entropy(logits, target, loss)
        count += len(x)
    total, count = reduce([np.array([total]), np.array([count], np.float64)])
    return float(total[0]) / max(float(count[0]), 1.0)


def _validated(loss: str, blocks: Blocks, kernel, bias, reduce) -> float | None:
    """The damping of :data:`VALIDATION_DAMPINGS` whose fit on four samples in five loses least on
    the fifth, or None when the head as it is loses less than every fit."""
    held, kept = [], []
    start = 0
    for x, target in blocks():
        x = np.asarray(x)
        out = (start + np.arange(len(x))) % _HOLD_OUT_EVERY == _HOLD_OUT_EVERY - 1
        held.append((x[out], target[out]))
        kept.append((x[~out], target[~out]))
        start += len(x)
    if float(reduce([np.array([sum(len(x) for x, _ in held)], np.float64)])[0][0]) == 0:
        return None  # fewer than five samples: nothing to judge a fit by, so the head is kept
    best, best_loss = None, _mean_loss(loss, lambda: held, kernel, bias, reduce)
    for damping in VALIDATION_DAMPINGS:
        fitted = _fit(loss, lambda: kept, kernel, bias, damping, reduce)
        value = _mean_loss(loss, lambda: held, *fitted, reduce)
        if value < best_loss:
            best, best_loss = damping, value
    return best


def refit_heads(
    zipped: keras.Model,
    graph: ModelGraph,
    calibration: Sequence[np.ndarray],
    damping: float = 1e-3,
    batch_size: int = 1000,
    activations: ZipActivations | None = None,
    fit: str = "auto",
    choices: dict | None = None,
) -> list[str]:
    """Re-solves every task's Dense head of ``zipped`` in place; returns the names of the heads refit.

    Args:
        zipped: the zipped model (its zip layers are updated).
        graph: the aligned original models it was zipped from.
        calibration: one array of inputs per task (the calibration data of the zip).
        damping: relative pull towards the head's current weights (see ``LinearRefit.solve``), when
            a task has at least :data:`VALIDATE_BELOW` samples per head input.
        batch_size: fewest samples per block (blocks hold about 64 MB of inputs).
        activations: the zip's activation caches (None: built here).
        fit: one of :data:`~tfmot_zip.core.head_fit.HEAD_FITS` (see :func:`head_loss`).
        choices: filled with ``{head name: [{"loss", "damping", "validated"} per task]}``;
            ``"damping": None`` when the head was kept as the zip left it.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.0)
        >>> from tfmot_zip.model.graph import align_models
        >>> refit_heads(zipped, align_models([model_a, model_b]), [x_a, x_b], damping=1e-6, fit="least_squares")
        ['head']
        >>> bool(np.allclose(zipped.predict([x_a, x_b], verbose=0)[0], model_a.predict(x_a, verbose=0), atol=1e-4))
        True
    """
    acts = activations if activations is not None else ZipActivations(zipped, graph.models, calibration)
    reduce = acts.merged.replicas.sum_all  # over the workers of a tf.distribute strategy
    refit_names = []
    for node in graph.zip_nodes():
        if not node.is_head or node.kind != "dense":
            continue
        layer = zipped.get_layer(node.name)
        made = []
        for task, original_layer in enumerate(node.layers):
            kernel, bias = layer.get_task_weights(task)
            original_kernel, *rest = original_layer.get_weights()
            original_bias = rest[0] if rest else np.zeros(original_kernel.shape[1], original_kernel.dtype)
            merged, original = acts.merged_inputs(layer, task), acts.original_input(original_layer, task)
            step = rows_per_block(batch_size, kernel.shape[0] + original_kernel.shape[0])
            starts = range(0, len(merged), step)
            targets = [np.asarray(original[s : s + step], np.float64) @ original_kernel + original_bias for s in starts]
            blocks = lambda: [(merged[s : s + step], target) for s, target in zip(starts, targets)]  # noqa: E731
            loss = head_loss(original_layer, fit)
            samples = float(reduce([np.array([len(merged)], np.float64)])[0][0])
            validated = samples < VALIDATE_BELOW * (kernel.shape[0] + 1)
            chosen = _validated(loss, blocks, kernel, bias, reduce) if validated else damping
            made.append({"loss": loss, "damping": chosen, "validated": bool(validated)})
            if chosen is None:
                continue
            new_kernel, new_bias = _fit(loss, blocks, kernel, bias, chosen, reduce)
            layer.set_tasks_weights({task: (new_kernel.astype(kernel.dtype), None if new_bias is None else new_bias.astype(bias.dtype))})
        acts.changed(layer)
        refit_names.append(node.name)
        if choices is not None:
            choices[node.name] = made
    return refit_names
