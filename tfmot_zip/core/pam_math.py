"""Framework-free math of Pruning-Aware Merging (PAM): relevance, grouping, FLOPs counting.

A PAM layer splits its units into a shared group ``"shared"`` and one group per task. A group may
read only groups serving a superset of its tasks: ``shared <- shared``, ``task t <- shared, task t``
(DESIGN.md section 2, PAM). Everything here is plain numpy and knows nothing about Keras.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np

__all__ = [
    "SHARED",
    "binned_mutual_information",
    "relevant_units",
    "assign_groups",
    "allowed_sources",
    "all_subsets",
    "LayerShape",
    "group_flops",
    "subset_cost",
]

#: Key of the shared group.
SHARED = "shared"


def binned_mutual_information(activations: np.ndarray, labels: np.ndarray, bins: int = 8) -> np.ndarray:
    """Plug-in mutual information (nats) between each unit's activation and the labels.

    Each column is discretised into ``bins`` quantile bins (ties, e.g. dead ReLUs, fall into one
    bin, so a constant unit scores exactly 0); ``I = H(bin) - H(bin | label)``. A cheap per-unit
    stand-in for the KDE estimate of PAM's authors.

    Args:
        activations: ``[samples, units]`` (conv channels already pooled over positions).
        labels: ``[samples]`` integer labels.
        bins: number of quantile bins (>= 2).

    Returns:
        ``[units]`` non-negative mutual information in nats, at most ``log(bins)``.

    Example:
        >>> y = np.repeat([0, 1], 50)
        >>> a = np.stack([y + 0.01 * np.arange(100), np.ones(100)], axis=1)
        >>> np.round(binned_mutual_information(a, y, bins=2), 3)
        array([0.693, 0.   ])
    """
    activations = np.asarray(activations, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if activations.ndim != 2 or activations.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Expected activations [samples, units] and labels [samples]; received {activations.shape} "
            f"and {labels.shape}."
        )
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"Expected an integer bins >= 2. Received: bins={bins!r}")
    n, units = activations.shape
    classes, label_index = np.unique(labels, return_inverse=True)
    quantiles = np.quantile(activations, np.linspace(0, 1, bins + 1)[1:-1], axis=0)  # [bins-1, units]
    binned = np.zeros((n, units), dtype=np.int64)
    for q in quantiles:  # bins - 1 comparisons, vectorised over units
        binned += activations > q[None, :]
    joint = np.zeros((units, bins, len(classes)))
    for c in range(len(classes)):
        rows = binned[label_index == c]
        for b in range(bins):
            joint[:, b, c] = (rows == b).sum(axis=0)
    joint /= n
    p_bin = joint.sum(axis=2, keepdims=True)
    p_label = joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / (p_bin * p_label)), 0.0)
    return np.maximum(terms.sum(axis=(1, 2)), 0.0)


def relevant_units(relevance: np.ndarray, threshold: float) -> np.ndarray:
    """Per task, the smallest set of most relevant units holding ``threshold`` of its relevance.

    Args:
        relevance: ``[tasks, units]`` non-negative scores (e.g. mutual information).
        threshold: fraction in (0, 1]; 1.0 keeps every unit with a positive score.

    Returns:
        ``[tasks, units]`` boolean: unit u is relevant to task t.

    Example:
        >>> relevant_units(np.array([[4.0, 3.0, 2.0, 1.0]]), 0.7)
        array([[ True,  True, False, False]])
    """
    relevance = np.asarray(relevance, dtype=np.float64)
    if relevance.ndim != 2 or (relevance < 0).any():
        raise ValueError(f"Expected non-negative relevance [tasks, units]; received shape {relevance.shape}.")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"Expected 0 < threshold <= 1. Received: threshold={threshold!r}")
    out = np.zeros(relevance.shape, dtype=bool)
    for t, scores in enumerate(relevance):
        total = scores.sum()
        if total <= 0:
            continue
        order = np.argsort(-scores, kind="stable")
        cumulative = np.cumsum(scores[order]) / total
        count = int(np.searchsorted(cumulative, float(threshold) - 1e-12) + 1)
        chosen = order[:count]
        out[t, chosen[scores[chosen] > 0]] = True
    return out


def assign_groups(relevant: np.ndarray, min_units: int = 1) -> np.ndarray:
    """Group of every unit: ``-1`` dropped, ``t`` task-specific, ``tasks`` (== T) shared.

    A unit relevant to two or more tasks is shared, to one task belongs to it, to none is dropped.
    Every task keeps at least ``min_units`` units on its path (shared plus its own): when fewer
    survive, its most-often-relevant dropped units are given to it.

    Example:
        >>> assign_groups(np.array([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=bool))
        array([ 2,  0,  1, -1])
    """
    relevant = np.asarray(relevant, dtype=bool)
    tasks = relevant.shape[0]
    counts = relevant.sum(axis=0)
    groups = np.full(relevant.shape[1], -1, dtype=np.int64)
    groups[counts >= 2] = tasks
    single = counts == 1
    groups[single] = np.argmax(relevant[:, single], axis=0)
    for t in range(tasks):
        path = np.count_nonzero((groups == tasks) | (groups == t))
        if path < min_units:
            spare = np.flatnonzero(groups == -1)[: min_units - path]
            groups[spare] = t
    return groups


def allowed_sources(group: str) -> tuple[str, ...]:
    """Groups of the layer below that ``group`` may read (shared first)."""
    return (SHARED,) if group == SHARED else (SHARED, group)


def all_subsets(task_names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of tasks, smallest first, in task order."""
    names = list(task_names)
    return [c for r in range(1, len(names) + 1) for c in combinations(names, r)]


@dataclass
class LayerShape:
    """What FLOPs counting needs to know of one grouped layer.

    Attributes:
        kind: "conv" or "dense".
        units: group -> output units (absent or 0: the group does not exist).
        kernel_size: k (square conv kernels; 1 for dense).
        out_hw: output height and width of a conv (1, 1 for dense).
        in_positions: dense reading a flattened conv map: positions per input channel (else 1).
        input_units: units (channels; for a first Dense layer all input values) of the network input,
            read by the first layer's groups. Later layers read the previous layer's groups allowed by
            :func:`allowed_sources`.
        head: the task-specific output layer (groups are tasks only).
    """

    kind: str
    units: dict
    kernel_size: int = 1
    out_hw: tuple = (1, 1)
    in_positions: int = 1
    input_units: int = 0  # units of the network input (first layer only)
    head: bool = False


def group_flops(layer: LayerShape, n_in: int, n_out: int) -> tuple[int, int]:
    """``(flops, params)`` of one group: conv ``(2*k*k*n_in - 1)*H*W*n_out``, dense ``(2*n_in - 1)*n_out``.

    Example:
        >>> group_flops(LayerShape("dense", {}), 400, 120)
        (95880, 48120)
    """
    if n_in <= 0 or n_out <= 0:
        return 0, 0
    if layer.kind == "conv":
        k, (h, w) = layer.kernel_size, layer.out_hw
        return (2 * k * k * n_in - 1) * h * w * n_out, k * k * n_in * n_out + n_out
    n_in = n_in * layer.in_positions
    return (2 * n_in - 1) * n_out, n_in * n_out + n_out


def subset_cost(layers: Sequence[LayerShape], subset: Sequence[str]) -> tuple[int, int]:
    """``(flops, params)`` of running only the groups ``subset`` needs, on one input.

    Each group counts only the input groups it may read; groups of tasks outside ``subset`` cost 0.

    Example:
        >>> l1 = LayerShape("dense", {"shared": 4, "a": 2, "b": 2}, input_units=10)
        >>> head = LayerShape("dense", {"a": 3, "b": 3}, head=True)
        >>> subset_cost([l1, head], ["a"])  # shared 19*4 + a 19*2 + head (2*6-1)*3
        (147, 87)
    """
    wanted = set(subset)
    flops = params = 0
    previous: dict = {}
    for index, layer in enumerate(layers):
        for group, n_out in layer.units.items():
            if group != SHARED and group not in wanted:
                continue
            if index == 0:
                n_in = layer.input_units
            else:
                n_in = sum(previous.get(src, 0) for src in allowed_sources(group))
            f, p = group_flops(layer, n_in, int(n_out))
            flops, params = flops + f, params + p
        previous = layer.units
    return flops, params
