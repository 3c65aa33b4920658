"""Zipping inside a ``tf.distribute`` strategy scope: calibration passes on every replica, sums
across workers.

``zip_models`` called under ``strategy.scope()`` builds the zipped model there (its variables are
the strategy's, ready for ``fit``) and zips with the strategy's replicas:

- Within a worker, every batch of a calibration pass is split across the worker's replicas
  (``strategy.run``) and the outputs are gathered on the host, where the float64 sums are kept.
- Across workers (``MultiWorkerMirroredStrategy``), each process passes its own shard of the
  calibration data, and every sum the zip is built from is all-reduced before it is used: the
  layer Hessians, the refits' Gram matrices, the repair's moments and the BatchNorm statistics.
  Every worker then makes the same choices and writes the same weights: the zip of the union of
  the shards, as one process would compute it (exactly, up to float64 rounding, as long as no
  cap draws a subset: ``max_conv_rows`` and the BatchNorm estimate's ``max_samples`` apply per
  worker).

Every worker must call ``zip_models`` with the same models and options; the reductions are
collective, so a worker that fails leaves the others waiting until the strategy's collective
timeout.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from tfmot_zip.compat import tf

__all__ = ["Replicas"]


class Replicas:
    """The replicas of the strategy in scope (or of none): split a pass, sum across workers.

    Example:
        >>> replicas = Replicas.current()  # no strategy in scope: one replica, one worker
        >>> replicas.local, replicas.workers
        (1, 1)
        >>> replicas.sum(np.ones(2))
        array([1., 1.])
        >>> [tuple(o.shape) for o in replicas.run(lambda xs: [xs[0] * 2.0], [np.ones((3, 2), np.float32)])]
        [(3, 2)]
    """

    def __init__(self, strategy: Any | None = None):
        self.strategy = strategy
        devices = tuple(strategy.extended.worker_devices) if strategy is not None else ()
        self.local = max(1, len(devices))
        self.replicas_in_sync = int(strategy.num_replicas_in_sync) if strategy is not None else 1
        self.workers = max(1, self.replicas_in_sync // self.local)
        self.used: set[int] = set()  # replica ids that ran a calibration batch
        self.reductions = 0  # all-reduces across workers so far

    @classmethod
    def current(cls) -> "Replicas":
        """The strategy whose scope the caller is in (``tf.distribute.has_strategy()``), or none.

        Only ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy`` split and reduce; under any
        other (one device, parameter servers, TPUs) the zip runs in this process as without one
        (its variables are still created in the scope)."""
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        if not isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
            strategy = None
        return cls(strategy)

    def run(self, fn: Callable[[list], list], batches: Sequence[Any]) -> list:
        """``fn(batches)`` (a list of outputs), with the batches split by rows across this worker's replicas.

        Each replica runs ``fn`` on its rows of every batch (``strategy.run``); the outputs are
        concatenated in order, so the result equals ``fn(batches)``. One replica, batches of
        different lengths, or fewer rows than replicas: ``fn(batches)`` directly."""
        lengths = {int(b.shape[0]) for b in batches}
        if self.strategy is None or self.local == 1 or len(lengths) != 1 or min(lengths) < self.local:
            if self.strategy is not None:
                self.used.add(_first_local_replica(self.strategy, self.local))
            return fn(list(batches))
        bounds = np.linspace(0, lengths.pop(), self.local + 1).astype(int)
        slices = [[b[lo:hi] for b in batches] for lo, hi in zip(bounds[:-1], bounds[1:])]
        first = _first_local_replica(self.strategy, self.local)
        values = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: slices[ctx.replica_id_in_sync_group - first]
        )

        def replica_fn(parts):
            self.used.add(int(tf.distribute.get_replica_context().replica_id_in_sync_group))
            return fn(list(parts))

        logger = tf.get_logger()
        logger.addFilter(_quiet_eager_run)  # the layer calls are eager on purpose: one call per batch and layer
        try:
            outputs = self.strategy.run(replica_fn, args=(values,))
        finally:
            logger.removeFilter(_quiet_eager_run)
        return [tf.concat([tf.convert_to_tensor(v) for v in self.strategy.experimental_local_results(o)], axis=0)
                for o in outputs]

    def sum(self, array: Any) -> np.ndarray:
        """``array`` summed over the workers (float64; itself with one worker)."""
        array = np.asarray(array, np.float64)
        if self.strategy is None or self.workers == 1:
            return array
        self.reductions += 1
        share = tf.constant(array / self.local)  # each local replica holds a share: the sum counts a worker once
        values = self.strategy.experimental_distribute_values_from_function(lambda ctx: share)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()

    def sum_all(self, arrays: Sequence[Any]) -> list[np.ndarray]:
        """Several arrays summed over the workers in one all-reduce (flattened and split back)."""
        arrays = [np.asarray(a, np.float64) for a in arrays]
        if self.strategy is None or self.workers == 1:
            return arrays
        flat = self.sum(np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0))
        out, start = [], 0
        for a in arrays:
            out.append(flat[start : start + a.size].reshape(a.shape))
            start += a.size
        return out

    def record(self) -> dict:
        """``{"distribute": summary()}`` for a zip layer's record under a strategy; ``{}`` without one."""
        return {"distribute": self.summary()} if self.strategy is not None else {}

    def refuse_workers(self, what: str, fix: str) -> None:
        """Raises a clear error if the zip runs on several workers and ``what`` cannot be summed across them."""
        if self.workers > 1:
            raise ValueError(
                f"{what} is not available when zipping across {self.workers} workers "
                f"({type(self.strategy).__name__}): it reads every task's calibration data in one process. {fix}"
            )

    def summary(self) -> dict:
        """What ran where: ``{strategy, workers, replicas, replicas_used, reductions}``."""
        return {
            "strategy": type(self.strategy).__name__ if self.strategy is not None else None,
            "workers": self.workers,
            "replicas": self.replicas_in_sync,
            "replicas_used": sorted(self.used),
            "reductions": self.reductions,
        }


def _quiet_eager_run(record: logging.LogRecord) -> bool:
    """Drops TensorFlow's warning that an eager ``strategy.run`` has overhead (it is expected here)."""
    return "eagerly has significant overhead" not in record.getMessage()


def _first_local_replica(strategy: Any, local: int) -> int:
    """The global id of this worker's first replica (workers hold consecutive ids)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task = getattr(resolver, "task_id", None) if resolver is not None else None
    return int(task or 0) * local
