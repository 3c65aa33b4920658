"""Block layout of a physical kernel: only the cells some task reads.

Task ``t`` of a zip layer computes with ``kernel[in_map_t][:, out_map_t]`` (the last two axes of a
convolution kernel), so a cell ``(row i, column j)`` is read iff some task reads both row ``i`` and
column ``j``. Once zipping is finished the maps no longer change, and the unread cells (for two tasks:
task A's private inputs to task B's private units, and back) need not be stored. Rows are grouped by
the set of tasks reading them; each row group stores one dense block holding exactly the columns those
tasks read. The blocks together hold every read cell once, and nothing else.

Example:
    >>> layout = block_layout([np.array([0, 1]), np.array([0, 2])], [np.array([0, 1]), np.array([0, 2])], 3, 3)
    >>> [(r.tolist(), c.tolist()) for r, c in zip(layout.rows, layout.columns)]
    [([0], [0, 1, 2]), ([1], [0, 1]), ([2], [0, 2])]
    >>> layout.cells, 3 * 3 - 2  # cells (1, 2) and (2, 1) are read by nobody
    (7, 7)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["BlockLayout", "block_layout", "readers"]


def readers(maps: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``[size, tasks]`` booleans: which tasks read each physical unit.

    Example:
        >>> readers([np.array([0, 2]), np.array([2])], 3).astype(int).tolist()
        [[1, 0], [0, 0], [1, 1]]
    """
    out = np.zeros((size, len(maps)), dtype=bool)
    for t, m in enumerate(maps):
        m = np.asarray(m, dtype=np.int64)
        if m.size and (m.min() < 0 or m.max() >= size):
            raise ValueError(f"Map of task {t} points outside the {size} physical units: values {m.min()}..{m.max()}.")
        out[m, t] = True
    return out


@dataclass(frozen=True)
class BlockLayout:
    """Row groups of a physical kernel and the columns each group's block holds.

    ``rows[k]`` are the physical rows of group ``k`` (sorted), ``columns[k]`` the physical columns its
    block holds (sorted; every column a task of the group reads). A block has shape
    ``(..., len(rows[k]), len(columns[k]))``.
    """

    rows: tuple
    columns: tuple
    input_capacity: int
    capacity: int

    @property
    def cells(self) -> int:
        """Stored cells per kernel position (rows x columns summed over the blocks)."""
        return int(sum(len(r) * len(c) for r, c in zip(self.rows, self.columns)))

    def column_index(self, k: int) -> np.ndarray:
        """For each physical column, its position in block ``k``, or ``len(columns[k])`` (a zero pad column)."""
        index = np.full(self.capacity, len(self.columns[k]), dtype=np.int64)
        index[self.columns[k]] = np.arange(len(self.columns[k]))
        return index

    def row_order(self) -> np.ndarray:
        """For each physical row, its position in the row groups stacked in order."""
        order = np.empty(self.input_capacity, dtype=np.int64)
        order[np.concatenate(self.rows)] = np.arange(self.input_capacity)
        return order

    def split(self, kernel: np.ndarray) -> list:
        """The blocks of ``kernel`` (physical rows and columns on its last two axes).

        Example:
            >>> layout = block_layout([np.array([0])], [np.array([1])], 2, 2)
            >>> [b.tolist() for b in layout.split(np.arange(4.0).reshape(2, 2))]
            [[[1.0]], [[]]]
        """
        kernel = np.asarray(kernel)
        if kernel.shape[-2:] != (self.input_capacity, self.capacity):
            raise ValueError(
                f"Expected a kernel whose last two axes are ({self.input_capacity}, {self.capacity}). "
                f"Received shape {kernel.shape}."
            )
        return [kernel[..., r, :][..., c] for r, c in zip(self.rows, self.columns)]

    def join(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """The physical kernel the blocks describe, zeros in the cells no task reads.

        Example:
            >>> layout = block_layout([np.array([0])], [np.array([1])], 2, 2)
            >>> layout.join([np.array([[5.0]]), np.zeros((1, 0))]).tolist()
            [[0.0, 5.0], [0.0, 0.0]]
        """
        first = np.asarray(blocks[0])
        out = np.zeros(first.shape[:-2] + (self.input_capacity, self.capacity), dtype=first.dtype)
        for block, r, c in zip(blocks, self.rows, self.columns):
            out[..., r[:, None], c[None, :]] = block
        return out


def block_layout(
    in_maps: Sequence[np.ndarray], out_maps: Sequence[np.ndarray], input_capacity: int, capacity: int
) -> BlockLayout:
    """The block layout of a kernel read by tasks through ``in_maps`` (rows) and ``out_maps`` (columns).

    Rows are grouped by the set of tasks reading them (groups in order of their first row); group
    ``k``'s block holds the columns read by any task of the group. Rows read by no task form a group
    with no columns.

    Raises:
        ValueError: the task counts of the maps differ, or a map points outside the capacities.
    """
    if len(in_maps) != len(out_maps) or not in_maps:
        raise ValueError(f"Expected one in_map and one out_map per task. Received {len(in_maps)} and {len(out_maps)}.")
    row_readers = readers(in_maps, int(input_capacity))
    col_readers = readers(out_maps, int(capacity))
    keys, first, inverse = np.unique(row_readers, axis=0, return_index=True, return_inverse=True)
    rows, columns = [], []
    for g in np.argsort(first, kind="stable"):
        rows.append(np.flatnonzero(inverse.reshape(-1) == g))
        columns.append(np.flatnonzero(col_readers[:, keys[g]].any(axis=1)))
    return BlockLayout(tuple(rows), tuple(columns), int(input_capacity), int(capacity))
