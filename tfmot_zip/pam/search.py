"""The default PAM heuristic: prune each task's network, merge the survivors into subset groups, prune again.

Flow (docs/PAM.md)::

    result = merge_and_prune(models, train_sets, val_sets, targets)  # prune, Hessian-merge, prune
    result.net.subset_costs()                                       # FLOPs/params per task subset
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.pam.merging import merge_pruned_networks
from tfmot_zip.pam.network import GroupedNetwork
from tfmot_zip.pam.pruning import check_max_rounds, prune_structured
from tfmot_zip.pam.reading import separate_network
from tfmot_zip.pam.train import evaluate, finetune

__all__ = ["PamResult", "DEFAULT_MERGE_LEVELS", "default_thresholds", "merge_and_prune"]


@dataclass
class PamResult:
    """What :func:`merge_and_prune` did (it returns one): the final network and each stage's figures.

    Attributes:
        net: the pruned merged :class:`GroupedNetwork`.
        separate: each task's network pruned on its own (the relevance step and the baseline).
        threshold: the merge threshold that was accepted (``None``: every candidate failed, the
            separate networks were kept side by side).
        tried: per candidate, in the order run, ``{"threshold", "kept_separate", "accuracy", "accepted",
            "flops"}`` (validation accuracy; all-tasks FLOPs before the final pruning).
        merged: the accepted merged network before the final pruning.
        kept_separate: tasks the accepted merge left unmerged (they lost accuracy when merged).
    """

    net: GroupedNetwork
    separate: list
    threshold: float | dict | None
    tried: list
    merged: GroupedNetwork
    kept_separate: list


DEFAULT_MERGE_LEVELS = (1.0, 0.3, 0.15, 0.05)


def default_thresholds(net: GroupedNetwork, levels: Sequence[float] = DEFAULT_MERGE_LEVELS) -> list:
    """The merge candidates :func:`merge_and_prune` tries by default: each level for every hidden
    layer, and each level for the conv layers only (dense units kept per task).

    Conv units carry nearly all the FLOPs of a CNN while dense units carry most of the accuracy
    loss of a merge, so a conv-only merge often saves most of the computation at a fraction of
    the loss (LeNet-5: 1.0 everywhere loses 0.6 point on a task, 1.0 on the convs meets every target).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.pam.reading import separate_network
        >>> model = keras.Sequential([keras.layers.Conv2D(2, 3, input_shape=(6, 6, 1), name="conv"),
        ...                           keras.layers.Flatten(), keras.layers.Dense(3, name="fc"),
        ...                           keras.layers.Dense(2, name="head")], name="a")
        >>> default_thresholds(separate_network(model), levels=(1.0, 0.3))
        [1.0, {'conv': 1.0}, 0.3, {'conv': 0.3}]
    """
    convs = [op.name for op in net.layers() if op.kind == "conv" and not op.head]
    dense = [op.name for op in net.layers() if op.kind != "conv" and not op.head]
    out: list = []
    for level in levels:
        out.append(float(level))
        if convs and dense:
            out.append({name: float(level) for name in convs})
    return out


def merge_and_prune(
    models: Sequence[keras.Model],
    train_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    val_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    targets: Sequence[float],
    thresholds: Sequence[float | dict] | None = None,
    task_names: Sequence[str] | None = None,
    finetune_steps: int = 3000,
    prune_steps: int = 200,
    learning_rate: float = 1e-3,
    separate: Sequence[GroupedNetwork] | None = None,
    protect: bool = True,
    verbose: bool = False,
    max_rounds: int = 30,
) -> PamResult:
    """Pruning-aware merge: prune each task's network, merge the survivors into subset groups, prune again.

    1. Relevance: each model is pruned on its own (:func:`tfmot_zip.pam.pruning.prune_structured`, whole units) while its
       task stays on target; the units it keeps are the ones relevant to its task.
    2. Merge: :func:`tfmot_zip.pam.merging.merge_pruned_networks` shares relevant units across tasks by Hessian pairing,
       so that a shared unit is computed once for every subset that needs it. Every candidate
       threshold is merged (seconds) and the candidates are fine-tuned (``finetune_steps`` joint
       steps) in order of their all-tasks FLOPs, fewest first; the first whose every task meets its
       target on ``val_sets`` is kept. Task protection (``protect``): a candidate on which some tasks
       miss their targets is merged again with those tasks kept out (their units stay their own)
       and queued by its FLOPs like the others.
    3. Prune the merged network again (every group, :func:`tfmot_zip.pam.pruning.prune_structured`).

    Since merging never adds a unit to any task's path, every subset costs at most what the
    separately pruned networks cost; sharing makes subsets of several tasks cheaper.

    Args:
        models: T tf_keras models with one Conv2D/Dense/pooling/Flatten chain (fold BatchNormalization
            first: :func:`tfmot_zip.model.fold.fold_batchnorm`).
        train_sets, val_sets: per task ``(x, y)``.
        targets: per task the least validation accuracy (percent) to keep.
        thresholds: candidate ``max_relative_error`` values (floats or per-layer dicts); default
            :func:`default_thresholds` (each level everywhere and on the conv layers only).
        task_names: default the models' names.
        finetune_steps: joint steps after merging; prune_steps: steps after each pruning round.
        learning_rate: fine-tuning learning rate (cosine decay to 0).
        separate: already pruned one-task networks (skips step 1).
        protect: queue a failed candidate again with the tasks that missed their targets kept separate.
        verbose: print each stage.
        max_rounds: at most this many pruning rounds per network (each pruning of step 1 and 3).

    Returns:
        A :class:`PamResult`.

    Tested in tests/pam (it trains); a full run: ``python -m benchmarks.pam``.
    """
    names = [m.name for m in models] if task_names is None else list(task_names)
    if not (len(names) == len(models) == len(train_sets) == len(val_sets) == len(targets)) or len(models) < 2:
        raise ValueError(
            f"Expected two or more models with one name, train set, validation set and target each; received "
            f"{len(models)} models, {len(names)} names, {len(train_sets)} train sets, {len(val_sets)} validation "
            f"sets, {len(targets)} targets."
        )
    check_max_rounds(max_rounds)  # before any pruning or merging work
    if separate is None:
        separate = [
            prune_structured(separate_network(m, n), [tr], [va], [tg], finetune_steps=prune_steps, verbose=verbose,
                             max_rounds=max_rounds)
            for m, n, tr, va, tg in zip(models, names, train_sets, val_sets, targets)
        ]
    calibration = [x for x, _ in train_sets]
    if thresholds is None:
        thresholds = default_thresholds(separate[0])
    queue, seen, tried, chosen, merged, kept = [], set(), [], None, None, []

    def push(threshold, keep):
        candidate = merge_pruned_networks(separate, calibration, max_relative_error=threshold, keep_separate=keep)
        flops = candidate.subset_costs()[tuple(names)][0]
        layout = (flops, repr(candidate.group_sizes()))
        if layout not in seen:  # two thresholds can give the same merge
            seen.add(layout)
            heapq.heappush(queue, (flops, len(seen), threshold, keep, candidate))

    for threshold in thresholds:
        push(threshold, [])
    while queue and merged is None:
        flops, _, threshold, keep, candidate = heapq.heappop(queue)
        finetune(candidate, train_sets, finetune_steps, learning_rate=learning_rate)
        accs = evaluate(candidate, val_sets)
        failing = [n for n, a, t in zip(names, accs, targets) if a < t]
        tried.append({"threshold": threshold, "kept_separate": keep, "accuracy": accs, "accepted": not failing, "flops": flops})
        if verbose:
            print(f"merge threshold {threshold} keeping {keep or 'none'} separate: val acc {np.round(accs, 2)} "
                  f"all-tasks FLOPs {flops} {'ok' if not failing else 'too lossy for ' + str(failing)}")
        if not failing:
            chosen, merged, kept = threshold, candidate, keep
        elif protect and not set(failing) <= set(keep) and len(set(names) - set(keep) - set(failing)) >= 2:
            push(threshold, keep + [n for n in failing if n not in keep])  # the others may still share
    if merged is None:  # keep the separate networks side by side (no sharing, never worse)
        merged = merge_pruned_networks(separate, calibration, max_relative_error=0.0)
    pruned = prune_structured(merged.copy(), train_sets, val_sets, targets, finetune_steps=prune_steps,
                              learning_rate=5e-4, verbose=verbose, max_rounds=max_rounds)
    return PamResult(pruned, list(separate), chosen, tried, merged, list(kept))
