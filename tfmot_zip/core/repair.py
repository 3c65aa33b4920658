"""Per-task statistics repair of merged units (numpy only).

REPAIR (Jordan et al., ICLR 2023) resets the statistics of merged units to those of the units they
replace. For one task and one unit with pre-activation ``z`` (the merged network's) and ``z0``
(the original network's, on the same inputs), the affine ``s * z + c`` with

    s = std(z0) / std(z),   c = mean(z0) - s * mean(z)

has exactly the mean and standard deviation of ``z0``. A unit whose merged pre-activation is
(almost) constant (``std(z) <= min_std``) cannot be rescaled: it keeps ``s = 1`` and is only
shifted (``c = mean(z0) - mean(z)``), and is reported as guarded.

:class:`MomentAccumulator` streams the per-column mean and variance in float64 (Chan et al.'s
pairwise update, stable for large counts and offsets); convolution outputs are reshaped to
``[batch * positions, channels]`` first, so a channel's statistics run over samples and positions.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Callable

import numpy as np

__all__ = ["MomentAccumulator", "AffineRepair", "fit_affine"]


class MomentAccumulator:
    """Streaming per-column mean and variance (float64) of ``[n, units]`` batches.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> values = rng.normal(3.0, 2.0, size=(500, 4))
        >>> moments = MomentAccumulator(4)
        >>> for batch in np.array_split(values, 7):
        ...     moments.update(batch)
        >>> bool(np.allclose(moments.mean, values.mean(0)) and np.allclose(moments.std, values.std(0)))
        True
    """

    def __init__(self, units: int):
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Expected a positive number of units. Received: units={units!r}")
        self.units = int(units)
        self.count = 0
        self.mean = np.zeros(self.units)
        self._m2 = np.zeros(self.units)  # sum of squared deviations from the mean

    def update(self, values: np.ndarray) -> None:
        """Adds a batch ``[n, units]`` (any leading shape: ``[..., units]`` is flattened)."""
        values = np.asarray(values, np.float64)
        if values.ndim == 0 or values.shape[-1] != self.units:
            raise ValueError(f"Expected values with {self.units} units in the last axis; received shape {values.shape}.")
        values = values.reshape(-1, self.units)
        n = len(values)
        if n == 0:
            return
        batch_mean = values.mean(axis=0)
        batch_m2 = ((values - batch_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def reduce(self, sum_all: Callable[[list], list]) -> None:
        """Combines these moments with those ``sum_all`` sums them with (e.g. over the workers of a
        ``tf.distribute`` strategy): the counts and sums first, then the squared deviations about
        the combined mean (two reductions, as stable as the streaming update)."""
        count, total = sum_all([self.count, self.mean * self.count])
        mean = total / max(float(count), 1.0)
        (m2,) = sum_all([self._m2 + self.count * (self.mean - mean) ** 2])
        self.count, self.mean, self._m2 = int(round(float(count))), mean, m2

    @property
    def var(self) -> np.ndarray:
        """Population variance per unit (divides by the count)."""
        if self.count == 0:
            raise ValueError("No values were accumulated; call update() with at least one row first.")
        return self._m2 / self.count

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per unit."""
        return np.sqrt(self.var)


@dataclass
class AffineRepair:
    """The per-unit correction ``s * z + c`` and which units were guarded (kept ``s = 1``)."""

    scale: np.ndarray
    shift: np.ndarray
    guarded: np.ndarray  # bool per unit

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``scale * values + shift`` over the last axis.

        Example:
            >>> repair = AffineRepair(np.array([2.0]), np.array([1.0]), np.array([False]))
            >>> repair.apply(np.array([[0.0], [3.0]])).ravel().tolist()
            [1.0, 7.0]
        """
        return np.asarray(values) * self.scale + self.shift


def fit_affine(
    original_mean: np.ndarray,
    original_std: np.ndarray,
    merged_mean: np.ndarray,
    merged_std: np.ndarray,
    min_std: float = 1e-6,
) -> AffineRepair:
    """The affine that gives the merged units the original units' mean and standard deviation.

    Args:
        original_mean, original_std: per-unit statistics of the original pre-activations.
        merged_mean, merged_std: per-unit statistics of the merged pre-activations (same inputs).
        min_std: a merged unit with ``std <= min_std`` is guarded: ``s = 1``, only shifted.

    Returns:
        ``AffineRepair(scale, shift, guarded)`` (float64).

    Example:
        >>> repair = fit_affine(np.array([1.0, 5.0]), np.array([2.0, 1.0]),
        ...                     np.array([0.0, 2.0]), np.array([1.0, 0.0]))
        >>> repair.scale.tolist(), repair.shift.tolist(), repair.guarded.tolist()
        ([2.0, 1.0], [1.0, 3.0], [False, True])
    """
    arrays = [np.asarray(a, np.float64) for a in (original_mean, original_std, merged_mean, merged_std)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"Expected four 1-D arrays of one length (one entry per unit); received shapes {[a.shape for a in arrays]}.")
    if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(arrays[1] < 0) or np.any(arrays[3] < 0):
        raise ValueError("Expected finite statistics with non-negative standard deviations.")
    if not (np.isfinite(min_std) and min_std >= 0):
        raise ValueError(f"Expected a finite non-negative min_std. Received: min_std={min_std!r}")
    mean0, std0, mean, std = arrays
    guarded = std <= min_std
    scale = np.where(guarded, 1.0, std0 / np.where(guarded, 1.0, std))
    shift = mean0 - scale * mean
    return AffineRepair(scale, shift, guarded)
