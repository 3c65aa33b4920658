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

__all__ = ["diagonal_blocks", "spd_inverse", "SummedStatistics"]


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
    last = np.where(nonzero.any(axis=1), n - 1 - np.argmax(nonzero[:, ::-1], axis=1), index)
    reach = np.maximum.accumulate(np.maximum(last, index))
    ends = np.flatnonzero(reach == index) + 1
    starts = np.concatenate([[0], ends[:-1]])
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def spd_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix, block by block where it is block diagonal.

    Raises:
        numpy.linalg.LinAlgError: when a block is not positive definite.

    Example:
        >>> m = np.array([[4.0, 2.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 2.0]])
        >>> bool(np.allclose(spd_inverse(m), np.linalg.inv(m)))
        True
    """
    m = np.asarray(matrix, dtype=np.float64)
    out = np.zeros_like(m)
    for start, stop in diagonal_blocks(m):
        block = m[start:stop, start:stop]
        factor, info = lapack.dpotrf(block, lower=1, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"Block [{start}:{stop}] is not positive definite (LAPACK info {info}).")
        inverse, info = lapack.dpotri(factor, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"Block [{start}:{stop}] is singular (LAPACK info {info}).")
        lower = np.tril(inverse)
        out[start:stop, start:stop] = lower + np.tril(lower, -1).T
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

