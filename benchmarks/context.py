"""What every measurement of one scenario needs: the trained originals, data, and their figures.

:class:`Context` trains (or loads from the zoo cache) the pair of originals of a
:class:`~benchmarks.scenarios.Scenario` and measures them; :func:`train_with_checkpoints` is the
joint training every measurement uses, so all models trained with one seed see the same batches.

Example:
    >>> from benchmarks.context import accuracy_drops, round_accuracies
    >>> accuracy_drops([90.0, 80.0], round_accuracies([89.456, 80.5]))
    [0.54, -0.5]
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from benchmarks.scenarios import BenchConfig, Scenario, strategy

__all__ = [
    "Log",
    "History",
    "round_accuracies",
    "accuracy_drops",
    "evaluate_models",
    "train_with_checkpoints",
    "Context",
]

Log = Callable[[str], None]
History = list[tuple[int, list[float]]]


def round_accuracies(values: Sequence[float], digits: int = 2) -> list[float]:
    """Accuracies (%) as plain floats rounded to ``digits`` decimals, as the results store them.

    Example:
        >>> from benchmarks.context import round_accuracies
        >>> round_accuracies([91.2345])
        [91.23]
    """
    return [round(float(v), digits) for v in values]


def accuracy_drops(originals: Sequence[float], accuracy: Sequence[float]) -> list[float]:
    """Points lost per task against ``originals`` (negative: a gain).

    Example:
        >>> from benchmarks.context import accuracy_drops
        >>> accuracy_drops([90.0], [89.5])
        [0.5]
    """
    return [round(o - a, 2) for o, a in zip(originals, accuracy)]


def evaluate_models(models: Sequence, tests: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Accuracy (%) of each single-task model on its own test set.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from benchmarks.context import evaluate_models
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> x = np.zeros((4, 3), "float32")
        >>> evaluate_models([model], [(x, np.zeros(4, int))])  # ties: argmax picks class 0
        [100.0]
    """
    from tfmot_zip.training import accuracy

    return [accuracy(m.predict(x, batch_size=1000, verbose=0), y) for m, (x, y) in zip(models, tests)]


def train_with_checkpoints(
    model,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    checkpoints: Sequence[int],
    tests: Sequence[tuple[np.ndarray, np.ndarray]],
    learning_rate: float,
    batch_size: int = 128,
    seed: int = 0,
    stop: Optional[Callable[[int, list[float]], bool]] = None,
) -> History:
    """Joint training (one batch per task per step) evaluated at each checkpoint step.

    The batches are those of ``training.retrain`` with ``eval_every`` (one shuffle per chunk,
    seeded by the step), so every model trained with the same ``seed`` sees the same data.
    Stops early when ``stop(step, accuracies)`` is true.

    Returns:
        ``[(step, [accuracy per task])]``.
    """
    from tfmot_zip import training

    training.compile_multitask(model, learning_rate)
    history: History = []
    done = 0
    for step in sorted(set(int(c) for c in checkpoints)):
        if step > done:
            training.retrain(model, train_sets, step - done, learning_rate, batch_size=batch_size, seed=seed + done)
            done = step
        accuracies = round_accuracies(training.evaluate_tasks(model, tests))
        history.append((step, accuracies))
        if stop is not None and stop(step, accuracies):
            break
    return history


class Context:
    """What every measurement of one scenario needs: models, data, originals' figures.

    Building one trains (or loads) the scenario's originals and evaluates them, which takes
    from seconds (cached) to minutes; ``tests/test_benchmarks.py`` runs a tiny scenario.

    Attributes:
        scenario, config, log: what was passed.
        tasks, trained, models, names: the tasks and their trained originals.
        tests, train_sets, calibration: the evaluation, training and calibration data per task.
        original_accuracy: the originals' test accuracy (%), per task.
        one_network_params: parameters of one original.
        bn_recalibrated_accuracy: the originals' accuracy with BatchNorm statistics
            re-estimated on the calibration images (None without BatchNorm).
    """

    def __init__(self, scenario: Scenario, config: BenchConfig, log: Log):
        from tfmot_zip import data
        from tfmot_zip.apps import zoo

        self.scenario, self.config, self.log = scenario, config, log
        self.tasks = [data.make_task(t) for t in scenario.tasks]
        self.trained = [
            zoo.train_on_task(
                scenario.arch, task, seed=seed, epochs=scenario.epochs, cache_dir=config.cache_dir,
                max_train_samples=scenario.train_samples,
            )
            for task, seed in zip(self.tasks, scenario.seeds)
        ]
        self.models = [t.model for t in self.trained]
        self.names = [m.name for m in self.models]
        n = scenario.test_samples
        self.tests = [(t.x_test[:n], t.y_test[:n]) if n else t.test for t in self.tasks]
        self.train_sets = [t.train for t in self.tasks]
        self.calibration = [t.x_train[: scenario.calibration_samples] for t in self.tasks]
        self.original_accuracy = round_accuracies(evaluate_models(self.models, self.tests))
        self.one_network_params = int(self.models[0].count_params())
        self.bn_recalibrated_accuracy = self._bn_recalibrated_accuracy()

    def _bn_recalibrated_accuracy(self) -> Optional[list[float]]:
        """The originals with their BatchNorm statistics re-estimated on the calibration images.

        ``zip_models`` re-estimates BatchNorm statistics after zipping; on models whose moving
        statistics lag their weights (short training) that alone changes the accuracy, so the
        same re-estimation on the unzipped originals is the fair reference. None without BatchNorm.
        """
        from tfmot_zip.compat import keras

        if not any(isinstance(l, keras.layers.BatchNormalization) for l in self.models[0].layers):
            return None
        from tfmot_zip.model.batchnorm import recalibrate_batchnorm
        from tfmot_zip.model.copying import copy_model

        copies = []
        for model, calibration in zip(self.models, self.calibration):
            copy = copy_model(model)
            # One flat model per task: recalibrate_batchnorm only sees top-level BatchNorm layers.
            if recalibrate_batchnorm(copy, [calibration]) == 0:
                raise RuntimeError(f"recalibrate_batchnorm found no BatchNorm layer in a copy of {model.name!r}")
            copies.append(copy)
        return round_accuracies(evaluate_models(copies, self.tests))

    def zip(self, fraction: float, label: str):
        """The originals zipped at ``fraction`` with strategy ``label``, and the zip summary."""
        import tfmot_zip

        spec = strategy(label)
        zipped = tfmot_zip.zip_models(
            *self.models, calibration_data=self.calibration, sharing=fraction, method=spec.method,
            selection=spec.selection, damping=self.config.damping,
            calibration_samples=self.scenario.calibration_samples, seed=self.config.seed, **dict(spec.options),
        )
        return zipped, tfmot_zip.zip_summary(zipped)

