"""MTZ merge costs and the constrained weight update (docs/METHOD.md).

Two *sides* are merged neuron by neuron. A side holds the incoming weight vectors of its
neurons as rows (bias as the last coordinate), the indices ``shared_index`` of the coordinates
that the other side sees through the same physical weight (set ``S``), and two operators taken
from its inverse layer Hessian: ``G = P H^-1 P^T`` (``[s, s]``) and ``U = H^-1 P^T`` (``[d, s]``).

Sharing neuron ``i`` of A with neuron ``j`` of B under the constraint ``P a_i == P b_j`` costs
``dE(i, j) = 1/2 d^T M d`` with ``d = P (a_i - b_j)`` and ``M = (G_A + G_B)^-1``; the minimising
update is ``a_i -= U_A M d`` and ``b_j += U_B M d``.

When every coordinate of both sides is shared (``P`` a permutation: the usual case of two models at
full sharing) and the sides hold their damped Hessians rather than inverses (:meth:`MergeSide.from_hessian`),
no Hessian is inverted. In the shared order, with ``S = H_A + H_B = L L^T``, ``M = (H_A^-1 + H_B^-1)^-1
= H_A - X^T X`` where ``X = L^-1 H_A``, and the update moves both sides to ``a_i - S^-1 H_B d``
(``H_A^-1 M = S^-1 H_B``): one Cholesky factor, one triangular solve and one symmetric product per
layer instead of three inverses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.linalg import blas, cho_solve, lapack, solve_triangular

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
        hessian: ``[d, d]`` the side's Hessian when the side was built from it (:meth:`from_hessian`;
            ``g`` and ``hessian_inverse`` are then computed only if asked for), else None; the damped
            Hessian is ``hessian + shift * I``.
        shift: the damping added to ``hessian``'s diagonal.

    Example:
        >>> h_inv = np.eye(3)
        >>> side = MergeSide.from_hessian_inverse(np.ones((2, 3)), h_inv, [0, 2])
        >>> side.g.shape, side.u.shape
        ((2, 2), (3, 2))
        >>> lazy = MergeSide.from_hessian(np.ones((2, 3)), 2.0 * np.eye(3), [0, 2])
        >>> lazy.g  # inverted on first use
        array([[0.5, 0. ],
               [0. , 0.5]])
    """

    weights: np.ndarray
    shared_index: np.ndarray
    _g: np.ndarray | None = None
    _inverse: np.ndarray | None = None
    hessian: np.ndarray | None = None
    shift: float = 0.0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_hessian_inverse(
        cls, weights: np.ndarray, hessian_inverse: np.ndarray, shared_index: Sequence[int]
    ) -> "MergeSide":
        """Builds a side of one task from its inverse (damped) layer Hessian."""
        w, h_inv, idx = _checked(weights, hessian_inverse, shared_index, "inverse Hessian")
        return cls(w, idx, h_inv if _every(idx, w.shape[1]) else h_inv[np.ix_(idx, idx)], h_inv)

    @classmethod
    def from_hessian(cls, weights: np.ndarray, hessian: np.ndarray, shared_index: Sequence[int],
                     shift: float = 0.0) -> "MergeSide":
        """Builds a side of one task from its layer Hessian, damped by ``shift`` (the side's Hessian is
        ``hessian + shift * I``, symmetric positive definite; ``hessian`` is read, never copied whole).

        Paired with another such side with which it shares every coordinate, the metric and the update
        need no inverse (module doc); otherwise the inverse is computed when first needed."""
        w, h, idx = _checked(weights, hessian, shared_index, "Hessian")
        return cls(w, idx, None, None, h, float(shift))

    @property
    def hessian_inverse(self) -> np.ndarray:
        """``[d, d]`` the side's (damped) inverse Hessian ``H^-1``."""
        if self._inverse is not None:
            return self._inverse
        if "inverse" not in self._cache:
            self._cache["inverse"] = spd_inverse(self.hessian, shift=self.shift)
        return self._cache["inverse"]

    @property
    def g(self) -> np.ndarray:
        """``[s, s]`` block ``P H^-1 P^T``."""
        if self._g is not None:
            return self._g
        if "g" not in self._cache:
            inverse, idx = self.hessian_inverse, self.shared_index
            self._cache["g"] = inverse if _every(idx, inverse.shape[0]) else inverse[np.ix_(idx, idx)]
        return self._cache["g"]

    @property
    def u(self) -> np.ndarray:
        """``[d, s]`` update operator ``H^-1 P^T``."""
        return self.hessian_inverse[:, self.shared_index]

    @property
    def shared_weights(self) -> np.ndarray:
        """``P w`` for every neuron: ``[n, s]`` (the weights themselves when ``P = I``; not to be written)."""
        idx = self.shared_index
        return self.weights if _every(idx, self.weights.shape[1]) else self.weights[:, idx]

    def update_directions(self, shared_steps: np.ndarray) -> np.ndarray:
        """``steps @ u.T = (steps P) H^-1`` for ``[k, s]`` steps on the shared coordinates, multiplied
        block by block when ``H^-1`` is block diagonal (e.g. a convolution's per-position blocks)."""
        blocks = _blocks_of(self, self.hessian_inverse)
        full = np.zeros((shared_steps.shape[0], self.weights.shape[1]))
        full[:, self.shared_index] = shared_steps
        return block_diagonal_product(full, self.hessian_inverse, blocks)


def _checked(weights, matrix, shared_index, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = np.asarray(weights, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    idx = np.asarray(shared_index, dtype=np.int64)
    if w.ndim != 2 or m.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"Expected weights [n, d] and a [d, d] {what}; received {w.shape} and {m.shape}.")
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= w.shape[1])):
        raise ValueError(f"shared_index must index the {w.shape[1]} coordinates; got {idx}.")
    return w, m, idx


def _every(idx: np.ndarray, dim: int) -> bool:
    """Whether ``idx`` is ``0..dim-1`` in order."""
    return idx.size == dim and bool(np.all(idx == np.arange(dim)))


def _permutes(side: MergeSide) -> bool:
    """Whether the side shares every coordinate (its ``shared_index`` a permutation)."""
    if "permutes" not in side._cache:
        idx, dim = side.shared_index, side.weights.shape[1]
        side._cache["permutes"] = idx.size == dim and _every(np.sort(idx), dim)
    return side._cache["permutes"]


def _shared_blocks(side: MergeSide) -> tuple[list[tuple[int, int]], Callable[[int, int], np.ndarray]]:
    """The diagonal blocks of the side's Hessian in ``shared_index`` order, and a reader of the block
    ``[start:stop]`` of that reordered Hessian. When the order keeps each block of the Hessian together
    (a convolution's channels permuted alike at every kernel position), only the blocks are copied, not
    the whole reordered matrix."""
    h, idx = side.hessian, side.shared_index
    if _every(idx, idx.size):
        return diagonal_blocks(h), lambda start, stop: h[start:stop, start:stop]
    position = np.empty_like(idx)
    position[idx] = np.arange(idx.size)  # shared position of each of the side's coordinates
    ranges = []
    for start, stop in diagonal_blocks(h):
        where = position[start:stop]
        low = int(where.min())
        if int(where.max()) - low + 1 != stop - start:  # the block is spread out: reorder the whole matrix
            whole = h[np.ix_(idx, idx)]
            return diagonal_blocks(whole), lambda a, b: whole[a:b, a:b]
        ranges.append((low, low + stop - start))
    return sorted(ranges), lambda start, stop: h[np.ix_(idx[start:stop], idx[start:stop])]


def _shifted(block: np.ndarray, shift: float) -> np.ndarray:
    """``block + shift * I`` (a copy when shifted)."""
    if not shift:
        return block
    out = block.copy()
    out[np.diag_indices_from(out)] += shift
    return out


def _factorised(side_a: MergeSide, side_b: MergeSide) -> list[tuple[int, int, np.ndarray, np.ndarray]] | None:
    """``[(start, stop, M block, (L, H_B block)), ...]`` for two sides holding Hessians and sharing every
    coordinate (module doc), per diagonal block of ``H_A`` and ``H_B`` in the shared order; None when the
    sides do not qualify or ``H_A + H_B`` is not positive definite (the inverses then decide)."""
    if side_a.hessian is None or side_b.hessian is None or not (_permutes(side_a) and _permutes(side_b)):
        return None
    (blocks_a, read_a), (blocks_b, read_b) = _shared_blocks(side_a), _shared_blocks(side_b)
    out = []
    for start, stop in coalesce_blocks(_joined(blocks_a, blocks_b)):
        a, b = _shifted(read_a(start, stop), side_a.shift), _shifted(read_b(start, stop), side_b.shift)
        total = a + b
        factor, info = lapack.dpotrf(0.5 * (total + total.T), lower=1, clean=1, overwrite_a=1)
        if info != 0:
            return None
        # M = H_A - H_A S^-1 H_A = H_B - H_B S^-1 H_B: from the smaller one, which loses less to cancellation
        base = a if np.trace(a) <= np.trace(b) else b
        x = solve_triangular(factor, base, lower=True, check_finite=False)
        metric = np.tril(base - blas.dsyrk(1.0, x, trans=1, lower=1))  # H - X^T X, lower triangle
        metric += np.tril(metric, -1).T  # exactly symmetric
        out.append((start, stop, metric, (factor, b)))
    return out


def _metric(side_a: MergeSide, side_b: MergeSide) -> list[tuple[int, int, np.ndarray]]:
    """``merge_metric(side_a.g, side_b.g)`` as its diagonal blocks ``[(start, stop, block), ...]``,
    computed once per pair of sides (the costs and the update of the same pair both need it); without
    an inverse when both sides hold Hessians and share every coordinate (:func:`_factorised`).

    The blocks of ``G_A + G_B`` are those of ``G_A`` and ``G_B`` joined where they overlap, so the
    sum and its inverse are never formed as dense matrices (for a wide convolution they are mostly
    zeros: a few hundred MB that would only be allocated, scanned and multiplied by zero)."""
    key = ("metric", id(side_b))
    cached = side_a._cache.get(key)
    if cached is None or cached[0] is not side_b:
        factorised = _factorised(side_a, side_b)
        if factorised is not None:
            cached = side_a._cache[key] = (side_b, [(s, e, m) for s, e, m, _ in factorised],
                                           [(s, e, f) for s, e, _, f in factorised])
            return cached[1]
        g_a, g_b = np.asarray(side_a.g, dtype=np.float64), np.asarray(side_b.g, dtype=np.float64)
        chunks = coalesce_blocks(_joined(_blocks_of(side_a, side_a.g), _blocks_of(side_b, side_b.g)))
        try:  # each block symmetrised and inverted on its own; exactly symmetric
            metric = [(s, e, spd_inverse(g_a[s:e, s:e] + g_b[s:e, s:e], [(0, e - s)], symmetrize=True)) for s, e in chunks]
        except np.linalg.LinAlgError:
            metric = [(0, g_a.shape[0], _inverse_of_sum(g_a + g_b))]
        cached = side_a._cache[key] = (side_b, metric, None)
    return cached[1]


def _merged_solver(side_a: MergeSide, side_b: MergeSide) -> list | None:
    """The factors ``[(start, stop, (L, H_B block)), ...]`` of the factorised metric of this pair
    (computed with it), or None when the metric came from the inverses."""
    _metric(side_a, side_b)
    return side_a._cache[("metric", id(side_b))][2]


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
    solver = _merged_solver(side_a, side_b)
    if solver is not None:  # every coordinate shared: both move to a - S^-1 H_B d (module doc)
        step = np.empty_like(diff)
        for start, stop, (factor, h_b) in solver:
            step[:, start:stop] = cho_solve((factor, True), h_b @ diff[:, start:stop].T, check_finite=False).T
        merged = side_a.shared_weights[rows] - step
        new_a[np.ix_(rows, side_a.shared_index)] = merged
        new_b[np.ix_(cols, side_b.shared_index)] = merged
        return new_a, new_b
    md = blocks_product(diff, metric)
    new_a[rows] -= side_a.update_directions(md)
    new_b[cols] += side_b.update_directions(md)
    if snap:
        common = 0.5 * (new_a[np.ix_(rows, side_a.shared_index)] + new_b[np.ix_(cols, side_b.shared_index)])
        new_a[np.ix_(rows, side_a.shared_index)] = common
        new_b[np.ix_(cols, side_b.shared_index)] = common
    return new_a, new_b
