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

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tfmot_zip.core.linalg import block_diagonal_product, blocks_product, coalesce_blocks, diagonal_blocks, spd_inverse

__all__ = ["MergeSide", "merge_metric", "merge_cost_matrix", "pair_cost", "apply_merge"]


@dataclass(frozen=True)
class MergeSide:
    """One side of a merge: neuron weight rows and the Hessian operators on shared coordinates.

    Attributes:
        weights: ``[n, d]`` incoming weights of each neuron, bias last.
        shared_index: ``[s]`` indices into ``d`` of the shared coordinates, in the order that
            pairs them with the other side's ``shared_index``.
        g: ``[s, s]`` block ``P H^-1 P^T`` (for a side serving several tasks, their sum).
        hessian_inverse: ``[d, d]`` the side's (damped) inverse Hessian ``H^-1``; the update
            operator is ``u = H^-1 P^T``.

    Example:
        >>> h_inv = np.eye(3)
        >>> side = MergeSide.from_hessian_inverse(np.ones((2, 3)), h_inv, [0, 2])
        >>> side.g.shape, side.u.shape
        ((2, 2), (3, 2))
    """

    weights: np.ndarray
    shared_index: np.ndarray
    g: np.ndarray
    hessian_inverse: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

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
        every = idx.size == w.shape[1] and bool(np.all(idx == np.arange(idx.size)))
        return cls(w, idx, h_inv if every else h_inv[np.ix_(idx, idx)], h_inv)

    @property
    def u(self) -> np.ndarray:
        """``[d, s]`` update operator ``H^-1 P^T``."""
        return self.hessian_inverse[:, self.shared_index]

    @property
    def shared_weights(self) -> np.ndarray:
        """``P w`` for every neuron: ``[n, s]``."""
        return self.weights[:, self.shared_index]

    def update_directions(self, shared_steps: np.ndarray) -> np.ndarray:
        """``steps @ u.T = (steps P) H^-1`` for ``[k, s]`` steps on the shared coordinates, multiplied
        block by block when ``H^-1`` is block diagonal (e.g. a convolution's per-position blocks)."""
        blocks = _blocks_of(self, self.hessian_inverse)
        full = np.zeros((shared_steps.shape[0], self.weights.shape[1]))
        full[:, self.shared_index] = shared_steps
        return block_diagonal_product(full, self.hessian_inverse, blocks)


def _metric(side_a: MergeSide, side_b: MergeSide) -> list[tuple[int, int, np.ndarray]]:
    """``merge_metric(side_a.g, side_b.g)`` as its diagonal blocks ``[(start, stop, block), ...]``,
    computed once per pair of sides (the costs and the update of the same pair both need it).

    The blocks of ``G_A + G_B`` are those of ``G_A`` and ``G_B`` joined where they overlap, so the
    sum and its inverse are never formed as dense matrices (for a wide convolution they are mostly
    zeros: a few hundred MB that would only be allocated, scanned and multiplied by zero)."""
    key = ("metric", id(side_b))
    cached = side_a._cache.get(key)
    if cached is None or cached[0] is not side_b:
        g_a, g_b = np.asarray(side_a.g, dtype=np.float64), np.asarray(side_b.g, dtype=np.float64)
        chunks = coalesce_blocks(_joined(_blocks_of(side_a, side_a.g), _blocks_of(side_b, side_b.g)))
        try:  # each block symmetrised and inverted on its own; exactly symmetric
            metric = [(s, e, spd_inverse(g_a[s:e, s:e] + g_b[s:e, s:e], [(0, e - s)], symmetrize=True)) for s, e in chunks]
        except np.linalg.LinAlgError:
            metric = [(0, g_a.shape[0], _inverse_of_sum(g_a + g_b))]
        cached = side_a._cache[key] = (side_b, metric)
    return cached[1]


def _blocks_of(side: MergeSide, matrix: np.ndarray) -> list[tuple[int, int]]:
    """The diagonal blocks of one of the side's matrices, found once (``g`` is ``H^-1`` itself when
    every coordinate is shared: one search serves both)."""
    key = ("blocks", id(matrix))
    if key not in side._cache:
        side._cache[key] = diagonal_blocks(matrix)
    return side._cache[key]


def _joined(blocks_a: list[tuple[int, int]], blocks_b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The finest partition of ``[0, n)`` into intervals that each block of either list lies within."""
    ends_a, ends_b = {e for _, e in blocks_a}, {e for _, e in blocks_b}
    cuts = sorted(ends_a & ends_b)  # a cut is common to both partitions
    starts = [0] + cuts[:-1]
    return list(zip(starts, cuts))


def _inverse_of_sum(total: np.ndarray) -> np.ndarray:
    try:
        return spd_inverse(total, symmetrize=True)  # exactly symmetric
    except np.linalg.LinAlgError:
        metric = np.linalg.pinv(0.5 * (total + total.T), hermitian=True)
        return 0.5 * (metric + metric.T)


def _check_pair(side_a: MergeSide, side_b: MergeSide) -> None:
    if side_a.shared_index.shape != side_b.shared_index.shape:
        raise ValueError(
            f"Both sides need the same number of shared coordinates; got "
            f"{side_a.shared_index.size} and {side_b.shared_index.size}."
        )


def merge_metric(g_a: np.ndarray, g_b: np.ndarray) -> np.ndarray:
    """``M = (G_A + G_B)^-1`` (symmetric positive definite when both G are).

    Example:
        >>> merge_metric(np.eye(2), np.eye(2))
        array([[0.5, 0. ],
               [0. , 0.5]])
    """
    return _inverse_of_sum(np.asarray(g_a, dtype=np.float64) + np.asarray(g_b, dtype=np.float64))


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
    metric = _metric(side_a, side_b)
    a = side_a.shared_weights
    b = side_b.shared_weights
    am = blocks_product(a, metric)
    bm = blocks_product(b, metric)
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
    metric = _metric(side_a, side_b)
    diff = side_a.shared_weights[rows] - side_b.shared_weights[cols]
    md = blocks_product(diff, metric)
    new_a[rows] -= side_a.update_directions(md)
    new_b[cols] += side_b.update_directions(md)
    if snap:
        common = 0.5 * (new_a[np.ix_(rows, side_a.shared_index)] + new_b[np.ix_(cols, side_b.shared_index)])
        new_a[np.ix_(rows, side_a.shared_index)] = common
        new_b[np.ix_(cols, side_b.shared_index)] = common
    return new_a, new_b
