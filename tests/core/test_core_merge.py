"""The MTZ mathematics checked against brute force (constrained problems solved directly)."""
import itertools

import numpy as np

from brute_force import brute_force_merge
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.core import (
    HessianAccumulator,
    MergeSide,
    apply_merge,
    invert_hessian,
    merge_cost_matrix,
    pair_cost,
    select_pairs,
)


def random_spd(rng, d, rank=None):
    rank = d + 3 if rank is None else rank
    x = rng.normal(size=(rank, d))
    return x.T @ x / rank + 1e-3 * np.eye(d)


def make_sides(rng, n_a=5, n_b=4, d_a=7, d_b=6, s=4):
    h_a, h_b = random_spd(rng, d_a), random_spd(rng, d_b)
    idx_a = rng.permutation(d_a)[:s]
    idx_b = rng.permutation(d_b)[:s]
    w_a, w_b = rng.normal(size=(n_a, d_a)), rng.normal(size=(n_b, d_b))
    side_a = MergeSide.from_hessian_inverse(w_a, np.linalg.inv(h_a), idx_a)
    side_b = MergeSide.from_hessian_inverse(w_b, np.linalg.inv(h_b), idx_b)
    return side_a, side_b, h_a, h_b, idx_a, idx_b


def test_every_pair_cost_is_the_constrained_minimum():
    rng = np.random.default_rng(0)
    side_a, side_b, h_a, h_b, idx_a, idx_b = make_sides(rng)
    costs = merge_cost_matrix(side_a, side_b)
    for i, j in itertools.product(range(5), range(4)):
        value, _, _ = brute_force_merge(side_a.weights[i], side_b.weights[j], h_a, h_b, idx_a, idx_b)
        assert costs[i, j] == pytest.approx(value, rel=1e-8, abs=1e-10)
        assert pair_cost(side_a, side_b, i, j) == pytest.approx(value, rel=1e-8, abs=1e-10)


def test_update_equals_brute_force_minimiser_and_equalises_shared_coordinates():
    rng = np.random.default_rng(1)
    side_a, side_b, h_a, h_b, idx_a, idx_b = make_sides(rng)
    rows, cols = np.array([0, 3, 4]), np.array([2, 0, 1])
    new_a, new_b = apply_merge(side_a, side_b, rows, cols, snap=False)
    for i, j in zip(rows, cols):
        _, a_star, b_star = brute_force_merge(side_a.weights[i], side_b.weights[j], h_a, h_b, idx_a, idx_b)
        np.testing.assert_allclose(new_a[i], a_star, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(new_b[j], b_star, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(new_a[i, idx_a], new_b[j, idx_b], rtol=1e-9, atol=1e-11)
    untouched_a = [1, 2]
    np.testing.assert_array_equal(new_a[untouched_a], side_a.weights[untouched_a])
    np.testing.assert_array_equal(new_b[3], side_b.weights[3])
    snapped_a, snapped_b = apply_merge(side_a, side_b, rows, cols)
    np.testing.assert_array_equal(snapped_a[np.ix_(rows, idx_a)], snapped_b[np.ix_(cols, idx_b)])


def test_inputs_are_not_modified():
    rng = np.random.default_rng(2)
    side_a, side_b, *_ = make_sides(rng)
    before_a, before_b = side_a.weights.copy(), side_b.weights.copy()
    apply_merge(side_a, side_b, [0, 1], [1, 0])
    np.testing.assert_array_equal(side_a.weights, before_a)
    np.testing.assert_array_equal(side_b.weights, before_b)


def test_fully_shared_update_is_the_papers_formula():
    rng = np.random.default_rng(3)
    d = 5
    h_a, h_b = random_spd(rng, d), random_spd(rng, d)
    a, b = rng.normal(size=(1, d)), rng.normal(size=(1, d))
    ia, ib = np.linalg.inv(h_a), np.linalg.inv(h_b)
    side_a = MergeSide.from_hessian_inverse(a, ia, np.arange(d))
    side_b = MergeSide.from_hessian_inverse(b, ib, np.arange(d))
    new_a, new_b = apply_merge(side_a, side_b, [0], [0])
    w_star = a[0] + ia @ np.linalg.inv(ia + ib) @ (b[0] - a[0])
    np.testing.assert_allclose(new_a[0], w_star, rtol=1e-9)
    np.testing.assert_allclose(new_b[0], w_star, rtol=1e-9)


def test_cost_predicts_the_layer_error_increase_on_data():
    """1/2 E[(delta^T x~)^2] over real samples equals the predicted cost for the undamped H."""
    rng = np.random.default_rng(4)
    d = 6
    x_a, x_b = rng.normal(size=(4000, d)), rng.normal(size=(3000, d)) + 0.3
    acc_a, acc_b = HessianAccumulator(d), HessianAccumulator(d)
    acc_a.update(x_a[:1500]); acc_a.update(x_a[1500:])
    acc_b.update(x_b)
    h_a, h_b = acc_a.hessian(), acc_b.hessian()
    w_a, w_b = rng.normal(size=(2, d + 1)), rng.normal(size=(2, d + 1))
    side_a = MergeSide.from_hessian_inverse(w_a, invert_hessian(h_a, 0.0), np.arange(d + 1))
    side_b = MergeSide.from_hessian_inverse(w_b, invert_hessian(h_b, 0.0), np.arange(d + 1))
    cost = merge_cost_matrix(side_a, side_b)[1, 0]
    new_a, new_b = apply_merge(side_a, side_b, [1], [0])
    xt_a = np.hstack([x_a, np.ones((len(x_a), 1))])
    xt_b = np.hstack([x_b, np.ones((len(x_b), 1))])
    err = 0.5 * np.mean((xt_a @ (new_a[1] - w_a[1])) ** 2) + 0.5 * np.mean((xt_b @ (new_b[0] - w_b[0])) ** 2)
    assert err == pytest.approx(cost, rel=1e-8)


def test_hessian_accumulator_matches_direct_expectation():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(100, 3))
    acc = HessianAccumulator(3)
    for chunk in np.array_split(x, 7):
        acc.update(chunk)
    xt = np.hstack([x, np.ones((100, 1))])
    np.testing.assert_allclose(acc.hessian(), xt.T @ xt / 100, rtol=1e-12)


def test_hessian_errors_are_clear():
    acc = HessianAccumulator(3)
    with pytest.raises(ValueError, match="No layer inputs"):
        acc.hessian()
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        acc.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        acc.update(np.array([[np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="dim=0"):
        HessianAccumulator(0)


def test_damping_makes_rank_deficient_hessian_invertible():
    from tfmot_zip.core import SingularHessianError

    x = np.zeros((10, 4)); x[:, 0] = np.arange(10)  # three dead inputs
    acc = HessianAccumulator(4); acc.update(x)
    h = acc.hessian()
    with pytest.raises(SingularHessianError, match="increase damping"):
        invert_hessian(h, damping=0.0)
    inv = invert_hessian(h, damping=1e-4)
    np.testing.assert_allclose(inv @ (h + 1e-4 * np.mean(np.diag(h)) * np.eye(5)), np.eye(5), atol=1e-6)


def brute_force_best_matching(costs, k):
    n, m = costs.shape
    best = np.inf
    for rows in itertools.combinations(range(n), k):
        for cols in itertools.permutations(range(m), k):
            best = min(best, costs[list(rows), list(cols)].sum())
    return best


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.data())
def test_hungarian_is_the_exact_k_matching(n, m, data):
    k = data.draw(st.integers(0, min(n, m)))
    seed = data.draw(st.integers(0, 10_000))
    costs = np.random.default_rng(seed).random((n, m))
    rows, cols = select_pairs(costs, k, "hungarian")
    assert len(set(rows)) == len(rows) == k and len(set(cols)) == k
    assert costs[rows, cols].sum() == pytest.approx(brute_force_best_matching(costs, k) if k else 0.0)
    g_rows, g_cols = select_pairs(costs, k, "greedy")
    assert len(set(g_rows)) == len(set(g_cols)) == k
    assert costs[g_rows, g_cols].sum() >= costs[rows, cols].sum() - 1e-12


def test_greedy_follows_the_papers_rule():
    costs = np.array([[0.1, 0.2, 9.0], [0.15, 5.0, 9.0], [9.0, 9.0, 9.0]])
    rows, cols = select_pairs(costs, 2, "greedy")
    # 0.1 (0,0) accepted, 0.15 (1,0) rejected (column taken), 0.2 (0,1) rejected (row taken),
    # next free pair is (1,1) at 5.0.
    assert list(zip(rows, cols)) == [(0, 0), (1, 1)]


def test_selection_errors():
    with pytest.raises(ValueError, match="k=3"):
        select_pairs(np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match="Unknown pair selection method 'best'"):
        select_pairs(np.zeros((2, 2)), 1, "best")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.integers(0, 3), st.integers(0, 10_000))
def test_vectorised_matrix_equals_per_pair_loop(n_a, n_b, s, extra, seed):
    rng = np.random.default_rng(seed)
    side_a, side_b, *_ = make_sides(rng, n_a, n_b, s + extra, s + extra + 1, s)
    costs = merge_cost_matrix(side_a, side_b)
    loop = np.array([[pair_cost(side_a, side_b, i, j) for j in range(n_b)] for i in range(n_a)])
    np.testing.assert_allclose(costs, np.maximum(loop, 0), rtol=1e-7, atol=1e-9)


def test_block_hessian_is_the_block_diagonal_of_the_exact_one():
    from tfmot_zip.core import BlockHessianAccumulator

    rng = np.random.default_rng(6)
    rows = rng.normal(size=(500, 3 * 4))  # 3 kernel positions x 4 channels
    exact, block = HessianAccumulator(12), BlockHessianAccumulator(3, 4, batch_dtype=np.float64)
    for chunk in np.array_split(rows, 3):
        exact.update(chunk)
        block.update(chunk)
    h, b = exact.hessian(), block.hessian()
    mask = np.zeros((13, 13), bool)
    for p in range(3):
        mask[p * 4:(p + 1) * 4, p * 4:(p + 1) * 4] = True
    mask[12, 12] = True
    np.testing.assert_allclose(b[mask], h[mask], rtol=1e-12)
    assert np.all(b[~mask] == 0)


def _block_hessian(rng, sizes, dead):
    """A damped Hessian that is block diagonal (a convolution's per-position blocks), with ``dead``
    coordinates (inputs that never fire: only the damping on the diagonal)."""
    d = sum(sizes)
    h = np.zeros((d, d))
    start = 0
    for size in sizes:
        x = rng.normal(size=(size + 2, size))
        h[start:start + size, start:start + size] = x.T @ x / (size + 2)
        start += size
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    return h + 1e-2 * np.eye(d)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=20), seed=st.integers(0, 2**31 - 1),
       dead_fraction=st.sampled_from([0.0, 0.5, 0.9]), permute=st.booleans())
def test_block_diagonal_hessians_give_the_brute_force_costs_and_updates(sizes, seed, dead_fraction, permute):
    """Block-by-block products (many tiny blocks coalesced) equal the constrained minimum solved densely."""
    rng = np.random.default_rng(seed)
    d = sum(sizes)
    h_a = _block_hessian(rng, sizes, rng.random(d) < dead_fraction)
    h_b = _block_hessian(rng, sizes, rng.random(d) < dead_fraction)
    s = int(rng.integers(1, d + 1))
    idx = rng.permutation(d)[:s] if permute else np.arange(d)[:s] if s < d else np.arange(d)
    w_a, w_b = rng.normal(size=(3, d)), rng.normal(size=(2, d))
    side_a = MergeSide.from_hessian_inverse(w_a, invert_hessian(h_a, 0.0), idx)
    side_b = MergeSide.from_hessian_inverse(w_b, invert_hessian(h_b, 0.0), idx)
    costs = merge_cost_matrix(side_a, side_b)
    new_a, new_b = apply_merge(side_a, side_b, [2, 0], [0, 1], snap=False)
    for i, j in [(2, 0), (0, 1)]:
        value, a_star, b_star = brute_force_merge(w_a[i], w_b[j], h_a, h_b, idx, idx)
        assert costs[i, j] == pytest.approx(value, rel=1e-7, abs=1e-9)
        np.testing.assert_allclose(new_a[i], a_star, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(new_b[j], b_star, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(new_a[1], w_a[1])


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12), seed=st.integers(0, 2**31 - 1),
       dead_fraction=st.sampled_from([0.0, 0.5, 0.9]), scale=st.sampled_from([1e-4, 1.0, 1e4]),
       n_a=st.integers(1, 5), n_b=st.integers(1, 5), shift=st.sampled_from([0.0, 5e-3]),
       permute_a=st.sampled_from(["none", "any", "within blocks"]), permute_b=st.sampled_from(["none", "any", "within blocks"]))
def test_sides_holding_hessians_merge_as_the_brute_force_without_inverses(
        sizes, seed, dead_fraction, scale, n_a, n_b, permute_a, permute_b, shift):
    """Every coordinate shared (in any order on either side), Hessians block diagonal or dense, of very
    different scales: the factorised metric and update (no inverse computed) give the constrained
    minimum solved by KKT, and both neurons of a pair end equal. A side's damping (``shift``) counts as
    part of its Hessian."""
    from tfmot_zip.core.merge import _factorised

    rng = np.random.default_rng(seed)
    d = sum(sizes)
    h_a = _block_hessian(rng, sizes, rng.random(d) < dead_fraction)
    h_b = scale * _block_hessian(rng, sizes, rng.random(d) < dead_fraction)
    starts = np.cumsum([0] + sizes)

    def order(kind):  # "within blocks": each block's coordinates stay together (a conv's channels permuted)
        if kind == "any":
            return rng.permutation(d)
        if kind == "none":
            return np.arange(d)
        return np.concatenate([a + rng.permutation(b - a) for a, b in zip(starts[:-1], starts[1:])])

    idx_a, idx_b = order(permute_a), order(permute_b)
    w_a, w_b = rng.normal(size=(n_a, d)), rng.normal(size=(n_b, d))
    eye = np.eye(d)
    side_a = MergeSide.from_hessian(w_a, h_a - shift * eye, idx_a, shift)
    side_b = MergeSide.from_hessian(w_b, h_b - scale * shift * eye, idx_b, scale * shift)
    assert _factorised(side_a, side_b) is not None
    costs = merge_cost_matrix(side_a, side_b)
    k = min(n_a, n_b)
    rows, cols = rng.permutation(n_a)[:k], rng.permutation(n_b)[:k]
    new_a, new_b = apply_merge(side_a, side_b, rows, cols, snap=False)
    assert "inverse" not in side_a._cache and "inverse" not in side_b._cache  # nothing was inverted
    for i, j in zip(rows, cols):
        value, a_star, b_star = brute_force_merge(w_a[i], w_b[j], h_a, h_b, idx_a, idx_b)
        assert costs[i, j] == pytest.approx(value, rel=1e-6, abs=1e-9 * max(1.0, scale))
        np.testing.assert_allclose(new_a[i], a_star, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(new_b[j], b_star, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(new_a[i, idx_a], new_b[j, idx_b], rtol=1e-12, atol=1e-12)
    # the same sides through their inverses (computed on request) give the same costs
    inverse_a = MergeSide.from_hessian_inverse(w_a, side_a.hessian_inverse, idx_a)
    inverse_b = MergeSide.from_hessian_inverse(w_b, side_b.hessian_inverse, idx_b)
    assert _factorised(inverse_a, inverse_b) is None
    np.testing.assert_allclose(costs, merge_cost_matrix(inverse_a, inverse_b), rtol=1e-6, atol=1e-9 * max(1.0, scale))


def test_sides_holding_hessians_that_share_only_some_coordinates_use_the_inverses():
    rng = np.random.default_rng(3)
    h_a, h_b = random_spd(rng, 6), random_spd(rng, 6)
    w_a, w_b = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    idx = np.array([4, 0, 2])
    side_a, side_b = MergeSide.from_hessian(w_a, h_a, idx), MergeSide.from_hessian(w_b, h_b, idx)
    costs = merge_cost_matrix(side_a, side_b)
    new_a, new_b = apply_merge(side_a, side_b, [1], [0], snap=False)
    value, a_star, b_star = brute_force_merge(w_a[1], w_b[0], h_a, h_b, idx, idx)
    assert costs[1, 0] == pytest.approx(value, rel=1e-8)
    np.testing.assert_allclose(new_a[1], a_star, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(new_b[0], b_star, rtol=1e-8, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), positions=st.integers(1, 4), channels=st.integers(1, 5), seed=st.integers(0, 10**6),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]), dtype=st.sampled_from([np.float32, np.float64]))
def test_a_batch_with_one_non_finite_entry_anywhere_is_refused_and_changes_nothing(n, positions, channels, seed, bad, dtype):
    from tfmot_zip.core import BlockHessianAccumulator

    rng = np.random.default_rng(seed)
    dim = positions * channels
    good = rng.normal(size=(n, dim))
    rows = good.copy()
    rows[rng.integers(n), rng.integers(dim)] = bad
    for acc in (HessianAccumulator(dim, batch_dtype=dtype), BlockHessianAccumulator(positions, channels, batch_dtype=dtype)):
        acc.update(good)
        before = acc.hessian()
        with pytest.raises(ValueError, match="NaN or inf"):
            acc.update(rows)
        np.testing.assert_array_equal(acc.hessian(), before)
        assert acc.count == n
