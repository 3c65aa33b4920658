"""The damped least-squares refit against a brute-force solve of the stacked system."""
import numpy as np
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.refit import LinearRefit


@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 60), d=st.integers(1, 6), k=st.integers(1, 4), damping=st.sampled_from([0.0, 1e-3, 0.5]),
       batches=st.integers(1, 4), bias=st.booleans(), seed=st.integers(0, 10_000))
def test_refit_equals_the_stacked_least_squares(n, d, k, damping, batches, bias, seed):
    rng = np.random.default_rng(seed)
    features, targets = rng.normal(size=(n, d)), rng.normal(size=(n, k))
    kernel, b = rng.normal(size=(d, k)), rng.normal(size=k)
    refit = LinearRefit(d, k)
    for part in np.array_split(np.arange(n), batches):
        refit.update(features[part], targets[part])
    got_kernel, got_bias = refit.solve(kernel, b if bias else None, damping=damping)
    # Brute force: min ||X w - L||^2 + lam ||w - w0||^2 as one least-squares problem on stacked rows.
    x = np.hstack([features, np.ones((n, 1))]) if bias else features
    w0 = np.vstack([kernel, b[None, :]]) if bias else kernel
    lam = damping * np.mean(np.diag(x.T @ x))
    stacked_x = np.vstack([x, np.sqrt(lam) * np.eye(x.shape[1])])
    stacked_y = np.vstack([targets, np.sqrt(lam) * w0])
    expected = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0]
    got = np.vstack([got_kernel, got_bias[None, :]]) if bias else got_kernel
    if damping == 0.0 and np.linalg.matrix_rank(x) < x.shape[1]:
        # Rank-deficient and undamped: any minimiser; compare the fitted values instead.
        np.testing.assert_allclose(x @ got, x @ expected, atol=1e-8)
    else:
        np.testing.assert_allclose(got, expected, atol=1e-8, rtol=1e-6)
    assert got_bias is None if not bias else got_bias.shape == (k,)


def test_large_damping_keeps_the_prior():
    rng = np.random.default_rng(1)
    refit = LinearRefit(3, 2)
    refit.update(rng.normal(size=(50, 3)), rng.normal(size=(50, 2)))
    kernel, bias = rng.normal(size=(3, 2)), rng.normal(size=2)
    got_kernel, got_bias = refit.solve(kernel, bias, damping=1e9)
    np.testing.assert_allclose(got_kernel, kernel, atol=1e-6)
    np.testing.assert_allclose(got_bias, bias, atol=1e-6)


def test_mismatched_shapes_are_refused():
    refit = LinearRefit(3, 2)
    try:
        refit.update(np.zeros((4, 5)), np.zeros((4, 2)))
    except ValueError as err:
        assert "3 columns" in str(err) and "received 5" in str(err)
    else:
        raise AssertionError("expected a ValueError")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), damping=st.sampled_from([1e-4, 1e-2, 1.0]), n=st.integers(8, 40))
def test_shared_columns_equal_a_per_column_stacked_least_squares(seed, damping, n):
    from tfmot_zip.core.refit import refit_shared_columns

    rng = np.random.default_rng(seed)
    physical_rows, columns = 7, 5
    # Task 0 reads physical rows 0..3, task 1 rows 2..6 (rows 2, 3 shared); column 4 is unused.
    in_maps = [np.array([0, 1, 2, 3]), np.array([2, 3, 4, 5, 6])]
    column_tasks = [frozenset({0, 1}), frozenset({0}), frozenset({1}), frozenset({0, 1}), frozenset()]
    designs, targets = [], []
    grams, crosses = [], []
    for t, in_map in enumerate(in_maps):
        x = rng.normal(size=(n, len(in_map)))
        scattered = np.zeros((n, physical_rows + 1))
        scattered[:, in_map] = x
        scattered[:, -1] = 1.0
        y = rng.normal(size=(n, columns))
        designs.append(scattered)
        targets.append(y)
        grams.append(scattered.T @ scattered)
        crosses.append(scattered.T @ y)
    prior = rng.normal(size=(physical_rows + 1, columns))
    got = refit_shared_columns(grams, crosses, column_tasks, prior, damping)
    for c, tasks in enumerate(column_tasks):
        if not tasks:
            np.testing.assert_array_equal(got[:, c], prior[:, c])
            continue
        rows = np.flatnonzero(sum(np.abs(designs[t]).sum(0) for t in tasks) > 0)
        x = np.vstack([designs[t][:, rows] for t in sorted(tasks)])
        y = np.concatenate([targets[t][:, c] for t in sorted(tasks)])
        lam = damping * np.mean(np.diag(x.T @ x))
        stacked_x = np.vstack([x, np.sqrt(lam) * np.eye(len(rows))])
        stacked_y = np.concatenate([y, np.sqrt(lam) * prior[rows, c]])
        expected = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0]
        np.testing.assert_allclose(got[rows, c], expected, atol=1e-8, rtol=1e-6)
        untouched = np.setdiff1d(np.arange(physical_rows + 1), rows)
        np.testing.assert_array_equal(got[untouched, c], prior[untouched, c])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_relu_targets_keep_what_a_relu_passes_on(n, seed):
    """relu(target) == relu(original) everywhere; the original is the target wherever the original unit
    is on or the prediction is; the prediction is the target (no residual) where both are off."""
    from tfmot_zip.core.refit import relu_targets

    rng = np.random.default_rng(seed)
    original, predicted = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    original[rng.random((n, 3)) < 0.1] = 0.0
    target = relu_targets(original, predicted)
    np.testing.assert_array_equal(np.maximum(target, 0), np.maximum(original, 0))
    both_off = (original < 0) & (predicted < 0)
    np.testing.assert_array_equal(target[both_off], predicted[both_off])
    np.testing.assert_array_equal(target[~both_off], original[~both_off])
