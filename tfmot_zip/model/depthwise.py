"""``ZipDepthwiseConv2D``: a depthwise convolution shared by several tasks through channel maps.

A depthwise convolution cannot choose its own pairing: output channel ``c`` reads only input
channel ``c``, so its channels live in the unit space of its input, and task ``t``'s channel ``c``
computes with the physical channel ``map_t[c]`` of that space. The layer owns one physical kernel
``[kh, kw, capacity, 1]`` (``capacity``: the space's physical units); once the space is zipped, two
tasks whose channels map to one physical channel read and train the same ``kh x kw`` (+ bias)
weights. Its ``in_map`` and ``out_map`` are always equal (the space's map of the task).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tfmot_zip.compat import keras, tf
from tfmot_zip.model.conv_geometry import ConvGeometryMixin
from tfmot_zip.model.layers import ZipLayerMixin

__all__ = ["ZipDepthwiseConv2D"]


@keras.utils.register_keras_serializable(package="tfmot_zip")
class ZipDepthwiseConv2D(ConvGeometryMixin, ZipLayerMixin, keras.layers.Layer):
    """A ``DepthwiseConv2D`` (``depth_multiplier=1``, channels last) shared through per-task channel maps.

    Args:
        task_units: channels of each task's original layer (its input and output width).
        capacity: physical channels (the unit space's capacity): the sum of the task widths before
            zipping (every task owns its channels), at least the widest task (after
            :func:`~tfmot_zip.model.compact.compact_zipped`).
        kernel_size, strides, padding, dilation_rate, activation, use_bias: as ``DepthwiseConv2D``.
        repair: hold a per-task affine on the pre-activation (see ``ZipDense``).
        layout: ``None``, or the frozen maps of a compact layer (``{"in_maps": ..., "out_maps": ...}``,
            equal lists; see :mod:`tfmot_zip.model.frozen_layout`).

    Example:
        >>> layer = ZipDepthwiseConv2D(task_units=[4, 2], capacity=6, kernel_size=3, padding="same")
        >>> outs = layer([tf.zeros((1, 8, 8, 4)), tf.zeros((1, 8, 8, 2))])
        >>> [tuple(o.shape) for o in outs]
        [(1, 8, 8, 4), (1, 8, 8, 2)]
    """

    def __init__(
        self,
        task_units: Sequence[int],
        capacity: int,
        kernel_size: Any = 3,
        strides: Any = 1,
        padding: str = "valid",
        dilation_rate: Any = 1,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        zip_record: Any = None,
        repair: bool = False,
        layout: dict | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._init_shapes(task_units, task_units, capacity, capacity)
        self._init_layout(layout)
        self._init_geometry(kernel_size, strides, padding, dilation_rate)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"Expected strides 1 when dilation_rate > 1 (as DepthwiseConv2D). Received: strides={strides!r}, "
                f"dilation_rate={dilation_rate!r}"
            )
        self._init_common(activation, use_bias, kernel_initializer, bias_initializer)
        self._init_schedule(False, None, 16384, zip_record)
        self._init_repair(repair)

    @property
    def capacity(self) -> int:
        """Physical channels (the unit space's capacity; input and output are the same channels)."""
        return self.input_capacity

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(
            name="depthwise_kernel",
            shape=(*self.kernel_size, self.capacity, 1),
            initializer=self.kernel_initializer,
            trainable=True,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.capacity,), initializer=self.bias_initializer, trainable=True)
            if self.use_bias
            else None
        )
        self._build_maps()
        for t in range(self.num_tasks if not self.frozen else 0):  # in_map == out_map: channel c of task t is physical channel map_t[c]
            self.in_maps[t].assign(self.out_maps[t])
        self._build_repair()
        super().build(input_shape)

    def set_maps(self, task: int, in_map: np.ndarray | None = None, out_map: np.ndarray | None = None) -> None:
        """Sets the channel map of ``task`` (``in_map`` and ``out_map`` must agree if both are given)."""
        given = [m for m in (in_map, out_map) if m is not None]
        if len(given) == 2 and not np.array_equal(np.asarray(in_map), np.asarray(out_map)):
            raise ValueError(f"{self.name!r} is depthwise: its in_map and out_map must be equal.")
        if given:
            super().set_maps(task, in_map=given[0], out_map=given[0])

    def task_kernel(self, task: int, physical: tf.Tensor | None = None) -> tf.Tensor:
        """``[kh, kw, channels of task, 1]``: the kernel task ``task`` computes with."""
        return tf.gather(self.kernel if physical is None else physical, self.in_maps[task], axis=2)

    def preactivation(self, x: tf.Tensor, task: int, physical: tf.Tensor | None = None, weights: tuple | None = None) -> tf.Tensor:
        kernel, bias = weights if weights is not None else (self.task_kernel(task, physical), None)
        y = tf.nn.depthwise_conv2d(
            x,
            tf.cast(kernel, x.dtype),
            strides=(1, *self.strides, 1),
            padding=self.padding.upper(),
            dilations=self.dilation_rate,
        )
        return self._add_bias(y, task, bias)

    def get_task_weights(self, task: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(kernel [kh, kw, channels, 1], bias or None)`` of one task, as numpy."""
        channel_map = self.get_maps(task)[0]
        kernel = self.kernel.numpy()[:, :, channel_map]
        bias = self.bias.numpy()[channel_map] if self.use_bias else None
        return kernel, bias

    def _kernel_cells(self, task: int) -> tuple:
        """``(index of task's channels in the kernel, its channels)``: one map for input and output."""
        channel_map = self.get_maps(task)[0]
        return (slice(None), slice(None), channel_map), channel_map

    def get_config(self) -> dict:
        config = self._common_config()
        for key in ("task_input_units", "input_capacity", "track_hessians", "zip_options", "max_rows_per_step"):
            config.pop(key, None)
        config.update(capacity=self.capacity, **self._geometry_config())
        return {**super().get_config(), **config}
