"""Merge strategies: how pair costs are scored and how a chosen pair's weights are merged.

``mtz`` is the method of the MTZ paper (Hessian-weighted costs, constrained update that
compensates the task-specific coordinates). ``mtz-centered`` is MTZ with every layer Hessian
replaced by the inputs' covariance (:func:`tfmot_zip.core.hessian.center_hessian`): it ignores the
error a per-task shift removes afterwards (statistics repair, per-task BatchNorm re-estimation). The baselines share the same machinery:
``euclidean`` (nearest shared weights, averaged), ``random`` (random pairs, averaged) and
``activation`` (ZipIt!-style: pairs of most correlated output features of the two models on
the same inputs, averaged).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tfmot_zip.core import MergeSide, apply_merge, merge_cost_matrix

__all__ = ["Strategy", "STRATEGIES", "get_strategy", "feature_correlation"]


@dataclass(frozen=True)
class Strategy:
    """A named pair-cost function and merge rule; ``needs_hessian`` says whether to compute H."""

    name: str
    needs_hessian: bool
    costs: Callable[[MergeSide, MergeSide, np.random.Generator, dict], np.ndarray]
    merge: Callable[[MergeSide, MergeSide, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    needs_activations: bool = False
    centered: bool = False
    least_squares: bool = False


def _average_merge(a: MergeSide, b: MergeSide, rows: np.ndarray, cols: np.ndarray):
    new_a, new_b = a.weights.copy(), b.weights.copy()
    if len(rows):
        common = 0.5 * (a.weights[np.ix_(rows, a.shared_index)] + b.weights[np.ix_(cols, b.shared_index)])
        new_a[np.ix_(rows, a.shared_index)] = common
        new_b[np.ix_(cols, b.shared_index)] = common
    return new_a, new_b


def _euclidean_costs(a: MergeSide, b: MergeSide, rng: np.random.Generator, stats: dict) -> np.ndarray:
    x, y = a.shared_weights, b.shared_weights
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(sq, 0.0)


def _random_costs(a: MergeSide, b: MergeSide, rng: np.random.Generator, stats: dict) -> np.ndarray:
    return rng.random((a.weights.shape[0], b.weights.shape[0]))


def feature_correlation(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """Pearson correlation ``[n_a, n_b]`` between columns of two ``[samples, units]`` arrays.

    Constant (dead) features get correlation 0.

    Example:
        >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])
        >>> np.round(feature_correlation(x, x), 3)
        array([[1., 0.],
               [0., 1.]])
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    a = a - a.mean(0)
    b = b - b.mean(0)
    sa = np.sqrt((a * a).sum(0))
    sb = np.sqrt((b * b).sum(0))
    corr = (a.T @ b) / np.maximum(sa[:, None] * sb[None, :], 1e-12)
    corr[sa < 1e-12, :] = 0.0
    corr[:, sb < 1e-12] = 0.0
    return corr


def _activation_costs(a: MergeSide, b: MergeSide, rng: np.random.Generator, stats: dict) -> np.ndarray:
    return 1.0 - stats["correlation"]


STRATEGIES: dict[str, Strategy] = {
    "mtz": Strategy("mtz", True, lambda a, b, rng, stats: merge_cost_matrix(a, b), apply_merge),
    "mtz-centered": Strategy(
        "mtz-centered", True, lambda a, b, rng, stats: merge_cost_matrix(a, b), apply_merge, centered=True
    ),
    "mtz-lsq": Strategy(
        "mtz-lsq", True, lambda a, b, rng, stats: merge_cost_matrix(a, b), apply_merge, least_squares=True
    ),
    "activation": Strategy("activation", False, _activation_costs, _average_merge, needs_activations=True),
    "euclidean": Strategy("euclidean", False, _euclidean_costs, _average_merge),
    "random": Strategy("random", False, _random_costs, _average_merge),
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; a clear error lists the known ones.

    Example:
        >>> get_strategy("mtz").needs_hessian
        True
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; expected one of {sorted(STRATEGIES)}.") from None
