"""Pruning of a :class:`~tfmot_zip.pam.network.GroupedNetwork`: Taylor importance, structured (whole
units, fewer FLOPs for every task subset) and unstructured (TFMOT magnitude pruning, a smaller file).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras, tf
from tfmot_zip.core.pam_math import (
    LayerShape,
    group_flops,
    live_units,
    sources_of,
    subset_cost,
    subsets_running,
    task_paths_alive,
)
from tfmot_zip.pam.network import GroupedNetwork, block_name
from tfmot_zip.pam.train import evaluate, finetune, joint_batches
from tfmot_zip.training import compile_multitask

__all__ = ["taylor_importance", "unit_costs", "prune_step", "prune_structured", "prune_unstructured", "check_max_rounds"]


def taylor_importance(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    batches: int = 8,
    batch_size: int = 128,
    seed: int = 0,
    task_weights: Sequence[float] | None = None,
) -> dict:
    """First-order Taylor importance of every hidden unit: mean over batches of ``(sum_w w * dL/dw)^2``.

    ``w`` runs over the unit's incoming kernel weights (from every source block) and its bias; ``L``
    is the summed loss of all tasks, each on its own data (Molchanov et al. 2019, group Taylor).

    Args:
        net: the network.
        train_sets: per task ``(x, y)``.
        batches: batches averaged.
        batch_size: examples per task per batch.
        seed: batch sampling seed.
        task_weights: per task, the weight of its loss in ``L`` (default all 1; a one-hot vector
            measures one task's importance).

    Returns:
        ``{(layer_index, group): [units] scores}`` for every non-head group.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> model = keras.Sequential([keras.layers.Dense(3, "relu", input_shape=(4,), name="fc"),
        ...                           keras.layers.Dense(2, "softmax", name="head")], name="a")
        >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        >>> scores = taylor_importance(separate_network(model), [(x, (x[:, 0] > 0).astype(int))], batches=2)
        >>> list(scores), scores[(0, "a")].shape
        ([(0, 'a')], (3,))
    """
    weights_of_tasks = [1.0] * len(train_sets) if task_weights is None else [float(w) for w in task_weights]
    model = net.to_keras()
    by_name = {layer.name: layer for layer in model.layers}
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    rng = np.random.default_rng(seed)
    layers = net.layers()
    targets = []  # ((layer index, group), Keras layer of one of its source blocks)
    for li, op in enumerate(layers):
        if op.head:
            continue
        for group in op.units():
            for src in op.blocks[group]:
                layer = by_name.get(block_name(op.name, group, src))
                if layer is not None:
                    targets.append(((li, group), layer))
    variables = [v for _, layer in targets for v in layer.trainable_variables]
    scores = {key: np.zeros(layers[key[0]].units()[key[1]]) for key, _ in targets}
    for _ in range(batches):
        feeds, labels = [], []
        for x, y in train_sets:
            idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
            feeds.append(x[idx])
            labels.append(y[idx])
        with tf.GradientTape() as tape:
            outs = model(feeds, training=False)
            outs = outs if isinstance(outs, list) else [outs]
            loss = tf.add_n([w * loss_fn(y, o) for w, y, o in zip(weights_of_tasks, labels, outs)])
        grads = tape.gradient(loss, variables)
        grad_of = {v.ref(): g for v, g in zip(variables, grads)}
        batch = {key: 0.0 for key in scores}
        for key, layer in targets:
            for v in layer.trainable_variables:
                g = grad_of[v.ref()]
                if g is None:
                    continue
                prod = (v * g).numpy()
                axes = tuple(range(prod.ndim - 1))
                batch[key] = batch[key] + (prod.sum(axis=axes) if axes else prod)
        for key in scores:
            scores[key] += np.asarray(batch[key]) ** 2 / batches
    return scores


def unit_costs(net: GroupedNetwork) -> dict:
    """Per ``(layer index, group)`` of a hidden layer: FLOPs of one more output unit, times the number
    of task subsets that run the group.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="fc"),
        ...                           keras.layers.Dense(2, name="head")], name="a")
        >>> unit_costs(separate_network(model))  # (2*4 - 1) FLOPs, one subset
        {(0, 'a'): 7}
    """
    shapes = net.layer_shapes()
    costs = {}
    for li, (op, shape) in enumerate(zip(net.layers(), shapes)):
        if op.head:
            continue
        for group in shape.units:
            previous = shapes[li - 1].units if li else {}
            n_in = shape.input_units if li == 0 else sum(previous[s] for s in sources_of(group, list(previous)))
            f = group_flops(LayerShape(shape.kind, {}, shape.kernel_size, shape.out_hw, shape.in_positions), n_in, 1)[0]
            costs[(li, group)] = max(f, 1) * subsets_running(group, net.task_names)
    return costs


def _live_flops(shapes: Sequence[LayerShape], sizes: Sequence[dict], subset: Sequence[str]) -> int:
    """FLOPs of ``subset`` with ``sizes[l][group]`` hidden units left, dead groups counted as removed
    (as :meth:`GroupedNetwork.drop_dead_groups` will remove them)."""
    hidden = [LayerShape(s.kind, units, s.kernel_size, s.out_hw, s.in_positions, s.input_units, s.head)
              for s, units in zip(shapes, live_units(sizes))]
    return subset_cost(hidden + list(shapes[len(sizes):]), subset)[0]


def prune_step(net: GroupedNetwork, scores: dict, fraction: float) -> GroupedNetwork:
    """Removes the hidden units with the lowest importance per FLOP, ``fraction`` of the FLOPs (a new network).

    Importance is normalised per layer (divided by the layer's mean score), then divided by the
    unit's subset-weighted FLOPs (:func:`unit_costs`), so cheap-to-keep and informative units
    survive. Every task keeps a connected path
    (:func:`tfmot_zip.core.pam_math.task_paths_alive`).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> model = keras.Sequential([keras.layers.Dense(4, input_shape=(4,), name="fc"),
        ...                           keras.layers.Dense(2, name="head")], name="a")
        >>> net = separate_network(model)
        >>> prune_step(net, {(0, "a"): np.array([4.0, 1.0, 3.0, 2.0])}, fraction=0.5).group_sizes()
        [{'a': 2, 'name': 'fc'}]
    """
    net = net.copy()
    costs = unit_costs(net)
    layers = net.layers()
    layer_mean = {}
    for li in {li for li, _ in scores}:
        layer_mean[li] = np.concatenate([v for (lj, _), v in scores.items() if lj == li]).mean()
    entries = []
    for (li, group), s in scores.items():
        for u, value in enumerate(s / (layer_mean[li] + 1e-30)):
            entries.append((value / costs[(li, group)], li, group, u))
    entries.sort(key=lambda e: e[0])
    shapes = net.layer_shapes()
    every = tuple(net.task_names)
    target = (1.0 - fraction) * subset_cost(shapes, every)[0]  # all-tasks FLOPs after this step
    removed: dict = {}
    sizes = net.hidden_sizes()
    for _, li, group, u in entries:
        sizes[li][group] -= 1
        if not task_paths_alive(sizes, net.task_names):  # every task keeps a connected path
            sizes[li][group] += 1
            continue
        removed.setdefault((li, group), set()).add(u)
        if _live_flops(shapes, sizes, every) <= target:  # readers' input rows and dead groups counted
            break
    for (li, group), gone in removed.items():
        keep = np.array([u for u in range(layers[li].units()[group]) if u not in gone], np.int64)
        net.keep_units(li, group, keep)
    return net.drop_dead_groups()


def check_max_rounds(max_rounds: int) -> None:
    """Refuses a pruning round limit that would silently prune nothing (or is not a count).

    Example:
        >>> check_max_rounds(3)
        >>> check_max_rounds(0)
        Traceback (most recent call last):
        ...
        ValueError: max_rounds must be a positive integer (the most pruning rounds per network); received 0. Pass 1 or more (default 30).
    """
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, (int, np.integer)) or max_rounds < 1:
        raise ValueError(f"max_rounds must be a positive integer (the most pruning rounds per network); "
                         f"received {max_rounds!r}. Pass 1 or more (default 30).")


def prune_structured(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    val_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    targets: Sequence[float],
    fraction: float = 0.2,
    min_fraction: float = 0.02,
    finetune_steps: int = 150,
    max_rounds: int = 30,
    learning_rate: float = 5e-4,
    verbose: bool = False,
) -> GroupedNetwork:
    """Iterative Taylor channel pruning with short fine-tuning while every task stays on target.

    Each round removes units worth ``fraction`` of the all-tasks FLOPs (:func:`prune_step`), fine-tunes
    ``finetune_steps`` joint steps and checks every task's accuracy on ``val_sets`` against
    ``targets`` (percent). A failing round is undone and the fraction halved; pruning stops when
    it falls below ``min_fraction`` or after ``max_rounds``. Tested in tests/pam (it trains).

    Returns:
        The smallest network that met every target (``history`` records each round).
    """
    if len(targets) != len(net.task_names) or len(val_sets) != len(net.task_names):
        raise ValueError(f"Expected one target and one validation set per task ({len(net.task_names)}).")
    check_max_rounds(max_rounds)
    best = net.copy()
    for round_index in range(max_rounds):
        if fraction < min_fraction:
            break
        scores = taylor_importance(best, train_sets, seed=round_index)
        candidate = prune_step(best, scores, fraction)
        finetune(candidate, train_sets, finetune_steps, learning_rate=learning_rate, seed=round_index)
        accs = evaluate(candidate, val_sets)
        ok = all(a >= t for a, t in zip(accs, targets))
        flops = candidate.subset_costs()[tuple(net.task_names)][0]
        best.history.append({"round": round_index, "fraction": fraction, "accuracy": accs, "flops": flops, "accepted": ok})
        if verbose:
            print(f"round {round_index}: fraction {fraction:.3f} acc {np.round(accs, 2)} flops {flops} {'ok' if ok else 'undo'}")
        if ok:
            candidate.history = best.history
            best = candidate
        else:
            fraction /= 2
    return best


def prune_unstructured(
    net: GroupedNetwork,
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    sparsity: float = 0.8,
    steps: int = 300,
    learning_rate: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
) -> GroupedNetwork:
    """TFMOT magnitude pruning of every kernel while training jointly (the size route; a copy is returned).

    ``tfmot.sparsity.keras.prune_low_magnitude`` wraps the network's Keras model (a polynomial
    schedule from 0 to ``sparsity`` over the first 70% of ``steps``, updated every ``steps // 20``
    steps), ``strip_pruning`` removes the wrappers and the sparse weights are read back. Zeros
    shrink the gzipped TFLite file; they do not remove FLOPs on dense kernels (structured pruning,
    :func:`prune_structured`, does). Tested in tests/pam (it trains).
    """
    import tensorflow_model_optimization as tfmot

    if not 0.0 < float(sparsity) < 1.0:
        raise ValueError(f"Expected 0 < sparsity < 1. Received: sparsity={sparsity!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"Expected an integer steps >= 2. Received: steps={steps!r}")
    sk = tfmot.sparsity.keras
    schedule = sk.PolynomialDecay(0.0, float(sparsity), begin_step=0, end_step=max(1, int(0.7 * steps)),
                                  frequency=max(1, steps // 20))
    wrapped = sk.prune_low_magnitude(net.to_keras(), pruning_schedule=schedule)
    compile_multitask(wrapped, learning_rate)
    wrapped.fit(joint_batches(train_sets, batch_size, seed), steps_per_epoch=steps, epochs=1, verbose=0,
                callbacks=[sk.UpdatePruningStep()])
    return net.copy().read_weights(sk.strip_pruning(wrapped))
