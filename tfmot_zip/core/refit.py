"""Damped least-squares refits of a linear layer (numpy only).

After the hidden layers are merged, a task's head still maps the *merged* features with the weights
it learnt on its *own* features. Heads stay per task, so each can be re-solved from the merged
features ``F`` to the original model's pre-activations ``L`` on the same inputs, at no cost in
parameters:

    min_w ||[F 1] w - L||^2 + lam ||w - w_old||^2,   lam = damping * mean(diag([F 1]^T [F 1]))

whose normal equations are ``([F 1]^T [F 1] + lam I) w = [F 1]^T L + lam w_old``. The prior
``w_old`` keeps the solution where the data says little (dead features, few samples).

:func:`refit_shared_columns` solves the same problem for a merged hidden layer, where one physical
weight column serves several tasks: its shared input rows are fitted jointly over those tasks,
each task's own rows only from its data (the block structure of the MTZ update).
"""
from __future__ import annotations

import numpy as np

from tfmot_zip.core.linalg import SummedStatistics

__all__ = ["LinearRefit", "refit_shared_columns", "relu_targets"]


class LinearRefit(SummedStatistics):
    """Streams ``[F 1]^T [F 1]`` and ``[F 1]^T L`` batch by batch (float64), then solves the refit.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> features = rng.normal(size=(200, 3))
        >>> true = rng.normal(size=(4, 2))                       # 3 weights + a bias per output
        >>> targets = np.hstack([features, np.ones((200, 1))]) @ true
        >>> refit = LinearRefit(3, 2)
        >>> refit.update(features[:100], targets[:100]); refit.update(features[100:], targets[100:])
        >>> kernel, bias = refit.solve(np.zeros((3, 2)), np.zeros(2), damping=0.0)
        >>> bool(np.allclose(kernel, true[:3]) and np.allclose(bias, true[3]))
        True
    """

    _sums = ("gram", "cross")

    def __init__(self, n_features: int, n_outputs: int):
        self.gram = np.zeros((n_features + 1, n_features + 1))
        self.cross = np.zeros((n_features + 1, n_outputs))
        self.count = 0

    def update(self, features: np.ndarray, targets: np.ndarray) -> None:
        """Adds a batch: ``features [n, d]`` (the merged layer inputs), ``targets [n, k]``."""
        features = np.asarray(features, np.float64).reshape(len(features), -1)
        targets = np.asarray(targets, np.float64).reshape(len(targets), -1)
        if features.shape[1] + 1 != self.gram.shape[0] or targets.shape[1] != self.cross.shape[1]:
            raise ValueError(
                f"Expected features with {self.gram.shape[0] - 1} columns and targets with {self.cross.shape[1]}; "
                f"received {features.shape[1]} and {targets.shape[1]}."
            )
        rows = np.hstack([features, np.ones((len(features), 1))])
        self.gram += rows.T @ rows
        self.cross += rows.T @ targets
        self.count += len(rows)


    def solve(self, kernel: np.ndarray, bias: np.ndarray | None, damping: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """The refit ``(kernel [d, k], bias [k])``, pulled towards ``(kernel, bias)`` by ``damping``.

        ``bias=None`` (a layer without bias) is treated as a zero bias kept at zero.
        """
        if self.count == 0:
            raise ValueError("LinearRefit.solve needs at least one batch; call update first.")
        prior = np.vstack([np.asarray(kernel, np.float64), np.zeros((1, kernel.shape[1])) if bias is None else np.asarray(bias, np.float64)[None, :]])
        gram, cross = self.gram.copy(), self.cross.copy()
        if bias is None:  # no bias: drop the constant column from the problem
            gram, cross, prior = gram[:-1, :-1], cross[:-1], prior[:-1]
        lam = float(damping) * float(np.mean(np.diag(gram))) if damping > 0 else 0.0
        solution = np.linalg.solve(gram + lam * np.eye(len(gram)), cross + lam * prior) if lam > 0 else np.linalg.lstsq(gram, cross, rcond=None)[0]
        if bias is None:
            return solution, None
        return solution[:-1], solution[-1]


def refit_shared_columns(
    grams: list[np.ndarray],
    crosses: list[np.ndarray],
    column_tasks: list[frozenset],
    prior: np.ndarray,
    damping: float = 1e-3,
) -> np.ndarray:
    """Damped least-squares weights of a merged layer, column by column, jointly over the tasks.

    Physical coordinates: rows ``0..P-1`` are the layer's physical inputs and row ``P`` its bias;
    columns are its physical units. For task ``t``, ``grams[t] = X~_t^T X~_t`` (``[P+1, P+1]``, zero
    where task ``t`` reads nothing) and ``crosses[t] = X~_t^T Y_t`` (``[P+1, units]``, the target
    of each column the task uses), with ``X~_t`` the task's inputs scattered into physical rows.
    Column ``c``, used by the tasks ``column_tasks[c]``, gets
    ``argmin_w sum_t ||X~_t w - y_tc||^2 + lam ||w - prior_c||^2`` over the rows those tasks read
    (``lam = damping * mean(diag)``); rows they do not read, and columns no task uses, keep
    ``prior``. Columns with the same task set share one factorisation.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = np.hstack([rng.normal(size=(50, 2)), np.ones((50, 1))])   # 2 inputs + bias
        >>> w = rng.normal(size=(3, 1))
        >>> gram, cross = x.T @ x, x.T @ (x @ w)
        >>> out = refit_shared_columns([gram, gram], [cross, cross], [frozenset({0, 1})], np.zeros((3, 1)), 0.0)
        >>> bool(np.allclose(out, w))
        True
    """
    result = np.array(prior, dtype=np.float64, copy=True)
    groups: dict[frozenset, list[int]] = {}
    for column, tasks in enumerate(column_tasks):
        if tasks:
            groups.setdefault(frozenset(tasks), []).append(column)
    for tasks, columns in groups.items():
        gram = sum(grams[t] for t in tasks)
        cross = sum(crosses[t][:, columns] for t in tasks)
        active = np.flatnonzero(np.diag(gram) > 0)
        if active.size == 0:
            continue
        block = gram[np.ix_(active, active)]
        lam = float(damping) * float(np.mean(np.diag(block)))
        rhs = cross[active] + lam * result[np.ix_(active, columns)]
        if lam > 0:
            solution = np.linalg.solve(block + lam * np.eye(len(active)), rhs)
        else:
            solution = np.linalg.lstsq(block, rhs, rcond=None)[0]
        result[np.ix_(active, columns)] = solution
    return result


def relu_targets(original: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Least-squares targets of a unit followed by a ReLU, given the current prediction.

    The target is the original pre-activation, except where the original unit is off (negative)
    and the prediction is off too: there the ReLU outputs 0 either way, so the prediction itself
    is the target (no residual). Re-solving with these targets spends the least squares on the
    values the next layer sees instead of on how far below zero an inactive unit lies.

    Example:
        >>> relu_targets(np.array([2.0, -1.0, -1.0, -2.0]), np.array([1.0, -3.0, 0.5, -0.5])).tolist()
        [2.0, -3.0, -1.0, -0.5]
    """
    original = np.asarray(original)
    predicted = np.asarray(predicted)
    return np.where((original < 0) & (predicted < 0), predicted, original)
