"""The parameter model of tfmot_zip.core.budget against a brute-force block count, and the allocation
against exhaustive search, on tiny cases (numpy only; the check against strip_zipping on real models is
tests/zipping/test_budget.py)."""
import itertools
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfmot_zip.core.budget as budget_math
from tfmot_zip.core.budget import (
    BudgetError,
    LayerShape,
    allocate,
    check_budget,
    original_params,
    params_range,
    space_sizes,
    trade,
    uniform_fraction,
    uniform_units,
    zipped_params,
)


def brute_force_params(layers, shared) -> int:
    """Counts kernel blocks and biases the way strip_zipping lays them out: units grouped by the set of
    tasks reading them; one block per (input group, output group) some task reads, once; a shared unit's
    bias once if a shared input group carries it, else once per task."""
    total = 0
    for l in layers:
        k_out = 0 if l.is_head else shared.get(l.space, 0)
        out_groups = {frozenset({0, 1}): k_out, frozenset({0}): l.widths[0] - k_out, frozenset({1}): l.widths[1] - k_out}
        if l.input_space is None:
            in_groups = {frozenset({0, 1}): l.input_units}
        else:
            k_in = shared.get(l.input_space, 0)
            in_groups = {frozenset({0, 1}): k_in, frozenset({0}): l.input_widths[0] - k_in,
                         frozenset({1}): l.input_widths[1] - k_in}
        blocks = set()
        for t in (0, 1):
            for g_out, n_out in out_groups.items():
                for g_in, n_in in in_groups.items():
                    if t in g_out and t in g_in and n_out and n_in:
                        blocks.add((g_in, g_out))
        total += sum(l.positions * in_groups[i] * out_groups[o] for i, o in blocks)
        if l.use_bias:
            for g_out, n_out in out_groups.items():
                carried = any(g_in >= g_out and n_in for g_in, n_in in in_groups.items())
                total += n_out if carried else n_out * len(g_out)
    return total


def chain(widths_a, widths_b, inputs=5, positions=(1, 1, 1), bias=True):
    """Hidden layers with per-task widths, then a head of 2 classes."""
    layers, previous, previous_widths = [], None, (inputs, inputs)
    names = [f"l{i}" for i in range(len(widths_a))] + ["head"]
    for i, name in enumerate(names):
        widths = (2, 2) if name == "head" else (widths_a[i], widths_b[i])
        layers.append(LayerShape(name, name, previous, inputs if previous is None else 0, positions[i],
                                 widths, previous_widths, bias, name == "head"))
        previous, previous_widths = name, widths
    return layers


CASES = {
    "two_dense": chain((3, 2), (2, 3)),
    "conv_then_flatten": chain((2, 3), (3, 3), inputs=2, positions=(9, 4, 1)),
    "no_bias": chain((3, 2), (3, 2), bias=False),
    "three_hidden": chain((2, 2, 3), (3, 2, 2), positions=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_counted_params_match_a_brute_force_block_count_on_every_allocation(case):
    layers = CASES[case]
    sizes = space_sizes(layers)
    assert zipped_params(layers, {}) == original_params(layers) == brute_force_params(layers, {})
    for combo in itertools.product(*[range(m + 1) for m in sizes.values()]):
        shared = dict(zip(sizes, combo))
        assert zipped_params(layers, shared, other=7) == brute_force_params(layers, shared) + 7, shared


def test_residual_stream_counts_every_writer_and_reader():
    """Two writers of one stream (stem, block) and a reader in between: sharing the stream saves at all three."""
    stem = LayerShape("stem", "stem", None, 1, 9, (4, 4), (1, 1), False, False)
    inner = LayerShape("b_conv1", "b_conv1", "stem", 0, 9, (3, 3), (4, 4), True, False)
    block = LayerShape("b_conv2", "stem", "b_conv1", 0, 9, (4, 4), (3, 3), True, False)
    head = LayerShape("head", "head", "stem", 0, 1, (2, 2), (4, 4), True, True)
    layers = [stem, inner, block, head]
    for k_stem, k_inner in itertools.product(range(5), range(4)):
        shared = {"stem": k_stem, "b_conv1": k_inner}
        assert zipped_params(layers, shared) == brute_force_params(layers, shared)


def test_params_range_and_unreachable_budgets():
    layers = CASES["two_dense"]
    low, high = params_range(layers)
    assert low == zipped_params(layers, {s: m for s, m in space_sizes(layers).items()}) and high == original_params(layers)
    check_budget(layers, low)
    check_budget(layers, high)
    for bad in (low - 1, high + 1):
        with pytest.raises(BudgetError, match=f"between {low:,} and {high:,}"):
            check_budget(layers, bad)


@pytest.mark.parametrize("case", sorted(CASES))
def test_uniform_fraction_is_the_smallest_fraction_that_fits(case):
    layers = CASES[case]
    low, high = params_range(layers)
    fine = np.linspace(0.0, 1.0, 2001)
    for budget in range(low, high + 1):
        fraction, units = uniform_fraction(layers, budget)
        assert units == uniform_units(layers, fraction)
        assert zipped_params(layers, units) <= budget
        fitting = [f for f in fine if zipped_params(layers, uniform_units(layers, f)) <= budget]
        # no fraction on a fine grid fits with more parameters than the one chosen
        assert max(zipped_params(layers, uniform_units(layers, f)) for f in fitting) <= zipped_params(layers, units)


@pytest.mark.parametrize("case", sorted(CASES))
def test_allocation_is_optimal_against_exhaustive_search(case):
    """Every allocation of units enumerated; the chosen one meets the budget at the least cost."""
    layers = CASES[case]
    sizes = space_sizes(layers)
    rng = np.random.default_rng(0)
    low, high = params_range(layers)
    combos = [dict(zip(sizes, c)) for c in itertools.product(*[range(m + 1) for m in sizes.values()])]
    for trial in range(6):
        weights = {s: float(w) for s, w in zip(sizes, rng.uniform(0.1, 5.0, len(sizes)))}
        powers = {s: float(p) for s, p in zip(sizes, rng.uniform(0.5, 2.0, len(sizes)))}
        cost = {s: (lambda f, s=s: weights[s] * f ** powers[s]) for s in sizes}

        def total(units):
            return sum(cost[s](units[s] / sizes[s]) for s in sizes)

        budget = int(rng.integers(low, high + 1))
        chosen = allocate(layers, budget, cost, steps=max(sizes.values()))
        assert zipped_params(layers, chosen) <= budget
        best = min(total(u) for u in combos if zipped_params(layers, u) <= budget)
        assert total(chosen) <= best + 1e-9, (trial, chosen)


def test_greedy_path_for_many_spaces_meets_the_budget(monkeypatch):
    """Beyond the exhaustive limit the greedy search still meets the budget and prefers cheap spaces."""
    monkeypatch.setattr(budget_math, "EXHAUSTIVE_LIMIT", 1)
    layers = chain((4, 4, 4), (4, 4, 4), inputs=6, positions=(1, 1, 1, 1))
    low, high = params_range(layers)
    cheap_first = {"l0": lambda f: 0.1 * f, "l1": lambda f: 10 * f, "l2": lambda f: 10 * f}
    budget = high - 20  # l0 alone can save 4 * 6 + 4 = 28
    chosen = allocate(layers, budget, cheap_first)
    assert zipped_params(layers, chosen) <= budget
    assert chosen["l1"] == chosen["l2"] == 0 and chosen["l0"] > 0
    everything = allocate(layers, low, cheap_first)
    assert everything == dict(space_sizes(layers))


@settings(max_examples=10, deadline=None)
@given(n_spaces=st.integers(15, 60), width=st.integers(2, 30), fraction=st.floats(0.3, 0.95))
def test_deep_networks_take_the_greedy_path_without_overflowing_the_grid_size(n_spaces, width, fraction):
    """A deep network's grid has 21 levels per space: 21**15 and more wrap around in int64 (np.prod gave a
    negative size, which chose the exhaustive search, and itertools.product of MobileNetV2's spaces filled
    24 GB); the size is counted in Python integers, so the greedy search runs and meets the budget."""
    layers = chain((width,) * n_spaces, (width,) * n_spaces, positions=(1,) * (n_spaces + 1))
    low, high = params_range(layers)
    budget = int(low + fraction * (high - low))
    costs = {l.space: (lambda f: f) for l in layers if not l.is_head}
    with mock.patch.object(budget_math.itertools, "product", side_effect=AssertionError("exhaustive grid search")):
        chosen = allocate(layers, budget, costs)  # before the fix: the exhaustive search (and all the memory)
    assert zipped_params(layers, chosen) <= budget
    assert sorted(chosen) == sorted(space_sizes(layers))


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=2, max_size=3),
    data=st.data(),
)
def test_trade_keeps_the_budget_with_the_fewest_units_taken(widths, data):
    """A trade gives ``step`` units back in one space and takes the fewest in another that meet the budget
    (brute-force block count, every smaller take exceeds it)."""
    layers = chain([a for a, _ in widths], [b for _, b in widths], positions=(1,) * (len(widths) + 1))
    sizes = space_sizes(layers)
    units = {s: data.draw(st.integers(0, m)) for s, m in sizes.items()}
    budget = brute_force_params(layers, units) + data.draw(st.integers(0, 6))
    give, take = data.draw(st.permutations(list(sizes)))[:2]
    step = data.draw(st.integers(1, 3))
    moved = trade(layers, units, budget, give, take, step)
    if moved is None:
        all_taken = {**units, give: units[give] - step, take: sizes[take]}
        assert units[give] < step or brute_force_params(layers, all_taken) > budget
        return
    assert moved[give] == units[give] - step and moved[take] >= units[take]
    assert {s: k for s, k in moved.items() if s not in (give, take)} == {s: k for s, k in units.items() if s not in (give, take)}
    assert brute_force_params(layers, moved) <= budget
    if moved[take] > units[take]:
        assert brute_force_params(layers, {**moved, take: moved[take] - 1}) > budget
