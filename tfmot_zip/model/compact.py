"""``compact_zipped``: a zipped model whose physical kernels hold only the units some task reads.

A zip layer is built with one physical column per task neuron (``capacity`` = the sum of the task
widths), so that nothing is shared before zipping. Zipping points a task's neurons at another task's
columns; the columns it leaves behind are read by nobody, yet they stay in the kernel, the bias and
``count_params()`` (at sharing 1.0 about half of every hidden layer). :func:`compact_zipped` builds a
new zipped model computing the same function in which every unit space (the physical units a layer
writes, shared by all writers of one residual stream or gated tensor, and followed by depthwise
layers) keeps only its used units, renumbered in their old order, and every kernel only the cells some
task reads (one task's private inputs to another task's private units are dropped; the maps become
constants of the layer config). Every layer reading a space gets the
matching rows (also through ``Flatten`` and as one part of a channel ``Concatenate``), its ``in_map``
and ``input_capacity`` renumbered alike; the unit ids in each layer's ``zip_record["pairs"]`` follow,
so :func:`tfmot_zip.zip_summary` reports the same sharing and parameters. Other layers (BatchNorm...)
and their weights are copied unchanged; the input model is not modified.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.keras3 import as_tf_keras_model
from tfmot_zip.model.layers import ZipConv2D, ZipDense

if TYPE_CHECKING:
    from tfmot_zip.model.graph import ModelGraph

__all__ = ["compact_in_place", "compact_zipped", "unit_renumbering"]

_ZIP_CLASSES = (ZipDense, ZipConv2D, ZipDepthwiseConv2D)


def _plain(value: Any) -> Any:
    """Plain dicts and lists (a layer's ``zip_record`` comes back wrapped by tf's attribute tracking)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _refuse_pending(layers: list) -> None:
    pending = [l.name for l in layers if getattr(l, "track_hessians", False) and bool(l.zip_pending.numpy())]
    if pending:
        raise ValueError(
            f"Layers {pending} are still scheduled for zipping (track_hessians=True, zip_pending=True): "
            "compact_zipped renumbers the physical units, which the schedule still needs. Finish the "
            "zipping first (model.fit with callbacks=[tfmot_zip.ZipCallback()] until every layer is zipped), "
            "or zip in one shot with tfmot_zip.zip_models(..., calibration_data=...)."
        )


def unit_renumbering(model: keras.Model) -> dict[str, dict]:
    """How :func:`compact_zipped` renumbers each zip layer's physical units (nothing is changed).

    Returns, per zip layer name, ``rows`` (the old physical input rows kept, in their new order),
    ``columns`` (the old physical output units kept; for a depthwise layer its channels), and the new
    ``input_capacity`` and ``capacity``. Units of one space (every writer of a residual stream or gated
    tensor, and the depthwise layers following it) are renumbered alike.

    Raises:
        ValueError: ``model`` has no zip layers, or the capacities of a space's writers and readers
            disagree (a damaged model).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> later = tfmot_zip.zip_models(model_a, model_b, calibration_data=None, schedule=tfmot_zip.OneShotSchedule())
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=1.0)
        >>> zipped.get_layer("fc1").capacity  # zip_models compacts: fc1's 16 shared units
        16
        >>> plan = unit_renumbering(later)  # the layout before zipping: every task's own 16 units
        >>> later.get_layer("fc1").capacity, plan["fc1"]["capacity"], plan["fc2"]["input_capacity"]
        (32, 32, 32)
    """
    return _plan(as_tf_keras_model(model))


def _plan(model: keras.Model, graph=None) -> dict[str, dict]:
    """:func:`unit_renumbering` of a tf_keras model (the spaces traced as ``Zipper.from_model`` does,
    or from ``graph``, the aligned models the zip was built from)."""
    from tfmot_zip.model.builder import extract_task_models
    from tfmot_zip.model.graph import align_models
    from tfmot_zip.model.spaces import trace_spaces

    layers = [l for l in model.layers if isinstance(l, _ZIP_CLASSES)]
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no zip layers; compact_zipped expects a model returned by "
            "tfmot_zip.zip_models (not a stripped or plain model)."
        )
    graph = graph if graph is not None else align_models(extract_task_models(model))
    features, spaces = trace_spaces(graph)
    n_tasks = len(model.output_names)
    # Each space's current capacity (from its writers; an already compact model has fewer units than
    # trace_spaces assumes) and the units some task reads.
    capacity: dict[int, int] = {}
    used: dict[int, np.ndarray] = {}
    for space in spaces.values():
        writers = [model.get_layer(graph.nodes[w].name) for w in space.writers]
        caps = {w.capacity for w in writers}
        if len(caps) != 1:
            raise ValueError(
                f"The writers of one unit space ({[w.name for w in writers]}) have different capacities "
                f"({sorted(caps)}); they must share one physical numbering. The model is damaged."
            )
        capacity[space.id] = caps.pop()
        used[space.id] = np.unique(np.concatenate([w.get_maps(t)[1] for w in writers for t in range(n_tasks)]))
    plan: dict[str, dict] = {}
    names = {layer.name for layer in model.layers}
    for node in graph.nodes:
        if node.is_zip:
            layer = model.get_layer(node.name)
            feature = features[node.inbound[0]]
            if feature.kind == "input":
                rows = np.arange(layer.input_capacity, dtype=np.int64)
            else:
                parts, offset = [], 0
                for s in feature.space_ids:
                    parts.append(offset + used[s])
                    offset += capacity[s]
                rows = np.concatenate(parts)
                if feature.flat:
                    rows = (np.arange(feature.positions)[:, None] * offset + rows[None, :]).reshape(-1)
                expected = feature.positions * offset if feature.flat else offset
                if expected != layer.input_capacity:
                    raise ValueError(
                        f"Layer {layer.name!r} has input_capacity={layer.input_capacity}, but the spaces it reads "
                        f"hold {expected} physical units. The model is damaged."
                    )
            space = features[node.index].space
            plan[layer.name] = dict(rows=rows, columns=used[space], input_capacity=len(rows), capacity=len(used[space]))
        elif node.kind == "depthwise":
            if node.name not in names:
                continue  # per-task DepthwiseConv2D layers on the raw input (``<name>__<task>``)
            layer = model.get_layer(node.name)
            if not isinstance(layer, ZipDepthwiseConv2D):
                continue
            space = features[node.inbound[0]].space
            if layer.capacity != capacity[space]:
                raise ValueError(
                    f"Depthwise layer {layer.name!r} has capacity={layer.capacity}, but the space it follows holds "
                    f"{capacity[space]} physical channels. The model is damaged."
                )
            plan[layer.name] = dict(rows=used[space], columns=used[space], input_capacity=len(used[space]),
                                    capacity=len(used[space]))
    return plan


def _lookup(kept: np.ndarray, size: int) -> np.ndarray:
    """Old physical id -> new id (-1: dropped)."""
    table = np.full(size, -1, np.int64)
    table[kept] = np.arange(len(kept))
    return table


def _renumber(table: np.ndarray, ids: Any, what: str, layer: str) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    new = table[ids] if ids.size else ids
    if ids.size and (new < 0).any():
        raise ValueError(
            f"Layer {layer!r}: its {what} points at physical units {sorted(set(ids[new < 0].tolist()))[:10]} that "
            "no writer of the space uses. The model is damaged."
        )
    return new


def compact_zipped(model: keras.Model, graph: ModelGraph | None = None) -> keras.Model:
    """A new zipped model computing the same function whose zip layers keep only the units some task reads.

    Physical units of every unit space are renumbered in their old order; kernels, biases and repair
    weights are copied into the kept cells, maps and ``zip_record["pairs"]`` renumbered, every other
    layer copied with its weights. Each zip layer gets a frozen layout (:mod:`tfmot_zip.model.frozen_layout`):
    its maps become constants of its config, and a Dense/Conv2D kernel is stored as blocks holding only
    the cells some task reads; Hessian accumulators of a finished schedule are dropped. ``strip_zipping``
    and ``zip_summary`` give the same results on the compact model as on ``model``; only
    ``count_params()`` (and the memory of the zipped model) shrink, to the stripped model's.
    ``model`` is not modified; compacting a compact model changes nothing. ``graph`` (the aligned
    original models, as ``zip_models`` has them) skips rebuilding the per-task models to trace the
    unit spaces.

    Raises:
        ValueError: ``model`` has no zip layers, or a layer is still scheduled for zipping
            (``ZipCallback`` has not finished), or its maps point at units no writer of the space
            uses (a damaged model).

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=1.0)
        >>> # zip_models compacts its result: it holds what the stripped model holds
        >>> zipped.count_params(), tfmot_zip.strip_zipping(zipped).count_params()
        (782, 782)
        >>> compact = compact_zipped(zipped)  # compacting again changes nothing
        >>> compact.count_params()
        782
        >>> bool(np.allclose(compact([x_a, x_b])[0], zipped([x_a, x_b])[0], atol=1e-5))
        True
    """
    model = as_tf_keras_model(model)
    _refuse_pending([l for l in model.layers if isinstance(l, _ZIP_CLASSES)])
    plan = _plan(model, graph)
    config = model.get_config()
    for spec in config["layers"]:
        if spec["name"] in plan:
            spec["config"] = _compact_config(model.get_layer(spec["name"]), spec["config"], plan[spec["name"]])
    compact = keras.Model.from_config(config)
    for layer in model.layers:
        target = compact.get_layer(layer.name)
        target.set_weights(_compact_weights(layer, target, plan[layer.name]) if layer.name in plan else layer.get_weights())
    return compact


def _compact_config(layer, config: dict, entry: dict) -> dict:
    """``layer``'s config (``config``) with the capacities, frozen maps and ``zip_record`` pairs of ``entry``
    (one layer of :func:`_plan`)."""
    name = layer.name
    rows_table = _lookup(entry["rows"], layer.input_capacity)
    cols_table = _lookup(entry["columns"], layer.capacity)
    layer_config = dict(config)
    layer_config["capacity"] = entry["capacity"]
    if not isinstance(layer, ZipDepthwiseConv2D):
        layer_config["input_capacity"] = entry["input_capacity"]
        layer_config["track_hessians"] = False  # a frozen layout is not zipped again: no accumulators
    layer_config["layout"] = {
        key: [_renumber(table, layer.get_maps(t)[i], f"{key[:-1]} of task {t}", name).tolist() for t in range(layer.num_tasks)]
        for key, i, table in (("in_maps", 0, rows_table), ("out_maps", 1, cols_table))
    }
    if isinstance(layer, ZipDepthwiseConv2D):
        layer_config["layout"]["in_maps"] = layer_config["layout"]["out_maps"]
    record = _plain(layer_config.get("zip_record"))
    if record and record.get("pairs"):
        record["pairs"] = [
            [int(n), _renumber(cols_table, units, "zip_record pairs", name).tolist(), [int(c) for c in cols]]
            for n, units, cols in record["pairs"]
        ]
    if record is not None:
        layer_config["zip_record"] = record
    return layer_config


# What a layer object owns as a node of its functional model (set when the model was built by calling
# it on symbolic tensors): kept when the layer takes a compact form in place.
_GRAPH_STATE = ("_inbound_nodes_value", "_outbound_nodes_value", "_saved_model_inputs_spec", "_saved_model_arg_spec",
                "_build_input_shape")


def compact_in_place(model: keras.Model, graph: ModelGraph | None = None) -> keras.Model:
    """:func:`compact_zipped` without building the model again: each zip layer of ``model`` takes its
    compact form in place (``zip_models`` calls this on the model it has just built, which nobody else
    holds yet). Returns ``model``.

    A zip layer's inputs and outputs are per-task tensors of the tasks' own widths, which compaction
    does not change: only its weights and config do. So each zip layer is built afresh from its
    compact config (its variables created directly at the compact size, no symbolic call) and the
    layer object takes the new layer's state, keeping its place in the functional graph (its nodes
    and save spec). The result equals :func:`compact_zipped`'s: the same configs, weights (names,
    shapes, order, values) and outputs (tested).

    Raises:
        ValueError: as :func:`compact_zipped`.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=1.0)  # compacts in place
        >>> compact_in_place(zipped) is zipped, zipped.count_params()  # compacting again changes nothing
        (True, 782)
    """
    from tfmot_zip.model.batchnorm import forget_training_pass

    _refuse_pending([l for l in model.layers if isinstance(l, _ZIP_CLASSES)])
    plan = _plan(model, graph)
    for name, entry in plan.items():
        layer = model.get_layer(name)
        fresh = type(layer).from_config(_compact_config(layer, layer.get_config(), entry))
        fresh.build(layer.get_build_config()["input_shape"])
        fresh.set_weights(_compact_weights(layer, fresh, entry))
        state = {key: layer.__dict__[key] for key in _GRAPH_STATE if key in layer.__dict__}
        layer.__dict__.clear()
        layer.__dict__.update(fresh.__dict__)
        layer.__dict__.update(state)
    forget_training_pass(model)  # a traced pass holds the old variables
    return model


def _weight_key(weight) -> str:
    """A weight's name within its layer (``fc1/bias:0`` -> ``bias``)."""
    return weight.name.rsplit("/", 1)[-1].split(":")[0]


def _compact_weights(layer, target, entry: dict) -> list:
    """The values of ``target.weights``: ``layer``'s kept cells (a compact target's kernel blocks), its
    other weights by name (the maps are in the target's config)."""
    rows, cols = entry["rows"], entry["columns"]
    kernel = layer.physical_kernel().numpy()
    if isinstance(layer, ZipDepthwiseConv2D):
        kernel = kernel[:, :, cols]
    else:
        kernel = kernel[..., rows, :][..., cols]
    replace = {id(v): value for v, value in zip(target.kernel_variables(), target.kernel_block_values(kernel))}
    skip = {id(v) for v in layer.kernel_variables()}  # read above
    by_name = {_weight_key(w): w.numpy() for w in layer.weights if id(w) not in skip}
    if layer.use_bias:
        by_name["bias"] = by_name["bias"][cols]
    return [replace[id(w)] if id(w) in replace else by_name[_weight_key(w)] for w in target.weights]
