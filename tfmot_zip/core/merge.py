"""MTZ merge costs and the constrained weight update (docs/METHOD.md).

Two *sides* are merged neuron by neuron. A side holds the incoming weight vectors of its
neurons as rows (bias as the last coordinate), the indices ``shared_index`` of the coordinates
that the other side sees through the same physical weight (set ``S``), and two operators taken
from its inverse layer Hessian: ``G = P H^-1 P^T`` (``[s, s]``) and ``U = H^-1 P^T`` (``[d, s]``).

Sharing neuron ``i`` of A with neuron ``j`` of B under the constraint ``P a_i == P b_j`` costs
``dE(i, j) = 1/2 d^T M d`` with ``d = P (a_i - b_j)`` and ``M = (G_A + G_B)^-1``; the minimising
update is ``a_i -= U_A M d`` and ``b_j += U_B M d``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tfmot_zip.core.linalg import spd_inverse

__all__ = ["MergeSide", "merge_metric", "merge_cost_matrix", "pair_cost", "apply_merge"]


@dataclass(frozen=True)
class MergeSide:
    """One side of a merge: neuron weight rows and the Hessian operators on shared coordinates.

    Attributes:
        weights: ``[n, d]`` incoming weights of each neuron, bias last.
        shared_index: ``[s]`` indices into ``d`` of the shared coordinates, in the order that
            pairs them with the other side's ``shared_index``.
        g: ``[s, s]`` block ``P H^-1 P^T`` (for a side serving several tasks, their sum).
        u: ``[d, s]`` update operator ``H^-1 P^T``.

    Example:
        >>> h_inv = np.eye(3)
        >>> side = MergeSide.from_hessian_inverse(np.ones((2, 3)), h_inv, [0, 2])
        >>> side.g.shape, side.u.shape
        ((2, 2), (3, 2))
    """

    weights: np.ndarray
    shared_index: np.ndarray
    g: np.ndarray
    u: np.ndarray

    @classmethod
    def from_hessian_inverse(
        cls, weights: np.ndarray, hessian_inverse: np.ndarray, shared_index: Sequence[int]
    ) -> "MergeSide":
        """Builds a side of one task from its inverse (damped) layer Hessian."""
        w = np.asarray(weights, dtype=np.float64)
        h_inv = np.asarray(hessian_inverse, dtype=np.float64)
        idx = np.asarray(shared_index, dtype=np.int64)
        if w.ndim != 2 or h_inv.shape != (w.shape[1], w.shape[1]):
            raise ValueError(
                f"Expected weights [n, d] and a [d, d] inverse Hessian; received {w.shape} and "
                f"{h_inv.shape}."
            )
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= w.shape[1])):
            raise ValueError(f"shared_index must index the {w.shape[1]} coordinates; got {idx}.")
        return cls(w, idx, h_inv[np.ix_(idx, idx)], h_inv[:, idx])

    @property
    def shared_weights(self) -> np.ndarray:
        """``P w`` for every neuron: ``[n, s]``."""
        return self.weights[:, self.shared_index]


def _check_pair(side_a: MergeSide, side_b: MergeSide) -> None:
    if side_a.shared_index.shape != side_b.shared_index.shape:
        raise ValueError(
            f"Both sides need the same number of shared coordinates; got "
            f"{side_a.shared_index.size} and {side_b.shared_index.size}."
        )


def merge_metric(g_a: np.ndarray, g_b: np.ndarray) -> np.ndarray:
    """``M = (G_A + G_B)^-1`` (symmetric positive definite when both G are)."""
    total = np.asarray(g_a, dtype=np.float64) + np.asarray(g_b, dtype=np.float64)
    total = 0.5 * (total + total.T)
    try:
        metric = spd_inverse(total)
    except np.linalg.LinAlgError:
        metric = np.linalg.pinv(total, hermitian=True)
    return 0.5 * (metric + metric.T)


def merge_cost_matrix(side_a: MergeSide, side_b: MergeSide) -> np.ndarray:
    """All pair costs at once: ``C[i, j] = 1/2 d_ij^T M d_ij``, one matrix product per layer.

    ``C = 1/2 (diag(A M A^T)[:, None] + diag(B M B^T)[None, :] - 2 A M B^T)`` on the shared
    coordinates. Negative round-off is clipped to zero.

    Example:
        >>> s = MergeSide.from_hessian_inverse(np.eye(2), np.eye(2), [0, 1])
        >>> merge_cost_matrix(s, s)
        array([[0. , 0.5],
               [0.5, 0. ]])
    """
    _check_pair(side_a, side_b)
    metric = merge_metric(side_a.g, side_b.g)
    a = side_a.shared_weights
    b = side_b.shared_weights
    am = a @ metric
    bm = b @ metric
    qa = np.einsum("ij,ij->i", am, a)
    qb = np.einsum("ij,ij->i", bm, b)
    costs = 0.5 * (qa[:, None] + qb[None, :] - 2.0 * (am @ b.T))
    return np.maximum(costs, 0.0)


def pair_cost(side_a: MergeSide, side_b: MergeSide, i: int, j: int) -> float:
    """Cost of sharing neuron ``i`` of A with neuron ``j`` of B (one pair; reference form)."""
    _check_pair(side_a, side_b)
    metric = merge_metric(side_a.g, side_b.g)
    d = side_a.shared_weights[i] - side_b.shared_weights[j]
    return float(0.5 * d @ metric @ d)


def apply_merge(
    side_a: MergeSide,
    side_b: MergeSide,
    rows: Sequence[int],
    cols: Sequence[int],
    snap: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Applies the constrained MTZ update to the chosen pairs ``(rows[k], cols[k])``.

    Returns new weight matrices (inputs untouched). Afterwards the shared coordinates of each
    pair are equal (``snap`` removes the last round-off by writing their common value to both).

    Example:
        >>> a = MergeSide.from_hessian_inverse(np.array([[0.0, 0.0]]), np.eye(2), [0, 1])
        >>> b = MergeSide.from_hessian_inverse(np.array([[2.0, 4.0]]), np.eye(2), [0, 1])
        >>> new_a, new_b = apply_merge(a, b, [0], [0])
        >>> new_a
        array([[1., 2.]])
    """
    _check_pair(side_a, side_b)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError(f"rows and cols must be 1-D of equal length; got {rows.shape}, {cols.shape}.")
    if len(np.unique(rows)) != rows.size or len(np.unique(cols)) != cols.size:
        raise ValueError("Each neuron can be shared at most once per merge; pairs repeat a neuron.")
    new_a = side_a.weights.copy()
    new_b = side_b.weights.copy()
    if rows.size == 0:
        return new_a, new_b
    metric = merge_metric(side_a.g, side_b.g)
    diff = side_a.shared_weights[rows] - side_b.shared_weights[cols]
    md = diff @ metric
    new_a[rows] -= md @ side_a.u.T
    new_b[cols] += md @ side_b.u.T
    if snap:
        common = 0.5 * (new_a[np.ix_(rows, side_a.shared_index)] + new_b[np.ix_(cols, side_b.shared_index)])
        new_a[np.ix_(rows, side_a.shared_index)] = common
        new_b[np.ix_(cols, side_b.shared_index)] = common
    return new_a, new_b
