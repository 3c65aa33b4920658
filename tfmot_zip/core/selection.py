"""Choosing which neuron pairs to share, given a cost matrix.

``greedy`` is the MTZ paper's rule: sort all costs and accept pairs whose neurons are both
still free. ``hungarian`` is the exact minimum-cost matching of exactly ``k`` pairs (a
rectangular assignment padded with dummy rows/columns, solved by
``scipy.optimize.linear_sum_assignment``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.optimize

__all__ = ["greedy_pairs", "hungarian_pairs", "select_pairs", "SELECTORS"]


def _check(costs: np.ndarray, k: int) -> np.ndarray:
    c = np.asarray(costs, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"Expected a 2-D cost matrix. Received shape {c.shape}.")
    if not isinstance(k, (int, np.integer)) or k < 0 or k > min(c.shape):
        raise ValueError(
            f"Expected 0 <= k <= min{c.shape} = {min(c.shape)} pairs. Received: k={k!r}."
        )
    if np.isnan(c).any():
        raise ValueError("The cost matrix contains NaN; check the layer weights and Hessians.")
    return c


def greedy_pairs(costs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's greedy selection of ``k`` disjoint pairs in increasing cost order.

    Example:
        >>> greedy_pairs(np.array([[0.0, 1.0], [0.5, 3.0]]), 2)
        (array([0, 1]), array([0, 1]))
    """
    c = _check(costs, k)
    rows_out, cols_out = [], []
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(c, axis=None, kind="stable")
    row_free = np.ones(c.shape[0], bool)
    col_free = np.ones(c.shape[1], bool)
    n_cols = c.shape[1]
    for flat in order:
        r, q = divmod(int(flat), n_cols)
        if row_free[r] and col_free[q]:
            row_free[r] = col_free[q] = False
            rows_out.append(r)
            cols_out.append(q)
            if len(rows_out) == k:
                break
    rows = np.asarray(rows_out, np.int64)
    cols = np.asarray(cols_out, np.int64)
    order_rows = np.argsort(rows)
    return rows[order_rows], cols[order_rows]


def hungarian_pairs(costs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum-total-cost matching of exactly ``k`` pairs.

    Pads the ``n x m`` matrix to ``(n + m - k)`` square: dummy columns absorb the ``n - k``
    unmatched rows and dummy rows the ``m - k`` unmatched columns at zero cost; dummy-dummy
    cells are forbidden, so exactly ``k`` real pairs remain.

    Example:
        >>> hungarian_pairs(np.array([[0.0, 1.0], [0.5, 3.0]]), 2)
        (array([0, 1]), array([1, 0]))
    """
    c = _check(costs, k)
    n, m = c.shape
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    size = n + m - k
    big = np.zeros((size, size))
    big[:n, :m] = c
    finite_max = np.max(c[np.isfinite(c)]) if np.isfinite(c).any() else 1.0
    forbid = (abs(finite_max) + 1.0) * (size + 1) * 4.0
    big[n:, m:] = forbid
    rows, cols = scipy.optimize.linear_sum_assignment(big)
    real = (rows < n) & (cols < m)
    rows, cols = rows[real].astype(np.int64), cols[real].astype(np.int64)
    if rows.size != k:  # pragma: no cover - guarded by the construction
        raise RuntimeError(f"Assignment returned {rows.size} pairs instead of {k}.")
    return rows, cols


SELECTORS: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]] = {
    "greedy": greedy_pairs,
    "hungarian": hungarian_pairs,
}


def select_pairs(costs: np.ndarray, k: int, method: str = "greedy") -> tuple[np.ndarray, np.ndarray]:
    """Selects ``k`` disjoint pairs with ``method`` in ``SELECTORS`` ("greedy" or "hungarian").

    Example:
        >>> select_pairs(np.array([[0.0, 1.0], [0.5, 3.0]]), 1)
        (array([0]), array([0]))
    """
    try:
        selector = SELECTORS[method]
    except KeyError:
        raise ValueError(
            f"Unknown pair selection method {method!r}; expected one of {sorted(SELECTORS)}."
        ) from None
    return selector(costs, k)
