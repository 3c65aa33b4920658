"""Data-driven refits after zipping (beyond the paper; docs/METHOD.md).

- :func:`refit_layers`: bottom-up, each merged hidden layer's weights re-solved by damped least
  squares from the inputs the zipped network really gives it (the layers below are merged, so
  the inputs have moved) to each task's original pre-activations, jointly over the tasks that
  share a unit (:func:`tfmot_zip.core.refit.refit_shared_columns`). MTZ's own update is the
  second-order approximation of this around the original inputs. With ``relu_passes``, a layer with
  a ReLU is then re-solved that many times with :func:`tfmot_zip.core.refit.relu_targets`: where the original
  unit is off and the prediction is off too, the prediction counts as exact.
- The head refit is :mod:`tfmot_zip.zipping.head_refit`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core.hessian import conv_output_shape, gather_patches
from tfmot_zip.core.refit import refit_shared_columns, relu_targets
from tfmot_zip.model.graph import ModelGraph
from tfmot_zip.zipping.activations import ZipActivations

__all__ = ["refit_layers", "rows_per_block"]


def rows_per_block(batch_size: int, width: int) -> int:
    """Rows per least-squares block: at least ``batch_size``, about 64 MB of float64 values of ``width``."""
    return max(batch_size, 8_000_000 // max(1, width))


def _row_blocks(merged, original, layer: keras.layers.Layer, original_layer: keras.layers.Layer,
                is_conv: bool, batch_size: int, max_rows: int | None, rng: np.random.Generator):
    """Yields ``(x, y)`` blocks: rows of the layer's merged inputs (conv: patch rows) and the original
    layer's pre-activations on the same rows (``original @ kernel + bias``, patch by patch for a
    convolution). A convolution uses at most ``max_rows`` patch rows (drawn evenly at random)."""
    original_kernel, *rest = original_layer.get_weights()
    original_kernel = original_kernel.reshape(-1, original_kernel.shape[-1]).astype(np.float64)
    original_bias = rest[0].astype(np.float64) if rest else 0.0
    if not is_conv:
        step = rows_per_block(batch_size, int(np.prod(merged.shape[1:])) + original_kernel.shape[1])
        for start in range(0, len(merged), step):
            x = np.asarray(merged[start : start + step], np.float64)
            y = np.asarray(original[start : start + step], np.float64)
            yield x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]) @ original_kernel + original_bias
        return
    geometry = (layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
    available = len(merged) * int(np.prod(conv_output_shape(merged.shape[1:3], *geometry)))
    if max_rows is not None and available > max_rows:
        rows = np.sort(rng.choice(available, size=max_rows, replace=False))
    else:
        rows = np.arange(available)
    kh, kw, channels = layer.physical_kernel().shape[:3]
    block = max(1, 16_000_000 // (original_kernel.shape[0] + kh * kw * channels))
    for start in range(0, len(rows), block):
        chosen = rows[start : start + block]
        x = gather_patches(merged, *geometry, rows=chosen).astype(np.float64)
        y = gather_patches(original, *geometry, rows=chosen).astype(np.float64) @ original_kernel + original_bias
        yield x, y


def refit_layers(
    zipped: keras.Model,
    graph: ModelGraph,
    calibration: Sequence[np.ndarray],
    damping: float = 1e-3,
    batch_size: int = 500,
    layers: Sequence[str] | None = None,
    activations: ZipActivations | None = None,
    max_conv_rows: int | None = 200_000,
    seed: int = 0,
    relu_passes: int = 0,
    grams: dict[str, dict[int, np.ndarray]] | None = None,
) -> list[str]:
    """Re-solves the weights of every hidden zip layer of ``zipped`` in place, bottom-up.

    Args:
        zipped: the zipped model (its zip layers are updated).
        graph: the aligned original models it was zipped from.
        calibration: one array of inputs per task.
        damping: relative pull towards the current (MTZ) weights.
        batch_size: fewest samples per block of rows (a Dense layer's blocks hold about 64 MB of inputs and targets).
        layers: refit only these hidden layers (names), still bottom-up; None: all.
        activations: the zip's activation caches (None: built here).
        max_conv_rows: at most this many patch rows (samples x output positions) per task and
            convolution enter its least squares (drawn evenly at random beyond it); None: all.
        seed: seeds that draw.
        relu_passes: for a layer whose activation is a ReLU (and no repair affine), re-solve this
            many more times with :func:`~tfmot_zip.core.refit.relu_targets` of the last solution's
            predictions (0, the default, which ``zip_models`` uses: the plain least squares of the
            pre-activations; docs/REFIT.md measures 2).
        grams: ``{layer name: {task: sum [x 1]^T [x 1]}}`` of Dense layers whose inputs the zip left
            unchanged (the model's inputs), in the task's coordinates and summed over every worker
            (``Zipper.input_grams``): used instead of computing them again; None: none.

    Returns:
        The names of the layers refit.

    Example:
        >>> import tfmot_zip
        >>> from tfmot_zip.apps.zoo import example_pair
        >>> from tfmot_zip.model.graph import align_models
        >>> model_a, model_b, (x_a, x_b) = example_pair()
        >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=1.0)
        >>> refit_layers(zipped, align_models([model_a, model_b]), [x_a, x_b])
        ['fc1', 'fc2']
    """
    acts = activations if activations is not None else ZipActivations(zipped, graph.models, calibration)
    known_grams = dict(grams or {})
    names = []
    for node in graph.hidden_zip_nodes():
        if layers is not None and node.name not in layers:
            continue
        layer = zipped.get_layer(node.name)
        is_conv = node.kind == "conv"
        positions = int(np.prod(layer.kernel_size)) if is_conv else 1
        rows = positions * layer.input_capacity
        relu = layer.activation is keras.activations.relu and not layer.repair
        passes = int(relu_passes) if relu else 0
        # the passes reuse each task's rows and targets when they fit in memory (else read again)
        kept = [_KeptRows(KEPT_ROWS_BYTES // len(node.layers)) if passes else None for _ in node.layers]
        known = known_grams.get(node.name, {}) if not is_conv else {}
        sums = [_task_sums(layer, node, task, acts, positions, batch_size, max_conv_rows, seed, kept=kept[task],
                           gram=known.get(task)) for task in range(len(node.layers))]
        grams, crosses = [g for g, _ in sums], [c for _, c in sums]
        owners = layer.unit_tasks()
        column_tasks = [frozenset(owners.get(c, ())) for c in range(layer.capacity)]
        kernel = layer.physical_kernel().numpy()
        bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.capacity, kernel.dtype)
        prior = np.vstack([kernel.reshape(rows, layer.capacity), bias[None, :]])
        keep = slice(None) if layer.use_bias else slice(0, rows)  # without a bias, its coordinate is dropped

        def solve(crosses: list) -> np.ndarray:  # physical weights, the bias row last (zero without a bias)
            solved = refit_shared_columns([g[keep, keep] for g in grams], [c[keep] for c in crosses], column_tasks,
                                          prior[keep], damping)
            return solved if layer.use_bias else np.vstack([solved, np.zeros((1, layer.capacity))])

        solved = solve(crosses)
        for _ in range(passes):
            solved = solve([_task_sums(layer, node, task, acts, positions, batch_size, max_conv_rows, seed, solved,
                                       kept=kept[task])[1] for task in range(len(node.layers))])
        layer.assign_physical_kernel(solved[:rows].reshape(kernel.shape).astype(kernel.dtype))
        if layer.use_bias:
            layer.bias.assign(solved[rows].astype(bias.dtype))
        acts.changed(layer)
        names.append(node.name)
    return names


KEPT_ROWS_BYTES = 256 * 2**20  # a layer's rows and targets kept for its ReLU passes, over all tasks


class _KeptRows:
    """One task's ``(rows with a trailing 1, targets)`` blocks of a layer, kept while they fit in
    ``budget`` bytes (``blocks`` is None once they do not: the passes then read them again)."""

    def __init__(self, budget: int):
        self.budget, self.blocks = budget, []

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.blocks is None:
            return
        self.budget -= x.nbytes + y.nbytes
        if self.budget < 0:
            self.blocks = None
        else:
            self.blocks.append((x, y))


def _task_sums(layer, node, task: int, acts, positions: int, batch_size: int, max_conv_rows, seed: int,
               solved: np.ndarray | None = None, kept: _KeptRows | None = None, gram: np.ndarray | None = None) -> tuple:
    """``(gram, cross)`` of one task at a hidden zip layer, in physical coordinates (the last row: the
    bias). With ``solved`` (physical weights, bias row last) the targets are the
    :func:`~tfmot_zip.core.refit.relu_targets` of its predictions, and the gram is not accumulated.
    ``kept``: the first call keeps its blocks there, the later ones read them from it. ``gram``: the
    task's ``sum [x 1]^T [x 1]`` in its own coordinates, already summed over the workers, when known."""
    rows = positions * layer.input_capacity
    in_map, out_map = layer.get_maps(task)
    ids = (np.arange(positions)[:, None] * layer.input_capacity + in_map[None, :]).reshape(-1)
    ids = np.append(ids, rows)  # the bias coordinate
    original_layer = node.layers[task]
    merged, original = acts.merged_inputs(layer, task), acts.original_input(original_layer, task)
    rng = np.random.default_rng([seed, node.index, task])  # the same rows on every pass
    known = gram if gram is not None and solved is None and gram.shape == (len(ids), len(ids)) else None
    if known is not None:  # decided by every worker together, so that all make the same reductions
        same, workers = acts.merged.replicas.sum_all([[float(_same_values(merged, original)), 1.0]])[0]
        if same < workers:
            known = None  # a layer below changed after the zip measured these inputs (e.g. a BatchNorm re-estimated)
    gram = np.zeros((rows + 1, rows + 1)) if solved is None else None
    cross = np.zeros((rows + 1, layer.capacity))
    if known is not None:
        gram[np.ix_(ids, ids)] = known
        if kept is None:  # targets [x 1] [W; b] of the same inputs: sum [x 1]^T y = gram [W; b], no pass over the rows
            kernel, *bias = original_layer.get_weights()
            kernel = kernel.reshape(-1, kernel.shape[-1])
            targets = np.vstack([kernel, bias[0][None] if bias else np.zeros((1, kernel.shape[1]))]).astype(np.float64)
            cross[np.ix_(ids, out_map)] = known @ targets  # the gram is every worker's sum: so is this
            return gram, cross
    weights = None if solved is None else solved[np.ix_(ids, out_map)]
    if solved is not None and kept is not None and kept.blocks is not None:
        blocks = kept.blocks
    else:
        read = _row_blocks(merged, original, layer, original_layer, node.kind == "conv", batch_size, max_conv_rows, rng)
        blocks = ((np.hstack([x, np.ones((len(x), 1))]), y) for x, y in read)
    for x, y in blocks:
        if solved is None and kept is not None:
            kept.add(x, y)
        if weights is not None:
            y = relu_targets(y, x @ weights)
        elif known is None:
            gram[np.ix_(ids, ids)] += x.T @ x
        cross[np.ix_(ids, out_map)] += x.T @ y
    if gram is None or known is not None:  # no gram to sum, or one summed already
        (cross,) = acts.merged.replicas.sum_all([cross])  # over the workers of a tf.distribute strategy
        return gram, cross
    gram, cross = acts.merged.replicas.sum_all([gram, cross])
    return gram, cross


def _same_values(a, b) -> bool:
    """Whether two layer inputs (numpy arrays, or spilled arrays read by ranges) hold the same values."""
    if a is b:
        return True
    if a.shape != b.shape:
        return False
    step = max(1, 4_000_000 // max(1, int(np.prod(a.shape[1:]))))
    return all(np.array_equal(np.asarray(a[i : i + step]), np.asarray(b[i : i + step])) for i in range(0, len(a), step))
