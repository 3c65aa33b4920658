"""The claim behind ``method="mtz-lsq"``: MTZ's cost and update taken at least-squares weights are
the joint least-squares residual increase and solution, checked against stacked ``lstsq`` solves."""
import numpy as np
from hypothesis import given, settings, strategies as st

from tfmot_zip.core import MergeSide, apply_merge, merge_cost_matrix


def _problem(seed, samples, dims, shared, units):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, d)) + rng.normal(size=d) for n, d in zip(samples, dims)]
    ys = [rng.normal(size=(n, k)) for n, k in zip(samples, units)]
    hessians = [x.T @ x / len(x) for x in xs]
    fits = [np.linalg.lstsq(x, y, rcond=None)[0].T for x, y in zip(xs, ys)]  # [units, d]: the least-squares weights
    # the first `shared` coordinates of A are the last `shared` of B (any order works; this one is not trivial)
    index_a, index_b = np.arange(shared), np.arange(dims[1] - shared, dims[1])
    sides = [MergeSide.from_hessian_inverse(w, np.linalg.inv(h), idx) for w, h, idx in zip(fits, hessians, (index_a, index_b))]
    return xs, ys, sides, (index_a, index_b)


def _joint_design(xs, indices):
    """Design over (shared weights, A's own, B's own), rows scaled by 1/sqrt(2 n) (the 1/2 mean error of each task)."""
    (x_a, x_b), (ia, ib) = xs, indices
    own_a = np.setdiff1d(np.arange(x_a.shape[1]), ia)
    own_b = np.setdiff1d(np.arange(x_b.shape[1]), ib)
    top = np.hstack([x_a[:, ia], x_a[:, own_a], np.zeros((len(x_a), len(own_b)))]) / np.sqrt(2 * len(x_a))
    bottom = np.hstack([x_b[:, ib], np.zeros((len(x_b), len(own_a))), x_b[:, own_b]]) / np.sqrt(2 * len(x_b))
    return np.vstack([top, bottom]), own_a, own_b


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    samples=st.tuples(st.integers(30, 80), st.integers(30, 80)),
    dims=st.tuples(st.integers(2, 6), st.integers(2, 6)),
    units=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    data=st.data(),
)
def test_cost_at_least_squares_weights_is_the_joint_residual_increase(seed, samples, dims, units, data):
    shared = data.draw(st.integers(1, min(dims)))
    xs, ys, sides, indices = _problem(seed, samples, dims, shared, units)
    design, own_a, own_b = _joint_design(xs, indices)
    costs = merge_cost_matrix(*sides)
    separate = [0.5 * np.mean((x @ np.linalg.lstsq(x, y, rcond=None)[0] - y) ** 2, axis=0) * 1.0 for x, y in zip(xs, ys)]
    for i in range(units[0]):
        for j in range(units[1]):
            target = np.concatenate([ys[0][:, i] / np.sqrt(2 * samples[0]), ys[1][:, j] / np.sqrt(2 * samples[1])])
            solution = np.linalg.lstsq(design, target, rcond=None)[0]
            joint = float(np.sum((design @ solution - target) ** 2))
            increase = joint - separate[0][i] - separate[1][j]
            np.testing.assert_allclose(costs[i, j], increase, rtol=1e-6, atol=1e-9)
            # and the update is the joint solution: A's merged row reproduces it on A's coordinates
            new_a, new_b = apply_merge(sides[0], sides[1], [i], [j])
            np.testing.assert_allclose(new_a[i, indices[0]], solution[:shared], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(new_a[i, own_a], solution[shared : shared + len(own_a)], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(new_b[j, own_b], solution[shared + len(own_a) :], rtol=1e-5, atol=1e-7)
