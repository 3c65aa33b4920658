"""``ZipCallback``: zips a model layer by layer while ``model.fit`` retrains it.

Mirrors TFMOT's ``UpdatePruningStep``: ``zip_models(..., schedule=LayerwiseSchedule(...))``
returns a model whose zip-able layers are *pending*; ``fit`` with this callback then, stage by
stage (bottom-up, one merged model per pass): switches on Hessian accumulation in the layer
to zip (its inputs on the training batches, summed across replicas under ``tf.distribute``),
zips it after ``calibration_steps`` steps, and lets training go on for the stage's retraining
steps. All zipping state lives in layer variables, so checkpoints and ``.keras`` files taken
mid-schedule resume where they stopped. Training a pending model without the callback fails.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.data.checks import check_inputs
from tfmot_zip.data.tasks import as_inputs
from tfmot_zip.core.strategies import get_strategy
from tfmot_zip.model.batchnorm import recalibrate_batchnorm
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.layers import ZIP_LAYERS, zip_layers
from tfmot_zip.zipping.options import ZipOptions
from tfmot_zip.zipping.schedules import ZipSchedule

__all__ = ["ZipCallback", "pending_layers"]


def pending_layers(model: keras.Model) -> list[str]:
    """Names of layers that still have units to zip (schedule not finished).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, _ = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=None,
        ...                               schedule=tfmot_zip.LayerwiseSchedule(2, 2))
        >>> pending_layers(zipped)
        ['fc1', 'fc2']
    """
    return [l.name for l in zip_layers(model) if l.track_hessians and bool(l.zip_pending.numpy())]


class ZipCallback(keras.callbacks.Callback):
    """Drives layer-wise zipping during ``fit`` (see module docstring).

    Args:
        calibration_data: optional, one entry per task (arrays or datasets of inputs): when
            given, each layer's Hessians come from these samples run through the current
            model (as in one-shot zipping) instead of from training batches.
        calibration_samples: at most this many samples per task from ``calibration_data``
            (default: the zip's own ``calibration_samples`` option).
        verbose: 1 prints a line per zipped layer.

    Attributes:
        log: one dict per zipped stage (step, layer, pass, shared units, merge cost).

    Example:
        >>> import numpy as np
        >>> import tfmot_zip
        >>> from tfmot_zip import data, training
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=None, sharing=1.0,
        ...                               schedule=tfmot_zip.LayerwiseSchedule(calibration_steps=2, retrain_steps=2))
        >>> _ = training.compile_multitask(zipped, 1e-3)
        >>> labels = np.zeros(len(x_a), int)
        >>> ds = data.multitask((x_a, labels), (x_b, labels), batch_size=16)
        >>> callback = tfmot_zip.ZipCallback()
        >>> _ = zipped.fit(ds, steps_per_epoch=10, verbose=0, callbacks=[callback])
        >>> [(entry["layer"], entry["shared_units"]) for entry in callback.log]
        [('fc1', 16), ('fc2', 8)]
    """

    def __init__(self, calibration_data: Sequence[Any] | None = None, calibration_samples: int | None = None, verbose: int = 0):
        super().__init__()
        self.calibration_data = calibration_data
        self.calibration_samples = calibration_samples
        self.verbose = verbose
        self.log: list[dict] = []
        self._zipper = None

    # --- setup ------------------------------------------------------------------------------------
    def _setup(self) -> None:
        from tfmot_zip.zipping.zipper import Zipper, zipper_options

        wrapped = [
            l.name for l in self.model.layers
            if isinstance(l, keras.layers.Wrapper) and isinstance(getattr(l, "layer", None), ZIP_LAYERS)
        ]
        if wrapped:
            raise ValueError(
                f"ZipCallback cannot drive zip layers wrapped by another tool ({wrapped}, e.g. TFMOT's "
                "prune_low_magnitude). Finish the zipping schedule first, then strip_zipping, then prune."
            )
        layers = [l for l in zip_layers(self.model) if l.track_hessians]
        if not layers:
            raise ValueError(
                f"Model {self.model.name!r} has no layers scheduled for zipping; ZipCallback drives models "
                "returned by zip_models(..., schedule=LayerwiseSchedule(...))."
            )
        self.options = ZipOptions.from_config(layers[0].zip_options)
        self.schedule = ZipSchedule.from_config(self.options.schedule)
        provider = None
        if self.calibration_data is not None:
            if len(self.calibration_data) != len(self.model.outputs):
                raise ValueError(
                    f"calibration_data needs one entry per task ({len(self.model.outputs)}); received "
                    f"{len(self.calibration_data)}."
                )
            count = self.calibration_samples if self.calibration_samples is not None else self.options.calibration_samples
            calibration = [
                np.asarray(check_inputs(as_inputs(d, count=count), f"calibration_data[{i}]"), np.float32)
                for i, d in enumerate(self.calibration_data)
            ]
        else:
            depthwise = [l.name for l in self.model.layers if isinstance(l, ZipDepthwiseConv2D)]
            if depthwise and get_strategy(self.options.method).needs_hessian:
                raise ValueError(
                    f"Model {self.model.name!r} has depthwise layers ({depthwise[:3]}), whose channels' Hessians "
                    "are measured on calibration data, not on training batches. Pass "
                    "ZipCallback(calibration_data=(x_a, x_b, ...)) with inputs of every task."
                )
            provider = lambda layer, t: layer.hessian(t)  # noqa: E731
            calibration = [np.zeros((1,) + tuple(self.model.inputs[0].shape[1:]), np.float32)] * len(self.model.outputs)
        self._calibration = calibration if self.calibration_data is not None else None
        self._zipper = Zipper.from_model(
            self.model, calibration=calibration, hessian_provider=provider, **zipper_options(self.options)
        )
        self.shares = self.options.sharing
        self.stages = self._zipper.stages()
        self._pass = None
        for node in self._zipper.graph.zip_nodes():  # a resumed run: the current task's own values
            self._zipper.restore_held(node, (self._layer(node).zip_record or {}).get("held"))

    def _layer(self, node):
        return self.model.get_layer(node.name)

    def _current(self):
        """Index of the first stage not finished (zipped and retrained), or None."""
        for i, (n, node) in enumerate(self.stages):
            layer = self._layer(node)
            done = int(layer.zip_done.numpy())
            if done < n:
                return i
            if done == n and int(layer.zip_counter.numpy()) < self.schedule.retrain_steps_for(i):
                return i
        return None

    # --- keras hooks --------------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._setup()
        self.step = 0
        for layer in zip_layers(self.model):
            if layer.track_hessians:
                layer.zip_step.assign(0)
        self._advance()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        if self._zipper is None or self._stage is None:
            return
        n, node = self.stages[self._stage]
        layer = self._layer(node)
        layer.zip_counter.assign_add(1)
        self._counter += 1
        if self._accumulating:
            if self._counter >= self.schedule.calibration_steps:
                self._zip_current()
                self._advance()
        elif self._counter >= self.schedule.retrain_steps_for(self._stage):
            self._advance()

    def on_train_end(self, logs: dict | None = None) -> None:
        for layer in zip_layers(self.model):
            if layer.track_hessians:
                layer.zip_step.assign(-1)  # a later fit without the callback fails loudly again

    # --- the state machine ----------------------------------------------------------------------------
    def _advance(self) -> None:
        """Moves to the current stage; zips at once when no calibration steps are needed."""
        while True:
            self._stage = self._current()
            if self._stage is None:
                self._finish()
                return
            n, node = self.stages[self._stage]
            layer = self._layer(node)
            if self._pass != n:
                done = lambda nd: int(self._layer(nd).zip_done.numpy())  # noqa: E731
                self._zipper.begin_pass(n, done)
                self._pass = n
            self._counter = int(layer.zip_counter.numpy())
            self._accumulating = int(layer.zip_done.numpy()) < n
            if not self._accumulating:
                return  # retraining after this stage
            needs_batches = self.calibration_data is None and self.schedule.calibration_steps > 0
            if not needs_batches:
                self._zip_current()
                continue
            if not bool(layer.zip_accumulate.numpy()):  # a fresh stage (not a resumed one)
                layer.zip_counter.assign(0)
                self._counter = 0
            for other in self._zipper.nodes_to_measure(node):
                self._layer(other).zip_accumulate.assign(True)
            return

    def _zip_current(self) -> None:
        n, node = self.stages[self._stage]
        self._zipper.refresh_weights()
        merged = self._zipper.zip_stage(node, self.shares)
        for other in merged + [node]:
            layer = self._layer(other)
            layer.zip_done.assign(n)
            layer.zip_accumulate.assign(False)
            layer.reset_hessians()
        for other in merged + [node]:
            self._layer(other).zip_record = self._zipper.records[other.index].as_config()
        for other in self._zipper.graph.zip_nodes():  # kept in the config, so a saved run resumes
            record = dict(self._layer(other).zip_record or {})
            held = self._zipper.held_cells(other)
            if held is not None or "held" in record:
                record.pop("held", None)
                self._layer(other).zip_record = {**record, **({"held": held} if held else {})} or None
        for other in merged:
            if other.index != node.index:
                self._layer(other).zip_counter.assign(1 << 40)  # merged as a stream writer: no own retraining
        self._layer(node).zip_counter.assign(0)
        record = self._zipper.records[node.index]
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
        global_step = int(iterations.numpy()) if iterations is not None else self.step
        entry = {"step": self.step, "global_step": global_step, "layer": node.name, "pass": n, "shared_units": record.shared, "merge_cost": record.merge_cost}
        self.log.append(entry)
        if self.verbose:
            print(f"ZipCallback: step {self.step}: zipped {node.name} (task {n}), {record.shared} shared units, merge cost {record.merge_cost:.4g}")

    def _finish(self) -> None:
        finished_now = False
        for layer in zip_layers(self.model):
            if layer.track_hessians and bool(layer.zip_pending.numpy()):
                layer.zip_pending.assign(False)
                layer.zip_accumulate.assign(False)
                finished_now = True
        has_batchnorm = any(isinstance(l, keras.layers.BatchNormalization) for l in self.model.layers)
        if finished_now and self._calibration is not None and self.options.recalibrate_batchnorm and has_batchnorm:
            # With training batches, training itself updates the moving statistics; with
            # calibration data, re-estimate them as one-shot zipping does.
            recalibrate_batchnorm(self.model, self._calibration)
