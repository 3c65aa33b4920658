"""Every streaming accumulator's ``reduce``: combining two accumulators' sums (as the workers of a
``tf.distribute`` strategy do) equals one accumulator fed both parts."""
import threading

import numpy as np
from hypothesis import given, settings, strategies as st

from tfmot_zip.core import BlockHessianAccumulator, HessianAccumulator
from tfmot_zip.core.depthwise import ChannelHessianAccumulator
from tfmot_zip.core.refit import LinearRefit
from tfmot_zip.core.repair import MomentAccumulator


def _reduce_pair(first, second, whole=None):
    """Runs both accumulators' ``reduce`` at once, as two workers would, over an all-reduce built from a
    barrier (each round: both deposit their arrays, both read the sum)."""
    accumulators = (first, second)
    barrier = threading.Barrier(2)
    slots: list = [None, None]
    errors: list = []

    def worker(i):
        def sum_all(arrays):
            slots[i] = [np.asarray(a, np.float64) for a in arrays]
            barrier.wait()
            total = [slots[0][k] + slots[1][k] for k in range(len(arrays))]
            barrier.wait()
            return total

        try:
            accumulators[i].reduce(sum_all)
        except Exception as err:  # surfaced below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return first


rows_strategy = st.integers(1, 40)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_a=rows_strategy, n_b=rows_strategy, dim=st.integers(1, 6))
def test_hessian_accumulators(seed, n_a, n_b, dim):
    rng = np.random.default_rng(seed)
    x_a, x_b = rng.normal(size=(n_a, dim * 2)) + 3.0, rng.normal(size=(n_b, dim * 2))
    for make in (lambda: HessianAccumulator(dim * 2), lambda: BlockHessianAccumulator(2, dim, batch_dtype=np.float64)):
        a, b, whole = make(), make(), make()
        a.update(x_a), b.update(x_b), whole.update(np.vstack([x_a, x_b]))
        _reduce_pair(a, b, whole)
        assert a.count == n_a + n_b
        np.testing.assert_allclose(a.hessian(), whole.hessian(), rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_a=rows_strategy, n_b=rows_strategy, channels=st.integers(1, 4))
def test_channel_hessians(seed, n_a, n_b, channels):
    rng = np.random.default_rng(seed)
    p_a, p_b = rng.normal(size=(n_a, 4, channels)), rng.normal(size=(n_b, 4, channels)) - 1.0
    a, b, whole = (ChannelHessianAccumulator(4, channels) for _ in range(3))
    a.update(p_a), b.update(p_b), whole.update(np.concatenate([p_a, p_b]))
    _reduce_pair(a, b, whole)
    np.testing.assert_allclose(a.hessians(), whole.hessians(), rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_a=rows_strategy, n_b=rows_strategy, units=st.integers(1, 5))
def test_moments_and_refit(seed, n_a, n_b, units):
    rng = np.random.default_rng(seed)
    v_a, v_b = rng.normal(50.0, 2.0, size=(n_a, units)), rng.normal(-3.0, 0.5, size=(n_b, units))
    a, b, whole = (MomentAccumulator(units) for _ in range(3))
    a.update(v_a), b.update(v_b), whole.update(np.vstack([v_a, v_b]))
    _reduce_pair(a, b, whole)
    assert a.count == n_a + n_b
    np.testing.assert_allclose(a.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(a.var, whole.var, rtol=1e-9, atol=1e-12)
    t_a, t_b = rng.normal(size=(n_a, 2)), rng.normal(size=(n_b, 2))
    r_a, r_b, r_whole = (LinearRefit(units, 2) for _ in range(3))
    r_a.update(v_a, t_a), r_b.update(v_b, t_b), r_whole.update(np.vstack([v_a, v_b]), np.vstack([t_a, t_b]))
    _reduce_pair(r_a, r_b, r_whole)
    np.testing.assert_allclose(r_a.gram, r_whole.gram, rtol=1e-12)
    np.testing.assert_allclose(r_a.cross, r_whole.cross, rtol=1e-12)
    assert r_a.count == r_whole.count
