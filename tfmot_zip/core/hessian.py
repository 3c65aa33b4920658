"""Layer-wise Hessians of MTZ: ``H = E[x~ x~^T]`` with ``x~ = [x; 1]``, damping, inversion.

For a Dense layer ``x`` is the layer input; for a Conv2D layer it is one input patch of
``kh * kw * C_in`` values (extracted with the layer's own strides, padding and dilation, in
the order a Keras kernel ``[kh, kw, C_in, C_out]`` flattens), and the average runs over
samples and positions.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tfmot_zip.core.linalg import SummedStatistics, spd_inverse

__all__ = [
    "center_hessian",
    "HessianAccumulator",
    "BlockHessianAccumulator",
    "SingularHessianError",
    "damped",
    "invert_hessian",
    "extract_patches",
    "extract_patches_at",
    "gather_patches",
    "conv_output_size",
    "conv_output_shape",
]


class SingularHessianError(ValueError):
    """Raised when a layer Hessian cannot be inverted even after damping."""


def check_maps(images: Any, spatial: tuple, channels: int) -> np.ndarray:
    """``images`` as an array of input maps ``[n, *spatial, channels]``, or a ValueError naming both shapes.

    Example:
        >>> check_maps(np.zeros((2, 4, 4, 3)), (4, 4), 3).shape
        (2, 4, 4, 3)
        >>> check_maps(np.zeros((2, 4, 4, 1)), (4, 4), 3)
        Traceback (most recent call last):
        ...
        ValueError: Expected input maps of shape [n, 4, 4, 3]. Received (2, 4, 4, 1).
    """
    x = np.asarray(images)
    expected = tuple(spatial) + (channels,)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"Expected input maps of shape [n, {', '.join(map(str, expected))}]. Received {tuple(x.shape)}.")
    return x


def check_finite(squares: np.ndarray) -> None:
    """Refuses a batch from the diagonal of its product ``sum x^2`` per coordinate: a NaN or inf input
    (or one whose square overflows) makes it non-finite, at the cost of ``d`` checks, not ``n d``.

    Example:
        >>> check_finite(np.array([1.0, 4.0]))
        >>> check_finite(np.array([1.0, np.inf]))
        Traceback (most recent call last):
        ...
        ValueError: Layer inputs contain NaN or inf (or values whose squares overflow); check the calibration data and the model's weights (a diverged model produces non-finite activations).
    """
    if not np.all(np.isfinite(squares)):
        raise ValueError(
            "Layer inputs contain NaN or inf (or values whose squares overflow); check the calibration data "
            "and the model's weights (a diverged model produces non-finite activations)."
        )


class HessianAccumulator(SummedStatistics):
    """Streaming accumulator of ``E[x~ x~^T]`` where ``x~`` is ``x`` with a trailing 1.

    Accumulates in float64 so that millions of rows sum without loss.

    Example:
        >>> acc = HessianAccumulator(dim=2)
        >>> acc.update(np.array([[1.0, 2.0], [3.0, 4.0]]))
        >>> acc.hessian().shape
        (3, 3)
        >>> float(acc.hessian()[2, 2])
        1.0
    """

    _sums = ("_xtx", "_xsum")

    def __init__(self, dim: int, batch_dtype: type = np.float64):
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"Expected a positive integer input dimension. Received: dim={dim!r}")
        self.dim = int(dim)
        # Precision of each batch's product; sums across batches are always float64.
        # float32 halves the cost for large convolution patch matrices.
        self.batch_dtype = np.dtype(batch_dtype)
        self._xtx = np.zeros((self.dim, self.dim), dtype=np.float64)
        self._xsum = np.zeros(self.dim, dtype=np.float64)
        self.count = 0

    def update(self, rows: np.ndarray) -> None:
        """Adds a batch of input rows ``[n, dim]`` (already patch-extracted for convolutions)."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(
                f"Expected rows of shape [n, {self.dim}]. Received shape {tuple(rows.shape)}."
            )
        if rows.shape[0] == 0:
            return
        rows_b = rows.astype(self.batch_dtype, copy=False)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs are refused just below
            product = rows_b.T @ rows_b
        check_finite(np.diagonal(product))
        self._xtx += product
        self._xsum += np.ones(rows_b.shape[0], self.batch_dtype) @ rows_b
        self.count += rows_b.shape[0]

    def merge(self, other: "HessianAccumulator") -> None:
        """Adds the statistics of another accumulator (e.g. from another replica)."""
        if other.dim != self.dim:
            raise ValueError(f"Cannot merge accumulators of dims {self.dim} and {other.dim}.")
        self._xtx += other._xtx
        self._xsum += other._xsum
        self.count += other.count


    def state(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The raw sums ``(sum x x^T, sum x, count)``, e.g. to reduce across replicas."""
        return self._xtx.copy(), self._xsum.copy(), self.count

    def gram(self) -> np.ndarray:
        """``sum x~ x~^T`` (``x~ = [x, 1]``), the unnormalised :meth:`hessian`: what a least-squares
        fit on the same rows needs.

        Example:
            >>> acc = HessianAccumulator(1)
            >>> acc.update(np.array([[1.0], [3.0]]))
            >>> acc.gram().tolist()
            [[10.0, 4.0], [4.0, 2.0]]
        """
        gram = np.empty((self.dim + 1, self.dim + 1), dtype=np.float64)
        gram[: self.dim, : self.dim] = self._xtx
        gram[: self.dim, self.dim] = gram[self.dim, : self.dim] = self._xsum
        gram[self.dim, self.dim] = self.count
        return gram

    def hessian(self) -> np.ndarray:
        """``E[x~ x~^T]`` as a ``[dim + 1, dim + 1]`` float64 matrix (bias coordinate last)."""
        if self.count == 0:
            raise ValueError(
                "No layer inputs were accumulated; pass non-empty calibration data."
            )
        n = float(self.count)
        h = np.empty((self.dim + 1, self.dim + 1), dtype=np.float64)
        h[: self.dim, : self.dim] = self._xtx / n
        mean = self._xsum / n
        h[: self.dim, self.dim] = mean
        h[self.dim, : self.dim] = mean
        h[self.dim, self.dim] = 1.0
        return h


class BlockHessianAccumulator(SummedStatistics):
    """Per-kernel-position block approximation of a Conv2D layer Hessian.

    Keeps only the ``C_in x C_in`` blocks of ``E[x~ x~^T]`` that couple input channels at the
    same kernel position (and the bias on its own), dropping the cross-position and bias-input
    terms: ``positions`` times cheaper to accumulate and ``positions^2`` times cheaper to
    invert, at the price of ignoring spatial correlation. ``hessian()`` returns the dense
    matrix of the same layout as :class:`HessianAccumulator` (zeros outside the blocks).

    Example:
        >>> acc = BlockHessianAccumulator(positions=2, channels=1)
        >>> acc.update(np.array([[1.0, 2.0]]))
        >>> acc.hessian()
        array([[1., 0., 0.],
               [0., 4., 0.],
               [0., 0., 1.]])
    """

    _sums = ("_blocks",)

    def __init__(self, positions: int, channels: int, batch_dtype: type = np.float32):
        if positions <= 0 or channels <= 0:
            raise ValueError(f"Expected positive positions and channels. Received: {positions}, {channels}")
        self.positions, self.channels = int(positions), int(channels)
        self.dim = self.positions * self.channels
        self.batch_dtype = np.dtype(batch_dtype)
        self._blocks = np.zeros((self.positions, self.channels, self.channels), np.float64)
        self.count = 0

    def update(self, rows: np.ndarray) -> None:
        """Adds patch rows ``[n, positions * channels]`` (position-major, as extract_patches)."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"Expected rows of shape [n, {self.dim}]. Received shape {tuple(rows.shape)}.")
        r = rows.astype(self.batch_dtype, copy=False).reshape(rows.shape[0], self.positions, self.channels)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs are refused just below
            product = np.einsum("npc,npd->pcd", r, r, optimize=True)
        check_finite(np.diagonal(product, axis1=1, axis2=2))
        self._blocks += product
        self.count += rows.shape[0]


    def hessian(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("No layer inputs were accumulated; pass non-empty calibration data.")
        h = np.zeros((self.dim + 1, self.dim + 1))
        for p in range(self.positions):
            sl = slice(p * self.channels, (p + 1) * self.channels)
            h[sl, sl] = self._blocks[p] / self.count
        h[self.dim, self.dim] = 1.0
        return h


def center_hessian(hessian: np.ndarray) -> np.ndarray:
    """The layer Hessian as if every task could shift each unit's output freely.

    ``E[x~ x~^T]`` (bias coordinate last, as :meth:`HessianAccumulator.hessian` returns it)
    becomes ``[[Cov(x), 0], [0, 1]]``: the error a merge makes along the inputs' mean moves each
    unit's output by a constant per task, which a per-task shift (statistics repair, or a per-task
    BatchNorm re-estimated after zipping) removes, so only the covariance should weigh the pair
    costs. A matrix without mean terms (the block approximation) is returned unchanged.

    Example:
        >>> x = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
        >>> acc = HessianAccumulator(2); acc.update(x)
        >>> center_hessian(acc.hessian())
        array([[2.66666667, 0.        , 0.        ],
               [0.        , 0.        , 0.        ],
               [0.        , 0.        , 1.        ]])
    """
    h = np.array(hessian, dtype=np.float64)
    mean = h[-1, :-1].copy()
    if not np.any(mean):
        return h
    h[:-1, :-1] -= np.outer(mean, mean)
    h[:-1, -1] = 0.0
    h[-1, :-1] = 0.0
    return h


def _check_damping(damping: float) -> None:
    if not (damping >= 0 and np.isfinite(damping)):
        raise ValueError(f"Expected a finite non-negative damping. Received: damping={damping!r}")


def _check_finite_hessian(h: np.ndarray) -> None:
    if not np.all(np.isfinite(h)):
        raise SingularHessianError("The layer Hessian has NaN or inf entries; check the inputs.")


def damping_shift(hessian: np.ndarray, damping: float = 1e-4, check_finite: bool = True) -> float:
    """``damping * mean(diag H)``: what :func:`damped` adds to the diagonal. ``check_finite=False``
    skips the scan of every entry (for a Hessian summed from batches already checked finite).

    Raises:
        SingularHessianError: the Hessian has NaN or inf entries (``check_finite``).

    Example:
        >>> damping_shift(np.diag([1.0, 3.0]), 0.5)
        1.0
    """
    _check_damping(damping)
    h = np.asarray(hessian)
    if check_finite:
        _check_finite_hessian(h)
    return damping * float(np.mean(np.diag(h)))


def damped(hessian: np.ndarray, damping: float = 1e-4) -> np.ndarray:
    """``H + damping * mean(diag H) * I``: makes rank-deficient layer Hessians invertible.

    Raises:
        SingularHessianError: the Hessian has NaN or inf entries.

    Example:
        >>> damped(np.eye(2), 0.5)
        array([[1.5, 0. ],
               [0. , 1.5]])
    """
    shift = damping_shift(hessian, damping)
    h = np.array(hessian, dtype=np.float64)
    h[np.diag_indices_from(h)] += shift
    return h


def invert_hessian(hessian: np.ndarray, damping: float = 1e-4) -> np.ndarray:
    """Inverse of the damped Hessian, via Cholesky (symmetric positive definite).

    Raises:
        SingularHessianError: when the damped matrix is still not positive definite or is
            not finite; the message says to raise ``damping``.

    Example:
        >>> invert_hessian(np.diag([2.0, 4.0]), damping=0.0)
        array([[0.5 , 0.  ],
               [0.  , 0.25]])
    """
    h = np.asarray(hessian, dtype=np.float64)
    shift = damping_shift(h, damping)
    try:
        inverse = spd_inverse(h, shift=shift)  # the damped matrix, never copied whole
    except np.linalg.LinAlgError as err:
        raise SingularHessianError(
            f"The layer Hessian ({h.shape[0]}x{h.shape[0]}) is singular even with "
            f"damping={damping!r}; increase damping (e.g. {max(damping * 10, 1e-3):g})."
        ) from err
    if not np.all(np.isfinite(inverse)):  # exactly symmetric already (spd_inverse)
        raise SingularHessianError(
            f"Inverting the layer Hessian gave non-finite values with damping={damping!r}; "
            "increase damping."
        )
    return inverse


def conv_output_size(size: int, kernel: int, stride: int, padding: str, dilation: int) -> int:
    """Output length of one spatial axis, with Keras/TensorFlow semantics."""
    effective = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - effective) // stride + 1
    if padding == "same":
        return -(-size // stride)
    raise ValueError(f"Unsupported padding {padding!r}; expected 'valid' or 'same'.")


def pad_amounts(size: int, kernel: int, stride: int, padding: str, dilation: int) -> tuple[int, int]:
    """Zeros added before and after one spatial axis by a Keras/TensorFlow convolution.

    Example:
        >>> pad_amounts(32, 3, 1, "same", 1), pad_amounts(32, 3, 2, "same", 1), pad_amounts(8, 3, 1, "valid", 1)
        ((1, 1), (0, 1), (0, 0))
    """
    if padding == "valid":
        return 0, 0
    effective = (kernel - 1) * dilation + 1
    out = conv_output_size(size, kernel, stride, padding, dilation)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _conv_setup(images, kernel_size, strides, padding, dilation):
    """Checked ``(x, (kh, kw), (sh, sw), (dh, dw), (oh, ow))`` of a Conv2D on ``images``."""
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"Expected images of shape [n, h, w, c]. Received {tuple(x.shape)}.")
    kernel = tuple(int(k) for k in kernel_size)
    stride = tuple(int(s) for s in strides)
    rate = tuple(int(d) for d in dilation)
    oh, ow = conv_output_shape(x.shape[1:3], kernel, stride, padding, rate)
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"Kernel {kernel[0]}x{kernel[1]} (dilation {rate[0]}x{rate[1]}) does not fit input "
            f"{x.shape[1]}x{x.shape[2]} with padding {padding!r}."
        )
    return x, kernel, stride, rate, (oh, ow)


def _padded(x, kernel, stride, padding, rate):
    """``x`` padded as the convolution pads it."""
    ph = pad_amounts(x.shape[1], kernel[0], stride[0], padding, rate[0])
    pw = pad_amounts(x.shape[2], kernel[1], stride[1], padding, rate[1])
    return np.pad(x, ((0, 0), ph, pw, (0, 0))) if any(ph) or any(pw) else x


def extract_patches(
    images: np.ndarray,
    kernel_size: Sequence[int],
    strides: Sequence[int] = (1, 1),
    padding: str = "valid",
    dilation: Sequence[int] = (1, 1),
) -> np.ndarray:
    """Input patches of a channels-last Conv2D, one row per (sample, output position).

    Row layout matches a Keras kernel ``[kh, kw, C_in, C_out]`` reshaped to
    ``[kh * kw * C_in, C_out]``, so ``patches @ kernel.reshape(-1, C_out)`` is the convolution.

    Example:
        >>> x = np.arange(16, dtype=float).reshape(1, 4, 4, 1)
        >>> extract_patches(x, (2, 2), strides=(2, 2)).shape
        (4, 4)
    """
    x, (kh, kw), (sh, sw), (dh, dw), (oh, ow) = _conv_setup(images, kernel_size, strides, padding, dilation)
    n, channels = x.shape[0], x.shape[3]
    x = _padded(x, (kh, kw), (sh, sw), padding, (dh, dw))
    cols = np.empty((n, oh, ow, kh, kw, channels), dtype=x.dtype)
    for i in range(kh):
        r0 = i * dh
        for j in range(kw):
            c0 = j * dw
            cols[:, :, :, i, j, :] = x[:, r0 : r0 + (oh - 1) * sh + 1 : sh, c0 : c0 + (ow - 1) * sw + 1 : sw, :]
    return cols.reshape(n * oh * ow, kh * kw * channels)


def conv_output_shape(
    spatial: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int] = (1, 1),
    padding: str = "valid",
    dilation: Sequence[int] = (1, 1),
) -> tuple[int, int]:
    """``(out_h, out_w)`` of a Conv2D on ``spatial = (h, w)``.

    Example:
        >>> conv_output_shape((28, 28), (5, 5))
        (24, 24)
        >>> conv_output_shape((32, 32), (3, 3), strides=(2, 2), padding="same")
        (16, 16)
    """
    return tuple(
        conv_output_size(int(s), int(k), int(st), padding, int(d))
        for s, k, st, d in zip(spatial, kernel_size, strides, dilation)
    )


def extract_patches_at(
    images: np.ndarray,
    kernel_size: Sequence[int],
    strides: Sequence[int] = (1, 1),
    padding: str = "valid",
    dilation: Sequence[int] = (1, 1),
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Only the given rows of :func:`extract_patches` (``rows`` index ``sample * positions + position``).

    Gathers each chosen patch directly, so sampling ``r`` rows costs ``O(r)`` memory and time however
    many images there are.

    Example:
        >>> x = np.arange(32, dtype=float).reshape(2, 4, 4, 1)
        >>> picked = extract_patches_at(x, (2, 2), strides=(2, 2), rows=np.array([1, 6]))
        >>> bool(np.array_equal(picked, extract_patches(x, (2, 2), strides=(2, 2))[[1, 6]]))
        True
    """
    x, (kh, kw), (sh, sw), (dh, dw), (oh, ow) = _conv_setup(images, kernel_size, strides, padding, dilation)
    n, channels = x.shape[0], x.shape[3]
    rows = np.arange(n * oh * ow) if rows is None else np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n * oh * ow):
        raise ValueError(f"Patch rows must lie in [0, {n * oh * ow}); received rows from {rows.min()} to {rows.max()}.")
    x = _padded(x, (kh, kw), (sh, sw), padding, (dh, dw))
    hp, wp = x.shape[1], x.shape[2]
    flat = x.reshape(-1, channels)
    sample, position = np.divmod(rows, oh * ow)
    base = sample * (hp * wp) + (position // ow) * sh * wp + (position % ow) * sw
    offsets = ((np.arange(kh) * dh)[:, None] * wp + (np.arange(kw) * dw)[None, :]).reshape(-1)
    patches = np.take(flat, base[:, None] + offsets[None, :], axis=0)
    return patches.reshape(len(rows), kh * kw * channels)


def gather_patches(
    images,
    kernel_size: Sequence[int],
    strides: Sequence[int] = (1, 1),
    padding: str = "valid",
    dilation: Sequence[int] = (1, 1),
    rows: np.ndarray | None = None,
    max_images: int | None = None,
) -> np.ndarray:
    """:func:`extract_patches_at` on any array that reads by sample ranges (``images[a:b]``, e.g. a
    file-backed array), reading at most ``max_images`` samples at a time (None: as many as fit in
    about 32 MB of float32).

    The result equals ``extract_patches_at(np.asarray(images), ..., rows=rows)`` element for
    element, but only the samples the rows fall in are read, so the memory it needs is that of the
    rows plus ``max_images`` samples, however long ``images`` is.

    Example:
        >>> x = np.arange(64, dtype=float).reshape(4, 4, 4, 1)
        >>> rows = np.array([13, 1, 7])
        >>> got = gather_patches(x, (2, 2), strides=(2, 2), rows=rows, max_images=1)
        >>> bool(np.array_equal(got, extract_patches_at(x, (2, 2), strides=(2, 2), rows=rows)))
        True
    """
    n, shape = len(images), tuple(images.shape[1:])
    if max_images is None:
        max_images = max(1, 8_000_000 // int(np.prod(shape)))
    if not (isinstance(max_images, (int, np.integer)) and max_images >= 1):
        raise ValueError(f"max_images must be a positive integer or None; received {max_images!r}.")
    probe = np.zeros((1,) + shape, np.float32)
    _, (kh, kw), _, _, (oh, ow) = _conv_setup(probe, kernel_size, strides, padding, dilation)
    per_image = oh * ow
    rows = np.arange(n * per_image) if rows is None else np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n * per_image):
        raise ValueError(f"Patch rows must lie in [0, {n * per_image}); received rows from {rows.min()} to {rows.max()}.")
    out = np.empty((len(rows), kh * kw * shape[-1]), dtype=np.dtype(getattr(images, "dtype", np.float32)))
    sample = rows // per_image
    order = np.argsort(sample, kind="stable")
    by_sample = sample[order]
    for start in range(0, n, max_images):
        lo, hi = np.searchsorted(by_sample, [start, start + max_images])
        if lo == hi:
            continue
        first, last = int(by_sample[lo]), int(by_sample[hi - 1])
        picked = order[lo:hi]
        block = np.asarray(images[first : last + 1])
        out[picked] = extract_patches_at(block, kernel_size, strides, padding, dilation, rows=rows[picked] - first * per_image)
    return out
