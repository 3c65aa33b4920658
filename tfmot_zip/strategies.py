"""Merge strategies: how pair costs are scored and how a chosen pair's weights are merged.

``mtz`` is the method of the MTZ paper (Hessian-weighted costs, constrained update that
compensates the task-specific coordinates). The baselines share the same machinery:
``euclidean`` (nearest shared weights, averaged) and ``random`` (random pairs, averaged).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tfmot_zip.core import MergeSide, apply_merge, merge_cost_matrix

__all__ = ["Strategy", "STRATEGIES", "get_strategy"]


@dataclass(frozen=True)
class Strategy:
    """A named pair-cost function and merge rule; ``needs_hessian`` says whether to compute H."""

    name: str
    needs_hessian: bool
    costs: Callable[[MergeSide, MergeSide, np.random.Generator], np.ndarray]
    merge: Callable[[MergeSide, MergeSide, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _average_merge(a: MergeSide, b: MergeSide, rows: np.ndarray, cols: np.ndarray):
    new_a, new_b = a.weights.copy(), b.weights.copy()
    if len(rows):
        common = 0.5 * (a.weights[np.ix_(rows, a.shared_index)] + b.weights[np.ix_(cols, b.shared_index)])
        new_a[np.ix_(rows, a.shared_index)] = common
        new_b[np.ix_(cols, b.shared_index)] = common
    return new_a, new_b


def _euclidean_costs(a: MergeSide, b: MergeSide, rng: np.random.Generator) -> np.ndarray:
    x, y = a.shared_weights, b.shared_weights
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(sq, 0.0)


def _random_costs(a: MergeSide, b: MergeSide, rng: np.random.Generator) -> np.ndarray:
    return rng.random((a.weights.shape[0], b.weights.shape[0]))


STRATEGIES: dict[str, Strategy] = {
    "mtz": Strategy("mtz", True, lambda a, b, rng: merge_cost_matrix(a, b), apply_merge),
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
