"""The public zipping API: ``zip_models``, ``strip_zipping``, ``zip_summary``, ``zip_scope``."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from tfmot_zip.model.builder import build_zipped_model, sanitize_task_names
from tfmot_zip.compat import keras
from tfmot_zip.model.graph import ModelGraph, align_models
from tfmot_zip.model.keras3 import as_tf_keras_model
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.layers import ZipConv2D, ZipDense
from tfmot_zip.model.spaces import trace_spaces
from tfmot_zip.model.strip import strip_zipping
from tfmot_zip.zipping.schedules import ZipSchedule
from tfmot_zip.zipping.budget import Budget, allocate_budget
from tfmot_zip.zipping.report import LayerSummary, ZipReport
from tfmot_zip.zipping.options import DEFAULT_METHOD, ZipOptions, resolve_method
from tfmot_zip.zipping.head_refit import refit_heads as refit_heads_
from tfmot_zip.zipping.refit import refit_layers as refit_layers_
from tfmot_zip.zipping.repair import repair_statistics
from tfmot_zip.model.compact import compact_in_place
from tfmot_zip.zipping.calibration import as_calibration
from tfmot_zip.zipping.spill import SpillPolicy
from tfmot_zip.zipping.zipper import Zipper, zipper_options

__all__ = ["zip_models", "strip_zipping", "zip_summary", "zip_scope", "ZipReport", "LayerSummary"]


def _resolve_sharing(sharing: Any, graph: ModelGraph, features, spaces) -> dict[str, float]:
    """Sharing fraction per space, keyed by the name of the space's first writer."""
    hidden = graph.hidden_zip_nodes()
    names = [n.name for n in hidden]
    heads = [n.name for n in graph.zip_nodes() if n.is_head]

    def check_fraction(value: Any, where: str) -> float:
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError(
                    f"Expected one number between 0 and 1 for {where}, or {{layer_name: fraction}} for one per layer; "
                    f"received an array of shape {value.shape}."
                )
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(
                f"Expected sharing to be a number between 0 and 1 (1.0 shares every unit of a layer), "
                f"{{layer_name: fraction}} or tfmot_zip.Budget(...). Received: {where}={value!r} of type {type(value).__name__}"
            )
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(
                f"Expected sharing between 0 and 1 (1.0 shares every unit of a layer). Received: {where}={float(value)!r}"
            )
        return float(value)

    if isinstance(sharing, Budget):
        return {}  # allocated once the calibration data is read (allocate_budget)
    if isinstance(sharing, Mapping):
        unknown = [k for k in sharing if k not in names]
        if unknown:
            extra = f" ({', '.join(repr(h) for h in heads)} are heads, which stay task-specific)" if any(k in heads for k in unknown) else ""
            shown = repr(unknown) if len(unknown) <= 10 else f"{unknown[:10]!r} and {len(unknown) - 10:,} more ({len(unknown):,} in all)"
            raise ValueError(
                f"sharing names unknown layers {shown}{extra}; zip-able hidden layers are {names}."
            )
        fractions = {k: check_fraction(v, f"sharing[{k!r}]") for k, v in sharing.items()}
    else:
        value = check_fraction(sharing, "sharing")
        fractions = {name: value for name in names}
    shares: dict[str, float] = {}
    for space in spaces.values():
        writers = [graph.nodes[w] for w in space.writers if not graph.nodes[w].is_head]
        if not writers:
            continue
        given = {fractions[w.name] for w in writers if w.name in fractions}
        if len(given) > 1:
            raise ValueError(
                f"Layers {[w.name for w in writers]} write into one residual stream and must share "
                f"one fraction; sharing gives {sorted(given)}."
            )
        shares[writers[0].name] = given.pop() if given else 0.0
    return shares


def zip_models(
    *models: keras.Model,
    calibration_data: Sequence[Any],
    sharing: "float | Mapping[str, float] | Budget" = 1.0,
    method: str = DEFAULT_METHOD,
    selection: str = "hungarian",
    damping: float = 1e-4,
    merged_hessian: str = "sum_of_inverses",
    conv_hessian: str = "auto",
    calibration_samples: int | None = 10_000,
    max_conv_rows: int | None = 200_000,
    activation_memory_mb: float | None = 256.0,
    task_names: Sequence[str] | None = None,
    single_input: bool = False,
    seed: int = 0,
    schedule: "ZipSchedule | None" = None,
    recalibrate_batchnorm: bool | str = True,
    refit_layers: bool | None = None,
    refit_heads: bool | str | None = None,
    repair: bool | None = None,
    verbose: bool = False,
    progress: "bool | Callable[[int, int, str], None] | None" = None,
) -> keras.Model:
    """Zips pre-trained tf_keras models into one multi-task model (MTZ, one shot, bottom-up).

    Args:
        *models: two or more tf_keras Sequential/functional models with the same architecture
            (Dense, Conv2D, BatchNorm, pooling, Flatten, Dropout, activations, Add; widths may
            differ). They are never modified.
        calibration_data: one entry per model: a numpy array of inputs, or a ``tf.data``
            dataset of inputs or of ``(inputs, labels)`` (labels are ignored).
        sharing: fraction (0..1) of each hidden layer's units to share (of the narrower
            model), or ``{layer_name: fraction}``; 1.0 fully merges every hidden layer. Heads
            (the last Dense/Conv2D of each task) stay task-specific. Or a parameter budget,
            ``tfmot_zip.Budget(params=...)`` or ``Budget(fraction=0.6)`` of the separate models'
            parameters (two models, one-shot): each hidden layer (a residual stream counts as
            one) is zipped alone at a few fractions to measure its output drift, and the sharing
            that meets the budget at the least drift is chosen; ``zip_summary(model).budget``
            gives the allocation (docs/BUDGET.md).
        method: "mtz+refits" (the default: MTZ followed by the layer and head refits below, the
            best one-shot recipe measured in docs/RESULTS.md; with a schedule it zips with MTZ alone),
            "mtz" (Hessian-based, exactly the paper's method), "mtz-centered", "mtz-lsq" (MTZ at each
            layer's least-squares weights: pairs by the refit's own residual), or the baselines "euclidean",
            "random" and "activation" (ZipIt!-style feature correlation), whose pairs are averaged.
        selection: "hungarian" (exact minimum-total-cost matching; the default, because it
            loses less accuracy at full sharing: see docs/RESULTS.md) or "greedy" (the paper's).
        damping: relative damping of the layer Hessians.
        merged_hessian: with three or more models, how the side that already serves several
            tasks weighs a change: "sum_of_inverses" (the sum of its tasks' inverse Hessians,
            as in docs/METHOD.md) or "exact" (the inverse of their summed Hessians).
        conv_hessian: "exact" ((kh*kw*C_in+1)^2 Hessian of a Conv2D layer), "block" (the
            per-kernel-position block approximation: kh*kw blocks of C_in x C_in, much cheaper)
            or "auto" (block only where the exact matrix would exceed 1200 x 1200).
        calibration_samples: at most this many samples per model are used (None: all).
        max_conv_rows: at most this many patch rows (samples x output positions) per task enter a
            convolution's Hessian; beyond it positions are subsampled evenly, and
            ``zip_summary(model).extra["hessian_subsampling"]`` lists each layer's rows used and
            available. A convolution uses every row when an exact Hessian, built from shifted
            products or the Gram matrix of its input maps without forming the rows, costs no more
            than the sample (core.pixel_gram.conv_hessian_plan). None uses every row (exact).
        activation_memory_mb: the zip keeps every layer's inputs on the calibration data between
            stages; at most this many megabytes of them stay in memory, the rest are written to
            temporary files (under ``TMPDIR``, deleted when the zip ends) and read back batch by
            batch, and layers run on batches of an eighth of it (4-128 MB), so the memory a zip needs
            does not grow with the number of calibration samples. None keeps every value in memory.
        task_names: names of the tasks (inputs ``<name>_input``, outputs ``<name>``);
            defaults to the models' names.
        single_input: one input for every task (a shared unit whose inputs are all shared
            is then computed once after ``strip_zipping``).
        seed: seeds the random choices (random pairs, subsampling of conv patches).
        schedule: None zips now (one shot). A ``LayerwiseSchedule`` (or ``OneShotSchedule``)
            defers the zipping to ``model.fit`` with ``tfmot_zip.ZipCallback``, which zips one
            layer at a time and retrains in between (the paper's procedure). Then
            ``calibration_data`` may be None (Hessians come from the training batches).
        recalibrate_batchnorm: re-estimate every per-task BatchNorm's moving statistics on the
            calibration data (zipping changes the layers that feed them): ``True`` (or
            ``"layerwise"``) after every zipped layer, so that the next layer's Hessian sees the
            statistics it will run with, the rest when zipping ends (each from its inputs under the
            final network); ``"end"`` by one training-mode pass at the end; ``False`` never. Needs 32+
            calibration samples per task (else the trained statistics stay).
        refit_layers: after zipping, re-solve every merged hidden layer bottom-up by damped least
            squares from the inputs the zipped network gives it to each task's original
            pre-activations, jointly over the tasks sharing a unit (beyond the paper; one-shot only).
            None (default): as ``method`` says (on for "mtz+refits", off otherwise).
        refit_heads: after zipping, re-solve each task's Dense head from the zipped network's features on
            the calibration data (beyond the paper; no parameters added; one-shot only): True fits a softmax or
            sigmoid head by its cross-entropy to the original probabilities, others by least squares to the
            logits; or "least_squares", "softmax", "sigmoid" for every head. None: as ``method`` says.
        repair: True: after zipping, give every merged unit, per task, the mean and standard deviation
            of its original unit on the calibration data: a per-task affine on the pre-activation,
            bottom-up (REPAIR; beyond the paper; one-shot only; docs/REFIT.md). With
            ``refit_layers=True`` the two run layer by layer: refit a layer, repair it, then the next.
        verbose: print one line per layer.
        progress: None (default) shows a tqdm progress bar over the zipping stages, with an ETA, on
            stderr once a zip has lasted 3 seconds (quick zips stay silent); True shows it at once;
            False is quiet. Or a callable, called as ``progress(done, total, layer)`` when a stage
            starts (``done`` stages finished of ``total``; ``layer`` names the stage) and once more
            with ``done == total`` at the end.

    Returns:
        A new, uncompiled tf_keras model with one input and one output per task, in the order
        the models were given. ``zip_summary(model)`` describes what is shared. After a one-shot
        zip its zip layers hold only the physical units some task reads
        (compacted in place as :func:`tfmot_zip.compact_zipped` would), so ``count_params()`` is close to the
        stripped model's.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> zipped.output_names
        ['task_a', 'task_b']
        >>> tfmot_zip.zip_summary(zipped).layers[0].shared_units  # half of fc1's 16 units
        8
    """
    start = time.perf_counter()
    models = [as_tf_keras_model(m, f"models[{i}]") for i, m in enumerate(models)]
    if len(models) < 2:
        raise ValueError(f"zip_models needs at least two models; received {len(models)}.")
    if schedule is not None and not isinstance(schedule, ZipSchedule):
        raise TypeError(
            f"schedule must be a tfmot_zip.LayerwiseSchedule or OneShotSchedule (or None to zip now); "
            f"received {schedule!r}."
        )
    deferred = schedule is not None
    method, steps = resolve_method(method, deferred, refit_layers=refit_layers, refit_heads=refit_heads, repair=repair)
    refit_layers, refit_heads, repair = steps["refit_layers"], steps["refit_heads"], steps["repair"]
    options = ZipOptions(
        method=method, selection=selection, damping=damping, merged_hessian=merged_hessian,
        conv_hessian=conv_hessian, calibration_samples=calibration_samples, max_conv_rows=max_conv_rows, seed=seed,
        activation_memory_mb=activation_memory_mb, recalibrate_batchnorm=recalibrate_batchnorm, refit_layers=refit_layers, refit_heads=refit_heads, repair=repair, schedule=None if schedule is None else schedule.get_config(),
    )
    if deferred and calibration_data is not None and any(d is not None for d in _entries(calibration_data)):
        raise ValueError(
            "With a schedule, zip_models takes calibration_data=None: the Hessians come from the training "
            "batches, or from ZipCallback(calibration_data=(x_a, x_b, ...)) when given there."
        )
    if deferred and (refit_heads or refit_layers):
        raise ValueError(
            "refit_heads=True and refit_layers=True work in one-shot zipping (schedule=None); with a schedule, the heads are "
            "retrained by fit itself."
        )
    if deferred and repair:
        raise ValueError("repair=True works in one-shot zipping (schedule=None); with a schedule, fit retrains the statistics.")
    if calibration_data is None and deferred:
        calibration_data = [None] * len(models)
    if not isinstance(calibration_data, (list, tuple)) or len(calibration_data) != len(models):
        raise ValueError(
            f"calibration_data needs one entry per model ({len(models)}); received "
            f"{type(calibration_data).__name__} of length {len(calibration_data) if hasattr(calibration_data, '__len__') else '?'}."
            " Pass a tuple like (x_a, x_b)."
        )
    graph = align_models(models)
    if task_names is not None and (isinstance(task_names, str) or len(task_names) != len(models)):
        raise ValueError(f"task_names needs {len(models)} names; received {task_names!r}.")
    names = sanitize_task_names(task_names if task_names is not None else [m.name for m in models],
                                strict=task_names is not None)
    layer_names = {n.name for n in graph.nodes}
    clashes = [n for n in names if n in layer_names or n.endswith("_input") and n[:-6] in names
               or any(f"{node}__{n}" in layer_names for node in layer_names)]
    if clashes:
        raise ValueError(
            f"task_names {clashes} collide with layer names of the models; task names name the outputs "
            f"of the zipped model, so choose names that are not layer names (e.g. 'task_a')."
        )
    for i, m in enumerate(models):
        for w in m.weights:
            if not np.all(np.isfinite(w.numpy())):
                raise ValueError(f"Model {m.name!r} has NaN or inf in weight {w.name!r}; zip only trained, finite models.")
    features, spaces = trace_spaces(graph)
    options = options.replace(sharing=_resolve_sharing(sharing, graph, features, spaces))
    shape = tuple(models[0].input_shape[1:])
    calibration = None
    storage = SpillPolicy(None if options.activation_memory_mb is None else int(options.activation_memory_mb * 2**20), small_pages=True)
    try:  # the temporary files of streamed calibration data and spilled activations go when the zip ends
        if not deferred:
            calibration = [as_calibration(d, f"calibration_data[{i}]", shape, calibration_samples, storage)
                           for i, d in enumerate(calibration_data)]
        allocation = None
        if isinstance(sharing, Budget):
            allocation = allocate_budget(sharing, models, calibration, graph, features, spaces, zip_models, dict(
                {k: v for k, v in options.get_config().items() if k not in ("sharing", "schedule")},
                task_names=names, calibration_samples=None), log=print if verbose else None)
            options = options.replace(sharing=allocation.fractions)
        layer_options = None
        if deferred:
            layer_options = {
                node.name: {"track_hessians": True, "zip_options": options.get_config()} for node in graph.hidden_zip_nodes()
            }
        zipped = build_zipped_model(graph, features, spaces, names, single_input=single_input, layer_options=layer_options)
        if deferred:
            for node in graph.hidden_zip_nodes():
                zipped.get_layer(node.name).zip_pending.assign(True)
            return zipped
        total_stages = (len(models) - 1) * len(graph.hidden_zip_nodes())
        started = [0]
        progress, close_bar = _progress_callback(progress)

        def on_stage(name: str) -> None:
            if verbose:
                print(f"zipping {name}", flush=True)
            if progress is not None:
                progress(started[0], total_stages, name)
            started[0] += 1

        has_batchnorm = any(isinstance(l, keras.layers.BatchNormalization) for l in zipped.layers)
        layerwise = options.recalibrate_batchnorm in (True, "layerwise") and has_batchnorm
        zipper = Zipper(zipped, graph, features, spaces, calibration, progress=on_stage, batchnorm_layerwise=layerwise,
                        spill=storage, **zipper_options(options))
        records, batchnorm, entries = _zip_and_refit(zipper, zipped, graph, calibration, options, has_batchnorm,
                                                     progress, total_stages, close_bar)
        summary = storage.summary()
        seconds = time.perf_counter() - start
        for node in graph.zip_nodes() + zipper.depthwise_nodes:
            zipped.get_layer(node.name).zip_record = records[node.index].as_config(
                is_head=node.is_head, zip_seconds=seconds, options=options.get_config(),
                **({"batchnorm": batchnorm} if batchnorm is not None else {}),
                **entries.get(node.name, {}),
                **({"budget": allocation.as_config()} if allocation else {}),
                activation_storage=summary, **zipper.activations().replicas.record(),
            )
        return compact_in_place(zipped, graph=graph)  # units no task reads dropped, no second build: count_params() ~ stripped
    finally:
        storage.close()


def _zip_and_refit(zipper: Zipper, zipped, graph, calibration, options, has_batchnorm, progress, total_stages, close_bar):
    """Runs the zip and the steps after it (refits, repair, BatchNorm): ``(records, batchnorm, {layer: record entries})``."""
    try:
        records = zipper.run(options.sharing)
        if progress is not None:
            progress(total_stages, total_stages, "")
    finally:
        close_bar()
    changed = any(r.shared > 0 for r in records.values())
    batchnorm = None
    repaired: dict = {}
    acts = None
    if changed and (options.refit_layers or options.repair or options.refit_heads):
        acts = zipper.zip_activations()
    refit_rows = {"max_conv_rows": options.max_conv_rows, "seed": options.seed, "grams": zipper.input_grams}
    if options.refit_layers and options.repair and changed:
        for node in graph.hidden_zip_nodes():  # interleaved: each refit sees the repaired layers below
            refit_layers_(zipped, graph, calibration, layers=[node.name], activations=acts, **refit_rows)
            repaired.update(repair_statistics(zipped, graph, calibration, layers=[node.name], activations=acts))
    elif options.refit_layers and changed:
        refit_layers_(zipped, graph, calibration, activations=acts, **refit_rows)
    elif options.repair and changed:
        repaired = repair_statistics(zipped, graph, calibration, activations=acts)
    if options.recalibrate_batchnorm and changed and has_batchnorm:
        batchnorm = zipper.final_batchnorm().as_dict()
    heads: dict = {}  # per head: the fit and damping of each task (zip_summary's layer record)
    if options.refit_heads and changed:
        refit_heads_(zipped, graph, calibration, activations=acts, fit="auto" if options.refit_heads is True else options.refit_heads, choices=heads)
    return records, batchnorm, {**{k: {"repair": v} for k, v in repaired.items()}, **{k: {"head_refit": v} for k, v in heads.items()}}


def _progress_callback(progress: Any) -> tuple[Callable[[int, int, str], None] | None, Callable[[], None]]:
    """``(callback or None, close)`` for ``zip_models(progress=...)``: a tqdm bar unless False or a callable."""
    if progress is False:
        return None, lambda: None
    if callable(progress) and not isinstance(progress, bool):
        return progress, lambda: None
    if progress not in (None, True):
        raise ValueError(
            f"progress must be None (a progress bar after 3 s), True, False or a callable "
            f"progress(done, total, layer); received {progress!r}."
        )
    from tqdm import tqdm

    bars: list = []

    def update(done: int, total: int, layer: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="zipping", unit="stage", delay=0 if progress else 3.0, leave=False))
        bar = bars[0]
        bar.update(done - bar.n)
        if layer:
            bar.set_postfix_str(layer, refresh=False)

    return update, lambda: [bar.close() for bar in bars]


def _entries(calibration_data: Any) -> list:
    return list(calibration_data) if isinstance(calibration_data, (list, tuple)) else [calibration_data]


def _source_params(layer) -> int:
    """Parameters every task's original layer had (kernel + bias per task)."""
    if isinstance(layer, ZipDepthwiseConv2D):
        per_channel = int(np.prod(layer.kernel_size)) + (1 if layer.use_bias else 0)
        return int(sum(layer.task_units)) * per_channel
    total = 0
    for t in range(layer.num_tasks):
        n_in = layer.task_input_units[t]
        per_unit = n_in * (int(np.prod(layer.kernel_size)) if isinstance(layer, ZipConv2D) else 1)
        total += layer.task_units[t] * (per_unit + (1 if layer.use_bias else 0))
    return total


def physical_params(layer) -> int:
    """Distinct kernel and bias cells read by at least one task."""
    if isinstance(layer, ZipDepthwiseConv2D):
        per_channel = int(np.prod(layer.kernel_size)) + (1 if layer.use_bias else 0)
        return int(layer.used_units().size * per_channel + layer.repair_params())
    cells = []
    positions = int(np.prod(layer.kernel_size)) if isinstance(layer, ZipConv2D) else 1
    for t in range(layer.num_tasks):
        in_map, out_map = layer.get_maps(t)
        cells.append((in_map[:, None] * layer.capacity + out_map[None, :]).reshape(-1))
    kernel_cells = np.unique(np.concatenate(cells)).size * positions
    bias_cells = layer.used_units().size if layer.use_bias else 0
    return int(kernel_cells + bias_cells + layer.repair_params())


def _subsampling(layers: list) -> dict:
    """``{layer: [patch rows used, rows available]}`` of the layers whose Hessians were subsampled."""
    out = {}
    for layer in layers:
        used, available = (layer.zip_record or {}).get("hessian_rows", [0, 0])
        if used < available:
            out[layer.name] = [int(used), int(available)]
    return out


def _kind_of(layer) -> str:
    if isinstance(layer, ZipDepthwiseConv2D):
        return "depthwise"
    return "dense" if isinstance(layer, ZipDense) else "conv"


def zip_summary(model: keras.Model) -> ZipReport:
    """What a zipped model shares, per layer, with parameters before and after.

    Works on a model from ``zip_models`` or one loaded from a ``.keras`` file.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> print(tfmot_zip.zip_summary(zipped))  # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
        layer         widths          shared  params before  params after  merge cost
        -----------------------------------------------------------------------------
        fc1           16/16                8          1,184           888 ...
        fc2           8/8                  4            272           236 ...
        head          3/3 (head)           0             54            54
        total parameters: 1,510 in the separate models -> 1,178 zipped (78.0%)
    """
    model = as_tf_keras_model(model)
    zip_layers = [l for l in model.layers if isinstance(l, (ZipDense, ZipConv2D, ZipDepthwiseConv2D))]
    if not zip_layers:
        raise ValueError(f"Model {model.name!r} has no zip layers; pass a model returned by zip_models.")
    summaries = []
    before_total = after_total = 0
    for layer in zip_layers:
        owners = layer.unit_tasks()
        shared = sum(1 for tasks in owners.values() if len(tasks) > 1)
        before, after = _source_params(layer), physical_params(layer)
        before_total += before
        after_total += after
        record = layer.zip_record or {}
        cost = record.get("merge_cost")
        is_head = all(len(t) == 1 for t in owners.values()) and layer is zip_layers[-1]
        summaries.append(LayerSummary(
            layer.name, _kind_of(layer), list(layer.task_units), shared, before, after,
            cost, is_head, record.get("seconds"), record.get("pairs"),
        ))
    other = sum(
        int(np.sum([np.prod(w.shape) for w in l.weights])) for l in model.layers
        if not isinstance(l, (ZipDense, ZipConv2D, ZipDepthwiseConv2D))
    )
    return ZipReport(
        task_names=list(model.output_names),
        layers=summaries,
        params_original=before_total + other,
        params_zipped=after_total + other,
        zip_seconds=next((l.zip_record.get("zip_seconds") for l in zip_layers if l.zip_record), None),
        options=next(((l.zip_record or {}).get("options") or l.zip_options for l in zip_layers if l.zip_record or l.zip_options), None),
        extra={
            **{key: value for key in ("batchnorm", "activation_storage", "distribute")
               if (value := next((l.zip_record.get(key) for l in zip_layers if l.zip_record), None))},
            **({"hessian_subsampling": sub} if (sub := _subsampling(zip_layers)) else {}),
        },
        budget=next((l.zip_record["budget"] for l in zip_layers if (l.zip_record or {}).get("budget")), None),
    )


@contextlib.contextmanager
def zip_scope() -> Iterator[None]:
    """Custom-object scope with the zip layers, for parity with ``tfmot.*.keras.*_scope``.

    Not needed to load a model (the layers are registered), but harmless.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)
        >>> import os, tempfile
        >>> from tfmot_zip.compat import keras
        >>> path = os.path.join(tempfile.mkdtemp(), "zipped.keras")
        >>> zipped.save(path)
        >>> with zip_scope():
        ...     loaded = keras.models.load_model(path)
        >>> loaded.output_names
        ['task_a', 'task_b']
    """
    from tfmot_zip.export.tfmot import custom_objects  # QAT models saved with TFMOT

    objects = custom_objects()
    with keras.utils.custom_object_scope(objects):
        yield
