"""Every tensor of a zipped model on the calibration data, computed once and kept while needed.

Zipping is bottom-up: the inputs of layer ``l`` are final once the layers below it are merged, and
merging ``l`` changes only what lies downstream of it. :class:`ActivationCache` therefore runs the
zipped model's functional graph node by node (eagerly, on whole calibration arrays) and keeps the
value of each tensor until every node that reads it has run, so that measuring the next layer's
inputs costs the few layers between it and the last stage, not a pass from the input: zipping
costs a constant number of passes over the network, not one per layer.

:meth:`ActivationCache.invalidate` drops the values downstream of layers whose weights or maps
changed. With ``batchnorm=True`` the BatchNorm layers downstream of a change are marked stale and
re-estimated from their own input values the next time the cache runs them (the statistics
:func:`tfmot_zip.model.batchnorm.recalibrate_batchnorm` would give: the first ``max_samples`` samples
in batches of ``batch_size``, batch statistics averaged, degenerate channels kept), so that each next
layer's Hessian sees the statistics it will run with, without a training pass over the whole model
after every layer.

A model with one input for every task is run once per task ("world" ``t`` feeds task ``t``'s data);
a BatchNorm layer serving task ``t`` is re-estimated in world ``t`` only, on that task's data.

Memory is bounded by a :class:`~tfmot_zip.zipping.spill.SpillPolicy`: a layer runs on at most
``batch_bytes`` of samples at a time, and the values kept beyond ``memory_bytes`` go to temporary
files, read back by sample ranges. A request whose values would not fit in what the limit leaves
runs batch by batch through all its nodes and stores only the values that outlive it (those asked
for, and those a node outside it reads); a stale BatchNorm, whose estimate needs its whole input,
cuts it into such runs. Values are numpy arrays, tf tensors or
:class:`~tfmot_zip.zipping.spill.SpilledArray`; ``np.asarray`` reads any of them whole.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from tfmot_zip.compat import keras, tf
from tfmot_zip.model.batchnorm import MIN_SAMPLES, BatchNormUpdate, degenerate_channels, warn_restored
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.layers import ZIP_LAYERS, ZipLayerMixin
from tfmot_zip.zipping.distribute import Replicas
from tfmot_zip.zipping.spill import ALIGNMENT, SpilledArray, SpillPolicy, as_array, sample_bytes

__all__ = ["ActivationCache", "shared_tensor"]


class ActivationCache:
    """Values of a functional model's tensors on per-task calibration data, computed lazily.

    Args:
        model: a zipped model (one input per task, or one shared input).
        calibration: one array of inputs per task (lengths may differ).
        batchnorm: re-estimate stale BatchNorm statistics when their layer runs.
        max_samples: samples per task a BatchNorm estimate uses (as ``recalibrate_batchnorm``).
        batch_size: samples per batch statistic of a BatchNorm estimate.
        storage: where values are kept and how large a batch a layer runs on (None: a
            :class:`~tfmot_zip.zipping.spill.SpillPolicy` without a memory limit).
        replicas: the replicas layer calls are split across and sums are reduced over (None: those
            of the ``tf.distribute`` strategy in scope, if any; :mod:`tfmot_zip.zipping.distribute`).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> inp = keras.Input((3,))
        >>> dense = keras.layers.Dense(2, name="d")
        >>> model = keras.Model(inp, keras.layers.ReLU()(dense(inp)))
        >>> x = np.ones((5, 3), np.float32)
        >>> cache = ActivationCache(model, [x])
        >>> np.asarray(cache.value(0, dense.output)).shape
        (5, 2)
        >>> cache.computed_nodes  # the Dense node only; the ReLU was not needed
        1
    """

    def __init__(
        self,
        model: keras.Model,
        calibration: Sequence[np.ndarray],
        batchnorm: bool = False,
        max_samples: int = 2000,
        batch_size: int = 250,
        storage: SpillPolicy | None = None,
        replicas: Replicas | None = None,
    ):
        self.model = model
        self.storage = storage if storage is not None else SpillPolicy()
        self.replicas = replicas if replicas is not None else Replicas.current()
        self.single = len(model.inputs) == 1
        n_worlds = len(calibration) if self.single else 1
        if not self.single and len(model.inputs) != len(calibration):
            raise ValueError(f"Expected one calibration array per model input ({len(model.inputs)}); received {len(calibration)}.")
        self.batchnorm = batchnorm
        self.max_samples = max_samples
        self.batch_size = batch_size
        self.count = min(min(len(c) for c in calibration), max_samples)
        self.computed_nodes = 0  # node runs so far (a cost measure)
        self._producer: dict[str, object] = {}  # tensor id -> node
        self._readers: dict[str, list] = {}  # tensor id -> nodes reading it
        self._order: dict[int, int] = {}  # id(node) -> topological position
        depth_keys = sorted(model._nodes_by_depth, reverse=True)
        nodes = [n for d in depth_keys for n in model._nodes_by_depth[d] if not n.is_input]
        for position, node in enumerate(nodes):
            self._order[id(node)] = position
            for tid in node.flat_output_ids:
                self._producer[tid] = node
            for tid in set(node.flat_input_ids):
                self._readers.setdefault(tid, []).append(node)
        self._input_ids = [str(id(t)) for t in model.inputs]
        self._values: list[dict[str, object]] = [{} for _ in range(n_worlds)]
        self._done: list[set[int]] = [set() for _ in range(n_worlds)]  # nodes run since their inputs last changed
        for w in range(n_worlds):
            self._seed(w, calibration)
        self._stale: set[str] = set()  # BatchNorm layers to re-estimate
        self._estimated: dict[str, int] = {}  # BatchNorm layers re-estimated so far -> channels kept trained
        self._bn_task = self._batchnorm_tasks() if batchnorm else {}
        self.before_run: Any = None  # called with the layers of the nodes about to run (e.g. to write them)

    def _seed(self, world: int, calibration: Sequence[np.ndarray]) -> None:
        feeds = [calibration[world]] if self.single else list(calibration)
        for tid, data in zip(self._input_ids, feeds):
            self._values[world][tid] = data if isinstance(data, SpilledArray) else np.asarray(data, np.float32)

    def _batchnorm_tasks(self) -> dict[str, int | None]:
        """The task each BatchNorm layer serves (the one output its result reaches; None if several)."""
        reach: dict[str, set[int]] = {}
        for t, out in enumerate(self.model.outputs):
            reach.setdefault(str(id(out)), set()).add(t)
        for node in sorted(set(self._producer.values()), key=lambda n: -self._order[id(n)]):
            outs = [reach.get(tid, set()) for tid in node.flat_output_ids]
            if isinstance(node.layer, (ZipLayerMixin, ZipDepthwiseConv2D)):  # task t's output reads input t only
                for tid, tasks in zip(node.flat_input_ids, outs):
                    reach.setdefault(tid, set()).update(tasks)
                continue
            tasks = set().union(*outs) if outs else set()
            for tid in node.flat_input_ids:
                reach.setdefault(tid, set()).update(tasks)
        out = {}
        for node in set(self._producer.values()):
            if isinstance(node.layer, keras.layers.BatchNormalization):
                tasks = reach.get(node.flat_input_ids[0], set())
                out[node.layer.name] = next(iter(tasks)) if len(tasks) == 1 else None
        return out

    # --- values ------------------------------------------------------------------------------
    def value(self, world: int, tensor):
        """The value of a symbolic tensor of the model in ``world`` (0 unless one shared input)."""
        return self.values(world, [tensor])[0]

    def values(self, world: int, tensors: Sequence) -> list:
        """Values of several symbolic tensors in ``world``, running only the nodes they need."""
        cache = self._values[world]
        ids = [str(id(t)) for t in tensors]
        needed: dict[int, object] = {}
        tasks: dict[int, set[int]] = {}  # a zip layer's node -> the outputs (tasks) wanted of it
        stack = [tid for tid in ids if tid not in cache]
        while stack:
            tid = stack.pop()
            if tid in cache:
                continue
            node = self._producer.get(tid)
            if node is None:
                raise KeyError(f"Tensor {tid} is not computed by the model's graph.")
            if _per_task(node):  # output t reads input t only: task t's input is all it needs
                task = node.flat_output_ids.index(tid)
                if task not in tasks.setdefault(id(node), set()):
                    tasks[id(node)].add(task)
                    needed[id(node)] = node
                    stack.append(node.flat_input_ids[task])
                continue
            if id(node) in needed:
                continue
            needed[id(node)] = node
            stack.extend(i for i in node.flat_input_ids if i not in cache)
        keep = set(ids)
        self._done[world].difference_update(needed)  # to run again: their inputs must stay until they have
        order = sorted(needed.values(), key=lambda n: self._order[id(n)])
        # node by node; or, when that would hold more than the limit allows, batch by batch through
        # every node of a segment, so that only what outlives the segment is kept
        for segment in self._segments(order) if self._spills(world, order) else [[n] for n in order]:
            self._run(world, segment, keep, tasks)
            self._evict(world, keep)  # as soon as a value is consumed, so the values held stay few
        return [cache[tid] for tid in ids]

    def _node_call(self, node):
        """``call(feeds)``: the node's layer on one value per distinct input (split across the
        replicas of a ``tf.distribute`` strategy in scope, if any); returns the flat outputs."""
        layer = node.layer
        uses = Counter(node.flat_input_ids)
        kwargs_extra = {"training": False} if getattr(layer, "_expects_training_arg", False) else {}

        def compute(feeds: list) -> list:
            feeds = [shared_tensor(v) for v in feeds]
            args, kwargs = node.map_arguments({tid: [v] * n for (tid, n), v in zip(uses.items(), feeds)})
            return tf.nest.flatten(layer(*args, **kwargs, **kwargs_extra))

        return lambda feeds: self.replicas.run(compute, feeds)

    def _tasks_call(self, node, tasks: list[int], weights: dict):
        """``call(feeds)`` of a zip layer's node computing only ``tasks`` (``feeds``: their inputs, in
        that order; split across replicas as :meth:`_node_call`) with their gathered ``weights``;
        returns their outputs."""
        def compute(feeds: list) -> list:
            inputs = dict(zip(tasks, (tf.convert_to_tensor(shared_tensor(v), tf.float32) for v in feeds)))
            return node.layer.task_outputs(inputs, tasks, weights)

        return lambda feeds: self.replicas.run(compute, feeds)

    def _maybe_estimate(self, world: int, node) -> None:
        """Re-estimates a stale BatchNorm layer's statistics from its input value, in the world it serves."""
        layer = node.layer
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name in self._stale:
            task = self._bn_task.get(layer.name)
            if not self.single or task == world or task is None and world == 0:
                self._estimate(layer, self._values[world][node.flat_input_ids[0]])

    def _spills(self, world: int, order: list) -> bool:
        """Whether running ``order`` node by node would hold more than the memory limit leaves."""
        if self.storage.memory_bytes is None or len(order) < 2:
            return False
        cache = self._values[world]
        length = max(int(cache[tid].shape[0]) for n in order for tid in n.flat_input_ids if tid in cache)
        produced = sum(sample_bytes(t) for n in order for t in tf.nest.flatten(n.outputs)) * length
        return produced > self.storage.memory_bytes - self.storage.held

    def _segments(self, order: list) -> list:
        """``order`` cut before every stale BatchNorm layer, whose estimate needs its whole input."""
        segments: list = [[]]
        for node in order:
            if segments[-1] and isinstance(node.layer, keras.layers.BatchNormalization) and node.layer.name in self._stale:
                segments.append([])
            segments[-1].append(node)
        return segments

    def _run(self, world: int, nodes: list, keep: set, tasks: dict | None = None) -> None:
        """Runs ``nodes`` (topologically ordered) batch by batch, each batch through all of them (one
        call on the whole set when it fits in a batch); keeps only the values requested or read by a
        node outside ``nodes``, in memory or in a file (the storage decides). A zip layer's node
        computes only the outputs ``tasks[id(node)]`` names (all when it has no entry)."""
        cache = self._values[world]
        if self.before_run is not None:
            self.before_run([n.layer for n in nodes])
        self._maybe_estimate(world, nodes[0])
        members = {id(n) for n in nodes}
        # a zip layer's node runs the wanted tasks only: output t reads input t
        wanted = {id(n): sorted((tasks or {}).get(id(n), range(len(n.flat_output_ids)))) if _per_task(n)
                  else range(len(n.flat_output_ids)) for n in nodes}
        symbolic = {n.flat_output_ids[i]: tf.nest.flatten(n.outputs)[i] for n in nodes for i in wanted[id(n)]}
        reads = {id(n): [n.flat_input_ids[i] for i in wanted[id(n)]] if _per_task(n) else n.flat_input_ids for n in nodes}
        external = list(dict.fromkeys(t for n in nodes for t in reads[id(n)] if t not in symbolic))
        length = {tid: int(cache[tid].shape[0]) for tid in external}
        for n in nodes:  # a zip layer's output i reads input i only (per-task lengths may differ)
            ins, outs = n.flat_input_ids, n.flat_output_ids
            for i in wanted[id(n)]:
                length[outs[i]] = length[ins[i]] if len(outs) == len(ins) else max(length[t] for t in ins)
        store = [tid for tid in symbolic if tid in keep or any(id(r) not in members for r in self._readers.get(tid, []))]
        per_sample = sum(sample_bytes(cache[t]) for t in external) + sum(sample_bytes(t) for t in symbolic.values())
        step = max(1, self.storage.batch_bytes // max(1, per_sample))
        writers = {tid: self.storage.writer(sample_bytes(symbolic[tid]) * length[tid]) for tid in store}
        calls = [self._node_call(n) for n in nodes]
        gathered = {id(n): n.layer.task_weights(wanted[id(n)]) for n in nodes if _per_task(n)}  # once, not per batch
        first: dict = {}  # one sample of each value: fed in place of an exhausted input
        for start in range(0, max(length.values()), step):
            vals = {t: _batch(cache[t], start, step, length[t]) for t in external}
            for n, call in zip(nodes, calls):
                if _per_task(n):  # the wanted tasks whose inputs are not exhausted
                    running = [t for t in wanted[id(n)] if vals[n.flat_input_ids[t]] is not None]
                    outs = self._tasks_call(n, running, gathered[id(n)])([vals[n.flat_input_ids[t]] for t in running]) if running else []
                    vals.update((n.flat_output_ids[t], None) for t in wanted[id(n)])
                    vals.update((n.flat_output_ids[t], out) for t, out in zip(running, outs))
                    continue
                ins = list(Counter(n.flat_input_ids))
                if all(vals[t] is None for t in ins):
                    vals.update((t, None) for t in n.flat_output_ids)
                    continue
                outs = call([vals[t] if vals[t] is not None else first[t] for t in ins])
                paired = len(outs) == len(n.flat_input_ids)
                for i, (tid, out) in enumerate(zip(n.flat_output_ids, outs)):
                    vals[tid] = None if paired and vals[n.flat_input_ids[i]] is None else out
            if start == 0:
                first = {t: v[:1] for t, v in vals.items()}
            for tid in store:
                if vals[tid] is not None:
                    writers[tid].append(vals[tid])
        for tid in store:
            cache[tid] = writers[tid].finish()
        for n in nodes:
            self._done[world].add(id(n))
            self.computed_nodes += 1

    def _estimate(self, layer, inputs) -> None:
        """Sets a BatchNorm layer's moving statistics from its input values (see the module doc)."""
        self._stale.discard(layer.name)
        count = min(self.count, int(inputs.shape[0]))
        axes = [a % len(inputs.shape) for a in np.atleast_1d(layer.axis)]
        reduce = [a for a in range(len(inputs.shape)) if a not in axes]
        mean_sum = np.zeros([int(inputs.shape[a]) for a in axes])
        var_sum = np.zeros_like(mean_sum)
        batches = 0
        fused = getattr(layer, "fused", False)  # the fused kernel's batch variance is the unbiased one
        channels_last = len(inputs.shape) == 4 and axes == [3] and inputs.dtype == np.float32
        for start in range(0, count, self.batch_size):
            chunk = shared_tensor(inputs[start : min(start + self.batch_size, count)])
            if fused and channels_last:  # that kernel itself: one pass, no temporary of the squares
                c = int(inputs.shape[3])
                _, mean, var = tf.compat.v1.nn.fused_batch_norm(chunk, tf.ones([c]), tf.zeros([c]), is_training=True)
            else:
                mean, var = tf.nn.moments(chunk, axes=reduce)
                if fused:
                    n = int(np.prod([chunk.shape[a] for a in reduce]))
                    var = var * (n / max(n - 1, 1))
            mean_sum += mean.numpy().astype(np.float64)
            var_sum += var.numpy().astype(np.float64)
            batches += 1
        # the average of every worker's batch statistics (one worker: of this one's)
        mean_sum, var_sum, (batches, count) = self.replicas.sum_all([mean_sum, var_sum, [batches, count]])
        if count < MIN_SAMPLES:
            return  # too few samples: the statistics stay (recalibrate_batchnorm warns at the end)
        new_mean, new_var = mean_sum / batches, var_sum / batches
        old_mean, old_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        bad = degenerate_channels(new_var, old_var) | ~np.isfinite(new_mean)
        layer.moving_mean.assign(np.where(bad, old_mean, new_mean).astype(np.float32))
        layer.moving_variance.assign(np.where(bad, old_var, new_var).astype(np.float32))
        self._estimated[layer.name] = int(bad.sum())

    def total_count(self) -> int:
        """Samples per task a BatchNorm estimate uses, summed over the workers of a ``tf.distribute``
        strategy (one all-reduce: every worker must call it)."""
        return int(round(float(self.replicas.sum_all([self.count])[0])))

    def finish_batchnorm(self) -> BatchNormUpdate:
        """Ends a layer-by-layer re-estimation: every BatchNorm layer not re-estimated yet is, in
        topological order, and every stale one again, by running the model's outputs through the
        cache (only the nodes whose values are gone run). Afterwards each BatchNorm's statistics are
        those of its own inputs under the final weights and statistics of every layer below it.

        Returns what :func:`~tfmot_zip.model.batchnorm.recalibrate_batchnorm` would report (and
        warns as it does about degenerate channels). Needs ``batchnorm=True`` and at least
        :data:`~tfmot_zip.model.batchnorm.MIN_SAMPLES` samples per task (else ``ValueError``).
        """
        if not self.batchnorm:
            raise ValueError("finish_batchnorm needs a cache built with batchnorm=True.")
        total = self.total_count()
        if total < MIN_SAMPLES:
            raise ValueError(f"Only {total} calibration samples per task; BatchNorm needs at least {MIN_SAMPLES}.")
        never = [l for l in self.model.layers if isinstance(l, keras.layers.BatchNormalization) and l.name not in self._estimated]
        self.invalidate(never)  # marks them (and every BatchNorm downstream) stale
        if self.single:  # world t serves task t only
            for world, output in enumerate(self.model.outputs):
                self.values(world, [output])
        else:
            self.values(0, self.model.outputs)
        names = [l.name for l in self.model.layers if isinstance(l, keras.layers.BatchNormalization)]
        update = BatchNormUpdate(updated=[n for n in names if n in self._estimated], samples=total,
                                 restored_channels={n: c for n, c in self._estimated.items() if c})
        warn_restored(update)
        return update

    def _evict(self, world: int, keep: set[str]) -> None:
        """Drops values every reader of which has run since its inputs last changed (the model
        inputs always stay; a reader's own outputs may be gone already, consumed in turn)."""
        cache, done = self._values[world], self._done[world]
        for tid in list(cache):
            if tid in keep or tid in self._input_ids:
                continue
            readers = self._readers.get(tid, [])
            if readers and all(id(r) in done for r in readers):
                self.storage.release(cache.pop(tid))

    # --- changes -------------------------------------------------------------------------------
    def invalidate(self, layers: Sequence) -> None:
        """Forgets every value downstream of ``layers`` (whose weights, maps or statistics changed).

        BatchNorm layers downstream become stale (re-estimated when next run, if ``batchnorm``)."""
        changed = {id(layer) for layer in layers}
        starts = [n for n in self._producer.values() if id(n.layer) in changed]
        seen: set[int] = set()
        stack = list(starts)
        dropped: set[str] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if self.batchnorm and isinstance(node.layer, keras.layers.BatchNormalization):
                self._stale.add(node.layer.name)
            for tid in node.flat_output_ids:
                dropped.add(tid)
                stack.extend(self._readers.get(tid, []))
        for cache, done in zip(self._values, self._done):
            done.difference_update(seen)
            for tid in dropped:
                if tid in cache:
                    self.storage.release(cache.pop(tid))

    def reset(self) -> None:
        """Forgets every computed value (e.g. after training changed the weights)."""
        for done in self._done:
            done.clear()
        for cache in self._values:
            for tid in list(cache):
                if tid not in self._input_ids:
                    self.storage.release(cache.pop(tid))


def _per_task(node) -> bool:
    """Whether a node is a zip layer (Dense, Conv2D, depthwise) whose outputs the cache computes task
    by task (:meth:`~tfmot_zip.model.layers.ZipLayerMixin.task_outputs`): one output per input, float32."""
    return (isinstance(node.layer, (*ZIP_LAYERS, ZipDepthwiseConv2D)) and node.layer.compute_dtype == "float32"
            and len(node.flat_output_ids) == len(node.flat_input_ids))


def shared_tensor(value: Any) -> Any:
    """``value`` as a tf tensor sharing its memory when it is a float32 numpy array TensorFlow can
    read in place (C-contiguous, writeable, aligned to :data:`~tfmot_zip.zipping.spill.ALIGNMENT`
    bytes, as :meth:`SpillPolicy.empty` allocates), through DLPack; anything else unchanged
    (TensorFlow copies every array it converts). The cache never writes a value's array after it is
    stored, and a buffer a tensor still refers to is not reused (:meth:`SpillPolicy.empty` counts
    references).

    Example:
        >>> policy = SpillPolicy()
        >>> array = policy.empty((2, 3), np.float32)
        >>> array[...] = 1.0
        >>> tensor = shared_tensor(array)
        >>> array[0, 0] = 5.0  # the tensor reads the array's memory
        >>> float(tensor[0, 0])
        5.0
        >>> shared_tensor(np.zeros(3, np.int64)).dtype  # not float32: left to TensorFlow's conversion
        dtype('int64')
    """
    if (type(value) is np.ndarray and value.dtype == np.float32 and value.size and value.flags.c_contiguous
            and value.flags.writeable and value.ctypes.data % ALIGNMENT == 0):
        return tf.experimental.dlpack.from_dlpack(value.__dlpack__())
    return value


def _whole(value):
    """A value as a layer can take it whole (a spilled value is read from its file)."""
    return np.asarray(value) if isinstance(value, SpilledArray) else value


def _batch(value, start: int, step: int, length: int):
    """Samples ``[start, start + step)`` of a value of ``length`` samples as a layer takes them
    (the value itself when that is all of it; None once it is exhausted)."""
    if start >= length:
        return None
    return _whole(value if start == 0 and step >= length else value[start : start + step])


class ZipActivations:
    """The caches a zip and its refits read: the zipped model's and each original model's.

    The original models never change, so their values stay until every reader ran; the zipped
    model's cache is the zipper's (:meth:`ActivationCache.invalidate` after each change).

    Args:
        zipped: the zipped model.
        models: the original models, one per task.
        calibration: one array of inputs per task.
        merged: an existing cache of ``zipped`` to reuse (e.g. the zipper's); None builds one.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> import tfmot_zip
        >>> a, b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(a, b, calibration_data=(x_a, x_b), sharing=0.0)
        >>> acts = ZipActivations(zipped, [a, b], [x_a, x_b])
        >>> merged = acts.merged_inputs(zipped.get_layer("fc1"), 0)
        >>> original = acts.original_input(a.get_layer("fc1"), 0)
        >>> bool(np.allclose(merged, original))
        True
    """

    def __init__(self, zipped: keras.Model, models: Sequence[keras.Model], calibration: Sequence[np.ndarray],
                 merged: ActivationCache | None = None):
        self.merged = merged if merged is not None else ActivationCache(zipped, calibration)
        self.originals = [ActivationCache(m, [calibration[t]], storage=self.merged.storage, replicas=self.merged.replicas)
                          for t, m in enumerate(models)]

    def merged_inputs(self, layer, task: int):
        """Task ``task``'s input of a zip layer of the zipped model on its whole calibration set
        (a numpy array, or a :class:`~tfmot_zip.zipping.spill.SpilledArray` read by ranges)."""
        world = task if self.merged.single else 0
        return as_array(self.merged.value(world, list(layer.input)[task]))

    def original_input(self, layer, task: int):
        """The input of a layer of task ``task``'s original model on its whole calibration set
        (a numpy array, or a :class:`~tfmot_zip.zipping.spill.SpilledArray` read by ranges)."""
        return as_array(self.originals[task].value(0, layer.input))

    def changed(self, layer) -> None:
        """Tells the zipped model's cache that ``layer`` changed (weights, repair affine)."""
        self.merged.invalidate([layer])
