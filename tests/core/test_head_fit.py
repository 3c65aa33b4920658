"""The cross-entropy head refit against a brute-force Newton solve and closed-form answers."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.core import head_fit
from tfmot_zip.core.head_fit import cross_entropy_refit, head_probabilities


def _objective(x, w, targets, prior, lam, loss):
    """The damped summed cross-entropy (brute force, one sample at a time)."""
    p, total = head_probabilities(targets, loss), 0.0
    for i in range(len(x)):
        a = x[i] @ w
        if loss == "softmax":
            total += np.logaddexp.reduce(a) - p[i] @ a
        else:
            total += np.sum(np.logaddexp(0.0, a) - p[i] * a)
    return total + 0.5 * lam * np.sum((w - prior) ** 2)


def _newton(x, targets, prior, lam, loss, steps=60):
    """The minimiser by Newton's method on the full Hessian (sum over samples of the softmax's or the
    sigmoids' curvature, Kronecker with x x^T), with step halving: the reference answer."""
    p = head_probabilities(targets, loss)
    d, k = prior.shape
    w = prior.copy()
    for _ in range(steps):
        a = x @ w
        q = head_probabilities(a, loss)
        grad = x.T @ (q - p) + lam * (w - prior)
        hess = lam * np.eye(d * k)
        for i in range(len(x)):
            curvature = np.diag(q[i]) - np.outer(q[i], q[i]) if loss == "softmax" else np.diag(q[i] * (1 - q[i]))
            hess += np.kron(np.outer(x[i], x[i]), curvature)  # w raveled row-major: index (feature, class)
        step = np.linalg.solve(hess, grad.ravel()).reshape(d, k)
        t, value = 1.0, _objective(x, w, targets, prior, lam, loss)
        while _objective(x, w - t * step, targets, prior, lam, loss) > value and t > 1e-8:
            t /= 2
        w = w - t * step
    return w


@settings(max_examples=30, deadline=None)
@given(n=st.integers(4, 40), d=st.integers(1, 4), k=st.integers(2, 4), loss=st.sampled_from(["softmax", "sigmoid"]),
       damping=st.sampled_from([1e-3, 1e-1, 2.0]), bias=st.booleans(), blocks=st.integers(1, 3),
       scale=st.sampled_from([0.3, 3.0]), seed=st.integers(0, 10_000))
def test_refit_reaches_the_minimum_newtons_method_finds(n, d, k, loss, damping, bias, blocks, scale, seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)) * rng.uniform(0.1, 5.0, size=d)  # badly scaled columns
    targets = rng.normal(size=(n, k)) * 3.0
    kernel, b = rng.normal(size=(d, k)) * scale, rng.normal(size=k) * scale
    parts = np.array_split(np.arange(n), blocks)
    got_kernel, got_bias = cross_entropy_refit(lambda: [(features[i], targets[i]) for i in parts], kernel,
                                               b if bias else None, loss=loss, damping=damping)
    x = np.hstack([features, np.ones((n, 1))]) if bias else features
    prior = np.vstack([kernel, b[None]]) if bias else kernel
    lam = damping * np.mean(np.diag(x.T @ x))
    expected = _newton(x, targets, prior, lam, loss)
    got = np.vstack([got_kernel, got_bias[None]]) if bias else got_kernel
    best, reached = _objective(x, expected, targets, prior, lam, loss), _objective(x, got, targets, prior, lam, loss)
    # per sample within 1e-5 of the minimum: the solver stops at a per-sample gradient of 1e-4 (as
    # scikit-learn), which leaves up to ~1e-6 per sample on a nearly flat problem (4 samples, 4
    # features, 4 classes, damping 1e-3 left 1.2e-6); a wrong solution is off by far more
    assert reached <= best + 1e-5 * n
    np.testing.assert_allclose(got, expected, atol=2e-2 * max(1.0, np.abs(expected).max()))
    assert (got_bias is None) == (not bias)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(30, 200), d=st.integers(1, 5), k=st.integers(2, 5), loss=st.sampled_from(["softmax", "sigmoid"]),
       seed=st.integers(0, 10_000))
def test_features_that_can_reproduce_the_original_outputs_reproduce_them(n, d, k, loss, seed):
    # The original logits are a linear map of the features: the cross-entropy is minimal exactly
    # where the fitted head gives the original probabilities (closed form).
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d))
    true_kernel, true_bias = rng.normal(size=(d, k)), rng.normal(size=k)
    targets = features @ true_kernel + true_bias
    kernel, bias = cross_entropy_refit(lambda: [(features, targets)], np.zeros((d, k)), np.zeros(k), loss=loss, damping=1e-9)
    fitted, original = head_probabilities(features @ kernel + bias, loss), head_probabilities(targets, loss)
    # The solver stops at a gradient tolerance: the divergence it minimises is then ~1e-6 (0 at the
    # closed-form minimum), while single probabilities of poorly conditioned features may still be
    # off by a few 1e-3 (up to 4.0e-3 in 600 seeded cases; 2e-3 was too tight for the stopping rule).
    if loss == "softmax":
        divergence = np.sum(original * (np.log(np.maximum(original, 1e-300)) - np.log(np.maximum(fitted, 1e-300))), axis=1)
    else:
        divergence = np.sum(original * np.log(np.maximum(original, 1e-300) / np.maximum(fitted, 1e-300))
                            + (1 - original) * np.log(np.maximum(1 - original, 1e-300) / np.maximum(1 - fitted, 1e-300)), axis=1)
    assert divergence.mean() < 2e-5
    assert np.abs(fitted - original).max() < 1e-2


def test_the_original_head_on_its_own_features_stays_where_it_is():
    # prior = the optimum of the data term: the damped problem's minimum is the prior itself
    rng = np.random.default_rng(3)
    features = rng.normal(size=(300, 6))
    kernel, bias = rng.normal(size=(6, 3)), rng.normal(size=3)
    got_kernel, got_bias = cross_entropy_refit(lambda: [(features, features @ kernel + bias)], kernel, bias)
    np.testing.assert_allclose(got_kernel, kernel, atol=1e-3)
    np.testing.assert_allclose(got_bias, bias, atol=1e-3)


def test_blocks_read_again_give_the_blocks_kept(monkeypatch):
    rng = np.random.default_rng(4)
    features, targets = rng.normal(size=(120, 4)), rng.normal(size=(120, 3)) * 2
    blocks = lambda: [(features[:50], targets[:50]), (features[50:], targets[50:])]  # noqa: E731
    kept = cross_entropy_refit(blocks, np.zeros((4, 3)), np.zeros(3))
    monkeypatch.setattr(head_fit, "_KEPT_BYTES", 0)  # nothing kept: every evaluation reads the blocks
    calls = []
    read = cross_entropy_refit(lambda: calls.append(1) or blocks(), np.zeros((4, 3)), np.zeros(3))
    assert len(calls) > 2
    for a, b in zip(kept, read):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_sums_reduced_over_workers_fit_the_data_of_every_worker():
    # Two workers holding the same data: the reduced sums are those of the data stacked twice.
    rng = np.random.default_rng(5)
    features, targets = rng.normal(size=(80, 3)), rng.normal(size=(80, 4))
    twice = cross_entropy_refit(lambda: [(features, targets)], np.zeros((3, 4)), np.zeros(4),
                                reduce=lambda values: [2 * np.asarray(v) for v in values])
    stacked = cross_entropy_refit(lambda: [(np.vstack([features] * 2), np.vstack([targets] * 2))], np.zeros((3, 4)), np.zeros(4))
    for a, b in zip(twice, stacked):
        np.testing.assert_allclose(a, b, atol=1e-8)


@given(logits=st.lists(st.floats(-900, 900), min_size=2, max_size=6))
def test_probabilities_are_normalised_and_never_subnormal(logits):
    row = np.array([logits])
    soft = head_probabilities(row, "softmax")
    assert abs(soft.sum() - 1.0) < 1e-12
    for p in (soft, head_probabilities(row, "sigmoid")):
        assert np.all((p == 0) | (p >= 1e-30))
    np.testing.assert_allclose(head_probabilities(row, "sigmoid")[np.abs(row) < 30], 1 / (1 + np.exp(-row[np.abs(row) < 30])))


def test_bad_input_is_refused_with_the_value_and_the_fix():
    x, t = np.ones((5, 2)), np.zeros((5, 3))
    with pytest.raises(ValueError, match="Unknown head loss 'relu'"):
        cross_entropy_refit(lambda: [(x, t)], np.zeros((2, 3)), None, loss="relu")
    with pytest.raises(ValueError, match="damping=-1"):
        cross_entropy_refit(lambda: [(x, t)], np.zeros((2, 3)), None, damping=-1.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        cross_entropy_refit(lambda: [(np.full((5, 2), np.nan), t)], np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match=r"target logits of shape \[5, 3\]; received \(5, 2\)"):
        cross_entropy_refit(lambda: [(x, np.zeros((5, 2)))], np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match="2 columns"):
        cross_entropy_refit(lambda: [(np.ones((5, 4)), t)], np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match="at least one sample"):
        cross_entropy_refit(lambda: [], np.zeros((2, 3)), None)
