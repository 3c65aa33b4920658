"""The exact patch Hessian of a stride-1 Conv2D, accumulated from shifted products of its input
maps instead of from its patch rows.

A patch row of a convolution holds, at kernel position ``(a, b)``, the input pixel
``x[i + a*dh - pt, j + b*dw - pl]`` of output position ``(i, j)`` (zero where that falls in the
padding). The block of ``sum(patch patch^T)`` that couples kernel positions ``(a, b)`` and
``(a', b')`` is therefore

    sum over pixels q in the rectangle R_ab of  x[q] x[q + delta]^T,    delta = ((a'-a)*dh, (b'-b)*dw)

where ``R_ab`` is the window of input pixels that position ``(a, b)`` reads, clipped to the image.
It depends on the pair only through ``delta`` and the rectangle. The pixel grid is cut into band
cells at every edge of a rectangle ``R_ab``, and the accumulator keeps, for each of the
``((2kh - 1)(2kw - 1) + 1) / 2`` offsets up to sign, the products ``sum x[q] x[q + delta]^T`` summed
over the samples and the pixels of each cell, with ``x`` zero outside the image (a pixel whose partner
falls outside adds nothing). At the end every block is the sum of the cells of a rectangle;
the negative offsets are the transposes, the blocks of ``(a', b'), (a, b)``. The maps are stored
``[h, w, n, C]`` with zero padding, so a run of pixels of one row, over the samples, is a contiguous
slice and each product is one matrix product without a copy; the products of one row for every
offset are taken together on a few samples, while the rows are still in cache.

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
from numpy.lib.stride_tricks import as_strided

from tfmot_zip.core.hessian import check_finite, check_maps, pad_amounts, conv_output_shape
from tfmot_zip.core.linalg import SummedStatistics

__all__ = ["ConvHessianAccumulator"]

class ConvHessianAccumulator(SummedStatistics):
    """Streaming ``E[x~ x~^T]`` of a stride-1 Conv2D's patch rows (bias coordinate last), from
    batches of its input maps ``[n, h, w, C]``; equal to :class:`~tfmot_zip.core.hessian.HessianAccumulator`
    fed :func:`~tfmot_zip.core.hessian.extract_patches` of the same batches (to float rounding).

    ``block=True`` keeps only the per-kernel-position blocks, as
    :class:`~tfmot_zip.core.hessian.BlockHessianAccumulator` (one offset instead of 13 for 3x3).
    Each batch's products are taken in ``batch_dtype`` and summed in float64, a few samples at a
    time: as many as give the products of one row about ``product_rows`` rows.

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
        product_rows: int = 2048,
    ):
        self.spatial = tuple(int(s) for s in spatial)
        self.product_rows = int(product_rows)
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
        # The pixel grid is cut into bands at every edge of a rectangle R_ab; the sums are kept per
        # band cell (a partner outside the image reads the zero padding).
        self.bounds = [self._band_edges(axis) for axis in (0, 1)]
        cells = tuple(len(b) - 1 for b in self.bounds)
        # The loop's geometry (see _add_products): the widest column cell, taken row by row; the
        # other (narrow) cells' columns with their cell; every row's band; the offsets of each row
        # shift, consecutive in self.offsets, as ranges (k0, k1, shift).
        rows, cols = self.bounds
        self._widest = int(np.argmax(np.diff(cols)))
        a, b = cols[self._widest], cols[self._widest + 1]
        self._narrow = [(col, int(np.searchsorted(cols, col, side="right")) - 1) for col in range(self.spatial[1])
                        if not a <= col < b]
        self._row_band = np.searchsorted(rows, np.arange(self.spatial[0]), side="right") - 1
        side, kw, rw = (self.kernel[1] - 1) * self.rate[1], self.kernel[1], self.rate[1]
        # the padded columns the narrow cells read (theirs and their partners'), in order
        self._narrow_columns = sorted({col + side + j * rw for col, _ in self._narrow for j in range(-(kw - 1), kw)})
        shifts = [di for di, _ in self.offsets]
        self._row_groups = [(shifts.index(i), len(shifts) - shifts[::-1].index(i), i) for i in sorted(set(shifts))]
        self._products = np.zeros((len(self.offsets),) + cells + (self.channels, self.channels))
        self._totals = np.zeros(cells + (self.channels,))
        self.count = 0  # patch rows: samples * out_h * out_w

    def _pixel_range(self, k: int, axis: int) -> tuple[int, int]:
        """The input pixels kernel step ``k`` reads along ``axis``, clipped to the image."""
        lo = k * self.rate[axis] - self.pad[axis]
        return min(max(lo, 0), self.spatial[axis]), min(max(lo + self.out[axis], 0), self.spatial[axis])

    def _band_edges(self, axis: int) -> list[int]:
        edges = {0, self.spatial[axis]}
        edges.update(e for k in range(self.kernel[axis]) for e in self._pixel_range(k, axis))
        return sorted(edges)

    def update(self, images: np.ndarray) -> None:
        """Adds a batch of input maps ``[n, h, w, C]``; a batch with a non-finite value is refused
        and leaves the sums as they were."""
        x = check_maps(images, self.spatial, self.channels)
        if x.shape[0] == 0:
            return
        rows, cols = self.bounds
        step = max(1, self.product_rows // int(cols[self._widest + 1] - cols[self._widest]))
        products = np.zeros_like(self._products)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs are refused below
            for start in range(0, x.shape[0], step):
                self._add_products(x[start : start + step], products)
        check_finite(np.diagonal(products[0], axis1=2, axis2=3))  # offset (0, 0): every x^2
        self._products += products
        self._totals += np.add.reduceat(np.add.reduceat(x.sum(axis=0, dtype=np.float64), rows[:-1], 0), cols[:-1], 1)
        self.count += x.shape[0] * self.out[0] * self.out[1]

    def _add_products(self, x: np.ndarray, products: np.ndarray) -> None:
        """Adds the cell products of a few samples ``x`` to ``products``.

        The maps are laid out ``[row, column, sample, C]`` with zero padding below and on both sides,
        so that a partner outside the image reads zeros and a run of pixels of one row, over the
        samples, is contiguous. The widest column cell is multiplied row by row, once per offset
        (a few samples at a time, so that the rows stay in cache across the offsets); the columns of
        the other (narrow) cells are copied out column-major and multiplied a row band at a time."""
        (h, w), (kh, kw), (rh, rw), c = self.spatial, self.kernel, self.rate, self.channels
        rows, cols = self.bounds
        n, side = x.shape[0], (kw - 1) * rw
        width = w + 2 * side
        padded = np.zeros((h + (kh - 1) * rh, width, n, c), self.batch_dtype)
        padded[:h, side : side + w] = x.transpose(1, 2, 0, 3)
        flat = padded.reshape(-1, c)
        widest = self._widest
        a, b = cols[widest], cols[widest + 1]
        length = (b - a) * n
        # the offsets of one row shift, partners one kernel column apart: one strided stack each
        groups = [(k0, k1, i * rh, (i * rh * width + self.offsets[k0][1] * rw) * n) for k0, k1, i in self._row_groups]
        item = flat.itemsize
        for r in range(h):
            start = (r * width + side + a) * n
            left = flat[start : start + length].T
            for k0, k1, down, first in groups:
                if r + down < h:  # else the partner row is padding
                    partners = as_strided(flat[start + first :], shape=(k1 - k0, length, c),
                                          strides=(rw * n * c * item, c * item, item), writeable=False)
                    products[k0:k1, self._row_band[r], widest] += np.matmul(left, partners)
        if self._narrow:
            index = {col: q for q, col in enumerate(self._narrow_columns)}
            columns = np.ascontiguousarray(padded[:, self._narrow_columns].transpose(1, 0, 2, 3))  # [column, row, sample, C]
            for col, v in self._narrow:
                for u, (r0, r1) in enumerate(zip(rows[:-1], rows[1:])):
                    left = columns[index[col + side], r0:r1].reshape(-1, c).T
                    for k, (i, j) in enumerate(self.offsets):
                        right = columns[index[col + side + j * rw], r0 + i * rh : r1 + i * rh]
                        products[k, u, v] += left @ right.reshape(-1, c)

    def hessian(self) -> np.ndarray:
        """``E[x~ x~^T]`` as a ``[dim + 1, dim + 1]`` float64 matrix, rows ordered as
        :func:`~tfmot_zip.core.hessian.extract_patches` (kernel position major, channel minor)."""
        if self.count == 0:
            raise ValueError("No layer inputs were accumulated; pass non-empty calibration data.")
        kh, kw = self.kernel
        c, n = self.channels, float(self.count)
        offsets = {o: k for k, o in enumerate(self.offsets)}
        band = [{e: i for i, e in enumerate(b)} for b in self.bounds]
        rows = [tuple(band[0][e] for e in self._pixel_range(a, 0)) for a in range(kh)]
        cols = [tuple(band[1][e] for e in self._pixel_range(b, 1)) for b in range(kw)]
        h = np.zeros((self.dim + 1, self.dim + 1))
        # a kernel position whose rectangle is empty reads only padding: its rows and columns stay 0
        positions = [(p, a, b) for p, (a, b) in enumerate((a, b) for a in range(kh) for b in range(kw))
                     if rows[a][0] < rows[a][1] and cols[b][0] < cols[b][1]]
        for p, a, b in positions:
            (r0, r1), (c0, c1) = rows[a], cols[b]
            for q, a2, b2 in positions:
                k = offsets.get((a2 - a, b2 - b))
                if k is None:  # its transpose is the block (q, p)
                    continue
                block = self._products[k, r0:r1, c0:c1].sum(axis=(0, 1)) / n  # the rectangle's cells
                h[p * c : (p + 1) * c, q * c : (q + 1) * c] = block
                h[q * c : (q + 1) * c, p * c : (p + 1) * c] = block.T
            if not self.block:
                mean = self._totals[r0:r1, c0:c1].sum(axis=(0, 1)) / n
                h[p * c : (p + 1) * c, self.dim] = mean
                h[self.dim, p * c : (p + 1) * c] = mean
        h[self.dim, self.dim] = 1.0
        return h


