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


def _strided_cnn(seed, strides, kernel, widths):
    from tfmot_zip.compat import keras

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((9, 9, 2))
    for i, (s, k, w) in enumerate(zip(strides, kernel, widths)):
        x = keras.layers.Conv2D(w, k, strides=s, padding="same", activation="relu", name=f"conv{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(x))


@settings(max_examples=6, deadline=None)
@given(layers=st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.sampled_from([1, 2, 3]), st.integers(2, 5)),
                       min_size=1, max_size=3),
       n_models=st.integers(2, 3), sharing=st.sampled_from([0.5, 1.0]), cap=st.sampled_from([None, 150]))
def test_zips_computing_the_tasks_hessians_side_by_side_equal_sequential_zips(layers, n_models, sharing, cap):
    """Every patch row (and shifted products) of the tasks in threads, or one task after another: the same
    zip (weights bit for bit) and the same counts of patch rows used and available in each layer's record.
    With a cap the sampled layers draw from the zip's generator in task order (never in threads)."""
    import tfmot_zip
    from tfmot_zip.zipping.zipper import Zipper

    strides, kernel, widths = zip(*layers)
    models = [_strided_cnn(10 + m, strides, kernel, widths) for m in range(n_models)]
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((24, 9, 9, 2)).astype("float32") for _ in models]
    zips, calls = [], {}  # calls[mode]: (plan, ran off the main thread) of every task's Hessian
    for mode, side_by_side in (("threads", Zipper.SIDE_BY_SIDE), ("sequential", ())):
        original, seen = Zipper._task_hessian, calls.setdefault(mode, [])

        def spy(self, node, x, method, _original=original, _seen=seen):
            _seen.append((method, threading.current_thread() is not threading.main_thread()))
            return _original(self, node, x, method)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Zipper, "SIDE_BY_SIDE", side_by_side)
            patch.setattr(Zipper, "_task_hessian", spy)
            zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=sharing, method="mtz", max_conv_rows=cap,
                                          progress=False)
        zips.append(zipped)
    assert sorted(calls["threads"]) != [] and sorted(m for m, _ in calls["threads"]) == sorted(m for m, _ in calls["sequential"])
    # only these run in threads (a single task of a pass runs in the calling thread)
    assert all(method in ("patch_rows", "shifted_products") for method, off in calls["threads"] if off)
    assert not any(off for _, off in calls["sequential"])
    if cap is None and any(s > 1 and k > 1 for s, k, _ in layers):  # a strided layer takes every patch row
        assert ("patch_rows", True) in calls["threads"]
    threaded, sequential = zips
    for a, b in zip(threaded.weights, sequential.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    for i in range(len(layers)):
        rows = [z.get_layer(f"conv{i}").zip_record["hessian_rows"] for z in zips]
        assert list(rows[0]) == list(rows[1])
        assert rows[0][1] > 0  # counted: every task's patch positions
