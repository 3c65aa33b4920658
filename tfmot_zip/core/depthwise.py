"""Per-channel layer Hessians of a depthwise convolution, and the MTZ merge of one channel pair.

A depthwise convolution's output channel ``c`` reads only input channel ``c``: its ``kh * kw``
kernel weights (and bias) see the ``kh * kw`` values of one patch of that channel. Its layer
Hessian is block diagonal, one ``[d, d]`` block per channel (``d = kh * kw (+ 1)``),
``H_c = E[x~_c x~_c^T]`` over samples and output positions. Merging channel ``i`` of one side
with channel ``j`` of the other shares every weight of the two (the channels themselves are the
same physical channel), so the MTZ cost and update of docs/METHOD.md apply with every coordinate
shared: ``cost = 1/2 d^T (H_i^-1 + H_j^-1)^-1 d`` with ``d = w_i - w_j``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.core.hessian import SingularHessianError, invert_hessian
from tfmot_zip.core.linalg import SummedStatistics

__all__ = ["ChannelHessianAccumulator", "channel_patches", "invert_channel_hessians"]


def channel_patches(patch_rows: np.ndarray, positions: int) -> np.ndarray:
    """``[rows, positions, channels]`` view of Conv2D patch rows (``extract_patches`` layout).

    Example:
        >>> rows = np.arange(12.0).reshape(2, 6)  # 2 rows, 3 positions x 2 channels
        >>> channel_patches(rows, 3)[0, :, 1].tolist()  # channel 1's three values in row 0
        [1.0, 3.0, 5.0]
    """
    rows = np.asarray(patch_rows)
    if rows.ndim != 2 or rows.shape[1] % positions:
        raise ValueError(f"Expected patch rows [n, positions * channels] with positions={positions}; received {rows.shape}.")
    return rows.reshape(rows.shape[0], positions, rows.shape[1] // positions)


class ChannelHessianAccumulator(SummedStatistics):
    """Streaming ``E[x~_c x~_c^T]`` for every channel ``c`` of a depthwise layer (float64 sums).

    ``update`` takes ``[rows, positions, channels]`` patches; ``hessians()`` returns
    ``[channels, positions + 1, positions + 1]`` with the bias coordinate last.

    Example:
        >>> acc = ChannelHessianAccumulator(positions=2, channels=1)
        >>> acc.update(np.array([[[1.0], [2.0]]]))
        >>> acc.hessians()[0].tolist()
        [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """

    _sums = ("_sum",)

    def __init__(self, positions: int, channels: int):
        if positions <= 0 or channels <= 0:
            raise ValueError(f"Expected positive positions and channels; received {positions}, {channels}.")
        self.positions, self.channels = int(positions), int(channels)
        self._sum = np.zeros((self.channels, self.positions + 1, self.positions + 1))
        self.count = 0

    def update(self, patches: np.ndarray) -> None:
        """Adds ``[rows, positions, channels]`` patches."""
        x = np.asarray(patches, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (self.positions, self.channels):
            raise ValueError(
                f"Expected patches [rows, {self.positions}, {self.channels}]; received {x.shape}."
            )
        augmented = np.concatenate([x, np.ones((x.shape[0], 1, self.channels))], axis=1)
        self._sum += np.einsum("npc,nqc->cpq", augmented, augmented, optimize=True)
        self.count += x.shape[0]


    def hessians(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("No patches were accumulated.")
        return self._sum / self.count


def invert_channel_hessians(hessians: np.ndarray, damping: float = 1e-4) -> np.ndarray:
    """Damped inverse of each ``[d, d]`` channel Hessian (``[channels, d, d]`` in and out).

    A channel whose Hessian is all zero (a dead channel of a layer without bias) gets the identity
    scaled like its layer's live channels, so that its weights are merged by plain averaging.

    Example:
        >>> h = np.stack([np.diag([2.0, 4.0]), np.zeros((2, 2))])
        >>> invert_channel_hessians(h, damping=0.0)[1].tolist()
        [[0.3333333333333333, 0.0], [0.0, 0.3333333333333333]]
    """
    h = np.asarray(hessians, dtype=np.float64)
    if h.ndim != 3 or h.shape[1] != h.shape[2]:
        raise ValueError(f"Expected channel Hessians [channels, d, d]; received {h.shape}.")
    scales = np.einsum("cii->c", h) / h.shape[1]
    live = scales > 0
    fallback = float(np.mean(scales[live])) if live.any() else 1.0
    out = np.empty_like(h)
    for c in range(h.shape[0]):
        if not live[c]:
            out[c] = np.eye(h.shape[1]) / fallback
            continue
        try:
            out[c] = invert_hessian(h[c], damping)
        except SingularHessianError as err:
            raise SingularHessianError(f"channel {c}: {err}") from None
    return out

