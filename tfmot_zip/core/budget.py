"""Parameter counting and allocation for sharing given as a parameter budget (framework-free).

Two tasks are zipped; each zip-able layer writes into a *space* (a layer, or a residual stream
that several layers write into) and reads either the raw model input or another space. Sharing
``k`` units of a space (``k <= min(widths)``) merges ``k`` of task A's units with ``k`` of task
B's. After ``strip_zipping`` a layer's kernel keeps one block per pair (input group, output
group) that some task reads, so for a layer writing ``k_out`` shared units and reading ``k_in``
shared units (every unit of a raw input is shared) the kernel shrinks by exactly
``positions * k_out * k_in`` cells (``positions``: kernel cells times flattened positions). A
shared unit keeps one bias when some shared input carries it (``k_in > 0``), and one bias per
task otherwise. Hence sharing at one layer saves that layer's columns *and* the next layer's
rows, and a head (never shared) saves nothing, even though it reads shared units.

:func:`allocate` chooses ``k`` per space that minimises a separable cost (measured per space,
e.g. output drift after zipping that space alone) under ``params <= budget``; exhaustively on
a grid when the grid is small, greedily by cost per parameter saved otherwise; then each space
gives back units while the budget still holds.

Example:
    >>> fc1 = LayerShape("fc1", "fc1", None, 784, 1, (300, 300), (784, 784), True, False)
    >>> fc2 = LayerShape("fc2", "fc2", "fc1", 0, 1, (100, 100), (300, 300), True, False)
    >>> head = LayerShape("head", "head", "fc2", 0, 1, (5, 5), (100, 100), True, True)
    >>> layers = [fc1, fc2, head]
    >>> original_params(layers)  # two LeNet-300-100 with 5 classes each
    532210
    >>> zipped_params(layers, {"fc1": 300, "fc2": 100})  # fully shared
    266610
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "trade",
    "LayerShape",
    "BudgetError",
    "original_params",
    "zipped_params",
    "space_sizes",
    "params_range",
    "check_budget",
    "uniform_units",
    "uniform_fraction",
    "allocate",
]

#: Above this many grid combinations :func:`allocate` searches greedily instead of exhaustively.
EXHAUSTIVE_LIMIT = 200_000


class BudgetError(ValueError):
    """A parameter budget outside the reachable range (the message gives the range)."""


@dataclass(frozen=True)
class LayerShape:
    """What the parameter count of one zip-able layer depends on (two tasks).

    Attributes:
        name: layer name.
        space: the space it writes into (the name of the space's first writer).
        input_space: the space it reads, or None for the raw model input.
        input_units: units of the raw input it reads (used when ``input_space`` is None).
        positions: kernel cells per (input unit, output unit): ``kh*kw`` of a convolution times the
            positions a Flatten folded into its input (1 for a Dense layer on a vector).
        widths: output units of each task.
        input_widths: input units of each task (before ``positions``).
        use_bias: whether the layer has a bias.
        is_head: heads are never shared.
    """

    name: str
    space: str
    input_space: str | None
    input_units: int
    positions: int
    widths: tuple[int, ...]
    input_widths: tuple[int, ...]
    use_bias: bool
    is_head: bool


def original_params(layers: Sequence[LayerShape]) -> int:
    """Kernel and bias parameters of the separate models' zip-able layers.

    Example:
        >>> original_params([LayerShape("fc", "fc", None, 4, 1, (3, 2), (4, 4), True, False)])
        25
    """
    return int(sum(
        l.positions * i * o + (o if l.use_bias else 0) for l in layers for i, o in zip(l.input_widths, l.widths)
    ))


def _saved(layer: LayerShape, shared: Mapping[str, int]) -> int:
    k_out = 0 if layer.is_head else int(shared.get(layer.space, 0))
    k_in = layer.input_units if layer.input_space is None else int(shared.get(layer.input_space, 0))
    bias = k_out if layer.use_bias and k_in > 0 else 0
    return layer.positions * k_out * k_in + bias


def zipped_params(layers: Sequence[LayerShape], shared: Mapping[str, int], other: int = 0) -> int:
    """Parameters after ``strip_zipping`` with ``shared[space]`` units shared per space.

    ``other``: parameters outside the zip-able layers (BatchNorm...), which zipping keeps per task.

    Example:
        >>> fc = LayerShape("fc", "fc", None, 4, 1, (3, 2), (4, 4), True, False)
        >>> head = LayerShape("head", "head", "fc", 0, 1, (2, 2), (3, 2), False, True)
        >>> zipped_params([fc, head], {"fc": 0}), zipped_params([fc, head], {"fc": 2})
        (35, 25)
    """
    return original_params(layers) + int(other) - sum(_saved(l, shared) for l in layers)


def space_sizes(layers: Sequence[LayerShape]) -> dict[str, int]:
    """Most units each hidden space can share: ``min`` of the tasks' widths.

    Example:
        >>> space_sizes([LayerShape("fc", "fc", None, 4, 1, (3, 2), (4, 4), True, False)])
        {'fc': 2}
    """
    sizes: dict[str, int] = {}
    for l in layers:
        if not l.is_head:
            sizes[l.space] = min(l.widths)
    return sizes


def params_range(layers: Sequence[LayerShape], other: int = 0) -> tuple[int, int]:
    """``(fully shared, nothing shared)`` parameter counts: the budgets that can be met.

    Example:
        >>> params_range([LayerShape("fc", "fc", None, 4, 1, (3, 2), (4, 4), True, False)])
        (15, 25)
    """
    return zipped_params(layers, space_sizes(layers), other), original_params(layers) + int(other)


def uniform_units(layers: Sequence[LayerShape], fraction: float) -> dict[str, int]:
    """Units shared per space at one fraction, rounded as the zipper rounds them.

    Example:
        >>> uniform_units([LayerShape("fc", "fc", None, 4, 1, (3, 2), (4, 4), True, False)], 0.5)
        {'fc': 1}
    """
    return {s: int(round(fraction * m)) for s, m in space_sizes(layers).items()}


def check_budget(layers: Sequence[LayerShape], budget: int, other: int = 0) -> None:
    """Raises :class:`BudgetError`, with the reachable range, when ``budget`` cannot be met.

    Example:
        >>> check_budget([LayerShape("fc", "fc", None, 4, 1, (3, 2), (4, 4), True, False)], 10)
        Traceback (most recent call last):
        ...
        tfmot_zip.core.budget.BudgetError: A budget of 10 parameters cannot be met: ...
    """
    low, high = params_range(layers, other)
    if not low <= budget <= high:
        raise BudgetError(
            f"A budget of {budget:,} parameters cannot be met: sharing every hidden unit leaves {low:,} "
            f"({low / high:.1%} of the originals' {high:,}) and sharing nothing keeps {high:,}. "
            f"Ask for between {low:,} and {high:,} parameters (fraction {low / high:.3f} to 1)."
        )


def uniform_fraction(layers: Sequence[LayerShape], budget: int, other: int = 0) -> tuple[float, dict[str, int]]:
    """The smallest single fraction whose parameter count is at most ``budget``, and its units.

    The count only changes where some space's rounded unit count does, so only those fractions
    (``(j - 0.5) / size``, just above a rounding step) are candidates.

    Example:
        >>> fc = LayerShape("fc", "fc", None, 4, 1, (3, 2), (4, 4), True, False)
        >>> uniform_fraction([fc], 20)
        (0.3, {'fc': 1})
    """
    check_budget(layers, budget, other)
    candidates = {0.0, 1.0}
    for m in space_sizes(layers).values():
        for j in range(1, m + 1):
            threshold = (j - 0.5) / m
            candidates.update((threshold, float(np.nextafter(threshold, 2.0))))
    best = min(f for f in candidates if f <= 1.0 and zipped_params(layers, uniform_units(layers, f), other) <= budget)
    units = uniform_units(layers, best)
    for digits in range(1, 8):  # a short fraction with the same units reads better
        short = math.ceil(best * 10**digits) / 10**digits
        if short <= 1.0 and uniform_units(layers, short) == units:
            return short, units
    return best, units


def _levels(size: int, steps: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0.0, 1.0, steps + 1) * size).astype(np.int64))


def _saved_matrix(layers: Sequence[LayerShape], spaces: list[str], units: np.ndarray) -> np.ndarray:
    """Parameters saved by each row of ``units`` (``[n, len(spaces)]``)."""
    col = {s: i for i, s in enumerate(spaces)}
    saved = np.zeros(len(units), np.int64)
    for l in layers:
        k_out = np.zeros(len(units), np.int64) if l.is_head else units[:, col[l.space]]
        k_in = np.full(len(units), l.input_units, np.int64) if l.input_space is None else units[:, col[l.input_space]]
        saved += l.positions * k_out * k_in + (np.where(k_in > 0, k_out, 0) if l.use_bias else 0)
    return saved


def allocate(
    layers: Sequence[LayerShape],
    budget: int,
    cost: Mapping[str, Callable[[float], float]],
    other: int = 0,
    steps: int = 20,
) -> dict[str, int]:
    """Units to share per space so that the count is ``<= budget`` at the least summed cost.

    Args:
        layers: every zip-able layer (heads included: they read the last hidden space).
        budget: most parameters after ``strip_zipping``.
        cost: per space, a non-decreasing cost of sharing a fraction of it (0 at 0).
        other: parameters outside the zip-able layers.
        steps: grid of fractions searched per space (then refined unit by unit).

    Returns:
        ``{space: shared units}``.

    Example:
        >>> fc1 = LayerShape("fc1", "fc1", None, 10, 1, (4, 4), (10, 10), False, False)
        >>> fc2 = LayerShape("fc2", "fc2", "fc1", 0, 1, (4, 4), (4, 4), False, False)
        >>> head = LayerShape("head", "head", "fc2", 0, 1, (2, 2), (4, 4), False, True)
        >>> cheap_fc1 = {"fc1": lambda f: f, "fc2": lambda f: 10 * f}
        >>> allocate([fc1, fc2, head], 100, cheap_fc1)  # 112 -> 100: three fc1 units (4 each)
        {'fc1': 3, 'fc2': 0}
    """
    check_budget(layers, budget, other)
    sizes = space_sizes(layers)
    spaces = list(sizes)
    need = original_params(layers) + int(other) - int(budget)  # parameters to save
    levels = [_levels(sizes[s], steps) for s in spaces]
    level_cost = [np.array([cost[s](k / max(sizes[s], 1)) for k in lv]) for s, lv in zip(spaces, levels)]
    if math.prod(len(lv) for lv in levels) <= EXHAUSTIVE_LIMIT:  # Python ints: np.prod wraps past 2**63
        grid = np.array(list(itertools.product(*[range(len(lv)) for lv in levels])), np.int64).reshape(-1, len(spaces))
        units = np.stack([lv[grid[:, i]] for i, lv in enumerate(levels)], axis=1)
        total = sum(c[grid[:, i]] for i, c in enumerate(level_cost))
        saved = _saved_matrix(layers, spaces, units)
        feasible = np.flatnonzero(saved >= need)
        best = feasible[np.lexsort((saved[feasible], total[feasible]))[0]]
        chosen = units[best].copy()
    else:
        chosen = _greedy(layers, spaces, levels, level_cost, need)
    return _give_back(layers, spaces, sizes, chosen, need, cost)


def _greedy(layers, spaces, levels, level_cost, need) -> np.ndarray:
    """From nothing shared, repeatedly take the grid step with the least cost per parameter saved."""
    position = np.zeros(len(spaces), np.int64)
    units = np.zeros((1, len(spaces)), np.int64)
    while _saved_matrix(layers, spaces, units)[0] < need:
        now = _saved_matrix(layers, spaces, units)[0]
        best, best_ratio = None, np.inf
        for i, lv in enumerate(levels):
            if position[i] + 1 >= len(lv):
                continue
            trial = units.copy()
            trial[0, i] = lv[position[i] + 1]
            gain = _saved_matrix(layers, spaces, trial)[0] - now
            ratio = (level_cost[i][position[i] + 1] - level_cost[i][position[i]] + 1e-12) / max(gain, 1e-9)
            if ratio < best_ratio:
                best, best_ratio = i, ratio
        position[best] += 1
        units[0, best] = levels[best][position[best]]
    return units[0]


def _give_back(layers, spaces, sizes, chosen, need, cost) -> dict[str, int]:
    """Each space, dearest first, unshares units while the budget still holds."""
    chosen = chosen.copy()

    def slope(i: int) -> float:
        m = max(sizes[spaces[i]], 1)
        k = chosen[i]
        return cost[spaces[i]](k / m) - cost[spaces[i]](max(k - 1, 0) / m) if k else -np.inf

    for i in sorted(range(len(spaces)), key=slope, reverse=True):
        low, high = 0, int(chosen[i])  # find the fewest units of space i that still meet the budget
        while low < high:
            middle = (low + high) // 2
            trial = chosen.copy()
            trial[i] = middle
            if _saved_matrix(layers, spaces, trial[None])[0] >= need:
                high = middle
            else:
                low = middle + 1
        chosen[i] = low
    return {s: int(k) for s, k in zip(spaces, chosen)}


def trade(
    layers: Sequence[LayerShape], units: Mapping[str, int], budget: int, give: str, take: str, step: int, other: int = 0
) -> dict[str, int] | None:
    """A budget-preserving move: ``step`` fewer units shared in ``give``, then the fewest more in ``take``
    that bring the count back within ``budget``. None when ``give`` has fewer than ``step`` shared
    units or ``take`` cannot save enough.

    Example:
        >>> fc1 = LayerShape("fc1", "fc1", None, 10, 1, (4, 4), (10, 10), False, False)
        >>> fc2 = LayerShape("fc2", "fc2", "fc1", 0, 1, (4, 4), (4, 4), False, False)
        >>> head = LayerShape("head", "head", "fc2", 0, 1, (2, 2), (4, 4), False, True)
        >>> zipped_params([fc1, fc2, head], {"fc1": 3, "fc2": 0})
        98
        >>> trade([fc1, fc2, head], {"fc1": 3, "fc2": 0}, 100, give="fc1", take="fc2", step=1)  # 100 params
        {'fc1': 2, 'fc2': 4}
    """
    sizes = space_sizes(layers)
    moved = {s: int(units.get(s, 0)) for s in sizes}
    if give == take or moved[give] < step or step < 1:
        return None
    moved[give] -= int(step)
    low, high = moved[take], sizes[take]
    moved[take] = high
    if zipped_params(layers, moved, other) > budget:
        return None
    while low < high:  # fewest units of `take` within budget (the count falls as units rise)
        middle = (low + high) // 2
        moved[take] = middle
        if zipped_params(layers, moved, other) <= budget:
            high = middle
        else:
            low = middle + 1
    moved[take] = low
    return moved

