"""map_in_threads: the results of a sequential map, in order, with one BLAS thread per call."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from threadpoolctl import threadpool_info

from tfmot_zip.zipping.threads import map_in_threads


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=0, max_size=6), workers=st.sampled_from([None, 1, 2, 3]),
       seed=st.integers(0, 1000))
def test_results_equal_the_sequential_map_in_order(sizes, workers, seed):
    rng = np.random.default_rng(seed)
    items = [rng.standard_normal((n, 3)) for n in sizes]
    expected = [x.T @ x for x in items]
    got = map_in_threads(lambda x: x.T @ x, items, workers=workers)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_calls_run_in_several_threads_each_with_one_blas_thread():
    seen, barrier = [], threading.Barrier(2, timeout=10)

    def work(i):
        barrier.wait()  # both calls are running at once: two threads
        seen.append((threading.get_ident(), _blas_threads()))
        return i

    assert map_in_threads(work, [0, 1], workers=2) == [0, 1]
    assert len({ident for ident, _ in seen}) == 2
    assert all(threads and max(threads) == 1 for _, threads in seen)


def test_an_error_in_one_call_is_raised_after_the_others_finish():
    finished = []

    def work(i):
        if i == 0:
            raise ValueError("bad item 0")
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="bad item 0"):
        map_in_threads(work, [0, 1, 2], workers=2)
    assert sorted(finished) == [1, 2]
