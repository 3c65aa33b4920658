"""Property-based tests (hypothesis) of the numpy mathematics in tfmot_zip/core, on random shapes.

Extends tests/test_core_merge.py (fixed-shape brute force, small exact matchings, vectorised
costs against the per-pair loop) with random shapes, rank-deficient damped Hessians, sides of
different input widths, wider matchings with ties, streaming statistics, and patch extraction
against TensorFlow's own convolution.
"""
import numpy as np

from brute_force import brute_force_merge
import pytest
import scipy.optimize
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from tfmot_zip.core import (
    HessianAccumulator,
    MergeSide,
    SingularHessianError,
    apply_merge,
    damped,
    extract_patches,
    invert_hessian,
    merge_cost_matrix,
    pair_cost,
    select_pairs,
)
from tfmot_zip.core.hessian import conv_output_size

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_hessian(rng, d, rank):
    """``E[x~ x~^T]`` of ``rank`` random samples (rank-deficient when rank < d), as MTZ builds it."""
    x = rng.normal(size=(rank, d - 1)) * rng.uniform(0.1, 3.0, size=d - 1)
    dead = rng.random(d - 1) < 0.2  # dead inputs (zero padding, dead ReLUs): zero rows and columns
    x[:, dead] = 0.0
    acc = HessianAccumulator(d - 1)
    acc.update(x)
    return acc.hessian()


@st.composite
def merge_problems(draw, max_units=6, max_dim=8):
    """Two sides with their own widths, shared coordinates in any order, damped real Hessians."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    s = draw(st.integers(1, max_dim - 1))
    d_a = s + draw(st.integers(1, 3))
    d_b = s + draw(st.integers(1, 3))
    n_a, n_b = draw(st.integers(1, max_units)), draw(st.integers(1, max_units))
    damping = draw(st.sampled_from([1e-4, 1e-2, 0.5]))
    h_a = damped(random_hessian(rng, d_a, draw(st.integers(1, 2 * d_a))), damping)
    h_b = damped(random_hessian(rng, d_b, draw(st.integers(1, 2 * d_b))), damping)
    idx_a = rng.permutation(d_a)[:s]
    idx_b = rng.permutation(d_b)[:s]
    w_a = rng.normal(size=(n_a, d_a))
    w_b = rng.normal(size=(n_b, d_b))
    inv_a, inv_b = np.linalg.inv(h_a), np.linalg.inv(h_b)
    side_a = MergeSide.from_hessian_inverse(w_a, 0.5 * (inv_a + inv_a.T), idx_a)
    side_b = MergeSide.from_hessian_inverse(w_b, 0.5 * (inv_b + inv_b.T), idx_b)
    return side_a, side_b, h_a, h_b, idx_a, idx_b


def constrained_minimum(a, b, h_a, h_b, idx_a, idx_b):
    """The constrained minimum, from the KKT solver of tests/test_core_merge.py."""
    return brute_force_merge(a, b, h_a, h_b, idx_a, idx_b)[0]


# ------------------------------------------------------------------------------------------
# Costs
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(merge_problems())
def test_cost_matrix_is_the_constrained_minimum_on_random_shapes(problem):
    side_a, side_b, h_a, h_b, idx_a, idx_b = problem
    costs = merge_cost_matrix(side_a, side_b)
    assert costs.shape == (side_a.weights.shape[0], side_b.weights.shape[0])
    for i in range(costs.shape[0]):
        for j in range(costs.shape[1]):
            expected = constrained_minimum(side_a.weights[i], side_b.weights[j], h_a, h_b, idx_a, idx_b)
            assert costs[i, j] == pytest.approx(expected, rel=1e-6, abs=1e-9)


@settings(max_examples=40, **SETTINGS)
@given(merge_problems())
def test_cost_matrix_equals_pair_loop_for_rank_deficient_damped_hessians(problem):
    side_a, side_b, *_ = problem
    costs = merge_cost_matrix(side_a, side_b)
    loop = np.array([[pair_cost(side_a, side_b, i, j) for j in range(side_b.weights.shape[0])]
                     for i in range(side_a.weights.shape[0])])
    np.testing.assert_allclose(costs, np.maximum(loop, 0.0), rtol=1e-7, atol=1e-9 * (1 + np.abs(loop).max()))


@settings(max_examples=50, **SETTINGS)
@given(merge_problems(), st.floats(0.0, 1e-7))
def test_costs_are_non_negative_even_for_near_identical_neurons(problem, noise):
    side_a, side_b, *_ = problem
    # Make B's neurons (almost) copies of A's on the shared coordinates: round-off must not go negative.
    n = min(side_a.weights.shape[0], side_b.weights.shape[0])
    w_b = side_b.weights.copy()
    w_b[:n, side_b.shared_index] = side_a.weights[:n][:, side_a.shared_index] + noise
    near = MergeSide(w_b, side_b.shared_index, side_b.g, side_b.hessian_inverse)
    costs = merge_cost_matrix(side_a, near)
    assert np.all(costs >= 0.0)
    assert np.all(np.isfinite(costs))
    if noise == 0.0:
        np.testing.assert_allclose(np.diag(costs[:n, :n]), 0.0, atol=1e-9 * (1 + costs.max()))


@settings(max_examples=30, **SETTINGS)
@given(merge_problems())
def test_swapping_the_sides_transposes_the_costs(problem):
    side_a, side_b, *_ = problem
    np.testing.assert_allclose(merge_cost_matrix(side_b, side_a), merge_cost_matrix(side_a, side_b).T, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------
# The update
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(merge_problems(), st.data())
def test_update_equalises_shared_coordinates_and_costs_what_was_predicted(problem, data):
    side_a, side_b, h_a, h_b, idx_a, idx_b = problem
    n_a, n_b = side_a.weights.shape[0], side_b.weights.shape[0]
    k = data.draw(st.integers(0, min(n_a, n_b)))
    rows = np.asarray(data.draw(st.permutations(range(n_a)))[:k], dtype=np.int64)
    cols = np.asarray(data.draw(st.permutations(range(n_b)))[:k], dtype=np.int64)
    costs = merge_cost_matrix(side_a, side_b)
    new_a, new_b = apply_merge(side_a, side_b, rows, cols, snap=False)
    scale = 1.0 + np.abs(side_a.weights).max() + np.abs(side_b.weights).max()
    for i, j in zip(rows, cols):
        np.testing.assert_allclose(new_a[i, idx_a], new_b[j, idx_b], rtol=1e-7, atol=1e-8 * scale)
        da, db = new_a[i] - side_a.weights[i], new_b[j] - side_b.weights[j]
        error_increase = 0.5 * da @ h_a @ da + 0.5 * db @ h_b @ db
        assert error_increase == pytest.approx(costs[i, j], rel=1e-6, abs=1e-9)
    untouched_a = np.setdiff1d(np.arange(n_a), rows)
    untouched_b = np.setdiff1d(np.arange(n_b), cols)
    np.testing.assert_array_equal(new_a[untouched_a], side_a.weights[untouched_a])
    np.testing.assert_array_equal(new_b[untouched_b], side_b.weights[untouched_b])
    snapped_a, snapped_b = apply_merge(side_a, side_b, rows, cols)
    np.testing.assert_array_equal(snapped_a[np.ix_(rows, idx_a)], snapped_b[np.ix_(cols, idx_b)])


@settings(max_examples=25, **SETTINGS)
@given(merge_problems(), st.data())
def test_update_rejects_a_neuron_used_twice(problem, data):
    side_a, side_b, *_ = problem
    assume(side_a.weights.shape[0] >= 1 and side_b.weights.shape[0] >= 2)
    with pytest.raises(ValueError, match="at most once"):
        apply_merge(side_a, side_b, [0, 0], [0, 1])


# ------------------------------------------------------------------------------------------
# Pair selection
# ------------------------------------------------------------------------------------------


@st.composite
def cost_matrices(draw):
    n, m = draw(st.integers(1, 25)), draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "ties", "heavy", "zeros"]))
    if kind == "uniform":
        costs = rng.random((n, m))
    elif kind == "ties":
        costs = rng.integers(0, 3, size=(n, m)).astype(float)
    elif kind == "heavy":
        costs = np.exp(rng.normal(scale=4.0, size=(n, m)))
    else:
        costs = np.zeros((n, m))
    k = draw(st.integers(0, min(n, m)))
    return costs, k


@settings(max_examples=80, **SETTINGS)
@given(cost_matrices())
def test_hungarian_never_costs_more_than_greedy_and_both_are_valid(problem):
    costs, k = problem
    totals = {}
    for method in ("greedy", "hungarian"):
        rows, cols = select_pairs(costs, k, method)
        assert len(rows) == len(cols) == k
        assert len(set(rows.tolist())) == k and len(set(cols.tolist())) == k
        assert np.all((0 <= rows) & (rows < costs.shape[0])) and np.all((0 <= cols) & (cols < costs.shape[1]))
        totals[method] = float(costs[rows, cols].sum())
    assert totals["hungarian"] <= totals["greedy"] + 1e-9 * (1 + totals["greedy"])


@settings(max_examples=40, **SETTINGS)
@given(cost_matrices())
def test_hungarian_with_every_pair_matches_scipy_assignment(problem):
    costs, _ = problem
    k = min(costs.shape)
    rows, cols = select_pairs(costs, k, "hungarian")
    r, c = scipy.optimize.linear_sum_assignment(costs)
    assert costs[rows, cols].sum() == pytest.approx(costs[r, c].sum(), rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------------------
# Hessians
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(st.integers(1, 7), st.integers(1, 60), st.integers(0, 2**31 - 1), st.data())
def test_streaming_hessian_does_not_depend_on_chunking_or_merging(dim, n, seed, data):
    x = np.random.default_rng(seed).normal(size=(n, dim))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=5)))
    streamed, left, right = HessianAccumulator(dim), HessianAccumulator(dim), HessianAccumulator(dim)
    for chunk in np.split(x, cuts):
        streamed.update(chunk)
    half = n // 2
    left.update(x[:half]); right.update(x[half:])
    left.merge(right)
    xt = np.hstack([x, np.ones((n, 1))])
    expected = xt.T @ xt / n
    for acc in (streamed, left):
        h = acc.hessian()
        np.testing.assert_allclose(h, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(h, h.T)
        assert acc.count == n
    assert np.linalg.eigvalsh(expected).min() > -1e-9


@settings(max_examples=40, **SETTINGS)
@given(st.integers(2, 9), st.integers(1, 12), st.integers(0, 2**31 - 1), st.sampled_from([1e-6, 1e-4, 1e-2, 1.0]))
def test_damped_inverse_is_an_inverse_even_when_rank_deficient(d, rank, seed, damping):
    h = random_hessian(np.random.default_rng(seed), d, rank)
    inverse = invert_hessian(h, damping)
    target = damped(h, damping)
    np.testing.assert_allclose(inverse, inverse.T, rtol=0, atol=1e-12 * np.abs(inverse).max())
    residual = np.abs(inverse @ target - np.eye(d)).max()
    assert residual < 1e-6 * np.linalg.cond(target) ** 0.5 + 1e-8


@settings(max_examples=30, **SETTINGS)
@given(st.integers(3, 9), st.integers(0, 2**31 - 1))
def test_undamped_dead_input_raises_singular_hessian_error_saying_what_to_do(d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4 * d, d - 1))
    x[:, rng.integers(0, d - 1)] = 0.0  # one dead input: a zero row and column in H
    acc = HessianAccumulator(d - 1)
    acc.update(x)
    with pytest.raises(SingularHessianError, match="increase damping"):
        invert_hessian(acc.hessian(), damping=0.0)


# ------------------------------------------------------------------------------------------
# Convolution patches
# ------------------------------------------------------------------------------------------


@st.composite
def conv_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["valid", "same"]))
    h = draw(st.integers(1, 11))
    w = draw(st.integers(1, 11))
    if padding == "valid":
        assume((kh - 1) * dh + 1 <= h and (kw - 1) * dw + 1 <= w)
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    return (kh, kw), (sh, sw), (dh, dw), padding, (n, h, w, c_in), c_out, seed


@settings(max_examples=60, **SETTINGS)
@given(conv_problems())
def test_extract_patches_times_kernel_is_tensorflow_conv2d(problem):
    from tfmot_zip.compat import tf

    kernel_size, strides, dilation, padding, shape, c_out, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    kernel = rng.normal(size=(*kernel_size, shape[-1], c_out))
    patches = extract_patches(x, kernel_size, strides, padding, dilation)
    oh = conv_output_size(shape[1], kernel_size[0], strides[0], padding, dilation[0])
    ow = conv_output_size(shape[2], kernel_size[1], strides[1], padding, dilation[1])
    assert patches.shape == (shape[0] * oh * ow, kernel_size[0] * kernel_size[1] * shape[-1])
    ours = (patches @ kernel.reshape(-1, c_out)).reshape(shape[0], oh, ow, c_out)
    theirs = tf.nn.conv2d(
        tf.constant(x), tf.constant(kernel), strides=(1, *strides, 1), padding=padding.upper(),
        dilations=(1, *dilation, 1),
    ).numpy()
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
