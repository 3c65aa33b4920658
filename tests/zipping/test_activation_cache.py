"""ActivationCache: values of a zipped model's tensors kept between zipping stages."""
import numpy as np
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib, cnn, tiny_resnet
from tfmot_zip.compat import keras, tf
from tfmot_zip.model.batchnorm import recalibrate_batchnorm
from tfmot_zip.model.layers import ZIP_LAYERS
from tfmot_zip.zipping.activations import ActivationCache, shared_tensor
from tfmot_zip.zipping.spill import ALIGNMENT, SpillPolicy


def _zipped(builder, seeds, data, **kw):
    models = [builder(s) for s in seeds]
    return tfmot_zip.zip_models(*models, calibration_data=data, sharing=0.0, recalibrate_batchnorm=False, progress=False, **kw)


def _fresh(model, tensor, feeds):
    return keras.Model(model.inputs, tensor)(feeds, training=False).numpy()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 50), layer_pick=st.integers(0, 10 ** 6), scale=st.floats(0.3, 3.0))
def test_values_follow_every_weight_change_downstream_of_invalidated_layers(seed, layer_pick, scale):
    rng = np.random.default_rng(seed)
    data = [calib(rng, 48, (8, 8, 1)), calib(rng, 40, (8, 8, 1))]
    zipped = _zipped(tiny_resnet, (seed, seed + 1), data)
    cache = ActivationCache(zipped, data)
    zip_layers = [l for l in zipped.layers if isinstance(l, ZIP_LAYERS)]
    probes = [(t, x) for l in zip_layers for t, x in enumerate(l.input)]

    def check():
        for t, x in probes:  # each task's tensors on that task's own data (lengths differ)
            got = np.asarray(cache.value(0, x))
            np.testing.assert_allclose(got, _fresh(zipped, x, data)[: len(got)], rtol=1e-5, atol=1e-5)
            assert len(got) == len(data[t])

    check()
    changed = zip_layers[layer_pick % len(zip_layers)]
    changed.assign_physical_kernel(changed.physical_kernel() * scale + 0.1)
    stale = [np.asarray(cache.value(0, x)) for _, x in probes]
    cache.invalidate([changed])
    check()
    # something downstream did change (so the check above could have failed without invalidate)
    moved = [not np.allclose(a, np.asarray(cache.value(0, x))) for a, (_, x) in zip(stale, probes)]
    assert any(moved) or changed is zip_layers[-1]  # the head: no zip layer reads it


def test_stale_batchnorm_is_re_estimated_from_its_own_inputs_as_recalibrate_would(rng):
    data = [calib(rng, 300, (10, 10, 1)), calib(rng, 260, (10, 10, 1))]
    zipped = _zipped(lambda s: cnn(s, bn=True), (3, 4), data)
    cache = ActivationCache(zipped, data, batchnorm=True)
    assert cache._bn_task == {"bn1__cnn3": 0, "bn1__cnn4": 1}
    conv = zipped.get_layer("conv1")
    conv.assign_physical_kernel(conv.physical_kernel() * 1.7)
    cache.invalidate([conv])
    cache.values(0, list(zipped.get_layer("conv2").input))  # runs both tasks' BatchNorm
    estimated = {l.name: (l.moving_mean.numpy().copy(), l.moving_variance.numpy().copy())
                 for l in zipped.layers if isinstance(l, keras.layers.BatchNormalization)}
    recalibrate_batchnorm(zipped, data)  # the whole-model training pass: brute force
    for layer in zipped.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, var = estimated[layer.name]
            np.testing.assert_allclose(mean, layer.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(var, layer.moving_variance.numpy(), rtol=1e-4, atol=1e-5)


def test_single_input_worlds_feed_each_task_its_own_data(rng):
    data = [calib(rng, 64, (8, 8, 1)), calib(rng, 64, (8, 8, 1)) + 1.0]
    zipped = _zipped(tiny_resnet, (5, 6), data, single_input=True)
    cache = ActivationCache(zipped, data)
    layer = zipped.get_layer("b1_conv1")
    for t in range(2):
        np.testing.assert_allclose(np.asarray(cache.value(t, layer.input[t])), _fresh(zipped, layer.input[t], data[t]), rtol=1e-5, atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(n_models=st.integers(2, 4), single=st.booleans(), pick=st.integers(0, 10 ** 6), seed=st.integers(0, 30),
       limited=st.booleans())
def test_zip_layers_compute_only_the_tasks_asked_for(n_models, single, pick, seed, limited):
    """Asking for some tasks' inputs of a zip layer runs the zip layers below it for those tasks only
    (a pass merging task n needs tasks 0..n; with one shared input, world t needs task t), and the
    values equal the whole model's; also when a memory limit runs the request batch by batch
    through every node (``limited``: tiny batches, values spilled to files)."""
    from tfmot_zip.zipping.spill import SpillPolicy

    rng = np.random.default_rng(seed)
    data = [calib(rng, int(rng.integers(20, 60)), (8, 8, 1)) for _ in range(n_models)]
    zipped = _zipped(tiny_resnet, tuple(range(seed, seed + n_models)), data, single_input=single)
    ran: list[tuple[str, tuple]] = []
    for layer in zipped.layers:
        if isinstance(layer, ZIP_LAYERS):
            original = layer.task_outputs
            layer.task_outputs = (lambda x, tasks, *rest, original=original, name=layer.name:  # a fresh model each example
                                  ran.append((name, tuple(tasks))) or original(x, tasks, *rest))
    target = [l for l in zipped.layers if isinstance(l, ZIP_LAYERS)][pick % 5 + 1]  # a zip layer above the stem
    storage = SpillPolicy(memory_bytes=4096, batch_bytes=2048) if limited else None
    cache = ActivationCache(zipped, data, storage=storage)
    if single:
        world = pick % n_models
        asked = [world]
        got = [np.asarray(cache.value(world, target.input[world]))]
        computed = {t for _, tasks in ran for t in tasks}  # before the brute force runs every task
        want = [_fresh(zipped, target.input[world], data[world])]
    else:
        asked = sorted(set(np.random.default_rng(pick).choice(n_models, size=1 + pick % n_models)))
        got = [np.asarray(v) for v in cache.values(0, [target.input[t] for t in asked])]
        computed = {t for _, tasks in ran for t in tasks}
        want = [_fresh(zipped, target.input[t], data)[: len(data[t])] for t in asked]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert ran, "no zip layer ran below the target"
    assert computed == set(asked)
    if limited:
        assert storage.spilled_values > 0  # values went to files: the batch-by-batch path ran
        storage.close()


def test_a_whole_zip_runs_each_node_a_bounded_number_of_times(rng, monkeypatch):
    """The cost grows with the number of nodes, not with nodes x zip layers."""
    caches = []
    init = ActivationCache.__init__
    monkeypatch.setattr(ActivationCache, "__init__", lambda self, *a, **k: caches.append(self) or init(self, *a, **k))
    data = [calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1))]
    zipped = tfmot_zip.zip_models(tiny_resnet(1), tiny_resnet(2), calibration_data=data, sharing=1.0, progress=False, method="mtz")
    nodes = sum(len(n) for d, n in zipped._nodes_by_depth.items() if d > 0)
    assert len(caches) == 1
    assert 0 < caches[0].computed_nodes <= 2 * nodes


@settings(max_examples=6, deadline=None)
@given(depth=st.integers(3, 7), width=st.integers(2, 9), skip=st.booleans(), seed=st.integers(0, 20))
def test_a_value_is_dropped_as_soon_as_its_readers_ran(depth, width, skip, seed):
    """Running a chain holds at most the input, the value being read and the one being written
    (plus a skip connection's source until its add runs), never every intermediate of the chain;
    the values still equal a fresh forward pass."""
    from tfmot_zip.zipping.spill import SpillPolicy

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((width,))
    source = x = keras.layers.Dense(width, activation="relu")(x)
    for _ in range(depth):
        x = keras.layers.Dense(width, activation="tanh")(x)
    if skip:
        x = keras.layers.Add()([x, source])
    model = keras.Model(inp, x)
    data = np.random.default_rng(seed).normal(size=(64, width)).astype(np.float32)
    storage = SpillPolicy()
    cache = ActivationCache(model, [data], storage=storage)
    np.testing.assert_allclose(np.asarray(cache.value(0, model.output)), model(data).numpy(), rtol=1e-5, atol=1e-6)
    value_bytes = 64 * width * 4
    assert cache.computed_nodes == depth + 1 + int(skip)
    assert storage.peak_held <= (3 + int(skip)) * value_bytes  # the old end-of-call eviction held depth + 1
    assert storage.held == value_bytes  # only the requested output remains (inputs are not counted)


@settings(max_examples=6, deadline=None)
@given(depth=st.integers(2, 6), width=st.integers(2, 9), n=st.integers(5, 90), batch=st.integers(1, 12),
       seed=st.integers(0, 20))
def test_a_chain_over_the_memory_limit_runs_batch_by_batch_and_keeps_only_its_result(depth, width, n, batch, seed):
    """When the values a call produces would not fit under the limit, every batch goes through the
    whole chain: nothing transient is stored or spilled, only the requested value (which fits)."""
    from tfmot_zip.zipping.spill import SpillPolicy

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((width,))
    for _ in range(depth):
        x = keras.layers.Dense(width, activation="tanh")(x)
    model = keras.Model(inp, x)
    data = np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)
    value_bytes = n * width * 4
    storage = SpillPolicy(memory_bytes=value_bytes + value_bytes // 2, batch_bytes=batch * width * 4 * (depth + 1))
    cache = ActivationCache(model, [data], storage=storage)
    np.testing.assert_allclose(np.asarray(cache.value(0, model.output)), model(data).numpy(), rtol=1e-5, atol=1e-6)
    assert storage.spilled_values == 0 and storage.peak_held == value_bytes  # node by node: the 2nd value spilled
    assert cache.computed_nodes == depth


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), dtype=st.sampled_from([np.float32, np.float64, np.int32]),
       seed=st.integers(0, 99))
def test_policy_arrays_are_aligned_and_read_in_place_and_never_reused_while_a_tensor_reads_them(shape, dtype, seed):
    policy = SpillPolicy()
    array = policy.empty(tuple(shape), dtype)
    assert array.ctypes.data % ALIGNMENT == 0 and array.shape == tuple(shape) and array.dtype == dtype
    array[...] = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    expected = array.copy()
    tensor = shared_tensor(array)
    if dtype != np.float32:  # TensorFlow converts (and copies) anything else itself
        assert tensor is array
        return
    array.reshape(-1)[0] = 7.5  # no copy: the tensor reads the array's memory (the cache never writes a stored value)
    assert tf.reshape(tensor, [-1])[0].numpy() == 7.5
    array[...] = expected
    policy.release(array)
    del array
    again = policy.empty(tuple(shape), dtype)  # the tensor still reads the old buffer: new memory
    again[...] = -1
    np.testing.assert_array_equal(tensor.numpy(), expected)
    del tensor
    policy.release(again)
    del again
    assert policy.empty(tuple(shape), dtype).ctypes.data % ALIGNMENT == 0


@settings(max_examples=20, deadline=None)
@given(offset=st.integers(1, 15), seed=st.integers(0, 99))
def test_arrays_tensorflow_cannot_read_in_place_are_left_to_its_conversion(offset, seed):
    raw = np.random.default_rng(seed).normal(size=64 + 4 * 16).astype(np.float32)
    start = (-raw.ctypes.data % ALIGNMENT) // 4
    misaligned = raw[start + offset : start + offset + 64]  # 4 * offset bytes past a 64-byte boundary
    readonly = raw[start : start + 64].copy()
    readonly.flags.writeable = False
    strided = raw[start : start + 128 : 2]
    for value in (misaligned, readonly, strided):
        assert shared_tensor(value) is value
        np.testing.assert_array_equal(tf.convert_to_tensor(shared_tensor(value)).numpy(), value)
