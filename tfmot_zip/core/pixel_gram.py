"""The exact patch Hessian of a Conv2D from the Gram matrix of its flattened input maps.

A patch row of a convolution holds, at kernel position ``k``, the input pixel ``idx(p, k)`` that
output position ``p`` reads there (zero where that falls in the padding). So the block of
``sum(patch patch^T)`` coupling kernel positions ``k`` and ``k'`` is

    sum over output positions p of  G[idx(p, k), idx(p, k')]     (a C x C block)

where ``G = sum over samples of x x^T`` is the Gram matrix of the samples' flattened maps
``x`` (``h * w * C`` values each). ``G`` is one symmetric matrix product per batch, which BLAS runs
at full speed however few channels there are, and the patch Hessian is read from it by index at the
end; any stride, padding and dilation. It costs ``samples * (h w C)^2 / 2`` multiply-adds and a
``(h w C)^2`` matrix: cheap for small maps and few channels (LeNet-5's 28x28x1 and 14x14x6 inputs,
the last stages of a CIFAR network), where the shifted products of
:mod:`tfmot_zip.core.conv_hessian` are thin matrix products and the patch rows are 25 to 81 times
the data. :func:`conv_hessian_plan` chooses between them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.core.hessian import check_finite, check_maps, conv_output_shape, pad_amounts
from tfmot_zip.core.linalg import SummedStatistics

__all__ = ["CONV_HESSIAN_METHODS", "PIXEL_GRAM_MAX_DIM", "PixelGramAccumulator", "conv_hessian_plan"]

# The widest flattened map whose Gram matrix is kept (4,096 values: 128 MB in float64).
PIXEL_GRAM_MAX_DIM = 4096

# Seconds per unit of work on the 2-core machine (float32 products, measured): a Gram matrix of
# 784- to 1,176-wide rows runs ~1.5e11 multiply-adds/s (counting n d^2) plus ~5e7 of its d^2 entries
# per second (sums, reading the Hessian out); shifted products of C channels ~1e9 C multiply-adds/s
# (C = 16: 1.6e10, C = 64: 6.5e10); patch rows ~3e10 multiply-adds/s for their product plus ~1.2e8
# (row, kernel position) runs gathered per second. A sample of patch rows drawn from the whole set
# (session 21, 200,000 rows of widths 25 to 1,152, least squares): ~3.2e-7 s per row, ~3.4e-9 s per
# value gathered, and its product at ~2.3e11 multiply-adds/s.
_GRAM_SPEED, _GRAM_ENTRY_SPEED, _SHIFT_SPEED, _ROW_SPEED, _GATHER_SPEED = 1.5e11, 5e7, 1e9, 3e10, 1.2e8
_SAMPLED_ROW, _SAMPLED_VALUE, _SAMPLED_SPEED = 3.2e-7, 3.4e-9, 2.3e11

CONV_HESSIAN_METHODS = ("pixel_gram", "shifted_products", "patch_rows", "sampled_rows")


def conv_hessian_plan(samples: int, spatial: Sequence[int], channels: int, kernel_size: Sequence[int],
                      strides: Sequence[int] = (1, 1), padding: str = "valid", dilation: Sequence[int] = (1, 1),
                      max_rows: int | None = None) -> tuple[str, dict[str, float]]:
    """How to compute a Conv2D's patch Hessian on ``samples`` input maps, and the estimated seconds
    of every way that applies: ``(method, {method: seconds})``.

    The exact ways are :class:`PixelGramAccumulator` (maps of at most :data:`PIXEL_GRAM_MAX_DIM`
    values), shifted products (stride 1, a kernel wider than one position;
    :class:`~tfmot_zip.core.conv_hessian.ConvHessianAccumulator`) and every patch row; the cheapest
    is used when every row is wanted (``max_rows`` None or no fewer rows than there are). Otherwise a
    sample of ``max_rows`` rows is drawn, unless an exact way costs no more than the sample.

    Example:
        >>> conv_hessian_plan(10_000, (14, 14), 6, (5, 5), max_rows=200_000)[0]  # LeNet-5's second conv
        'pixel_gram'
        >>> conv_hessian_plan(500, (32, 32), 16, (3, 3), padding="same")[0]      # a CIFAR ResNet's first stage
        'shifted_products'
        >>> conv_hessian_plan(10_000, (28, 28), 1, (5, 5), padding="same", max_rows=200_000)[0]  # LeNet-5's first
        'pixel_gram'
        >>> conv_hessian_plan(2048, (32, 32), 3, (7, 7), (2, 2), "same", max_rows=200_000)[0]  # ResNet50's first
        'sampled_rows'
    """
    (h, w), (kh, kw), c = (int(s) for s in spatial), (int(k) for k in kernel_size), int(channels)
    out = conv_output_shape((h, w), (kh, kw), strides, padding, dilation)
    rows = float(samples) * out[0] * out[1]
    width = kh * kw * c
    costs = {"patch_rows": rows * (width * width / _ROW_SPEED + kh * kw / _GATHER_SPEED)}
    dim = h * w * c
    if dim <= PIXEL_GRAM_MAX_DIM:
        costs["pixel_gram"] = float(samples) * dim * dim / _GRAM_SPEED + dim * dim / _GRAM_ENTRY_SPEED
    if tuple(int(s) for s in strides) == (1, 1) and kh * kw > 1:
        offsets = ((2 * kh - 1) * (2 * kw - 1) + 1) // 2
        costs["shifted_products"] = float(samples) * h * w * offsets * c / _SHIFT_SPEED
    exact = min(costs, key=costs.get)
    if max_rows is None or rows <= max_rows:
        return exact, costs
    costs["sampled_rows"] = max_rows * (_SAMPLED_ROW + width * _SAMPLED_VALUE + width * width / _SAMPLED_SPEED)
    return (exact if costs[exact] <= costs["sampled_rows"] else "sampled_rows"), costs


class PixelGramAccumulator(SummedStatistics):
    """Streaming ``E[x~ x~^T]`` of a Conv2D's patch rows (bias coordinate last) from batches of its
    input maps ``[n, h, w, C]``, through their Gram matrix; equal to
    :class:`~tfmot_zip.core.hessian.HessianAccumulator` fed
    :func:`~tfmot_zip.core.hessian.extract_patches` of the same batches (to float rounding).

    ``block=True`` keeps only the per-kernel-position blocks and no mean terms, as
    :class:`~tfmot_zip.core.hessian.BlockHessianAccumulator`. Each batch's product is taken in
    ``batch_dtype`` and summed in float64.

    Example:
        >>> from tfmot_zip.core.hessian import HessianAccumulator, extract_patches
        >>> x = np.arange(2 * 5 * 5 * 2, dtype=float).reshape(2, 5, 5, 2) % 7
        >>> acc = PixelGramAccumulator((5, 5), 2, (3, 3), strides=(2, 2), padding="same", batch_dtype=np.float64)
        >>> acc.update(x)
        >>> ref = HessianAccumulator(18)
        >>> ref.update(extract_patches(x, (3, 3), (2, 2), padding="same"))
        >>> bool(np.allclose(acc.hessian(), ref.hessian()))
        True
    """

    _sums = ("_gram", "_totals")

    def __init__(
        self,
        spatial: Sequence[int],
        channels: int,
        kernel_size: Sequence[int],
        strides: Sequence[int] = (1, 1),
        padding: str = "valid",
        dilation: Sequence[int] = (1, 1),
        block: bool = False,
        batch_dtype: type = np.float32,
    ):
        self.spatial = tuple(int(s) for s in spatial)
        self.channels = int(channels)
        kernel, stride, rate = (tuple(int(v) for v in t) for t in (kernel_size, strides, dilation))
        if self.channels <= 0 or min(self.spatial + kernel + stride + rate) <= 0:
            raise ValueError(f"Expected positive sizes. Received spatial={self.spatial}, channels={channels}, "
                             f"kernel_size={kernel}, strides={stride}, dilation={rate}.")
        pixels = self.spatial[0] * self.spatial[1]
        if pixels * self.channels > PIXEL_GRAM_MAX_DIM:
            raise ValueError(f"Input maps of {pixels * self.channels} values are wider than PIXEL_GRAM_MAX_DIM="
                             f"{PIXEL_GRAM_MAX_DIM}; use ConvHessianAccumulator or patch rows for them.")
        out = conv_output_shape(self.spatial, kernel, stride, padding, rate)
        if min(out) <= 0:
            raise ValueError(f"Kernel {kernel} (dilation {rate}) does not fit input {self.spatial} with padding {padding!r}.")
        self.positions_per_sample = out[0] * out[1]
        # index[p, k]: the pixel output position p reads at kernel position k (``pixels``: padding)
        axes = []
        for axis in (0, 1):
            before = pad_amounts(self.spatial[axis], kernel[axis], stride[axis], padding, rate[axis])[0]
            coords = np.arange(out[axis])[:, None] * stride[axis] + np.arange(kernel[axis])[None, :] * rate[axis] - before
            axes.append(coords)  # [out, kernel]
        rows, cols = axes
        r = rows[:, None, :, None]  # [oh, 1, kh, 1]
        c = cols[None, :, None, :]  # [1, ow, 1, kw]
        inside = (r >= 0) & (r < self.spatial[0]) & (c >= 0) & (c < self.spatial[1])
        self.index = np.where(inside, r * self.spatial[1] + c, pixels).reshape(out[0] * out[1], kernel[0] * kernel[1])
        self.pixels = pixels
        self.block = bool(block)
        self.dim = kernel[0] * kernel[1] * self.channels
        self.batch_dtype = np.dtype(batch_dtype)
        width = pixels * self.channels
        self._gram = np.zeros((width, width))
        self._totals = np.zeros(width)
        self.count = 0  # patch rows: samples * out_h * out_w

    def update(self, images: np.ndarray) -> None:
        """Adds a batch of input maps ``[n, h, w, C]``; a batch with a non-finite value is refused
        and leaves the sums as they were."""
        x = check_maps(images, self.spatial, self.channels)
        if x.shape[0] == 0:
            return
        flat = x.reshape(x.shape[0], -1).astype(self.batch_dtype, copy=False)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs are refused below
            gram = flat.T @ flat
        check_finite(np.diagonal(gram))
        self._gram += gram
        self._totals += flat.sum(axis=0, dtype=np.float64)
        self.count += x.shape[0] * self.positions_per_sample

    def hessian(self) -> np.ndarray:
        """``E[x~ x~^T]`` as a ``[dim + 1, dim + 1]`` float64 matrix, rows ordered as
        :func:`~tfmot_zip.core.hessian.extract_patches` (kernel position major, channel minor)."""
        if self.count == 0:
            raise ValueError("No layer inputs were accumulated; pass non-empty calibration data.")
        c, p = self.channels, self.pixels
        padded = np.zeros((p + 1, c, p + 1, c))  # the padding pixel (index p) reads zeros
        padded[:p, :, :p, :] = self._gram.reshape(p, c, p, c)
        positions = self.index.shape[1]
        h = np.zeros((self.dim + 1, self.dim + 1))
        for k in range(positions):
            partners = self.index[:, k : k + 1] if self.block else self.index[:, k:]
            # [output positions, partners, C, C] summed over the output positions
            blocks = padded[self.index[:, k, None], :, partners, :].sum(axis=0) / self.count
            for j, block in enumerate(blocks):
                k2 = k + j
                h[k * c : (k + 1) * c, k2 * c : (k2 + 1) * c] = block
                h[k2 * c : (k2 + 1) * c, k * c : (k + 1) * c] = block.T
        if not self.block:
            totals = np.append(self._totals.reshape(p, c), np.zeros((1, c)), axis=0)
            mean = totals[self.index].sum(axis=0).reshape(-1) / self.count  # [positions * C]
            h[: self.dim, self.dim] = mean
            h[self.dim, : self.dim] = mean
        h[self.dim, self.dim] = 1.0
        return h
