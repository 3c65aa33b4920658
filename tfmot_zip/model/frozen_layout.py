"""Frozen layouts: zip layers whose maps are fixed, storing only the kernel cells some task reads.

While zipping, a zip layer's maps are weights (``in_map_t``, ``out_map_t``) that the zipper and
``ZipCallback`` rewrite, and its kernel holds every physical cell. Once zipping is finished,
:func:`~tfmot_zip.model.compact.compact_zipped` builds each zip layer with ``layout={"in_maps": ...,
"out_maps": ...}``: the maps become constants of the layer's config (no longer weights, so
``count_params()`` does not count them), and a ``ZipDense``/``ZipConv2D`` kernel is stored as the blocks
of :func:`tfmot_zip.core.blocks.block_layout` (one variable per group of rows read by the same tasks,
holding the columns those tasks read). :meth:`FrozenLayoutMixin.physical_kernel` assembles the
physical kernel from them (zeros in the unread cells); tasks compute with it as before, and gradients,
TFMOT pruning and quantization reach the blocks.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tfmot_zip.compat import tf
from tfmot_zip.core.blocks import BlockLayout, block_layout

__all__ = ["FrozenLayoutMixin"]


def _int_lists(value: Any, lengths: list, bound: int, what: str, layer: str) -> list:
    if not isinstance(value, (list, tuple)) or len(value) != len(lengths):
        raise ValueError(
            f"Layer {layer!r}: layout[{what!r}] must hold one map per task ({len(lengths)}). Received: {value!r:.120}"
        )
    maps = []
    for t, (m, n) in enumerate(zip(value, lengths)):
        arr = np.asarray(m)
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer) or (n and (arr.min() < 0 or arr.max() >= bound)):
            raise ValueError(
                f"Layer {layer!r}: layout[{what!r}][{t}] must be {n} integers in [0, {bound}). "
                f"Received shape {arr.shape}, dtype {arr.dtype}."
            )
        maps.append(arr.astype(np.int32))
    return maps


class FrozenLayoutMixin:
    """Maps as constants and a block-sparse kernel for a zip layer whose zipping is finished.

    Subclasses call ``_init_layout`` after ``_init_shapes``, build their kernel with ``_build_kernel``
    and read it with :meth:`physical_kernel`; writes go through :meth:`assign_physical_kernel`.
    """

    layout: dict | None = None
    kernel_blocks: Any = None
    _quantized_blocks: Any = None

    def _init_layout(self, layout: Any) -> None:
        self.layout = None
        if layout is None:
            return
        if not isinstance(layout, dict) or set(layout) != {"in_maps", "out_maps"}:
            raise ValueError(
                f"Layer {self.name!r}: layout must be None or a dict with keys 'in_maps' and 'out_maps' "
                f"(one list of ints per task). Received: {layout!r:.120}"
            )
        self._frozen_in = _int_lists(layout["in_maps"], self.task_input_units, self.input_capacity, "in_maps", self.name)
        self._frozen_out = _int_lists(layout["out_maps"], self.task_units, self.capacity, "out_maps", self.name)
        self.layout = {"in_maps": [m.tolist() for m in self._frozen_in], "out_maps": [m.tolist() for m in self._frozen_out]}

    @property
    def frozen(self) -> bool:
        """True once the maps are constants (a model returned by ``compact_zipped``)."""
        return self.layout is not None

    def _layout_config(self) -> dict:
        return {"layout": self.layout}

    def _refuse_frozen(self) -> None:
        if self.frozen:
            raise ValueError(
                f"Layer {self.name!r} is compact: compact_zipped froze its maps (zipping is finished), so they "
                "cannot be reassigned. Zip the original models again (tfmot_zip.zip_models) to change the sharing."
            )

    def _build_kernel(self, prefix: tuple, name: str) -> None:
        shape = (*prefix, self.input_capacity, self.capacity)
        if not self.frozen:
            self.kernel = self.add_weight(name=name, shape=shape, initializer=self.kernel_initializer, trainable=True)
            return
        self._blocks: BlockLayout = block_layout(self._frozen_in, self._frozen_out, self.input_capacity, self.capacity)
        self._prefix = tuple(prefix)
        self._column_index = [self._blocks.column_index(k) for k in range(len(self._blocks.rows))]
        self._row_order = self._blocks.row_order()
        self.kernel_blocks = [
            self.add_weight(name=f"{name}_block_{k}", shape=(*prefix, len(r), len(c)), initializer=self.kernel_initializer,
                            trainable=True)
            for k, (r, c) in enumerate(zip(self._blocks.rows, self._blocks.columns))
            if len(c)
        ]

    def physical_kernel(self) -> tf.Tensor:
        """The physical kernel ``[..., input_capacity, capacity]`` (zeros in cells no task reads of a compact layer).

        Example:
            >>> from tfmot_zip.model.layers import ZipDense
            >>> layer = ZipDense([2, 2], [2, 2], input_capacity=3, capacity=3,
            ...                  layout={"in_maps": [[0, 1], [0, 2]], "out_maps": [[0, 1], [0, 2]]})
            >>> _ = layer([tf.zeros((1, 2)), tf.zeros((1, 2))])
            >>> layer.count_params(), tuple(layer.physical_kernel().shape)  # 7 read cells + 3 biases
            (10, (3, 3))
        """
        if self.kernel_blocks is None:
            return self.kernel
        blocks = list(self._quantized_blocks if self._quantized_blocks is not None else self.kernel_blocks)
        axis = len(self._prefix)
        pad = [[0, 0]] * (axis + 1) + [[0, 1]]
        parts = []
        for rows, columns, index in zip(self._blocks.rows, self._blocks.columns, self._column_index):
            if not len(columns):
                parts.append(tf.zeros((*self._prefix, len(rows), self.capacity), dtype=self.kernel_blocks[0].dtype))
                continue
            parts.append(tf.gather(tf.pad(blocks.pop(0), pad), index, axis=axis + 1))
        return tf.gather(tf.concat(parts, axis=axis), self._row_order, axis=axis)

    def kernel_variables(self) -> list:
        """The kernel's variables: ``[kernel]``, or a compact layer's blocks."""
        return [self.kernel] if self.kernel_blocks is None else list(self.kernel_blocks)

    def assign_physical_kernel(self, values: np.ndarray) -> None:
        """Writes a physical kernel (a compact layer keeps only the cells some task reads)."""
        for variable, block in zip(self.kernel_variables(), self.kernel_block_values(values)):
            variable.assign(block)

    def kernel_block_values(self, values: np.ndarray) -> list:
        """The values of :meth:`kernel_variables` for a physical kernel ``values``."""
        if self.kernel_blocks is None:
            return [np.asarray(values)]
        return [b for b, c in zip(self._blocks.split(values), self._blocks.columns) if len(c)]
