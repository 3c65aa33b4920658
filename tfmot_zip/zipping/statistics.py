"""What the zipper measures at a layer: its inputs' Hessians on every task's calibration data
(exact or per-kernel-position blocks for convolutions) and, for strategies that need them, its
output features on common inputs. Mixed into :class:`~tfmot_zip.zipping.zipper.Zipper`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core import BlockHessianAccumulator, HessianAccumulator, center_hessian, extract_patches
from tfmot_zip.core.conv_hessian import ConvHessianAccumulator
from tfmot_zip.core.hessian import conv_output_shape, gather_patches
from tfmot_zip.core.pixel_gram import PixelGramAccumulator, conv_hessian_plan
from tfmot_zip.model import batchnorm
from tfmot_zip.model.graph import AlignedNode
from tfmot_zip.zipping.activations import ActivationCache, ZipActivations
from tfmot_zip.zipping.spill import SpillPolicy, as_array
from tfmot_zip.zipping.threads import map_in_threads

_KEPT_GRAM_DIM = 2_048  # Dense inputs up to this wide keep their sums for the refit (32 MB per task at most)

__all__ = ["LayerStatisticsMixin"]


class LayerStatisticsMixin:
    """Hessians and activation statistics of the zipper's layers (uses the zipper's fields)."""

    #: Conv Hessian plans whose tasks are computed side by side, one thread each (:meth:`hessians`).
    SIDE_BY_SIDE = ("shifted_products", "patch_rows")

    def activations(self) -> ActivationCache:
        """The zipped model's tensors on the calibration data, kept across stages (built once)."""
        cache = getattr(self, "_activation_cache", None)
        if cache is None:
            cache = ActivationCache(self.model, self.calibration, batchnorm=self.batchnorm_layerwise, storage=self.storage())
            cache.before_run = self.flush_writes  # a layer's deferred weights are written before it runs
            if self.strategy.needs_activations:
                cache.replicas.refuse_workers(f"method={self.strategy.name!r}", "Use method='mtz' or the default.")
            self._activation_cache = cache
        return cache

    def final_batchnorm(self) -> "batchnorm.BatchNormUpdate":
        """Re-estimates the BatchNorm statistics when zipping ends: layer by layer, the cache's
        estimates are finished (:meth:`ActivationCache.finish_batchnorm`); otherwise (``"end"``, or
        fewer than ``MIN_SAMPLES`` samples per task: it warns) one training-mode pass over the whole
        model (:func:`~tfmot_zip.model.batchnorm.recalibrate_batchnorm`)."""
        cache = self.activations()
        # decided on every worker's samples together, so that all workers take the same branch
        if self.batchnorm_layerwise and cache.total_count() >= batchnorm.MIN_SAMPLES:
            return cache.finish_batchnorm()
        update = batchnorm.recalibrate_batchnorm(self.model, self.calibration, sum_all=cache.replicas.sum_all)
        cache.reset()  # every BatchNorm changed
        return update

    def zip_activations(self) -> ZipActivations:
        """:meth:`activations` plus one cache per original model (built once; ``mtz-lsq`` and the
        refits and repair after the zip read the same)."""
        acts = getattr(self, "_zip_activations", None)
        if acts is None:
            acts = ZipActivations(self.model, self.graph.models, self.calibration, merged=self.activations())
            self._zip_activations = acts
        return acts

    def storage(self) -> SpillPolicy:
        """Where the zip's cached activations live (memory up to ``activation_memory_mb``, then files)."""
        if self.spill is None:
            self.spill = SpillPolicy(None if self.activation_memory_mb is None else int(self.activation_memory_mb * 2**20))
        return self.spill

    def close(self) -> None:
        """Deletes the temporary files of the cached activations (the caches are unusable afterwards)."""
        if self.spill is not None:
            self.spill.close()

    def _layer_inputs(self, node: AlignedNode, tasks: Sequence[int]) -> dict:
        """``{task: the layer's input on that task's whole calibration set}`` as it is now (numpy
        arrays, or :class:`~tfmot_zip.zipping.spill.SpilledArray` read by sample ranges)."""
        cache = self.activations()
        inputs = list(self.layer(node).input)
        if cache.single:  # world t feeds task t's data to the one input
            return {t: as_array(cache.value(t, inputs[t])) for t in tasks}
        values = cache.values(0, [inputs[t] for t in tasks])
        return {t: as_array(v) for t, v in zip(tasks, values)}

    def _layer_input_batches(self, node: AlignedNode, tasks: Sequence[int]):
        """Yields ``(task, batch)`` of layer inputs, every task on its own calibration data."""
        inputs = self._layer_inputs(node, tasks)
        floats = int(np.prod(next(iter(inputs.values())).shape[1:])) * 9
        batch_size = int(max(8, min(self.batch_size, 16_000_000 // max(1, floats))))
        for t, x in inputs.items():
            for start in range(0, len(x), batch_size):
                yield t, x[start : start + batch_size]

    def _conv_geometry(self, node: AlignedNode, x) -> tuple[tuple, int]:
        """``((kernel_size, strides, padding, dilation_rate), patch rows per sample)`` of a conv on ``x``."""
        layer = self.layer(node)
        geometry = (layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
        return geometry, int(np.prod(conv_output_shape(x.shape[1:3], *geometry)))

    def _conv_rows(self, node: AlignedNode, x: np.ndarray, counts: list):
        """Yields blocks of a convolution's patch rows on ``x`` (~64 MB each), at most
        ``max_conv_rows`` of them (positions drawn evenly at random beyond it). Adds the rows used and
        available to ``counts``."""
        layer = self.layer(node)
        geometry, per_image = self._conv_geometry(node, x)
        available = len(x) * per_image
        dim = int(np.prod(layer.kernel_size)) * x.shape[-1]
        block = max(1, 16_000_000 // dim)
        counts[1] += available
        if self.max_conv_rows is not None and available > self.max_conv_rows:
            chosen = np.sort(self.rng.choice(available, size=self.max_conv_rows, replace=False))
            counts[0] += len(chosen)
            for start in range(0, len(chosen), block):
                yield gather_patches(x, *geometry, rows=chosen[start : start + block])
            return
        counts[0] += available
        images = max(1, block // per_image)
        for start in range(0, len(x), images):
            yield extract_patches(np.asarray(x[start : start + images]), *geometry)

    def _conv_plans(self, node: AlignedNode, inputs: dict) -> dict:
        """``{task: how this conv's Hessian is computed on its input}``
        (:func:`~tfmot_zip.core.pixel_gram.conv_hessian_plan`): the cheapest exact way when every patch
        row is wanted (no more rows than ``max_conv_rows``, or no cap), else a sample of
        ``max_conv_rows`` rows unless an exact way is no dearer. Planned on the samples of every
        worker of a ``tf.distribute`` strategy together, so that all accumulate the same sums (one
        all-reduce for every task)."""
        layer = self.layer(node)
        totals = self.activations().replicas.sum_all([[len(x) for x in inputs.values()]])[0]
        return {t: conv_hessian_plan(int(round(float(n))), x.shape[1:3], int(x.shape[-1]), layer.kernel_size,
                                     layer.strides, layer.padding, layer.dilation_rate, self.max_conv_rows)[0]
                for (t, x), n in zip(inputs.items(), totals)}

    def _conv_hessian(self, node: AlignedNode, x, method: str):
        """One task's exact conv Hessian accumulator over ``x`` (``"shifted_products"``:
        :class:`~tfmot_zip.core.conv_hessian.ConvHessianAccumulator`; ``"pixel_gram"``:
        :class:`~tfmot_zip.core.pixel_gram.PixelGramAccumulator`), read in ranges of samples of
        about 64 MB of float32. Touches nothing else: the tasks' run in threads side by side."""
        layer = self.layer(node)
        block = self.uses_block_hessian(node)
        if method == "pixel_gram":
            acc = PixelGramAccumulator(x.shape[1:3], x.shape[-1], layer.kernel_size, layer.strides, layer.padding,
                                       layer.dilation_rate, block=block)
        else:
            acc = ConvHessianAccumulator(x.shape[1:3], x.shape[-1], layer.kernel_size, layer.padding, layer.dilation_rate,
                                         block=block)
        step = max(1, 16_000_000 // int(np.prod(x.shape[1:])))
        for start in range(0, len(x), step):
            acc.update(np.asarray(x[start : start + step]))
        return acc

    def hessians(self, node: AlignedNode) -> list[np.ndarray]:
        """Layer Hessians ``E[x~ x~^T]`` of every task up to the current one (bias last when used).

        Undamped: the damping is added where they are inverted (:meth:`_invert`)."""
        if node.index in self._hessian_cache:
            return self._hessian_cache[node.index]
        layer = self.layer(node)
        tasks = list(range(self.task + 1))
        if self.hessian_provider is not None:
            hessians = []
            for t in tasks:
                h = self._centered(self.hessian_provider(layer, t))
                hessians.append(h if layer.use_bias else h[:-1, :-1])
            self._hessian_cache[node.index] = hessians
            return hessians
        accumulators: dict[int, HessianAccumulator] = {}
        record = self.records[node.index]
        record.hessian_rows = [0, 0]  # of this measurement (every task so far)
        inputs = self._layer_inputs(node, tasks)
        plans = self._conv_plans(node, inputs) if node.kind == "conv" else {}
        # a layer reading the model's inputs (through no zip layer) reads the same values in every
        # pass: its Hessians are measured once per task (a later pass of a 3-model zip reuses them)
        reads_inputs = not self.input_feature(node).space_ids
        fixed = self._fixed_input_hessians.setdefault(node.index, {}) if reads_inputs else {}
        task_rows: dict[int, list[int]] = {}  # (rows used, rows available) of each task measured now
        # shifted products are thin matrix products the BLAS library splits badly, and every patch row
        # (no sample: no random draws) is mostly gathering: the tasks' run side by side on the cores; a
        # pixel Gram matrix is one wide product it splits well, and a sample draws from the zip's generator
        side_by_side = [t for t in inputs if t not in fixed and plans.get(t) in self.SIDE_BY_SIDE]
        exact = dict(zip(side_by_side, map_in_threads(lambda t: self._task_hessian(node, inputs[t], plans[t]), side_by_side)))
        for t, x in inputs.items():
            if t in fixed:
                continue
            accumulators[t], task_rows[t] = exact[t] if t in exact else self._task_hessian(node, x, plans.get(t))
            record.hessian_rows = [a + b for a, b in zip(record.hessian_rows, task_rows[t])]
        hessians = []
        # a Dense layer reading the model's inputs reads them unchanged after zipping too: its refit
        # (zipping/refit.py) takes these sums instead of computing them again
        keep_gram = node.kind == "dense" and reads_inputs
        for t in tasks:
            if t in fixed:  # measured in an earlier pass
                raw, rows = fixed[t]
                record.hessian_rows = [a + b for a, b in zip(record.hessian_rows, rows)]
            else:
                accumulators[t].reduce(self.activations().replicas.sum_all)  # over the workers of a tf.distribute strategy
                if keep_gram and isinstance(accumulators[t], HessianAccumulator) and accumulators[t].dim <= _KEPT_GRAM_DIM:
                    self.input_grams.setdefault(node.name, {})[t] = accumulators[t].gram()
                raw = accumulators[t].hessian()
                if reads_inputs and self.task < self.n_tasks - 1:  # kept only for a later pass
                    fixed[t] = (raw, task_rows[t])
            h = self._centered(raw)
            if not layer.use_bias:
                h = h[:-1, :-1]
            hessians.append(h)
        self._hessian_cache[node.index] = hessians
        return hessians

    def _task_hessian(self, node: AlignedNode, x, method: str | None) -> tuple:
        """``(accumulator, [rows used, rows available])`` of one task's Hessian over ``x`` computed the way
        ``method`` (a conv plan; ``None`` for a Dense layer) says."""
        if method in ("shifted_products", "pixel_gram"):
            accumulator = self._conv_hessian(node, x, method)
            return accumulator, [accumulator.count] * 2
        counts = [0, 0]
        return self._row_hessian(node, x, counts), counts

    def _row_hessian(self, node: AlignedNode, x, counts: list) -> HessianAccumulator:
        """One task's Hessian accumulator over the rows of ``x``: a Dense layer's inputs (float64
        products), or a convolution's patch rows (float32 products; sampled beyond ``max_conv_rows``,
        the rows used and available added to ``counts``)."""
        layer = self.layer(node)
        if node.kind == "conv":
            blocks, dtype = self._conv_rows(node, x, counts), np.float32
        else:
            width = int(np.prod(x.shape[1:]))
            step = max(1, 16_000_000 // max(1, width))
            blocks = (np.asarray(x[i : i + step]).reshape(-1, width) for i in range(0, len(x), step))
            dtype = np.float64
        accumulator = None
        for rows in blocks:
            if accumulator is None:
                if node.kind == "conv" and self.uses_block_hessian(node):
                    positions = layer.kernel_size[0] * layer.kernel_size[1]
                    accumulator = BlockHessianAccumulator(positions, rows.shape[1] // positions)
                else:
                    accumulator = HessianAccumulator(rows.shape[1], batch_dtype=dtype)
            accumulator.update(rows)
        return accumulator

    def _centered(self, hessian: np.ndarray) -> np.ndarray:
        """The Hessian the strategy scores with (the covariance form for ``mtz-centered``)."""
        return center_hessian(hessian) if self.strategy.centered else hessian

    def uses_block_hessian(self, node: AlignedNode) -> bool:
        """Whether this conv layer's Hessian uses the per-kernel-position block approximation."""
        if node.kind != "conv" or self.conv_hessian == "exact":
            return False
        if self.conv_hessian == "block":
            return True
        layer = self.layer(node)
        widest = max(layer.task_input_units) * layer.kernel_size[0] * layer.kernel_size[1] + 1
        return widest > self.block_threshold

    def statistics(self, node: AlignedNode) -> dict:
        """Extra inputs of a strategy: output features on common inputs when needed."""
        if not self.strategy.needs_activations:
            return {}
        if node.index in self._stats_cache:
            return self._stats_cache[node.index]
        per_task = max(1, self.activation_samples // (self.task + 1))
        common = np.concatenate([self.calibration[t][:per_task] for t in range(self.task + 1)])
        extractor = keras.Model(self.model.inputs, list(self.layer(node).output))
        feats: list[list[np.ndarray]] = [[] for _ in range(self.n_tasks)]
        for start in range(0, len(common), self.batch_size):
            chunk = common[start : start + self.batch_size]
            outs = extractor(chunk if len(self.model.inputs) == 1 else [chunk] * self.n_tasks, training=False)
            for t in range(self.task + 1):
                out = np.asarray(outs[t])
                feats[t].append(out.reshape(-1, out.shape[-1]))
        stats = {"features": [np.concatenate(f) if f else None for f in feats]}
        self._stats_cache[node.index] = stats
        return stats
