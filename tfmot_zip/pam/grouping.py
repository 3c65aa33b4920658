"""The published PAM grouping: units relevant to two or more tasks shared, to one that task's, to none dropped.

Every original network's units are scored by their relevance to each task's labels (binned mutual
information, :func:`tfmot_zip.core.pam_math.binned_mutual_information`, or per-task Taylor
importance); per task, the smallest set of most relevant units holding ``threshold`` of its relevance
is relevant to it (:func:`tfmot_zip.core.pam_math.relevant_units`,
:func:`tfmot_zip.core.pam_math.assign_groups`). The network then starts block-diagonal
(:func:`tfmot_zip.pam.reading.block_diagonal_network`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.core.pam_math import SHARED, assign_groups, binned_mutual_information, relevant_units
from tfmot_zip.pam.network import GroupedNetwork
from tfmot_zip.pam.pruning import taylor_importance
from tfmot_zip.pam.reading import block_diagonal_network, check_task_names, read_chain
from tfmot_zip.pam.train import finetune

__all__ = ["pam_grouping", "taylor_grouping", "merge_pam_network", "merge_pam"]

L = keras.layers
RELEVANCE = ("mutual_information", "taylor")


def _hidden_activations(model: keras.Model, layers: list, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of ``layers`` on ``x``, conv channels averaged over positions."""
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    outs = probe.predict(x, batch_size=500, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return [o.mean(axis=(1, 2)) if o.ndim == 4 else o for o in outs]


def pam_grouping(
    models: Sequence[keras.Model],
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.9,
    bins: int = 8,
    samples: int = 2000,
) -> list[np.ndarray]:
    """Group of every pooled unit of every hidden layer (see :func:`tfmot_zip.core.pam_math.assign_groups`).

    Pooled units are ordered model by model (model 0's units first). Returns, per hidden layer, an
    int array: ``-1`` dropped, ``t`` task t's group, ``T`` shared.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> mlp = lambda seed: (keras.utils.set_random_seed(seed), keras.Sequential([
        ...     keras.layers.Dense(4, "relu", input_shape=(3,)), keras.layers.Dense(2)]))[1]
        >>> x = np.random.default_rng(0).normal(size=(200, 3)).astype("float32")
        >>> groups = pam_grouping([mlp(1), mlp(2)], [(x, x[:, 0] > 0), (x, x[:, 1] > 0)])
        >>> [g.shape for g in groups], set(groups[0].tolist()) <= {-1, 0, 1, 2}
        ([(8,)], True)
    """
    chains, _ = read_chain(models)
    hidden = [[layer for layer in chain if isinstance(layer, (L.Conv2D, L.Dense))][:-1] for chain in chains]
    if len(calibration_data) != len(models):
        raise ValueError(f"Expected one (x, y) calibration pair per model ({len(models)}); received {len(calibration_data)}.")
    per_layer = [[[] for _ in models] for _ in hidden[0]]  # [layer][task] -> list of model scores
    for t, pair in enumerate(calibration_data):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"calibration_data[{t}] must be an (x, y) pair of numpy arrays (labels are needed).")
        x, y = np.asarray(pair[0])[:samples], np.asarray(pair[1])[:samples]
        for m, model in enumerate(models):
            for index, acts in enumerate(_hidden_activations(model, hidden[m], x)):
                per_layer[index][t].append(binned_mutual_information(acts, y, bins=bins))
    return [assign_groups(relevant_units(np.stack([np.concatenate(s) for s in tasks]), threshold)) for tasks in per_layer]


def taylor_grouping(
    models: Sequence[keras.Model],
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.9,
    warmup_steps: int = 100,
    batches: int = 8,
) -> list[np.ndarray]:
    """Grouping from per-task first-order Taylor importance in an all-shared merged network.

    Every pooled unit is put in one shared group (block-diagonal start; cross-network blocks zero),
    the network is trained jointly for ``warmup_steps`` so cross-network weights can grow, then each
    unit's group-Taylor importance for each task's loss alone is its relevance to that task.
    Same output convention as :func:`pam_grouping`; tested in tests/pam (it trains).
    """
    chains, _ = read_chain(models)
    widths = [sum(layer.units if isinstance(layer, L.Dense) else layer.filters for layer in [c[i] for c in chains])
              for i, layer in enumerate(chains[0]) if isinstance(layer, (L.Conv2D, L.Dense))][:-1]
    names = [f"task{t}" for t in range(len(models))]
    net = block_diagonal_network(models, [np.full(w, len(models)) for w in widths], names)
    finetune(net, calibration_data, warmup_steps)
    per_task = []
    for t in range(len(models)):
        onehot = [1.0 if s == t else 0.0 for s in range(len(models))]
        scores = taylor_importance(net, calibration_data, batches=batches, seed=t, task_weights=onehot)
        per_task.append([scores[(index, SHARED)] for index in range(len(widths))])
    return [assign_groups(relevant_units(np.stack([p[index] for p in per_task]), threshold)) for index in range(len(widths))]


def merge_pam_network(
    models: Sequence[keras.Model],
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.9,
    task_names: Sequence[str] | None = None,
    groups: list[np.ndarray] | None = None,
    bins: int = 8,
    relevance: str = "mutual_information",
) -> GroupedNetwork:
    """Regroup and rewire the models into a :class:`GroupedNetwork` (block-diagonal start).

    Every unit keeps its incoming weights from its own network's units; allowed blocks between
    different networks' units start at zero (trainable); forbidden connections do not exist.

    Args:
        models: T tf_keras models with the same chain of Conv2D/Dense/pooling/Flatten layers.
        calibration_data: per task an ``(x, y)`` pair (labels needed for relevance).
        threshold: fraction of each task's information its relevant units must hold (0..1].
        task_names: default the models' names.
        groups: precomputed :func:`pam_grouping` result (skips the relevance pass).
        bins: quantile bins of the mutual-information estimate.
        relevance: "mutual_information" (:func:`pam_grouping`) or "taylor" (:func:`taylor_grouping`).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> mlp = lambda name: keras.Sequential([keras.layers.Dense(4, "relu", input_shape=(3,), name="fc"),
        ...                                      keras.layers.Dense(2, "softmax", name="head")], name=name)
        >>> x = np.random.default_rng(0).normal(size=(200, 3)).astype("float32")
        >>> net = merge_pam_network([mlp("a"), mlp("b")], [(x, x[:, 0] > 0), (x, x[:, 1] > 0)])
        >>> net.to_keras().output_names
        ['a', 'b']
    """
    names = check_task_names(models, task_names)
    read_chain(models)  # a model PAM cannot read fails before the relevance pass
    if relevance not in RELEVANCE:
        raise ValueError(f"Unknown relevance={relevance!r}; supported: 'mutual_information', 'taylor'.")
    if groups is None and relevance == "taylor":
        groups = taylor_grouping(models, calibration_data, threshold=threshold)
    elif groups is None:
        groups = pam_grouping(models, calibration_data, threshold=threshold, bins=bins)
    return block_diagonal_network(models, groups, names)


def merge_pam(
    *models: keras.Model,
    calibration_data: Sequence[tuple[np.ndarray, np.ndarray]],
    relevance: str = "mutual_information",
    threshold: float = 0.9,
    task_names: Sequence[str] | None = None,
    single_input: bool = False,
) -> keras.Model:
    """Pruning-aware merge of T models into one tf_keras model (one output per task, named after it).

    Args:
        *models: two or more tf_keras models with the same Conv2D/Dense/pooling/Flatten chain.
        calibration_data: per model, ``(x, y)`` of its task (labels are needed).
        relevance: "mutual_information" (binned per-unit MI with the task's labels, the default) or
            "taylor" (per-task Taylor importance after a short all-shared joint warm-up).
        threshold: each task's relevant units hold this fraction of its summed information.
        task_names: default the models' names.
        single_input: one input for all tasks (shared groups computed once) instead of one per task.

    Returns:
        A standard functional tf_keras model (groups as separate Conv2D/Dense blocks summed with
        Add). For pruning and per-subset export use :func:`merge_pam_network` instead.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> mlp = lambda name: keras.Sequential([keras.layers.Dense(4, "relu", input_shape=(3,), name="fc"),
        ...                                      keras.layers.Dense(2, "softmax", name="head")], name=name)
        >>> x = np.random.default_rng(0).normal(size=(200, 3)).astype("float32")
        >>> merged = merge_pam(mlp("a"), mlp("b"), calibration_data=[(x, x[:, 0] > 0), (x, x[:, 1] > 0)],
        ...                    single_input=True)
        >>> merged.output_names, len(merged.inputs)
        (['a', 'b'], 1)
    """
    net = merge_pam_network(list(models), calibration_data, threshold=threshold, task_names=task_names,
                            relevance=relevance)
    return net.to_keras(single_input=single_input)
