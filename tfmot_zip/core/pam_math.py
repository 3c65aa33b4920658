"""Framework-free math of Pruning-Aware Merging (PAM): relevance, grouping, FLOPs counting.

A PAM layer splits its units into a shared group ``"shared"``, optional groups for partial subsets of
tasks (``"a+b"``) and one group per task. A group may read only groups serving a superset of its
tasks: ``shared <- shared``, ``a+b <- shared, a+b``, ``a <- shared, a+b, a``
(docs/METHOD.md, PAM). Everything here is plain numpy and knows nothing about Keras.
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
    "group_tasks",
    "covers",
    "sources_of",
    "runs_for",
    "subsets_running",
    "live_units",
    "task_paths_alive",
    "group_key",
    "group_order",
    "merged_unit_costs",
    "restricted_fit",
    "restricted_fits",
    "damped_square",
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
    """Groups of the layer below that ``group`` may read among the shared group and its own (shared first).

    With groups for partial subsets (``"a+b"``) use :func:`sources_of`, which also finds them.
    """
    return (SHARED,) if group == SHARED else (SHARED, group)


def group_tasks(group: str) -> frozenset | None:
    """The tasks a group serves: ``None`` for :data:`SHARED` (every task), else the ``+``-separated names.

    Example:
        >>> sorted(group_tasks("a+c")), group_tasks("b"), group_tasks(SHARED)
        (['a', 'c'], frozenset({'b'}), None)
    """
    return None if group == SHARED else frozenset(group.split("+"))


def covers(source: str, group: str) -> bool:
    """True when ``source`` serves every task ``group`` serves (``group`` may read ``source``).

    Example:
        >>> covers(SHARED, "a+b"), covers("a+b", "a"), covers("a", "a+b"), covers("a+b", SHARED)
        (True, True, False, False)
    """
    if source == SHARED:
        return True
    if group == SHARED:
        return False
    return group_tasks(source) >= group_tasks(group)


def sources_of(group: str, available: Sequence[str]) -> list[str]:
    """The groups among ``available`` (the layer below) that ``group`` may read, in their order.

    Example:
        >>> sources_of("a", [SHARED, "a+b", "b+c", "a", "b"])
        ['shared', 'a+b', 'a']
    """
    return [source for source in available if covers(source, group)]


def runs_for(group: str, subset: Sequence[str]) -> bool:
    """True when running the tasks ``subset`` needs ``group`` (it serves one of them).

    Example:
        >>> runs_for("a+b", ["b"]), runs_for("a+b", ["c"]), runs_for(SHARED, ["c"])
        (True, False, True)
    """
    return group == SHARED or bool(group_tasks(group) & set(subset))


def subsets_running(group: str, task_names: Sequence[str]) -> int:
    """How many non-empty subsets of ``task_names`` run ``group``.

    Example:
        >>> subsets_running(SHARED, ["a", "b", "c"]), subsets_running("a+b", ["a", "b", "c"])
        (7, 6)
    """
    served = len(task_names) if group == SHARED else len(group.split("+"))
    return 2 ** len(task_names) - 2 ** (len(task_names) - served)


def live_units(sizes: Sequence[dict]) -> list[dict]:
    """``sizes`` (per hidden layer, bottom-up, ``{group: units}``) with dead groups set to 0.

    A group is dead when none of the groups it may read below has a unit (it computes a constant;
    the first layer reads the input) or when no group above may read it. The head reads every group
    of the last hidden layer that serves its task, and every group serves one, so the last layer
    loses groups only to the first rule.

    Example:
        >>> live_units([{SHARED: 0, "a": 2, "b": 1}, {"a+b": 3, "b": 1}])
        [{'shared': 0, 'a': 0, 'b': 1}, {'a+b': 0, 'b': 1}]
    """
    live = [dict(units) for units in sizes]
    for below, layer in zip(live, live[1:]):
        for group in layer:
            if not any(below[source] > 0 for source in sources_of(group, list(below))):
                layer[group] = 0
    for index in range(len(live) - 2, -1, -1):
        readers = [group for group, n in live[index + 1].items() if n > 0]
        for group in live[index]:
            if not any(covers(group, reader) for reader in readers):
                live[index][group] = 0
    return live


def task_paths_alive(sizes: Sequence[dict], task_names: Sequence[str]) -> bool:
    """True when, with ``sizes[l][group]`` units left in hidden layer l, every task keeps a live
    group (:func:`live_units`) serving it in every layer: a path from the input to its head.

    Example:
        >>> task_paths_alive([{SHARED: 0, "a": 1, "b": 1}, {"a+b": 2, "b": 1}], ["a", "b"])
        False
        >>> task_paths_alive([{SHARED: 1, "a": 0}, {"a+b": 1}], ["a", "b"])
        True
    """
    return all(
        any(n > 0 and runs_for(group, [task]) for group, n in units.items())
        for units in live_units(sizes)
        for task in task_names
    )


def group_key(tasks: Sequence[str], task_names: Sequence[str]) -> str:
    """Key of the group serving ``tasks``: :data:`SHARED` for all, the name for one, else ``"a+b"`` in task order.

    Example:
        >>> group_key(["c", "a"], ["a", "b", "c"]), group_key(["b"], ["a", "b", "c"])
        ('a+c', 'b')
    """
    wanted = set(tasks)
    unknown = wanted - set(task_names)
    if not wanted or unknown:
        raise ValueError(f"Expected a non-empty subset of {list(task_names)}; received {list(tasks)}.")
    if len(wanted) == len(task_names):
        return SHARED
    return "+".join(t for t in task_names if t in wanted)


def group_order(groups: Sequence[str], task_names: Sequence[str]) -> list[str]:
    """Canonical order of a layer's groups: shared, then partial subsets (largest first), then single tasks.

    Example:
        >>> group_order(["b", "a+b", SHARED, "a"], ["a", "b", "c"])
        ['shared', 'a+b', 'a', 'b']
    """
    index = {name: i for i, name in enumerate(task_names)}

    def rank(group: str):
        tasks = group_tasks(group)
        if tasks is None:
            return (0, ())
        return (len(task_names) - len(tasks), tuple(sorted(index[t] for t in tasks)))

    return sorted(groups, key=rank)


def merged_unit_costs(
    h_x: np.ndarray,
    g_x: np.ndarray,
    e_x: np.ndarray,
    r_x: np.ndarray,
    h_y: np.ndarray,
    g_y: np.ndarray,
    e_y: np.ndarray,
    r_y: np.ndarray,
    allowed: np.ndarray,
    damping: float = 1e-4,
) -> np.ndarray:
    """Cost of merging each unit of side X with each unit of side Y into one unit that reads ``allowed`` inputs.

    A unit serving tasks S has, per task t, a target weight vector ``a_t`` (incoming weights, bias last)
    and the layer Hessian ``H_t = E[x~ x~^T]`` of t's inputs. It is summarised by ``H = sum_t H_t``,
    ``g = sum_t H_t a_t`` and ``e = sum_t a_t^T H_t a_t``; one merged weight ``w`` that is zero outside
    ``allowed`` (inputs computed for every task of both units) has the summed layer-wise error
    ``E(w) = sum_t (w - a_t)^T H_t (w - a_t)``, least at ``w = K^-1 g_A`` with ``K = H_AA`` (damped), where
    it is ``e - g_A^T K^-1 g_A``. The returned cost is that least error of the merged unit minus the errors
    ``r_x``, ``r_y`` the two units already have: the increase of the summed layer-wise error.

    Args:
        h_x, h_y: ``[d, d]`` summed Hessians of each side's tasks (every unit of a side serves the same tasks).
        g_x, g_y: ``[n_x, d]``, ``[n_y, d]`` rows ``sum_t H_t a_t``.
        e_x, e_y: ``[n_x]``, ``[n_y]`` ``sum_t a_t^T H_t a_t``.
        r_x, r_y: ``[n_x]``, ``[n_y]`` current least errors of the units (0 for untouched units).
        allowed: ``[d]`` bool, the inputs the merged unit may read (the bias coordinate included).
        damping: ``K + damping * mean(diag K) * I``.

    Returns:
        ``[n_x, n_y]`` cost increases (one matrix product, no loop over pairs).

    Example:
        >>> h = np.eye(2); g = np.array([[1.0, 0.0]]); e = np.array([1.0]); r = np.zeros(1)
        >>> round(float(merged_unit_costs(h, g, e, r, h, -g, e, r, np.ones(2, bool), 0.0)[0, 0]), 6)
        2.0
    """
    allowed = np.asarray(allowed, dtype=bool)
    k = np.asarray(h_x, np.float64)[np.ix_(allowed, allowed)] + np.asarray(h_y, np.float64)[np.ix_(allowed, allowed)]
    k = damped_square(k, damping)
    gx, gy = np.asarray(g_x, np.float64)[:, allowed], np.asarray(g_y, np.float64)[:, allowed]
    kgx = np.linalg.solve(k, gx.T)  # [a, n_x]
    kgy = np.linalg.solve(k, gy.T)
    qx = np.einsum("ia,ai->i", gx, kgx)
    qy = np.einsum("ja,aj->j", gy, kgy)
    cross = gx @ kgy
    base_x = np.asarray(e_x, np.float64) - qx - np.asarray(r_x, np.float64)
    base_y = np.asarray(e_y, np.float64) - qy - np.asarray(r_y, np.float64)
    return base_x[:, None] + base_y[None, :] - 2.0 * cross


def damped_square(k: np.ndarray, damping: float) -> np.ndarray:
    """``k + damping * mean(diag k) * I`` (a tiny absolute floor keeps an all-zero ``k`` invertible)."""
    scale = float(np.mean(np.diag(k))) if k.size else 0.0
    return k + (max(damping * scale, 0.0) + 1e-12) * np.eye(k.shape[0])


def restricted_fits(
    h: np.ndarray, gs: np.ndarray, es: Sequence[float], allowed: np.ndarray, damping: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`restricted_fit` for several units of one task set: one factorisation, many right-hand sides.

    Args:
        h: ``sum_t H_t`` of the task set, ``[d, d]``.
        gs: per unit ``g = sum_t H_t a_t``, ``[n, d]``.
        es: per unit ``e = sum_t a_t^T H_t a_t``.
        allowed: ``[d]`` bool, the inputs the merged units may read.
        damping: relative to the mean diagonal (:func:`damped_square`).

    Returns:
        ``(w [n, d], least errors [n])``.

    Example:
        >>> ws, errs = restricted_fits(np.eye(2), np.array([[1.0, 3.0], [2.0, 0.0]]), [10.0, 4.0], np.array([True, False]), 0.0)
        >>> np.round(ws, 6).tolist(), np.round(errs, 6).tolist()
        ([[1.0, 0.0], [2.0, 0.0]], [9.0, 0.0])
    """
    allowed = np.asarray(allowed, dtype=bool)
    gs = np.atleast_2d(np.asarray(gs, np.float64))
    k = damped_square(np.asarray(h, np.float64)[np.ix_(allowed, allowed)], damping)
    ga = gs[:, allowed]
    solution = np.linalg.solve(k, ga.T).T
    ws = np.zeros(gs.shape)
    ws[:, allowed] = solution
    return ws, np.asarray(es, np.float64) - np.einsum("nd,nd->n", ga, solution)


def restricted_fit(h: np.ndarray, g: np.ndarray, e: float, allowed: np.ndarray, damping: float = 1e-4) -> tuple[np.ndarray, float]:
    """Weight ``w`` (zero outside ``allowed``) minimising ``sum_t (w - a_t)^T H_t (w - a_t)``, and that least error.

    ``h = sum_t H_t``, ``g = sum_t H_t a_t``, ``e = sum_t a_t^T H_t a_t`` (see :func:`merged_unit_costs`).

    Example:
        >>> w, err = restricted_fit(np.eye(2), np.array([1.0, 3.0]), 10.0, np.array([True, False]), 0.0)
        >>> np.round(w, 6).tolist(), round(err, 6)
        ([1.0, 0.0], 9.0)
    """
    ws, errs = restricted_fits(h, np.asarray(g)[None, :], [e], allowed, damping)
    return ws[0], float(errs[0])


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
            if not runs_for(group, wanted):
                continue
            if index == 0:
                n_in = layer.input_units
            else:
                n_in = sum(previous[src] for src in sources_of(group, list(previous)))
            f, p = group_flops(layer, n_in, int(n_out))
            flops, params = flops + f, params + p
        previous = layer.units
    return flops, params
