"""Joint (multi-task) retraining and evaluation helpers for zipped models.

Each step feeds one batch of every task and sums the per-task losses, so shared weights get
the gradients of all tasks (docs/METHOD.md, light retraining).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras

__all__ = ["compile_multitask", "retrain", "evaluate_tasks", "accuracy", "soft_targets"]


def compile_multitask(
    model: keras.Model,
    learning_rate: float = 1e-4,
    from_logits: bool = False,
    soft: bool = False,
    decay_steps: int | None = None,
    loss_weights: Sequence[float] | None = None,
) -> keras.Model:
    """Compiles ``model`` with a cross-entropy per task output (keyed by name) and Adam.

    Args:
        model: a multi-task model (one output per task).
        learning_rate: Adam's (initial) learning rate.
        from_logits: the outputs are logits rather than probabilities.
        soft: targets are probability vectors (see :func:`soft_targets`).
        decay_steps: when given, the learning rate follows a cosine decay to zero over this
            many steps (a fixed retraining budget ends on settled weights, not a noisy step).
        loss_weights: per task output (in output order), the weight of its loss in the summed
            loss (default all 1).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> _ = compile_multitask(zipped, 1e-3, decay_steps=200)
        >>> sorted(zipped.loss)
        ['task_a', 'task_b']
    """
    if isinstance(learning_rate, bool) or not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"Expected a positive learning_rate. Received: learning_rate={learning_rate!r}")
    if decay_steps is not None and (isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps <= 0):
        raise ValueError(f"Expected a positive integer decay_steps or None. Received: decay_steps={decay_steps!r}")
    rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps) if decay_steps else learning_rate
    names = list(model.output_names)
    if soft:  # targets are probability vectors (see soft_targets)
        loss = {n: keras.losses.CategoricalCrossentropy(from_logits=from_logits) for n in names}
        metrics = {n: ["categorical_accuracy"] for n in names}
    else:
        loss = {n: keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits) for n in names}
        metrics = {n: ["accuracy"] for n in names}
    weights = None
    if loss_weights is not None:
        weights = [float(w) for w in loss_weights]
        if len(weights) != len(names) or any(not (w >= 0.0) for w in weights):
            raise ValueError(
                f"Expected one non-negative loss weight per output {names}. Received: loss_weights={loss_weights!r}"
            )
        weights = dict(zip(names, weights))
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=metrics, loss_weights=weights)
    return model


def soft_targets(
    teachers: Sequence[keras.Model],
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    label_weight: float = 0.5,
    batch_size: int = 1000,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Distillation targets: ``label_weight * one_hot(y) + (1 - label_weight) * teacher(x)``.

    Retraining a zipped model towards its source models' own predictions (knowledge
    distillation) recovers their accuracy in fewer steps than the hard labels alone. Use the
    result as ``train_sets`` of :func:`retrain` with ``soft=True`` (categorical cross-entropy).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> import numpy as np
        >>> labels = np.zeros(len(x_a), int)
        >>> sets = soft_targets([model_a, model_b], [(x_a, labels), (x_b, labels)])
        >>> sets[0][1].shape
        (64, 3)
    """
    if not 0.0 <= label_weight <= 1.0:
        raise ValueError(f"Expected 0 <= label_weight <= 1. Received: label_weight={label_weight!r}")
    if len(teachers) != len(train_sets):
        raise ValueError(f"Expected one teacher per train set; received {len(teachers)} and {len(train_sets)}.")
    out = []
    for teacher, (x, y) in zip(teachers, train_sets):
        probs = teacher.predict(x, batch_size=batch_size, verbose=0).astype(np.float32)
        onehot = np.eye(probs.shape[-1], dtype=np.float32)[np.asarray(y)]
        out.append((x, label_weight * onehot + (1.0 - label_weight) * probs))
    return out


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent.

    Example:
        >>> accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
        50.0
    """
    return float(100.0 * np.mean(np.argmax(predictions, axis=-1) == np.asarray(labels)))


def evaluate_tasks(model: keras.Model, tests: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int = 1000) -> list[float]:
    """Test accuracy (%) of every task of a multi-task model, each on its own test split.

    A model with one input per task gets every task's data at once (shorter splits padded).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> import numpy as np
        >>> labels = [np.argmax(model_a.predict(x_a, verbose=0), -1), np.argmax(model_b.predict(x_b, verbose=0), -1)]
        >>> [round(a) for a in evaluate_tasks(tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b),
        ...                                                           sharing=0.0), [(x_a, labels[0]), (x_b, labels[1])])]
        [100, 100]
    """
    n_tasks = len(model.outputs)
    if len(tests) != n_tasks:
        raise ValueError(f"Expected {n_tasks} (x, y) test sets, one per task; received {len(tests)}.")
    if len(model.inputs) == 1:
        results = []
        for t, (x, y) in enumerate(tests):
            out = model.predict(x, batch_size=batch_size, verbose=0)
            out = out[t] if isinstance(out, list) else out
            results.append(accuracy(out, y))
        return results
    longest = max(len(x) for x, _ in tests)
    feeds = []
    for x, _ in tests:
        if len(x) < longest:
            x = np.concatenate([x, np.zeros((longest - len(x),) + x.shape[1:], x.dtype)])
        feeds.append(x)
    outs = model.predict(feeds, batch_size=batch_size, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return [accuracy(o[: len(y)], y) for o, (_, y) in zip(outs, tests)]


def retrain(
    model: keras.Model,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    steps: int,
    learning_rate: float = 1e-4,
    batch_size: int = 128,
    seed: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    eval_every: int | None = None,
    tests: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    verbose: int = 0,
) -> list[tuple[int, list[float]]]:
    """Joint retraining for ``steps`` steps (one batch per task per step).

    Returns ``[(step, per-task test accuracy)]`` every ``eval_every`` steps when ``tests`` given.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> import numpy as np
        >>> labels = np.zeros(len(x_a), int)
        >>> _ = compile_multitask(zipped, 1e-3)
        >>> history = retrain(zipped, [(x_a, labels), (x_b, labels)], steps=2, batch_size=16,
        ...                   eval_every=1, tests=[(x_a, labels), (x_b, labels)])
        >>> [step for step, _ in history]
        [1, 2]
    """
    from tfmot_zip.data.tasks import multitask

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"Expected a non-negative integer number of steps. Received: steps={steps!r}")
    n_tasks = len(model.outputs)
    if len(train_sets) != n_tasks:
        raise ValueError(
            f"retrain needs one (x, y) train set per task ({n_tasks}: {list(model.output_names)}); "
            f"received {len(train_sets)}."
        )
    for name, output, (x, y) in zip(model.output_names, model.outputs, train_sets):
        classes = int(output.shape[-1])
        y = np.asarray(y)
        if y.ndim == 2:  # soft targets
            if y.shape[1] != classes:
                raise ValueError(f"Task {name!r} has {classes} classes but its soft targets have {y.shape[1]}.")
            continue
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(
                f"Task {name!r} has {classes} classes but its labels range over {int(y.min())}..{int(y.max())}; "
                "remap the labels to 0..classes-1 (tfmot_zip.data.make_class_task does this)."
            )
    if model.optimizer is None:
        soft = any(np.asarray(y).ndim == 2 for _, y in train_sets)
        compile_multitask(model, learning_rate, soft=soft)
    history: list[tuple[int, list[float]]] = []
    chunk = eval_every or steps
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        # A fresh shuffle per chunk (seeded by the step), so chunks do not replay the same batches.
        dataset = multitask(*train_sets, batch_size=batch_size, seed=seed + done)
        model.fit(dataset, steps_per_epoch=n, epochs=1, verbose=verbose, callbacks=list(callbacks))
        done += n
        if tests is not None and eval_every:
            history.append((done, evaluate_tasks(model, tests)))
    return history
