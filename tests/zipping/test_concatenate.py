"""Channel concatenations (issue 14): DenseNet-like models zip, each part of a ``Concatenate`` keeping
its own pairing and its consumers reading the parts side by side.

Generated architectures (hypothesis): a conv stem, two dense blocks of BatchNorm-ReLU-Conv2D layers whose
outputs are concatenated to the block's running tensor (nested concatenations), a transition (BatchNorm,
1x1 Conv2D, AveragePooling2D) between them, a final BatchNorm-ReLU, GlobalAveragePooling2D or Flatten,
and a Dense head; widths differ between the models. For each: sharing 0 reproduces the originals,
``strip_zipping`` matches the zipped model (and has fewer parameters at sharing 1.0), save/load and
``extract_task_models`` are exact. Then: identical models zipped fully give the originals back (a wrong
offset in a concatenation's map would not), scheduled zipping equals one-shot zipping, and the refusals.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tfmot_zip
from builders import randomize_batchnorm
from tfmot_zip.compat import keras
from tfmot_zip.model.graph import UnsupportedModelError, align_models
from tfmot_zip.model.layers import zip_layers
from tfmot_zip.model.spaces import trace_spaces

L = keras.layers
EXAMPLES = int(os.environ.get("TFMOT_ZIP_CONCAT_EXAMPLES", "6"))
SHAPE = (8, 8, 2)


@st.composite
def densenets(draw):
    """A spec of a small DenseNet-like model, the number of models and their width offsets."""
    blocks = [
        [{"growth": draw(st.integers(1, 4)), "kernel": draw(st.sampled_from([1, 3])),
          "bottleneck": draw(st.booleans())} for _ in range(draw(st.integers(1, 3)))]
        for _ in range(2)
    ]
    n_models = draw(st.integers(2, 3))
    layers = sum(len(b) for b in blocks) + 2  # dense layers, the stem and the transition
    return {
        "stem": draw(st.integers(2, 5)),
        "blocks": blocks,
        "transition": draw(st.integers(2, 6)),
        "flatten": draw(st.booleans()),
        "offsets": [[draw(st.integers(0, 2)) for _ in range(layers)] for _ in range(n_models)],
        "sharing": draw(st.sampled_from([0.5, 1.0])),
    }


def densenet(spec: dict, m: int, seed: int) -> keras.Model:
    """Model ``m`` of a spec (each layer's width: base + the model's offset for that layer)."""
    keras.utils.set_random_seed(seed)
    offsets = iter(spec["offsets"][m])
    inp = keras.Input(SHAPE, name="x")
    x = L.Conv2D(spec["stem"] + next(offsets), 3, padding="same", name="stem")(inp)
    for b, block in enumerate(spec["blocks"]):
        for k, layer in enumerate(block):
            name = f"b{b}_{k}"
            y = L.ReLU(name=f"{name}_relu")(L.BatchNormalization(name=f"{name}_bn")(x))
            width = layer["growth"] + next(offsets)
            if layer["bottleneck"]:
                y = L.Conv2D(2 * width, 1, use_bias=False, name=f"{name}_1_conv")(y)
                y = L.ReLU(name=f"{name}_1_relu")(L.BatchNormalization(name=f"{name}_1_bn")(y))
            y = L.Conv2D(width, layer["kernel"], padding="same", name=f"{name}_conv")(y)
            x = L.Concatenate(name=f"{name}_concat")([x, y])
        if b == 0:
            x = L.BatchNormalization(name="t_bn")(x)
            x = L.Conv2D(spec["transition"] + next(offsets), 1, activation="relu", name="t_conv")(x)
            x = L.AveragePooling2D(2, name="t_pool")(x)
    x = L.ReLU(name="final_relu")(L.BatchNormalization(name="final_bn")(x))
    x = L.Flatten(name="flat")(x) if spec["flatten"] else L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(3, name="head")(x)
    model = keras.Model(inp, out, name=f"dense{m}")
    return randomize_batchnorm(model, seed)


BASE = {
    "stem": 4, "blocks": [[{"growth": 3, "kernel": 3, "bottleneck": True}, {"growth": 2, "kernel": 3, "bottleneck": False}],
                          [{"growth": 3, "kernel": 1, "bottleneck": False}, {"growth": 2, "kernel": 3, "bottleneck": True}]],
    "transition": 5, "flatten": False, "offsets": [[0] * 6, [1, 0, 2, 1, 0, 1]], "sharing": 1.0,
}


def data(n_models: int, n: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    return tuple(rng.random((n,) + SHAPE).astype("float32") for _ in range(n_models))


def assert_outputs(actual, expected, atol, what):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, err_msg=what)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TFMOT_ZIP_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=densenets())
def test_generated_densenets_zip_strip_and_reload(spec, tmp_path):
    models = [densenet(spec, m, seed=10 + m) for m in range(len(spec["offsets"]))]
    calibration = data(len(models), 32)
    xs = list(data(len(models), 5, seed=1))
    zero = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=0.0)
    assert_outputs(zero(xs), [m(x) for m, x in zip(models, xs)], 1e-5, "sharing 0")

    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=spec["sharing"])
    outs = [o.numpy() for o in zipped(xs)]
    assert any(layer.zip_record["shared"] > 0 for layer in zip_layers(zipped))
    plain = tfmot_zip.strip_zipping(zipped)
    assert_outputs(plain(xs), outs, 1e-5, "strip_zipping")
    assert not any(isinstance(l, tuple(type(z) for z in zip_layers(zipped))) for l in plain.layers)
    if spec["sharing"] == 1.0:  # every layer shares units: each used weight cell stored once
        assert plain.count_params() == stored_once(zipped)
        assert plain.count_params() < sum(m.count_params() for m in models)
    for task_model, x, out in zip(tfmot_zip.extract_task_models(zipped), xs, outs):
        np.testing.assert_allclose(task_model(x).numpy(), out, atol=1e-6, err_msg="extract_task_models")
    path = str(tmp_path / "densenet.keras")
    zipped.save(path)
    loaded = keras.models.load_model(path)
    for z, l in zip(outs, loaded(xs)):
        np.testing.assert_array_equal(z, l.numpy(), err_msg="save/load")


def test_concatenation_map_is_the_parts_side_by_side():
    """The 1x1 conv after the second dense layer reads [stem | b0_0 | b0_1] with the parts' offsets."""
    models = [densenet(BASE, m, seed=m) for m in range(2)]
    graph = align_models(models)
    features, spaces = trace_spaces(graph)
    by_name = {n.name: n for n in graph.nodes}
    concat = features[by_name["b0_1_concat"].index]
    writers = ["stem", "b0_0_conv", "b0_1_conv"]
    assert [graph.nodes[spaces[s].writers[0]].name for s in concat.space_ids] == writers
    widths = [[4, 3, 2], [4 + 1, 3 + 0, 2 + 2]]  # stem and growths, plus the second model's offsets
    capacities = [a + b for a, b in zip(*widths)]
    assert concat.capacity(spaces) == sum(capacities)
    offsets = np.cumsum([0] + capacities[:-1])
    expected = np.concatenate([offsets[p] + widths[0][p] + np.arange(widths[1][p]) for p in range(3)])
    np.testing.assert_array_equal(concat.in_map(spaces, 1), expected)  # task 1 owns the upper units of each part
    assert concat.task_width(spaces, 1) == sum(widths[1])


@pytest.mark.parametrize("flatten", [False, True])
def test_identical_models_fully_shared_give_the_originals_back(flatten):
    """Zipping a model with itself pairs every neuron with its twin at zero cost and changes nothing:
    a consumer of a concatenation (or of its Flatten) re-indexed with wrong offsets would compute
    something else."""
    model = densenet({**BASE, "offsets": [[0] * 6], "flatten": flatten}, 0, seed=5)
    calibration = data(1, 48)[0]
    zipped = tfmot_zip.zip_models(model, model, calibration_data=(calibration, calibration), sharing=1.0,
                                  recalibrate_batchnorm=False)
    x = data(1, 6, seed=2)[0]
    assert_outputs(zipped([x, x]), [model(x), model(x)], 1e-4, "identical models")
    for layer in zip_layers(zipped):
        if layer.name != "head":
            assert layer.zip_record["shared"] == layer.task_units[0], layer.name
    plain = tfmot_zip.strip_zipping(zipped)
    assert_outputs(plain([x, x]), [model(x), model(x)], 1e-4, "stripped identical models")
    head = model.get_layer("head").count_params()
    batchnorm = sum(l.count_params() for l in model.layers if isinstance(l, L.BatchNormalization))
    # Every hidden weight stored once; heads and BatchNorm stay per task.
    assert plain.count_params() == 2 * model.count_params() - (model.count_params() - head - batchnorm)


def stored_once(zipped) -> int:
    """Parameters of a zipped model with every physical weight cell some task uses counted once
    (per-task layers such as BatchNorm counted per task): what ``strip_zipping`` must store."""
    total = sum(l.count_params() for l in zipped.layers if l not in zip_layers(zipped))
    for layer in zip_layers(zipped):
        used = np.zeros((layer.input_capacity, layer.capacity), bool)
        for t in range(layer.num_tasks):
            in_map, out_map = layer.get_maps(t)
            used[np.ix_(in_map, out_map)] = True
        positions = int(np.prod(layer.kernel_size)) if hasattr(layer, "kernel_size") else 1
        total += int(used.sum()) * positions + (len(layer.used_units()) if layer.use_bias else 0)
    return total


def test_fully_shared_strip_stores_each_parts_weights_once():
    models = [densenet(BASE, m, seed=m) for m in range(2)]
    zipped = tfmot_zip.zip_models(*models, calibration_data=data(2, 32), sharing=1.0)
    plain = tfmot_zip.strip_zipping(zipped)
    names = [l.name for l in plain.layers]
    # The last dense layer's bottleneck reads the transition and the first layer of the second block, shared.
    assert {"b1_1_1_conv_p0_shared_to_shared", "b1_1_1_conv_p1_shared_to_shared"} <= set(names), names
    assert plain.count_params() == stored_once(zipped)
    assert plain.count_params() < sum(m.count_params() for m in models)


def test_scheduled_zipping_equals_one_shot():
    models = [densenet(BASE, m, seed=m) for m in range(2)]
    calibration = data(2, 32)
    one_shot = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=0.5, recalibrate_batchnorm=False, method="mtz")
    schedule = tfmot_zip.LayerwiseSchedule(calibration_steps=1, retrain_steps=1)
    model = tfmot_zip.zip_models(*models, calibration_data=None, sharing=0.5, schedule=schedule,
                                 recalibrate_batchnorm=False)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss={n: "sparse_categorical_crossentropy" for n in model.output_names})
    rng = np.random.default_rng(4)
    sets = [(x, rng.integers(0, 3, len(x))) for x in data(2, 32, seed=3)]
    ds = tfmot_zip.data.multitask(*sets, batch_size=16, shuffle=False).repeat().take(24)
    model.fit(ds, epochs=1, verbose=0, callbacks=[tfmot_zip.ZipCallback(calibration_data=calibration)])
    assert tfmot_zip.zipping.callbacks.pending_layers(model) == []
    xs = list(data(2, 4, seed=6))
    assert_outputs(model(xs), one_shot(xs), 1e-4, "scheduled vs one-shot")


def _stem(inp, width=3):
    return L.Conv2D(width, 3, padding="same", name="stem")(inp)


def _refused(build, *patterns):
    models = [build(), build()]
    x = data(1, 8)[0]
    with pytest.raises(UnsupportedModelError) as info:
        tfmot_zip.zip_models(*models, calibration_data=(x, x), sharing=0.5)
    for pattern in patterns:
        assert pattern in str(info.value), str(info.value)


def _model(body):
    inp = keras.Input(SHAPE)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="gap")(body(inp)))
    return keras.Model(inp, out)


def test_concat_on_a_spatial_axis_is_refused():
    def body(inp):
        x = _stem(inp)
        return L.Concatenate(axis=1, name="cat")([x, L.Conv2D(3, 1, name="c")(x)])
    _refused(lambda: _model(body), "'cat'", "axis=1", "axis=-1")


def test_concat_of_a_raw_input_is_refused():
    def body(inp):
        return L.Conv2D(4, 1, name="c")(L.Concatenate(name="cat")([inp, _stem(inp)]))
    _refused(lambda: _model(body), "'cat'", "raw model input", "Put a Conv2D/Dense layer")


def test_concat_feeding_an_add_is_refused():
    def body(inp):
        x = _stem(inp, 4)
        cat = L.Concatenate(name="cat")([L.Conv2D(2, 1, name="c1")(x), L.Conv2D(2, 1, name="c2")(x)])
        return L.Add(name="plus")([x, L.ReLU(name="r")(cat)])
    _refused(lambda: _model(body), "'plus'", "Concatenate", "before concatenating")


def test_concat_feeding_a_multiply_is_refused():
    def body(inp):
        x = _stem(inp, 4)
        cat = L.Concatenate(name="cat")([L.Conv2D(2, 1, name="c1")(x), L.Conv2D(2, 1, name="c2")(x)])
        return L.Multiply(name="times")([cat, x])
    _refused(lambda: _model(body), "'times'", "Concatenate")


def test_depthwise_over_a_concat_is_refused():
    def body(inp):
        x = _stem(inp)
        cat = L.Concatenate(name="cat")([x, L.Conv2D(2, 1, name="c")(x)])
        return L.DepthwiseConv2D(3, padding="same", name="dw")(cat)
    _refused(lambda: _model(body), "'dw'", "Concatenate", "1x1 Conv2D")


def test_concat_of_flattened_tensors_is_refused():
    def build():
        inp = keras.Input(SHAPE)
        x = _stem(inp)
        y = L.Conv2D(2, 1, name="c")(x)
        cat = L.Concatenate(name="cat")([L.Flatten(name="f1")(x), L.Flatten(name="f2")(y)])
        return keras.Model(inp, L.Dense(2, name="head")(cat))
    _refused(build, "'cat'", "flattened", "before the Flatten")
