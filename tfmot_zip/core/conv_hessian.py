"""The exact patch Hessian of a stride-1 Conv2D, accumulated from shifted products of its input
maps instead of from its patch rows.

A patch row of a convolution holds, at kernel position ``(a, b)``, the input pixel
``x[i + a*dh - pt, j + b*dw - pl]`` of output position ``(i, j)`` (zero where that falls in the
padding). The block of ``sum(patch patch^T)`` that couples kernel positions ``(a, b)`` and
``(a', b')`` is therefore

    sum over pixels q in the rectangle R_ab of  x[q] x[q + delta]^T,    delta = ((a'-a)*dh, (b'-b)*dw)

where ``R_ab`` is the window of input pixels that position ``(a, b)`` reads, clipped to the image.
It depends on the pair only through ``delta`` and the rectangle. The pixel grid is cut into band
cells at every edge of a rectangle ``R_ab`` and of an offset's valid pixels (those whose partner is
in the image), and the accumulator keeps, for each of the ``((2kh - 1)(2kw - 1) + 1) / 2`` offsets up
to sign, the products ``sum x[q] x[q + delta]^T`` summed over the samples and the pixels of each cell.
At the end every block is a rectangle sum of cells (2-D prefix sums); the negative offsets are the
transposes, the blocks of ``(a', b'), (a, b)``. One row of a cell, over every sample of a batch, is a
contiguous slice of the maps stored ``[h, w, n, C]``, so each product is one matrix product without
a copy.

No patch row is ever formed: per sample it costs ``offsets * h * w * C^2`` multiply-adds against
``(kh * kw * C)^2 * out_h * out_w`` for the patch product (13 against 81 per pixel and channel pair
for a 3x3 kernel, 41 against 625 for 5x5), and reads the input maps instead of a ``kh * kw`` times
larger patch matrix. Strided convolutions read a sub-lattice whose blocks do not share offsets; they
take the patch rows or :mod:`tfmot_zip.core.pixel_gram` (:func:`~tfmot_zip.core.pixel_gram.conv_hessian_plan`
chooses).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.core.hessian import check_finite, check_maps, pad_amounts, conv_output_shape
from tfmot_zip.core.linalg import SummedStatistics

__all__ = ["ConvHessianAccumulator"]

class ConvHessianAccumulator(SummedStatistics):
    """Streaming ``E[x~ x~^T]`` of a stride-1 Conv2D's patch rows (bias coordinate last), from
    batches of its input maps ``[n, h, w, C]``; equal to :class:`~tfmot_zip.core.hessian.HessianAccumulator`
    fed :func:`~tfmot_zip.core.hessian.extract_patches` of the same batches (to float rounding).

    ``block=True`` keeps only the per-kernel-position blocks, as
    :class:`~tfmot_zip.core.hessian.BlockHessianAccumulator` (one offset instead of 13 for 3x3).
    Each batch's products are taken in ``batch_dtype`` and summed in float64.

    Example:
        >>> from tfmot_zip.core.hessian import HessianAccumulator, extract_patches
        >>> x = np.arange(2 * 4 * 4 * 2, dtype=float).reshape(2, 4, 4, 2) % 5
        >>> acc = ConvHessianAccumulator((4, 4), 2, (3, 3), padding="same", batch_dtype=np.float64)
        >>> acc.update(x)
        >>> ref = HessianAccumulator(18)
        >>> ref.update(extract_patches(x, (3, 3), padding="same"))
        >>> bool(np.allclose(acc.hessian(), ref.hessian()))
        True
    """

    _sums = ("_products", "_totals")

    def __init__(
        self,
        spatial: Sequence[int],
        channels: int,
        kernel_size: Sequence[int],
        padding: str = "valid",
        dilation: Sequence[int] = (1, 1),
        block: bool = False,
        batch_dtype: type = np.float32,
    ):
        self.spatial = tuple(int(s) for s in spatial)
        self.kernel = tuple(int(k) for k in kernel_size)
        self.rate = tuple(int(d) for d in dilation)
        self.channels = int(channels)
        if self.channels <= 0 or min(self.spatial + self.kernel + self.rate) <= 0:
            raise ValueError(
                f"Expected positive sizes. Received spatial={self.spatial}, channels={channels}, "
                f"kernel_size={self.kernel}, dilation={self.rate}."
            )
        self.out = conv_output_shape(self.spatial, self.kernel, (1, 1), padding, self.rate)
        if min(self.out) <= 0:
            raise ValueError(
                f"Kernel {self.kernel} (dilation {self.rate}) does not fit input {self.spatial} with padding {padding!r}."
            )
        self.pad = tuple(pad_amounts(s, k, 1, padding, d)[0] for s, k, d in zip(self.spatial, self.kernel, self.rate))
        kh, kw = self.kernel
        self.block = bool(block)
        self.offsets = [(0, 0)] if self.block else [
            (i, j) for i in range(kh) for j in range(-(kw - 1), kw) if i > 0 or j >= 0
        ]  # in kernel steps, up to sign
        self.dim = kh * kw * self.channels
        self.batch_dtype = np.dtype(batch_dtype)
        # The pixel grid is cut into bands at every edge of a rectangle R_ab and of an offset's
        # valid pixels (those whose partner lies in the image); the sums are kept per band cell.
        self.bounds = [self._band_edges(axis) for axis in (0, 1)]
        cells = tuple(len(b) - 1 for b in self.bounds)
        self._products = np.zeros((len(self.offsets),) + cells + (self.channels, self.channels))
        self._totals = np.zeros(cells + (self.channels,))
        self.count = 0  # patch rows: samples * out_h * out_w

    def _pixel_range(self, k: int, axis: int) -> tuple[int, int]:
        """The input pixels kernel step ``k`` reads along ``axis``, clipped to the image."""
        lo = k * self.rate[axis] - self.pad[axis]
        return min(max(lo, 0), self.spatial[axis]), min(max(lo + self.out[axis], 0), self.spatial[axis])

    def _valid_range(self, step: int, axis: int) -> tuple[int, int]:
        """The pixels whose partner at ``step`` kernel steps along ``axis`` lies in the image."""
        shift, size = step * self.rate[axis], self.spatial[axis]
        return min(max(0, -shift), size), max(0, min(size, size - shift))

    def _band_edges(self, axis: int) -> list[int]:
        steps = range(-(self.kernel[axis] - 1), self.kernel[axis])
        edges = {0, self.spatial[axis]}
        edges.update(e for k in range(self.kernel[axis]) for e in self._pixel_range(k, axis))
        edges.update(e for k in steps for e in self._valid_range(k, axis))
        return sorted(edges)

    def update(self, images: np.ndarray) -> None:
        """Adds a batch of input maps ``[n, h, w, C]``; a batch with a non-finite value is refused
        and leaves the sums as they were."""
        x = check_maps(images, self.spatial, self.channels)
        if x.shape[0] == 0:
            return
        (h, w), (rows, cols), c = self.spatial, self.bounds, self.channels
        pixels = np.ascontiguousarray(x.astype(self.batch_dtype, copy=False).transpose(1, 2, 0, 3))  # [h, w, n, C]
        band = np.searchsorted(rows, np.arange(h), side="right") - 1  # the row band of every row
        products = np.zeros_like(self._products)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs are refused below
            for k, (i, j) in enumerate(self.offsets):
                dr, dc = i * self.rate[0], j * self.rate[1]
                (r0, r1), (c0, c1) = self._valid_range(i, 0), self._valid_range(j, 1)
                cells = [(v, cols[v], cols[v + 1]) for v in range(cols.index(c0), cols.index(c1))]
                for r in range(r0, r1):
                    # a row's pixels in a column cell, over every sample, are contiguous: no copy
                    for v, a, b in cells:
                        left = pixels[r, a:b].reshape(-1, c)
                        products[k, band[r], v] += left.T @ pixels[r + dr, a + dc : b + dc].reshape(-1, c)
        check_finite(np.diagonal(products[0], axis1=2, axis2=3))  # offset (0, 0): every x^2
        self._products += products
        self._totals += np.add.reduceat(np.add.reduceat(pixels.sum(axis=2, dtype=np.float64), rows[:-1], 0), cols[:-1], 1)
        self.count += x.shape[0] * self.out[0] * self.out[1]

    def hessian(self) -> np.ndarray:
        """``E[x~ x~^T]`` as a ``[dim + 1, dim + 1]`` float64 matrix, rows ordered as
        :func:`~tfmot_zip.core.hessian.extract_patches` (kernel position major, channel minor)."""
        if self.count == 0:
            raise ValueError("No layer inputs were accumulated; pass non-empty calibration data.")
        kh, kw = self.kernel
        c, n = self.channels, float(self.count)
        prefix = {o: _prefix_sums(self._products[k]) for k, o in enumerate(self.offsets)}
        band = [{e: i for i, e in enumerate(b)} for b in self.bounds]
        rows = [tuple(band[0][e] for e in self._pixel_range(a, 0)) for a in range(kh)]
        cols = [tuple(band[1][e] for e in self._pixel_range(b, 1)) for b in range(kw)]
        h = np.zeros((self.dim + 1, self.dim + 1))
        positions = [(a, b) for a in range(kh) for b in range(kw)]
        for p, (a, b) in enumerate(positions):
            for q, (a2, b2) in enumerate(positions):
                offset = (a2 - a, b2 - b)
                if offset not in prefix:  # its transpose is the block (q, p)
                    continue
                block = _rectangle(prefix[offset], rows[a], cols[b]) / n
                h[p * c : (p + 1) * c, q * c : (q + 1) * c] = block
                h[q * c : (q + 1) * c, p * c : (p + 1) * c] = block.T
        if not self.block:
            totals = _prefix_sums(self._totals)
            for p, (a, b) in enumerate(positions):
                mean = _rectangle(totals, rows[a], cols[b]) / n
                h[p * c : (p + 1) * c, self.dim] = mean
                h[self.dim, p * c : (p + 1) * c] = mean
        h[self.dim, self.dim] = 1.0
        return h


def _prefix_sums(values: np.ndarray) -> np.ndarray:
    """``S[r, c] = values[:r, :c].sum((0, 1))`` over band cells (a leading zero row and column)."""
    out = np.zeros((values.shape[0] + 1, values.shape[1] + 1) + values.shape[2:])
    np.cumsum(values, axis=0, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, out=out[1:, 1:])
    return out


def _rectangle(prefix: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """The sum of the cells ``rows[0] <= r < rows[1]``, ``cols[0] <= c < cols[1]``."""
    (r0, r1), (c0, c1) = rows, cols
    return prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0]
