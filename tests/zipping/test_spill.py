"""Cached activations beyond a memory limit go to temporary files, and layers run batch by batch:
the values, and the zip they feed, are those of the all-in-memory cache."""
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib, cnn, tiny_resnet
from tfmot_zip.compat import keras, tf
from tfmot_zip.model.layers import ZIP_LAYERS
from tfmot_zip.zipping import spill
from tfmot_zip.zipping.activations import ActivationCache
from tfmot_zip.zipping.spill import SpilledArray, SpillPolicy


def _zip(models, data, **kw):
    return tfmot_zip.zip_models(*models, calibration_data=data, progress=False, **kw)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 40), n_a=st.integers(3, 40), n_b=st.integers(3, 40),
       batch_bytes=st.integers(1, 40_000), memory_bytes=st.one_of(st.none(), st.integers(0, 200_000)))
def test_values_equal_a_fresh_forward_pass_whatever_the_batch_and_the_limit(seed, n_a, n_b, batch_bytes, memory_bytes):
    rng = np.random.default_rng(seed)
    data = [calib(rng, n_a, (8, 8, 1)), calib(rng, n_b, (8, 8, 1))]  # lengths differ: per-task inputs
    zipped = _zip([tiny_resnet(seed), tiny_resnet(seed + 1)], data, sharing=0.5, method="mtz", recalibrate_batchnorm=False)
    policy = SpillPolicy(memory_bytes, batch_bytes=batch_bytes)
    cache = ActivationCache(zipped, data, storage=policy)
    probes = [x for l in zipped.layers if isinstance(l, ZIP_LAYERS) for x in l.input]
    for x in probes:
        got = cache.value(0, x)
        want = keras.Model(zipped.inputs, x)(data, training=False).numpy()
        np.testing.assert_allclose(np.asarray(got), want[: len(got)], rtol=1e-5, atol=1e-5)
        if memory_bytes is not None:
            assert policy.held <= memory_bytes  # what stays in memory never exceeds the limit
    assert policy.peak_held <= (memory_bytes if memory_bytes is not None else np.inf)
    if memory_bytes == 0:
        assert policy.spilled_values > 0 and policy.held == 0
    policy.close()


def test_spilled_files_are_deleted_when_no_layer_reads_them_and_at_close(rng, tmp_path):
    data = [calib(rng, 24, (8, 8, 1)), calib(rng, 24, (8, 8, 1))]
    zipped = _zip([tiny_resnet(1), tiny_resnet(2)], data, sharing=0.0, method="mtz", recalibrate_batchnorm=False)
    policy = SpillPolicy(0, batch_bytes=4096, directory=str(tmp_path))
    cache = ActivationCache(zipped, data, storage=policy)
    head = [l for l in zipped.layers if isinstance(l, ZIP_LAYERS)][-1]
    cache.values(0, list(head.input))
    (folder,) = os.listdir(tmp_path)
    alive = {v.path for world in cache._values for v in world.values() if isinstance(v, SpilledArray)}
    on_disk = {os.path.join(tmp_path, folder, f) for f in os.listdir(tmp_path / folder)}
    assert alive and on_disk == alive  # every value evicted took its file with it
    cache.invalidate([zipped.get_layer("b1_conv1")])
    assert {os.path.join(tmp_path, folder, f) for f in os.listdir(tmp_path / folder)} == {
        v.path for world in cache._values for v in world.values() if isinstance(v, SpilledArray)}
    policy.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("builder, method", [(lambda s: cnn(s, bn=True), "mtz+refits"), (tiny_resnet, "mtz")])
def test_a_zip_that_spills_everything_equals_the_in_memory_zip(builder, method, rng, monkeypatch, tmp_path):
    """Same pairs, same weights (up to float32 rounding of batched layer calls), no file left behind."""
    data = [calib(rng, 120, (10, 10, 1) if builder is not tiny_resnet else (8, 8, 1)) for _ in range(2)]
    models = [builder(3), builder(4)]
    in_memory = _zip(models, data, sharing=1.0, method=method, activation_memory_mb=None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    policies = []
    monkeypatch.setattr(spill.SpillPolicy, "__init__", _spy(policies, 8192))
    spilled = _zip(models, data, sharing=1.0, method=method, activation_memory_mb=0)
    assert policies and policies[0].spilled_values > 0 and policies[0].peak_held == 0
    assert os.listdir(tmp_path) == []  # the zip removed its temporary directory
    reported = tfmot_zip.zip_summary(spilled).extra["activation_storage"]
    assert reported["memory_limit_mb"] == 0.0 and reported["peak_in_memory_mb"] == 0.0
    assert reported["spilled_values"] == policies[0].spilled_values > 0
    assert tfmot_zip.zip_summary(in_memory).extra["activation_storage"]["memory_limit_mb"] is None
    for a, b in zip(tfmot_zip.zip_summary(in_memory).layers, tfmot_zip.zip_summary(spilled).layers):
        assert a.name == b.name and a.shared_units == b.shared_units
    for la, lb in zip(in_memory.layers, spilled.layers):
        if isinstance(la, ZIP_LAYERS):
            assert la.get_config()["zip_record"]["pairs"] == lb.get_config()["zip_record"]["pairs"]
        for wa, wb in zip(la.get_weights(), lb.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-3, atol=1e-4)


def _spy(policies, forced_batch_bytes):
    """A SpillPolicy.__init__ that records the policies and runs layers on small batches."""
    init = spill.SpillPolicy.__init__

    def wrapped(self, memory_bytes=None, batch_bytes=None, directory=None, **kwargs):
        init(self, memory_bytes, batch_bytes=forced_batch_bytes, directory=directory, **kwargs)
        policies.append(self)
    return wrapped


def test_the_temporary_files_go_even_when_the_zip_fails(rng, monkeypatch, tmp_path):
    from tfmot_zip.zipping import zipper

    data = [calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1))]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run = zipper.Zipper.run

    def failing(self, *a, **k):
        self.activations().value(0, self.model.get_layer("b1_conv1").input[0])  # something spilled first
        raise RuntimeError("stopped")
    monkeypatch.setattr(zipper.Zipper, "run", failing)
    with pytest.raises(RuntimeError, match="stopped"):
        _zip([tiny_resnet(1), tiny_resnet(2)], data, activation_memory_mb=0, method="mtz")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(zipper.Zipper, "run", run)


@settings(max_examples=15, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not (v >= 0 and v < float("inf"))),
                       st.text(max_size=3), st.booleans()))
def test_a_bad_memory_limit_is_refused_before_any_work(value):
    with pytest.raises(ValueError, match=r"non-negative number of megabytes or None.*Received: activation_memory_mb="):
        _zip([tiny_resnet(1), tiny_resnet(2)], [np.zeros((4, 8, 8, 1), np.float32)] * 2, activation_memory_mb=value)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), start=st.integers(-8, 8), stop=st.integers(-8, 8))
def test_a_spilled_array_reads_like_the_numpy_array(shape, start, stop):
    x = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32)
    policy = SpillPolicy(0)
    stored = policy.keep(x)
    assert isinstance(stored, SpilledArray) and stored.shape == x.shape and len(stored) == len(x)
    np.testing.assert_array_equal(stored[start:stop], x[start:stop])
    np.testing.assert_array_equal(np.asarray(stored), x)
    for i in (0, -1):
        np.testing.assert_array_equal(stored[i], x[i])
    with pytest.raises(TypeError, match="sample ranges"):
        stored[::2]
    policy.close()


@settings(max_examples=6, deadline=None)
@given(n=st.integers(33, 90), batch=st.integers(1, 40), limit=st.one_of(st.none(), st.integers(5, 120)))
def test_a_streamed_dataset_beyond_the_limit_is_written_to_a_file_and_zips_as_the_array(n, batch, limit):
    from tfmot_zip.compat import tf

    rng = np.random.default_rng(n)
    data = [calib(rng, n, (10, 10, 1)), calib(rng, n, (10, 10, 1))]
    models = [cnn(1, bn=True), cnn(2, bn=True)]
    arrays = _zip(models, data, calibration_samples=limit, method="mtz", activation_memory_mb=None)
    streams = [tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(batch) for x in data]
    policies = []
    init = spill.SpillPolicy.__init__
    spill.SpillPolicy.__init__ = lambda self, *a, **k: init(self, *a, **k) or policies.append(self)
    try:
        streamed = _zip(models, streams, calibration_samples=limit, method="mtz", activation_memory_mb=0)
    finally:
        spill.SpillPolicy.__init__ = init
    assert policies[0].spilled_values >= 2  # at least the two calibration sets went to files
    for la, lb in zip(arrays.layers, streamed.layers):
        if isinstance(la, ZIP_LAYERS):
            assert la.get_config()["zip_record"]["pairs"] == lb.get_config()["zip_record"]["pairs"]
        for wa, wb in zip(la.get_weights(), lb.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-3, atol=1e-4)


def test_a_bad_batch_in_a_streamed_dataset_is_named_and_leaves_no_file(rng, monkeypatch, tmp_path):
    from tfmot_zip.compat import tf

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    x = calib(rng, 64, (8, 8, 1))
    bad = x.copy()
    bad[50, 0, 0, 0] = np.nan
    streams = [tf.data.Dataset.from_tensor_slices(x).batch(16), tf.data.Dataset.from_tensor_slices(bad).batch(16)]
    with pytest.raises(ValueError, match=r"calibration_data\[1\].*NaN or inf.*1 NaN"):
        _zip([tiny_resnet(1), tiny_resnet(2)], streams, activation_memory_mb=0)
    wrong = [tf.data.Dataset.from_tensor_slices(x).batch(16), tf.data.Dataset.from_tensor_slices(x[:, :6]).batch(16)]
    with pytest.raises(ValueError, match=r"calibration_data\[1\] has samples of shape \(6, 8, 1\), but the model input is \(8, 8, 1\)"):
        _zip([tiny_resnet(1), tiny_resnet(2)], wrong, activation_memory_mb=0)
    assert os.listdir(tmp_path) == []


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 6), st.booleans()), min_size=1, max_size=30),
       memory_bytes=st.one_of(st.none(), st.integers(0, 400)))
def test_reused_buffers_never_alias_an_array_still_referenced(ops, memory_bytes):
    """Generated sequences of ``empty`` and ``release`` (an array released may still be referenced,
    as a consumer of a cached value might): every live array keeps its own memory and contents, and
    the free buffers stay within the limit left by the values held."""
    policy = SpillPolicy(memory_bytes)
    live, kept = [], []  # arrays in use, and released arrays someone still refers to
    for n, (allocate, rows, keep_reference) in enumerate(ops):
        if allocate or not live:
            array = policy.empty((rows, 4), np.float32)
            array[...] = n
            live.append((array, n))
        else:
            array, value = live.pop(0)
            policy.release(array)
            if keep_reference:
                kept.append((array, value))
            del array
        arrays = live + kept
        for i, (a, value) in enumerate(arrays):
            assert np.all(a == value)  # nobody wrote into it
            assert not any(np.shares_memory(a, b) for b, _ in arrays[i + 1:])
        limit = spill.FREE_BYTES_UNLIMITED if memory_bytes is None else max(0, memory_bytes - policy.held)
        assert sum(b.nbytes for b in policy._free) <= limit
    policy.close()


def test_a_buffer_comes_back_only_when_nothing_refers_to_it():
    policy = SpillPolicy()
    a = policy.empty((5, 2), np.float64)
    address = a.ctypes.data
    view = a[1:3]
    policy.release(a)
    del a
    b = policy.empty((10,), np.float64)  # the view still refers to the released buffer
    assert b.ctypes.data != address
    del view
    assert policy.empty((2, 5), np.float64).ctypes.data == address
    outside = np.zeros(10)
    policy.release(outside)  # not the policy's: never handed out again
    assert not any(np.shares_memory(outside, f) for f in policy._free)
    policy.close()


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.integers(0, 7), min_size=1, max_size=6), announced_extra=st.integers(-3, 3),
       as_tensor=st.booleans())
def test_a_value_written_batch_by_batch_equals_its_batches_concatenated(chunks, announced_extra, as_tensor):
    """The writer fills one array when the value is announced larger than its first batch; with any
    batch sizes (empty ones too) and an announcement that is exact, short or long, the value is the
    concatenation of the batches."""
    rng = np.random.default_rng(len(chunks))
    batches = [rng.normal(size=(n, 3)).astype(np.float32) for n in chunks]
    total = sum(chunks)
    policy = SpillPolicy()
    writer = policy.writer(max(0, total + announced_extra) * 3 * 4)
    for b in batches:
        writer.append(tf.constant(b) if as_tensor else b)
    value = np.asarray(writer.finish())
    np.testing.assert_array_equal(value, np.concatenate(batches))
    assert policy.held == value.nbytes
    policy.close()


def test_the_zip_asks_numpy_for_ordinary_pages_and_restores_its_setting(rng, monkeypatch):
    calls = []
    setting = [True]

    def setter(enabled):
        calls.append(bool(enabled))
        previous, setting[0] = setting[0], bool(enabled)
        return previous

    monkeypatch.setattr(np._core.multiarray, "_set_madvise_hugepage", setter, raising=False)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    data = [calib(rng, 16, (10, 10, 1)), calib(rng, 16, (10, 10, 1))]
    _zip([cnn(1), cnn(2)], data, sharing=0.5, method="mtz")
    assert calls[0] is False and setting[0] is True  # off while zipping, then as it was
    bad = data[1].copy()
    bad[3, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _zip([cnn(1), cnn(2)], [data[0], bad], sharing=0.5)  # refused while zipping: restored too
    assert calls[-1] is True
    assert setting[0] is True
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")  # the user's choice is left alone
    calls.clear()
    _zip([cnn(1), cnn(2)], data, sharing=0.5, method="mtz")
    assert calls == []


@settings(max_examples=10, deadline=None)
@given(limit_mb=st.one_of(st.none(), st.floats(0.0, 4096.0)))
def test_the_zip_runs_layers_on_batches_of_an_eighth_of_its_memory_limit(limit_mb):
    seen = {}
    init = spill.SpillPolicy.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen["policy"] = self

    rng = np.random.default_rng(0)
    data = [calib(rng, 12, (10, 10, 1)), calib(rng, 12, (10, 10, 1))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spill.SpillPolicy, "__init__", spy)
        _zip([cnn(1), cnn(2)], data, sharing=0.5, method="mtz", activation_memory_mb=limit_mb)
    policy = seen["policy"]
    expected = (128 << 20) if limit_mb is None else min(128 << 20, max(4 << 20, int(limit_mb * 2**20) // 8))
    assert policy.batch_bytes == expected == spill.default_batch_bytes(policy.memory_bytes)
