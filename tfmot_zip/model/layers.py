"""Zip-able multi-task layers: one physical weight store read by every task through index maps.

A ``ZipDense`` (``ZipConv2D``) layer serves ``T`` tasks. It owns one kernel over *physical*
units — rows are the physical input units (or channels), columns the physical output units —
and, per task ``t``, two integer maps: ``in_map_t`` (task ``t``'s input unit -> physical row)
and ``out_map_t`` (task ``t``'s neuron -> physical column). Task ``t`` computes with
``kernel[in_map_t][:, out_map_t]``. Before zipping every task owns its own columns; sharing
neuron ``j`` of task B with neuron ``i`` of task A sets ``out_map_B[j] = out_map_A[i]``, after
which both tasks read — and train — the same weights for every input unit both see. Unused
physical columns are dropped by :func:`tfmot_zip.strip_zipping`.

The maps are non-trainable weights, so checkpoints and ``.keras`` files carry the zipping
state. A compact layer (``layout=...``, built by :func:`~tfmot_zip.model.compact.compact_zipped`) holds
them as constants of its config instead, and stores only the kernel cells some task reads. With ``repair=True`` each task's pre-activation also passes through a per-task affine
before the activation (:mod:`tfmot_zip.model.repair_weights`).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from tfmot_zip.compat import keras, tf
from tfmot_zip.model.conv_geometry import ConvGeometryMixin
from tfmot_zip.model.frozen_layout import FrozenLayoutMixin
from tfmot_zip.model.hessian_tracking import HessianTrackingMixin
from tfmot_zip.model.repair_weights import RepairMixin

__all__ = ["ZipDense", "ZipConv2D", "ZipLayerMixin", "ZIP_LAYERS"]


def _positive_ints(values: Sequence[int], name: str) -> list[int]:
    try:
        out = [int(v) for v in values]
    except TypeError:
        raise ValueError(f"Expected a list of positive integers. Received: {name}={values!r}") from None
    if not out or any(v <= 0 for v in out) or any(int(v) != v for v in values):
        raise ValueError(f"Expected a non-empty list of positive integers. Received: {name}={values!r}")
    return out


class ZipLayerMixin(FrozenLayoutMixin, HessianTrackingMixin, RepairMixin):
    """Shared bookkeeping of zip-able layers: maps, per-task weight access, physical usage."""

    # Set by subclasses.
    task_units: list[int]
    task_input_units: list[int]
    input_capacity: int

    @property
    def num_tasks(self) -> int:
        return len(self.task_units)

    @property
    def capacity(self) -> int:
        """Number of physical output units (columns): by default the sum of every task's width; less
        after :func:`~tfmot_zip.model.compact.compact_zipped` dropped the units no task reads."""
        return self._physical_units

    def _build_maps(self) -> None:
        if self.frozen:  # constants of the config, not weights
            self.in_maps, self.out_maps = list(self._frozen_in), list(self._frozen_out)
            return
        offsets = np.concatenate([[0], np.cumsum(self.task_units)[:-1]]).astype(np.int64)
        self.in_maps = []
        self.out_maps = []
        for t, (n_in, n_out) in enumerate(zip(self.task_input_units, self.task_units)):
            self.in_maps.append(
                self.add_weight(
                    name=f"in_map_{t}",
                    shape=(n_in,),
                    dtype="int32",
                    trainable=False,
                    initializer=keras.initializers.Constant(np.arange(n_in) % self.input_capacity),
                )
            )
            self.out_maps.append(
                self.add_weight(
                    name=f"out_map_{t}",
                    shape=(n_out,),
                    dtype="int32",
                    trainable=False,
                    initializer=keras.initializers.Constant((offsets[t] + np.arange(n_out)) % self.capacity),
                )
            )

    def _init_shapes(
        self, task_units: Sequence[int], task_input_units: Sequence[int], input_capacity: int, capacity: int | None = None
    ) -> None:
        self.task_units = _positive_ints(task_units, "task_units")
        self.task_input_units = _positive_ints(task_input_units, "task_input_units")
        if len(self.task_input_units) != len(self.task_units):
            raise ValueError(
                f"task_units and task_input_units must have one entry per task. Received: "
                f"task_units={task_units!r}, task_input_units={task_input_units!r}"
            )
        if isinstance(input_capacity, bool) or not isinstance(input_capacity, (int, np.integer)) or input_capacity < max(self.task_input_units):
            raise ValueError(
                f"Expected input_capacity >= the widest task input ({max(self.task_input_units)}). "
                f"Received: input_capacity={input_capacity!r}"
            )
        self.input_capacity = int(input_capacity)
        if capacity is None:
            capacity = sum(self.task_units)
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < max(self.task_units):
            raise ValueError(
                f"Expected capacity (physical output units) >= the widest task ({max(self.task_units)}), or None for "
                f"the sum of the task widths ({sum(self.task_units)}). Received: capacity={capacity!r}"
            )
        self._physical_units = int(capacity)

    def _init_common(self, activation: Any, use_bias: bool, kernel_initializer: Any, bias_initializer: Any) -> None:
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _common_config(self) -> dict:
        return {
            "task_units": list(self.task_units),
            "task_input_units": list(self.task_input_units),
            "input_capacity": self.input_capacity,
            "capacity": self.capacity,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "repair": self.repair,
            **self._schedule_config(),
            **self._layout_config(),
        }

    def _add_bias(self, y: tf.Tensor, task: int, bias: tf.Tensor | None = None) -> tf.Tensor:
        if not self.use_bias:
            return y
        bias = tf.gather(self.bias, self.out_maps[task]) if bias is None else bias
        return tf.nn.bias_add(y, tf.cast(bias, y.dtype))

    def _finish_outputs(self, outputs: list, hooks: list) -> list:
        if hooks:
            with tf.control_dependencies(hooks):
                outputs = [tf.identity(o) for o in outputs]
        return outputs

    def _check_inputs(self, inputs: Any) -> list:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != self.num_tasks:
            raise ValueError(
                f"Layer {self.name!r} serves {self.num_tasks} tasks and expects a list of "
                f"{self.num_tasks} input tensors, one per task. Received: {inputs!r:.120}"
            )
        return list(inputs)

    # --- numpy access used by the zipper and strip_zipping -------------------------------
    def get_maps(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        """``(in_map, out_map)`` of ``task`` as numpy int arrays."""
        return np.asarray(self.in_maps[task]).astype(np.int64), np.asarray(self.out_maps[task]).astype(np.int64)

    def set_maps(self, task: int, in_map: np.ndarray | None = None, out_map: np.ndarray | None = None) -> None:
        """Assigns new maps for ``task`` (weights are not moved: see ``set_tasks_weights``)."""
        self._refuse_frozen()
        if in_map is not None:
            in_map = np.asarray(in_map)
            if in_map.shape != (self.task_input_units[task],) or in_map.min() < 0 or in_map.max() >= self.input_capacity:
                raise ValueError(f"Bad in_map for task {task} of {self.name!r}: shape {in_map.shape}.")
            self.in_maps[task].assign(in_map.astype(np.int32))
        if out_map is not None:
            out_map = np.asarray(out_map)
            if out_map.shape != (self.task_units[task],) or out_map.min() < 0 or out_map.max() >= self.capacity:
                raise ValueError(f"Bad out_map for task {task} of {self.name!r}: shape {out_map.shape}.")
            self.out_maps[task].assign(out_map.astype(np.int32))

    def set_tasks_weights(self, weights: dict, unwritten_zero: bool = False) -> None:
        """Writes several tasks' ``{task: (kernel, bias or None)}`` in the dict's order (a later task
        wins a cell two tasks point at), reading and assigning the physical weights once.
        ``unwritten_zero``: the cells no task of ``weights`` points at become zero instead of keeping
        their values, which are then not read (for a layer just built with zero initialisers).

        Example:
            >>> layer = ZipDense(task_units=[1, 1], task_input_units=[2, 2], input_capacity=2, capacity=1)
            >>> layer.build([(None, 2), (None, 2)])
            >>> layer.set_tasks_weights({1: (np.ones((2, 1)), np.ones(1)), 0: (np.zeros((2, 1)), np.zeros(1))})
            >>> layer.get_task_weights(1)[0].ravel().tolist()  # task 0 was written last into the shared cells
            [0.0, 0.0]
        """
        if unwritten_zero:
            full = np.zeros(tuple(self.physical_kernel().shape), self.dtype)
            biases = np.zeros(tuple(self.bias.shape), self.dtype) if self.use_bias else None
        else:
            full = self.physical_kernel().numpy()
            biases = self.bias.numpy() if self.use_bias else None
        for task, (kernel, bias) in weights.items():
            cells, units = self._kernel_cells(task)
            full[cells] = kernel
            if biases is not None and bias is not None:
                biases[units] = bias
        self.assign_physical_kernel(full)
        if biases is not None:
            self.bias.assign(biases)

    def get_task_weights(self, task: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(kernel, bias or None)`` of one task as numpy: a Dense kernel ``[n_in, n_out]``, a Conv2D kernel
        ``[kh, kw, c_in, c_out]``."""
        return self.get_tasks_weights([task])[task]

    def get_tasks_weights(self, tasks: Iterable[int]) -> dict:
        """``{task: (kernel, bias or None)}`` of several tasks as numpy, reading the physical weights once
        (each as :meth:`get_task_weights` gives it).

        Example:
            >>> layer = ZipDense(task_units=[1, 2], task_input_units=[2, 2], input_capacity=2)
            >>> layer.build([(None, 2), (None, 2)])
            >>> {t: k.shape for t, (k, b) in layer.get_tasks_weights([0, 1]).items()}
            {0: (2, 1), 1: (2, 2)}
        """
        full = self.physical_kernel().numpy()
        biases = self.bias.numpy() if self.use_bias else None
        out = {}
        for task in tasks:
            cells, units = self._kernel_cells(task)
            out[task] = (full[cells], None if biases is None else biases[units])
        return out

    def _kernel_cells(self, task: int) -> tuple:
        """``(index of task's cells in the physical kernel, its output units)``."""
        in_map, out_map = self.get_maps(task)
        return (..., in_map[:, None], out_map[None, :]), out_map

    def get_prunable_weights(self) -> list:
        """The physical kernel (a compact layer's blocks): what TFMOT's ``prune_low_magnitude`` may sparsify."""
        return self.kernel_variables()

    def used_units(self) -> np.ndarray:
        """Sorted physical output units read by at least one task."""
        return np.unique(np.concatenate([self.get_maps(t)[1] for t in range(self.num_tasks)]))

    def unit_tasks(self) -> dict[int, frozenset]:
        """For each used physical unit, the set of tasks reading it."""
        owners: dict[int, set] = {}
        for t in range(self.num_tasks):
            for unit in self.get_maps(t)[1]:
                owners.setdefault(int(unit), set()).add(t)
        return {u: frozenset(s) for u, s in sorted(owners.items())}

    def unit_groups(self) -> dict:
        """``{frozenset(tasks): sorted physical units}`` of the used output units (widest groups first)."""
        groups: dict = {}
        for unit, tasks in self.unit_tasks().items():
            groups.setdefault(tasks, []).append(unit)
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[0]), sorted(kv[0])))
        return {k: np.asarray(v, dtype=np.int64) for k, v in ordered}

    @tf.autograph.experimental.do_not_convert  # no data-dependent Python control flow: skip the conversion cost
    def call(self, inputs: Any, training: Any = None) -> list:
        inputs = self._check_inputs(inputs)
        hooks = self._schedule_hook(inputs, training)
        return self._finish_outputs(self.task_outputs(inputs, range(len(inputs))), hooks)

    def task_weights(self, tasks: Iterable[int]) -> dict:
        """``{task: (kernel, bias or None)}``: the tensors ``tasks`` compute with (physical kernel assembled once)."""
        physical = self.physical_kernel()
        return {t: (self.task_kernel(t, physical), tf.gather(self.bias, self.out_maps[t]) if self.use_bias else None)
                for t in tasks}

    def task_outputs(self, inputs: Sequence, tasks: Iterable[int], weights: dict | None = None) -> list:
        """The outputs of ``tasks`` only (``inputs[t]`` is task ``t``'s input; no other is read), as ``call``
        computes them; ``weights``: :meth:`task_weights`, when gathered already (the zip's cache does, once)."""
        tasks = list(tasks)
        weights = self.task_weights(tasks) if weights is None else weights
        return [self.activation(self._apply_repair(self.preactivation(inputs[t], t, weights=weights[t]), t)) for t in tasks]


@keras.utils.register_keras_serializable(package="tfmot_zip")
class ZipDense(ZipLayerMixin, keras.layers.Layer):
    """A Dense layer shared by several tasks through per-task unit maps.

    Args:
        task_units: output width of each task's original Dense layer.
        task_input_units: input width of each task's original Dense layer.
        input_capacity: number of physical input units (rows of the physical kernel).
        activation: activation applied to every task's output.
        use_bias: whether the layer has a bias (one physical bias per physical unit).
        kernel_initializer, bias_initializer: initialisers of the physical weights.
        repair: hold a per-task affine on the pre-activation (statistics repair; see
            :mod:`tfmot_zip.model.repair_weights`).
        capacity: number of physical output units (columns of the physical kernel); ``None``
            (default) for the sum of ``task_units``, every task owning its columns. Fewer when
            :func:`~tfmot_zip.model.compact.compact_zipped` kept only the units some task reads.
        layout: ``None`` while the layer can be zipped; for a compact layer (zipping finished) its
            frozen maps ``{"in_maps": [...], "out_maps": [...]}``: the maps become constants and the
            kernel is stored as blocks of the cells some task reads (:mod:`tfmot_zip.model.frozen_layout`).

    Example:
        >>> layer = ZipDense(task_units=[3, 2], task_input_units=[4, 4], input_capacity=4)
        >>> outs = layer([tf.zeros((1, 4)), tf.ones((1, 4))])
        >>> [tuple(o.shape) for o in outs]
        [(1, 3), (1, 2)]
    """

    def __init__(
        self,
        task_units: Sequence[int],
        task_input_units: Sequence[int],
        input_capacity: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        track_hessians: bool = False,
        zip_options: Any = None,
        max_rows_per_step: int = 16384,
        zip_record: Any = None,
        repair: bool = False,
        capacity: int | None = None,
        layout: dict | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._init_shapes(task_units, task_input_units, input_capacity, capacity)
        self._init_layout(layout)
        self._init_common(activation, use_bias, kernel_initializer, bias_initializer)
        self._init_schedule(track_hessians, zip_options, max_rows_per_step, zip_record)
        self._init_repair(repair)

    def build(self, input_shape: Any) -> None:
        self._build_kernel((), "kernel")
        self.bias = (
            self.add_weight(name="bias", shape=(self.capacity,), initializer=self.bias_initializer, trainable=True)
            if self.use_bias
            else None
        )
        self._build_maps()
        self._build_schedule_state()
        self._build_repair()
        super().build(input_shape)

    def task_kernel(self, task: int, physical: tf.Tensor | None = None) -> tf.Tensor:
        """The kernel task ``task`` computes with: ``kernel[in_map][:, out_map]`` (of ``physical``, the
        physical kernel if already assembled)."""
        physical = self.physical_kernel() if physical is None else physical
        return tf.gather(tf.gather(physical, self.in_maps[task], axis=0), self.out_maps[task], axis=1)

    def preactivation(self, x: tf.Tensor, task: int, physical: tf.Tensor | None = None, weights: tuple | None = None) -> tf.Tensor:
        """``x W + b`` of ``task`` (before repair and activation); ``weights``: its gathered ``(kernel, bias)``."""
        kernel, bias = weights if weights is not None else (self.task_kernel(task, physical), None)
        return self._add_bias(tf.matmul(x, tf.cast(kernel, x.dtype)), task, bias)

    def compute_output_shape(self, input_shape: Any) -> list:
        return [tf.TensorShape(s).as_list()[:-1] + [n] for s, n in zip(input_shape, self.task_units)]

    def get_config(self) -> dict:
        return {**super().get_config(), **self._common_config()}


@keras.utils.register_keras_serializable(package="tfmot_zip")
class ZipConv2D(ConvGeometryMixin, ZipLayerMixin, keras.layers.Layer):
    """A Conv2D layer (channels last) shared by several tasks through per-task channel maps.

    A neuron is an output channel; ``in_map_t`` maps task ``t``'s input channels to the
    physical input channels of the kernel ``[kh, kw, input_capacity, capacity]``. Arguments as
    ``ZipDense``, plus ``kernel_size``, ``strides``, ``padding`` and ``dilation_rate`` as ``Conv2D``.

    Example:
        >>> layer = ZipConv2D(task_units=[4, 4], task_input_units=[1, 1], input_capacity=1,
        ...                   kernel_size=3, padding="same")
        >>> outs = layer([tf.zeros((1, 8, 8, 1)), tf.zeros((1, 8, 8, 1))])
        >>> [tuple(o.shape) for o in outs]
        [(1, 8, 8, 4), (1, 8, 8, 4)]
    """

    def __init__(
        self,
        task_units: Sequence[int],
        task_input_units: Sequence[int],
        input_capacity: int,
        kernel_size: Any = 3,
        strides: Any = 1,
        padding: str = "valid",
        dilation_rate: Any = 1,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        track_hessians: bool = False,
        zip_options: Any = None,
        max_rows_per_step: int = 16384,
        zip_record: Any = None,
        repair: bool = False,
        capacity: int | None = None,
        layout: dict | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._init_shapes(task_units, task_input_units, input_capacity, capacity)
        self._init_layout(layout)
        self._init_geometry(kernel_size, strides, padding, dilation_rate)
        self._init_common(activation, use_bias, kernel_initializer, bias_initializer)
        self._init_schedule(track_hessians, zip_options, max_rows_per_step, zip_record)
        self._init_repair(repair)

    def build(self, input_shape: Any) -> None:
        self._build_kernel(tuple(self.kernel_size), "kernel")
        self.bias = (
            self.add_weight(name="bias", shape=(self.capacity,), initializer=self.bias_initializer, trainable=True)
            if self.use_bias
            else None
        )
        self._build_maps()
        self._build_schedule_state()
        self._build_repair()
        super().build(input_shape)

    def _task_input_dim(self, task: int) -> int:
        return self.kernel_size[0] * self.kernel_size[1] * self.task_input_units[task]

    def _layer_rows(self, x: tf.Tensor) -> tf.Tensor:
        patches = tf.image.extract_patches(
            x,
            sizes=(1, *self.kernel_size, 1),
            strides=(1, *self.strides, 1),
            rates=(1, *self.dilation_rate, 1),
            padding=self.padding.upper(),
        )
        return tf.reshape(patches, (-1, patches.shape[-1]))

    def task_kernel(self, task: int, physical: tf.Tensor | None = None) -> tf.Tensor:
        """The kernel task ``task`` computes with (of ``physical``, the physical kernel if already assembled)."""
        physical = self.physical_kernel() if physical is None else physical
        return tf.gather(tf.gather(physical, self.in_maps[task], axis=2), self.out_maps[task], axis=3)

    def preactivation(self, x: tf.Tensor, task: int, physical: tf.Tensor | None = None, weights: tuple | None = None) -> tf.Tensor:
        """``task``'s convolution plus bias (before repair and activation); ``weights``: its gathered ``(kernel, bias)``."""
        kernel, bias = weights if weights is not None else (self.task_kernel(task, physical), None)
        y = tf.nn.conv2d(
            x,
            tf.cast(kernel, x.dtype),
            strides=(1, *self.strides, 1),
            padding=self.padding.upper(),
            dilations=(1, *self.dilation_rate, 1),
        )
        return self._add_bias(y, task, bias)

    def get_config(self) -> dict:
        config = {**self._common_config(), **self._geometry_config()}
        return {**super().get_config(), **config}


ZIP_LAYERS = (ZipDense, ZipConv2D)


def zip_layers(model: Any) -> list:
    """The zip layers (``ZipDense``, ``ZipConv2D``) of ``model``, in layer order.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> zip_layers(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]))
        []
    """
    return [layer for layer in model.layers if isinstance(layer, ZIP_LAYERS)]
