"""Inverses of symmetric positive definite matrices that respect a block-diagonal layout.

A convolution's layer Hessian under the per-kernel-position approximation (and every matrix built
from it by selecting coordinates in order) is block diagonal: ``kh * kw`` blocks of ``C x C`` plus
the bias. Inverting it as one dense matrix costs ``(kh kw C)^3``; block by block it costs
``kh kw C^3``, 81 times less for a 3x3 kernel. :func:`spd_inverse` finds the contiguous diagonal
blocks of any symmetric matrix (one block when it is dense) and inverts each through its Cholesky
factor (LAPACK ``potrf`` + ``potri``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg.lapack as lapack

__all__ = ["block_diagonal_product", "blocks_product", "coalesce_blocks", "diagonal_blocks", "spd_inverse", "SummedStatistics"]


def diagonal_blocks(matrix: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: the finest contiguous diagonal blocks of a symmetric matrix
    outside which it is exactly zero.

    Example:
        >>> m = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
        >>> diagonal_blocks(m)
        [(0, 2), (2, 3)]
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"Expected a square matrix; received shape {m.shape}.")
    n = m.shape[0]
    if n == 0:
        return []
    nonzero = m != 0
    index = np.arange(n)
    # First nonzero column of each row (rows scanned forward, contiguous); by symmetry a block
    # starts at k exactly when no row at or below k reaches left of k.
    first = np.where(nonzero.any(axis=1), np.argmax(nonzero, axis=1), index)
    reach = np.minimum.accumulate(np.minimum(first, index)[::-1])[::-1]
    starts = np.flatnonzero(reach == index)
    ends = np.append(starts[1:], n)
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def coalesce_blocks(blocks: list[tuple[int, int]], min_size: int = 64) -> list[tuple[int, int]]:
    """Joins neighbouring diagonal blocks into chunks of at least ``min_size`` rows (a block already
    that large stays alone), so that many tiny blocks (dead inputs, a convolution's padded kernel
    positions) cost a few dense operations instead of one Python call each. A chunk of blocks is
    itself block diagonal, so any product or factorisation done chunk by chunk stays exact.

    Example:
        >>> coalesce_blocks([(0, 1), (1, 2), (2, 3), (3, 10), (10, 11)], min_size=3)
        [(0, 3), (3, 10), (10, 11)]
    """
    out: list[tuple[int, int]] = []
    for start, stop in blocks:
        if out and out[-1][1] - out[-1][0] < min_size and stop - start < min_size:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def spd_inverse(matrix: np.ndarray, blocks: list[tuple[int, int]] | None = None, symmetrize: bool = False,
                shift: float = 0.0) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix, block by block where it is block diagonal.

    Reads the lower triangle of ``matrix`` (``symmetrize=True`` uses ``(B + B^T) / 2`` of each block
    instead, for a matrix symmetric only up to round-off); the inverse is exactly symmetric.
    ``blocks`` (e.g. from :func:`diagonal_blocks`) skips the search for them. ``shift`` inverts
    ``matrix + shift * I`` (e.g. a damping) without a shifted copy of the whole matrix.

    Raises:
        numpy.linalg.LinAlgError: when a block is not positive definite.

    Example:
        >>> m = np.array([[4.0, 2.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 2.0]])
        >>> bool(np.allclose(spd_inverse(m), np.linalg.inv(m)))
        True
    """
    m = np.asarray(matrix, dtype=np.float64)
    blocks = coalesce_blocks(diagonal_blocks(m) if blocks is None else blocks)
    # np.zeros, not zeros_like: fresh zero pages that only the blocks touch (zeros_like writes every
    # page; a 3x3 conv's 4,609-wide inverse of 9 blocks is 170 MB of which the blocks are 19 MB)
    out = np.empty_like(m) if len(blocks) == 1 else np.zeros(m.shape)
    for start, stop in blocks:
        block = m[start:stop, start:stop]
        if symmetrize or shift:
            block = 0.5 * (block + block.T) if symmetrize else block.copy()
            block[np.diag_indices_from(block)] += shift
        factor, info = lapack.dpotrf(block, lower=1, clean=1, overwrite_a=int(symmetrize or bool(shift)))
        if info != 0:
            raise np.linalg.LinAlgError(f"Block [{start}:{stop}] is not positive definite (LAPACK info {info}).")
        inverse, info = lapack.dpotri(factor, lower=1, overwrite_c=1)  # the lower triangle; the upper stays 0
        if info != 0:
            raise np.linalg.LinAlgError(f"Block [{start}:{stop}] is singular (LAPACK info {info}).")
        full = inverse + inverse.T
        np.fill_diagonal(full, np.diagonal(inverse))
        out[start:stop, start:stop] = full
    return out


def block_diagonal_product(a: np.ndarray, matrix: np.ndarray, blocks: list[tuple[int, int]] | None = None) -> np.ndarray:
    """``a @ matrix`` for a block-diagonal ``matrix``, one product per (coalesced) diagonal block.

    A convolution's inverse Hessian with per-kernel-position blocks, or with inputs that never
    fire, costs a fraction of the dense product this way. ``blocks`` (e.g. from
    :func:`diagonal_blocks`) skips the search for them.

    Example:
        >>> m = np.diag([2.0, 3.0])
        >>> block_diagonal_product(np.ones((1, 2)), m)
        array([[2., 3.]])
    """
    m = np.asarray(matrix, dtype=np.float64)
    blocks = coalesce_blocks(diagonal_blocks(m) if blocks is None else blocks)
    return blocks_product(a, [(start, stop, m[start:stop, start:stop]) for start, stop in blocks])


def blocks_product(a: np.ndarray, blocks: list[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """``a @ M`` for a block-diagonal ``M`` given as its blocks ``[(start, stop, block), ...]``
    (tiling its rows in order), never formed as a dense matrix.

    Example:
        >>> blocks_product(np.ones((1, 3)), [(0, 1, np.array([[2.0]])), (1, 3, np.eye(2))])
        array([[2., 1., 1.]])
    """
    a = np.asarray(a, dtype=np.float64)
    if len(blocks) == 1:
        return a @ blocks[0][2]
    out = np.empty(a.shape)
    for start, stop, block in blocks:
        out[:, start:stop] = a[:, start:stop] @ block
    return out


class SummedStatistics:
    """Mixin of streaming accumulators whose state is raw sums plus a sample ``count``: ``_sums``
    names the array attributes. :meth:`reduce` replaces them, e.g. by their sum over the workers of
    a ``tf.distribute`` strategy (:meth:`tfmot_zip.zipping.distribute.Replicas.sum_all`).

    Example:
        >>> class Total(SummedStatistics):
        ...     _sums = ("total",)
        ...     def __init__(self, total, count):
        ...         self.total, self.count = np.asarray(total, float), count
        >>> acc = Total([1.0, 2.0], 3)
        >>> acc.reduce(lambda arrays: [2 * np.asarray(a, float) for a in arrays])  # two equal workers
        >>> acc.total.tolist(), acc.count
        ([2.0, 4.0], 6)
    """

    _sums: tuple[str, ...] = ()
    count: int

    def reduce(self, sum_all: Callable[[list], list]) -> None:
        """Replaces the sums and the count by ``sum_all([*sums, count])`` (one call, in that order)."""
        *sums, count = sum_all([getattr(self, name) for name in self._sums] + [self.count])
        for name, value in zip(self._sums, sums):
            setattr(self, name, value)
        self.count = int(round(float(count)))

