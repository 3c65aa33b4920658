"""compact_zipped (issue 15): the zipped model keeps only the physical units some task reads.

Generated architectures (hypothesis): Dense or Conv2D stacks with BatchNorm, residual adds, depthwise
layers, squeeze-and-excitation gates (Multiply), channel concatenations (read side by side, also through
Flatten), pooling, 2-3 models of differing widths, several sharing fractions, with and without repair.
For each: the compact model computes what the zipped model computes, every physical unit and input row
of it is read by some task, the input model is untouched, strip_zipping gives the same model (outputs
and count_params), zip_summary the same sharing and parameters (pairs renumbered consistently with the
maps), save/load round-trips, compacting twice changes nothing, sharing 0 changes nothing, the maps are
constants (no integer weights), each kernel stores exactly the cells some task reads (brute-force count
from the maps), and count_params is within 5% of the stripped model's at every sharing (at most 5% above it with repair,
whose stripped form holds more values). Then the zoo pairs
(printed figures) and the refusals.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import tfmot_zip
from builders import calib, mlp, tiny_resnet, generated_head
from tfmot_zip import data
from tfmot_zip.compat import keras
from tfmot_zip.model.compact import compact_in_place, compact_zipped, unit_renumbering
from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
from tfmot_zip.model.layers import ZipConv2D, ZipDense
from tfmot_zip.zipping import api


@pytest.fixture(autouse=True)
def uncompacted(monkeypatch):
    """zip_models compacts its result; these tests compact the raw zipped model themselves."""
    monkeypatch.setattr(api, "compact_in_place", lambda model, graph=None: model)


def test_zip_models_returns_the_compacted_model(rng, monkeypatch):
    a, b = tiny_resnet(1), tiny_resnet(2)
    cal = (calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1)))
    raw = tfmot_zip.zip_models(a, b, calibration_data=cal, sharing=1.0, progress=False)
    monkeypatch.undo()
    zipped = tfmot_zip.zip_models(a, b, calibration_data=cal, sharing=1.0, progress=False)
    for layer in zipped.layers:
        if isinstance(layer, (ZipConv2D, ZipDense)):  # every physical unit is read; hidden layers shrank
            assert layer.used_units().size == layer.capacity
            assert layer.capacity < raw.get_layer(layer.name).capacity or layer.name == "head"
    x = [c[:5] for c in cal]
    for got, want in zip(zipped(x), raw(x)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)

L = keras.layers
EXAMPLES = int(os.environ.get("TFMOT_ZIP_COMPACT_EXAMPLES", "12"))
ZIP = (ZipDense, ZipConv2D, ZipDepthwiseConv2D)


@st.composite
def architectures(draw):
    """A spec: input kind, blocks, the number of models and their width offsets, sharing, repair."""
    conv = draw(st.booleans())
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        blocks.append({
            "width": draw(st.integers(2, 6)),
            "kernel": draw(st.sampled_from([1, 3])) if conv else None,
            "activation": draw(st.sampled_from(["relu", "tanh", "linear"])),
            "bn": draw(st.booleans()),
            "join": draw(st.sampled_from(["none", "add", "concat"] if conv else ["none", "add"])),
            "pool": conv and draw(st.booleans()),
            "depthwise": conv and draw(st.booleans()),
            "se": conv and draw(st.booleans()),
        })
    n_models = draw(st.integers(2, 3))
    equal = draw(st.booleans())
    return {
        "conv": conv,
        "blocks": blocks,
        "gap": conv and draw(st.booleans()),
        "dense": draw(st.sampled_from([0, 3])),
        "offsets": [[0 if equal else draw(st.integers(0, 2)) for _ in blocks] for _ in range(n_models)],
        "sharing": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "repair": draw(st.booleans()),
    }


def build(spec, m, seed):
    """Model ``m`` of a spec (a residual block keeps its input's width; Add, Multiply and depthwise
    layers never read a concatenation, which tfmot_zip refuses)."""
    keras.utils.set_random_seed(seed)
    shape = (8, 8, 2) if spec["conv"] else (10,)
    x = inp = keras.Input(shape, name="x")
    width, concatenated = None, False
    for k, block in enumerate(spec["blocks"]):
        join = block["join"]
        if width is None or (join == "add" and (concatenated or block["pool"])):
            join = "none"
        units = width if join == "add" else block["width"] + spec["offsets"][m][k]
        if spec["conv"]:
            y = L.Conv2D(units, block["kernel"], padding="same", name=f"conv{k}")(x)
        else:
            y = L.Dense(units, name=f"dense{k}")(x)
        if block["bn"]:
            y = L.BatchNormalization(name=f"bn{k}")(y)
        y = L.Activation(block["activation"], name=f"act{k}")(y)
        if block["depthwise"]:
            y = L.DepthwiseConv2D(3, padding="same", name=f"dw{k}")(y)
        if block["se"]:
            g = L.GlobalAveragePooling2D(name=f"se_squeeze{k}")(y)
            g = L.Reshape((1, 1, units), name=f"se_reshape{k}")(g)
            g = L.Conv2D(2, 1, activation="relu", name=f"se_reduce{k}")(g)
            g = L.Conv2D(units, 1, activation="sigmoid", name=f"se_expand{k}")(g)
            y = L.Multiply(name=f"se_excite{k}")([y, g])
        if join == "add":
            x, concatenated = L.Add(name=f"add{k}")([x, y]), False
        elif join == "concat" and width is not None:
            x, width, concatenated = L.Concatenate(name=f"concat{k}")([x, y]), width + units, True
            units = width
        else:
            x, concatenated = y, False
        if block["pool"]:
            x = L.MaxPooling2D(2, name=f"pool{k}")(x)
        width = units
    return generated_head(inp, x, spec, m, seed)


def read_cells(layer, n_tasks):
    """Brute force: the kernel cells (per kernel position) some task reads, from the maps."""
    mask = np.zeros((layer.input_capacity, layer.capacity), bool)
    for t in range(n_tasks):
        in_map, out_map = layer.get_maps(t)
        mask[np.ix_(in_map, out_map)] = True
    return int(mask.sum())


def summary_counts(model):
    report = tfmot_zip.zip_summary(model)
    rows = [(l.name, l.kind, l.widths, l.shared_units, l.params_before, l.params_after) for l in report.layers]
    return rows, report.params_original, report.params_zipped


def check_compact(zipped, xs, tmp_dir):
    """Every property of ``compact_zipped(zipped)``; returns the compact model."""
    before = [w.numpy().copy() for w in zipped.weights]
    config_before = zipped.get_config()
    compact = compact_zipped(zipped)
    for w0, w1 in zip(before, zipped.weights):  # the input model is untouched
        np.testing.assert_array_equal(w0, w1.numpy(), err_msg=f"{w1.name} modified")
    assert zipped.get_config() == config_before
    outs = [o.numpy() for o in zipped(xs)]
    compact_outs = [o.numpy() for o in compact(xs)]
    for z, c in zip(outs, compact_outs):
        np.testing.assert_allclose(c, z, rtol=1e-5, atol=1e-5, err_msg="compact vs zipped")
    n_tasks = len(zipped.output_names)
    for layer in compact.layers:
        if not isinstance(layer, ZIP):
            continue
        # every physical unit (column or channel) is read by some task ...
        assert np.array_equal(layer.used_units(), np.arange(layer.capacity)), layer.name
        assert layer.physical_kernel().shape[-1 if not isinstance(layer, ZipDepthwiseConv2D) else -2] == layer.capacity
        # ... the maps are constants of the config, and the kernel stores the cells some task reads, no more
        assert layer.frozen and not any(w.dtype.is_integer for w in layer.weights), layer.name
        if not isinstance(layer, ZipDepthwiseConv2D):
            positions = int(np.prod(layer.physical_kernel().shape[:-2]))
            assert sum(int(np.prod(v.shape)) for v in layer.kernel_variables()) == positions * read_cells(layer, n_tasks)
            assert not layer.track_hessians
        # ... and so is every physical input row
        rows = np.unique(np.concatenate([layer.get_maps(t)[0] for t in range(n_tasks)]))
        assert np.array_equal(rows, np.arange(layer.input_capacity)), layer.name
        original = zipped.get_layer(layer.name)
        for t in range(n_tasks):  # each task computes with the same weights
            for got, want in zip(layer.get_task_weights(t), original.get_task_weights(t)):
                if want is not None:
                    np.testing.assert_array_equal(got, want)
            for got, want in zip(layer.get_repair(t), original.get_repair(t)):
                np.testing.assert_array_equal(got, want)
        # the renumbered pairs point at what the maps say: task n's neurons cols read the units
        for model, l in ((zipped, original), (compact, layer)):
            for n, units, cols in (l.zip_record or {}).get("pairs", []):
                np.testing.assert_array_equal(l.get_maps(int(n))[1][np.asarray(cols, np.int64)], units,
                                              err_msg=f"{model.name}/{l.name} pairs")
    assert summary_counts(compact) == summary_counts(zipped)
    plain, plain_compact = tfmot_zip.strip_zipping(zipped), tfmot_zip.strip_zipping(compact)
    assert plain_compact.count_params() == plain.count_params()
    for p, q in zip(plain(xs), plain_compact(xs)):
        np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-5, atol=1e-5, err_msg="stripped")
    assert compact.count_params() <= zipped.count_params()
    # compacting again changes nothing
    again = compact_zipped(compact)
    assert again.count_params() == compact.count_params()
    for w0, w1 in zip(compact.weights, again.weights):
        np.testing.assert_array_equal(w0.numpy(), w1.numpy())
    path = os.path.join(tmp_dir, "compact.keras")
    compact.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.count_params() == compact.count_params()
    for c, l in zip(compact_outs, loaded(xs)):
        np.testing.assert_array_equal(l.numpy(), c, err_msg="save/load")
    assert [getattr(l, "capacity", None) for l in loaded.layers] == [getattr(l, "capacity", None) for l in compact.layers]
    # the compact model holds what the stripped model holds: the read kernel cells, biases, BatchNorm. A
    # stripped repair affine is a layer of 4 values per unit and task (the zip layer's: 2), and strip_zipping
    # places some biases per block and task: the compact model is then smaller, never more than 5% larger.
    assert compact.count_params() <= 1.05 * plain.count_params()
    if not any(getattr(l, "repair", False) for l in compact.layers):
        assert compact.count_params() >= 0.95 * plain.count_params()
    return compact


def check_in_place(zipped, compact, xs, tmp_dir):
    """``compact_in_place(zipped)`` (what zip_models does) gives ``compact``: the same config, weights (names,
    shapes, order, values, trainable), outputs, and it saves, loads and trains like it. Modifies ``zipped``."""
    compact_outs = [o.numpy() for o in compact(xs)]
    layers = list(zipped.layers)
    assert compact_in_place(zipped) is zipped
    assert list(zipped.layers) == layers and all(a is b for a, b in zip(zipped.layers, layers))  # the same objects
    assert zipped.get_config() == compact.get_config()
    for mine, theirs in zip(zipped.layers, compact.layers):
        assert [(w.name, tuple(w.shape), w.trainable) for w in mine.weights] == \
            [(w.name, tuple(w.shape), w.trainable) for w in theirs.weights], mine.name
        for w0, w1 in zip(mine.weights, theirs.weights):
            np.testing.assert_array_equal(w0.numpy(), w1.numpy(), err_msg=w0.name)
    assert zipped.count_params() == compact.count_params()
    assert len(zipped.trainable_weights) == len(compact.trainable_weights)
    for got, want in zip(zipped(xs), compact_outs):
        np.testing.assert_array_equal(got.numpy(), want, err_msg="in place vs compact_zipped")
    path = os.path.join(tmp_dir, "in_place.keras")
    zipped.save(path)
    for got, want in zip(keras.models.load_model(path)(xs), compact_outs):
        np.testing.assert_array_equal(got.numpy(), want, err_msg="in place: save/load")
    # a TensorFlow checkpoint of it (variables found by attribute path) restores compact_zipped's model
    compact.set_weights([np.zeros_like(w) for w in compact.get_weights()])
    zipped.save_weights(os.path.join(tmp_dir, "in_place_ckpt"))
    compact.load_weights(os.path.join(tmp_dir, "in_place_ckpt")).assert_existing_objects_matched()
    for got, want in zip(compact(xs), compact_outs):
        np.testing.assert_array_equal(got.numpy(), want, err_msg="in place: checkpoint into compact_zipped's model")
    # one training step moves the compact weights (the optimiser sees the new variables, not the old ones)
    zipped.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse"] * len(xs))
    before = [w.numpy().copy() for w in zipped.trainable_weights]
    zipped.fit(xs, [o + 1.0 for o in compact_outs], epochs=1, batch_size=len(xs[0]), verbose=0)
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, zipped.trainable_weights))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TFMOT_ZIP_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=architectures())
@example(spec={  # depthwise + SE gate, concatenations read side by side and through Flatten, 3 models, repair
    "conv": True, "gap": False, "dense": 3, "sharing": 0.5, "repair": True,
    "blocks": [dict(width=3, kernel=3, activation="relu", bn=True, join="none", pool=False, depthwise=True, se=True),
               dict(width=2, kernel=1, activation="tanh", bn=False, join="concat", pool=False, depthwise=True, se=False),
               dict(width=4, kernel=3, activation="relu", bn=True, join="concat", pool=True, depthwise=False, se=True)],
    "offsets": [[0, 1, 2], [2, 0, 1], [1, 2, 0]]})
@example(spec={  # a residual stream with a gated writer, equal widths, fully shared
    "conv": True, "gap": True, "dense": 0, "sharing": 1.0, "repair": False,
    "blocks": [dict(width=4, kernel=3, activation="relu", bn=True, join="none", pool=False, depthwise=False, se=False),
               dict(width=4, kernel=3, activation="relu", bn=False, join="add", pool=False, depthwise=True, se=True)],
    "offsets": [[0, 0], [0, 0]]})
def test_compact_generated_models(spec, tmp_path):
    keras.backend.clear_session()
    models = [build(spec, m, seed=30 + m) for m in range(len(spec["offsets"]))]
    rng = np.random.default_rng(0)
    shape = models[0].input_shape[1:]
    calibration = tuple(calib(rng, 32, shape) for _ in models)
    xs = [calib(rng, 5, shape) for _ in models]
    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=spec["sharing"], repair=spec["repair"],
                                  progress=False, method="mtz")  # structure only: the paper's method, no refits (faster)
    compact = check_compact(zipped, xs, str(tmp_path))
    if spec["sharing"] == 0.0:  # nothing shared: no unit dropped, the same kernel on every cell a task reads
        for layer in compact.layers:
            if isinstance(layer, ZIP):
                original = zipped.get_layer(layer.name)
                assert (layer.input_capacity, layer.capacity) == (original.input_capacity, original.capacity)
                mask = np.zeros((layer.input_capacity, layer.capacity), bool)
                for t in range(len(models)):
                    mask[np.ix_(*layer.get_maps(t))] = True
                if isinstance(layer, ZipDepthwiseConv2D):
                    mask = np.ones_like(mask[:, :1])
                want = np.where(mask, original.physical_kernel().numpy(), 0)
                np.testing.assert_array_equal(layer.physical_kernel().numpy(), want)
    check_in_place(zipped, compact, xs, str(tmp_path))


@pytest.mark.parametrize("n_models", [2, 3])
@pytest.mark.parametrize("sharing", [0.0, 0.5, 1.0])
def test_compact_tiny_resnets(n_models, sharing, tmp_path):
    models = [tiny_resnet(m + 1) for m in range(n_models)]
    rng = np.random.default_rng(1)
    calibration = tuple(calib(rng, 32, (8, 8, 1)) for _ in models)
    xs = [calib(rng, 6, (8, 8, 1)) for _ in models]
    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=sharing, progress=False, method="mtz")
    compact = check_compact(zipped, xs, str(tmp_path))
    plan = unit_renumbering(zipped)
    # one numbering per residual stream: the stem, b1_conv2 and b2's writers share theirs
    assert plan["stem"]["capacity"] == plan["b1_conv2"]["capacity"] == compact.get_layer("b1_conv1").input_capacity
    assert plan["b2_conv2"]["capacity"] == plan["b2_proj"]["capacity"] == compact.get_layer("head").input_capacity
    if n_models == 2:  # the stem's stream: 4 units per task, round(4 * sharing) of them shared
        assert compact.get_layer("stem").capacity == 8 - round(4 * sharing)
    check_in_place(zipped, compact, xs, str(tmp_path))


@pytest.mark.parametrize("arch", ["lenet_300_100", "resnet20"])
def test_zoo_pairs_compact_to_the_stripped_size(arch, tmp_path):
    """Random weights, sharing 1.0 and 0.5: count_params of the zipped, compact and stripped models."""
    from tfmot_zip.apps.zoo import build_model

    a, b = build_model(arch, name=f"{arch}_a"), build_model(arch, name=f"{arch}_b")
    rng = np.random.default_rng(0)
    calibration = tuple(calib(rng, 48, (28, 28, 1)) for _ in range(2))
    xs = [calib(rng, 4, (28, 28, 1)) for _ in range(2)]
    for sharing in (1.0, 0.5):
        zipped = tfmot_zip.zip_models(a, b, calibration_data=calibration, sharing=sharing, progress=False, method="mtz")
        compact = check_compact(zipped, xs, str(tmp_path))
        stripped = tfmot_zip.strip_zipping(compact).count_params()
        print(f"{arch} sharing {sharing}: zipped {zipped.count_params():,}  compact {compact.count_params():,} "
              f"stripped {stripped:,}  compact/stripped {compact.count_params() / stripped:.3f}")
        assert compact.count_params() == stripped  # the issue asks within 5%, at every sharing


def test_compact_refuses_a_model_still_scheduled_for_zipping_and_accepts_it_once_zipped(rng, tmp_path):
    a, b = mlp(3), mlp(4)
    cal = (calib(rng, 64, (6, 6, 1)), calib(rng, 64, (6, 6, 1)))
    later = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0, schedule=tfmot_zip.OneShotSchedule())
    with pytest.raises(ValueError, match=r"still scheduled for zipping.*ZipCallback"):
        compact_zipped(later)
    later.compile(optimizer=keras.optimizers.SGD(0.0), loss={n: "sparse_categorical_crossentropy" for n in later.output_names})
    sets = [(calib(rng, 32, (6, 6, 1)), rng.integers(0, 3, 32)) for _ in range(2)]
    later.fit(data.multitask(*sets, batch_size=32), steps_per_epoch=1, verbose=0,
              callbacks=[tfmot_zip.ZipCallback(calibration_data=cal)])
    xs = [calib(rng, 5, (6, 6, 1)), calib(rng, 5, (6, 6, 1))]
    compact = check_compact(later, xs, str(tmp_path))
    assert compact.get_layer("fc1").capacity == 16 and not compact.get_layer("fc1").track_hessians  # accumulators dropped


def test_compact_refuses_models_without_zip_layers():
    with pytest.raises(ValueError, match="no zip layers"):
        compact_zipped(mlp(1))


def test_default_capacity_is_the_sum_of_task_widths_and_survives_config():
    layer = ZipDense(task_units=[3, 2], task_input_units=[4, 4], input_capacity=4)
    assert layer.capacity == 5 and layer.get_config()["capacity"] == 5
    small = ZipConv2D(task_units=[3, 2], task_input_units=[4, 4], input_capacity=4, capacity=3, kernel_size=1)
    clone = ZipConv2D.from_config(small.get_config())
    assert clone.capacity == 3 and clone.get_config() == small.get_config()
    clone.build([(None, 5, 5, 4)] * 2)
    assert clone.kernel.shape == (1, 1, 4, 3) and clone.get_maps(1)[1].max() < 3
    config = layer.get_config()
    del config["capacity"]  # a file saved before the argument existed
    assert ZipDense.from_config(config).capacity == 5
    with pytest.raises(ValueError, match=r"capacity.*widest task \(3\).*Received: capacity=2"):
        ZipDense(task_units=[3, 2], task_input_units=[4, 4], input_capacity=4, capacity=2)
    dw = ZipDepthwiseConv2D(task_units=[4, 2], capacity=4)
    assert ZipDepthwiseConv2D.from_config(dw.get_config()).capacity == 4


def test_compact_refuses_maps_pointing_at_units_nobody_writes(rng):
    a, b = mlp(1), mlp(2)
    cal = (calib(rng, 64, (6, 6, 1)), calib(rng, 64, (6, 6, 1)))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=cal, sharing=1.0, progress=False)
    fc1, fc2 = zipped.get_layer("fc1"), zipped.get_layer("fc2")
    dropped = sorted(set(range(fc1.capacity)) - set(fc1.used_units().tolist()))
    in_map = fc2.get_maps(1)[0]
    in_map[0] = dropped[0]  # fc2 now reads a unit of fc1's space that no task of fc1 writes
    fc2.set_maps(1, in_map=in_map)
    with pytest.raises(ValueError, match=rf"'fc2'.*in_map of task 1.*\[{dropped[0]}\].*damaged"):
        compact_zipped(zipped)


def test_zip_models_with_a_training_mode_batchnorm_pass_keeps_no_trace_of_the_uncompacted_layers(rng):
    """``recalibrate_batchnorm="end"`` traces a training-mode pass of the zipped model before it is compacted
    in place; that trace captures the full-capacity kernels. zip_models drops it, so the returned model
    holds (and keeps alive) only its compact variables, and re-estimating afterwards gives the statistics
    a model that never had a trace gets."""
    import gc
    import weakref

    from tfmot_zip.model import batchnorm
    from tfmot_zip.model.compact import compact_in_place as in_place

    a, b = tiny_resnet(1), tiny_resnet(2)
    cal = (calib(rng, 40, (8, 8, 1)), calib(rng, 40, (8, 8, 1)))
    kept = {}

    def spy(model, graph=None):  # the real compaction, watching the variables it replaces
        kept["old"] = [weakref.ref(w) for l in model.layers if isinstance(l, ZIP) for w in l.weights]
        kept["traced"] = model in batchnorm._PASSES
        return in_place(model, graph=graph)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "compact_in_place", spy)
        zipped = tfmot_zip.zip_models(a, b, calibration_data=cal, sharing=1.0, recalibrate_batchnorm="end",
                                      progress=False, method="mtz")
    assert kept["traced"]  # the pass was traced before compaction ...
    assert zipped not in batchnorm._PASSES  # ... and dropped with it
    gc.collect()
    assert all(ref() is None for ref in kept["old"])  # no full-capacity variable is still alive
    reference = compact_zipped(zipped)
    for model in (zipped, reference):
        batchnorm.recalibrate_batchnorm(model, cal)
    for mine, theirs in zip(zipped.weights, reference.weights):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7, err_msg=mine.name)
