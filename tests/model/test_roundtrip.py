"""Save -> load -> predict reproduces outputs exactly; every constructor argument survives the config.

ZipDense and ZipConv2D are built with every constructor argument varied (widths per task, input
capacity, strides, padding, dilation, kernel size, activation, use_bias, initialisers), given
non-trivial weights and maps (shared units, permuted inputs), saved in the three tf_keras
formats and loaded back. Zipped models from ``zip_models`` round-trip too, with their summary
and their stripped form.
"""

import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.compat import keras
from tfmot_zip.model.layers import ZipConv2D, ZipDense

from builders import calib, cnn, mlp

FORMATS = ["keras", "savedmodel", "h5"]
pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")


def save_and_load(model, tmp_path, fmt):
    if fmt == "keras":
        path = tmp_path / "model.keras"
        model.save(path)
    elif fmt == "savedmodel":
        path = tmp_path / "savedmodel"
        model.save(path, save_format="tf")
    else:
        path = tmp_path / "model.h5"
        model.save(path, save_format="h5")
    return keras.models.load_model(path)


def outputs(model, xs):
    out = model(xs if len(model.inputs) > 1 else xs[0], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def scramble(layer, rng):
    """Random physical weights and maps where task 1 shares some of task 0's units and permutes inputs."""
    weights = []
    for w in layer.trainable_weights:
        weights.append(rng.normal(size=w.shape).astype("float32"))
    for w, value in zip(layer.trainable_weights, weights):
        w.assign(value)
    for t in range(layer.num_tasks):
        n_in, n_out = layer.task_input_units[t], layer.task_units[t]
        in_map = rng.choice(layer.input_capacity, size=n_in, replace=False)
        out_map = rng.choice(layer.capacity, size=n_out, replace=False)
        layer.set_maps(t, in_map=in_map, out_map=out_map)
    # Make sure at least one unit is shared between task 0 and task 1.
    _, out0 = layer.get_maps(0)
    _, out1 = layer.get_maps(1)
    if not np.intersect1d(out0, out1).size:
        out1 = out1.copy()
        out1[0] = out0[0]
        layer.set_maps(1, out_map=out1)


def wrap(layer, input_shapes):
    inputs = [keras.Input(shape, name=f"in{t}") for t, shape in enumerate(input_shapes)]
    outs = layer(inputs)
    return keras.Model(inputs, [keras.layers.Activation("linear", name=f"task{t}")(o) for t, o in enumerate(outs)])


DENSE_CASES = [
    dict(task_units=[5, 3], task_input_units=[4, 4], input_capacity=4),
    dict(task_units=[2, 6], task_input_units=[3, 5], input_capacity=7, activation="relu", use_bias=False),
    dict(task_units=[4, 4, 3], task_input_units=[6, 2, 6], input_capacity=6, activation="tanh",
         kernel_initializer="he_normal", bias_initializer="ones"),
    dict(task_units=[1, 1], task_input_units=[1, 1], input_capacity=3, activation="sigmoid",
         kernel_initializer=keras.initializers.RandomUniform(-0.2, 0.3, seed=3)),
]

CONV_CASES = [
    dict(task_units=[4, 3], task_input_units=[2, 2], input_capacity=2, kernel_size=3),
    dict(task_units=[2, 5], task_input_units=[1, 3], input_capacity=3, kernel_size=(2, 3), strides=(2, 1), padding="same",
         activation="relu"),
    dict(task_units=[3, 3], task_input_units=[2, 2], input_capacity=4, kernel_size=3, dilation_rate=2, padding="same",
         use_bias=False, activation="elu"),
    dict(task_units=[2, 2, 4], task_input_units=[2, 1, 2], input_capacity=2, kernel_size=(3, 1), strides=2, padding="valid",
         dilation_rate=1, activation="tanh", kernel_initializer="he_uniform", bias_initializer="ones"),
    dict(task_units=[3, 2], task_input_units=[2, 2], input_capacity=2, kernel_size=2, dilation_rate=(1, 3), use_bias=False),
]


def dense_model(case, rng):
    layer = ZipDense(**case, name="zd")
    model = wrap(layer, [(n,) for n in case["task_input_units"]])
    scramble(layer, rng)
    xs = [rng.normal(size=(3, n)).astype("float32") for n in case["task_input_units"]]
    return model, xs


def conv_model(case, rng):
    layer = ZipConv2D(**case, name="zc")
    model = wrap(layer, [(9, 8, n) for n in case["task_input_units"]])
    scramble(layer, rng)
    xs = [rng.normal(size=(2, 9, 8, n)).astype("float32") for n in case["task_input_units"]]
    return model, xs


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", range(len(DENSE_CASES)))
def test_zip_dense_save_load_predict_is_exact(tmp_path, case, fmt):
    rng = np.random.default_rng(case)
    model, xs = dense_model(DENSE_CASES[case], rng)
    before = outputs(model, xs)
    loaded = save_and_load(model, tmp_path, fmt)
    after = outputs(loaded, xs)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
    layer = loaded.get_layer("zd")
    assert isinstance(layer, ZipDense)
    for t in range(layer.num_tasks):
        for got, want in zip(layer.get_maps(t), model.get_layer("zd").get_maps(t)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_zip_conv2d_save_load_predict_is_exact(tmp_path, case, fmt):
    rng = np.random.default_rng(100 + case)
    model, xs = conv_model(CONV_CASES[case], rng)
    before = outputs(model, xs)
    loaded = save_and_load(model, tmp_path, fmt)
    after = outputs(loaded, xs)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
    assert isinstance(loaded.get_layer("zc"), ZipConv2D)


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_zip_conv2d_task_output_is_the_standard_conv2d_of_its_slice(case):
    """Each task computes exactly what a Keras Conv2D with its kernel slice computes (all arguments)."""
    rng = np.random.default_rng(200 + case)
    config = CONV_CASES[case]
    model, xs = conv_model(config, rng)
    layer = model.get_layer("zc")
    for t, x in enumerate(xs):
        kernel, bias = layer.get_task_weights(t)
        dilation = config.get("dilation_rate", 1)
        strides = config.get("strides", 1)
        if max(np.atleast_1d(dilation)) > 1 and max(np.atleast_1d(strides)) > 1:
            continue  # Keras' Conv2D refuses this combination
        reference = keras.layers.Conv2D(
            config["task_units"][t], config["kernel_size"], strides=strides, padding=config.get("padding", "valid"),
            dilation_rate=dilation, activation=config.get("activation"), use_bias=config.get("use_bias", True),
        )
        reference.build((None, 9, 8, config["task_input_units"][t]))
        reference.set_weights([kernel] + ([bias] if bias is not None else []))
        np.testing.assert_allclose(outputs(model, xs)[t], reference(x).numpy(), rtol=1e-5, atol=1e-5)


def expected_arguments(case, kind):
    """The value every constructor argument must have after a config round trip."""
    pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]  # noqa: E731
    out = {
        "task_units": list(case["task_units"]),
        "task_input_units": list(case["task_input_units"]),
        "input_capacity": case["input_capacity"],
        "use_bias": case.get("use_bias", True),
        "activation": case.get("activation") or "linear",
    }
    if kind == "conv":
        out.update(
            kernel_size=pair(case["kernel_size"]),
            strides=pair(case.get("strides", 1)),
            padding=case.get("padding", "valid"),
            dilation_rate=pair(case.get("dilation_rate", 1)),
        )
    return out


@pytest.mark.parametrize("kind, case", [("dense", i) for i in range(len(DENSE_CASES))] + [("conv", i) for i in range(len(CONV_CASES))])
def test_every_constructor_argument_survives_get_config_from_config(kind, case):
    cls, config = (ZipDense, DENSE_CASES[case]) if kind == "dense" else (ZipConv2D, CONV_CASES[case])
    layer = cls(**config, name="layer_under_test", trainable=False, dtype="float64")
    cfg = layer.get_config()
    clone = cls.from_config(cfg)
    assert clone.get_config() == cfg
    for key, value in expected_arguments(config, kind).items():
        assert cfg[key] == value, key
        got = getattr(clone, key)
        if key == "activation":
            got = keras.activations.serialize(got)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    for key in ("kernel_initializer", "bias_initializer"):
        if key in config:
            expected = keras.initializers.serialize(keras.initializers.get(config[key]))
            assert cfg[key] == expected
            assert keras.initializers.serialize(getattr(clone, key)) == expected
    assert clone.name == "layer_under_test" and clone.trainable is False and clone.dtype == "float64"
    # Through Keras' own (de)serialisation by registered name, no scope needed.
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is cls and restored.get_config() == cfg


def test_registered_names_are_in_the_tfmot_zip_package():
    assert keras.utils.get_registered_name(ZipDense) == "tfmot_zip>ZipDense"
    assert keras.utils.get_registered_name(ZipConv2D) == "tfmot_zip>ZipConv2D"


ZIPPED_CASES = {
    "mlp_half": (lambda: (mlp(1), mlp(2)), dict(sharing=0.5)),
    "mlp_full_greedy": (lambda: (mlp(3), mlp(4, widths=(12, 8))), dict(sharing=1.0, selection="greedy")),
    "cnn_bn_half": (lambda: (cnn(5, bn=True), cnn(6, bn=True)), dict(sharing=0.5)),
    "cnn_single_input": (lambda: (cnn(7), cnn(8)), dict(sharing=1.0, single_input=True)),
    "mlp_three_tasks": (lambda: (mlp(9), mlp(10), mlp(11)), dict(sharing=0.5)),
}


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
@pytest.mark.parametrize("name", list(ZIPPED_CASES))
def test_zipped_model_save_load_predict_summary_and_strip(tmp_path, name, fmt):
    build, kwargs = ZIPPED_CASES[name]
    models = build()
    rng = np.random.default_rng(0)
    shape = models[0].input_shape[1:]
    zipped = tfmot_zip.zip_models(*models, calibration_data=tuple(calib(rng, 40, shape) for _ in models), **kwargs)
    xs = [calib(rng, 5, shape) for _ in zipped.inputs]
    loaded = save_and_load(zipped, tmp_path, fmt)
    for z, l in zip(outputs(zipped, xs), outputs(loaded, xs)):
        np.testing.assert_array_equal(z, l)
    assert loaded.output_names == zipped.output_names
    before, after = tfmot_zip.zip_summary(zipped), tfmot_zip.zip_summary(loaded)
    assert [(l.name, l.widths, l.shared_units, l.params_before, l.params_after, l.is_head) for l in before.layers] == \
           [(l.name, l.widths, l.shared_units, l.params_before, l.params_after, l.is_head) for l in after.layers]
    assert (before.params_original, before.params_zipped) == (after.params_original, after.params_zipped)
    for s, t in zip(outputs(tfmot_zip.strip_zipping(zipped), xs), outputs(tfmot_zip.strip_zipping(loaded), xs)):
        np.testing.assert_array_equal(s, t)


def test_stripped_model_save_load_predict_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    a, b = cnn(12, bn=True), cnn(13, bn=True)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(calib(rng, 40, (10, 10, 1)),) * 2, sharing=0.5)
    plain = tfmot_zip.strip_zipping(zipped)
    loaded = save_and_load(plain, tmp_path, "keras")
    xs = [calib(rng, 4, (10, 10, 1)) for _ in plain.inputs]
    for p, l in zip(outputs(plain, xs), outputs(loaded, xs)):
        np.testing.assert_array_equal(p, l)


def test_loaded_zipped_model_keeps_training_shared_weights_shared(tmp_path):
    """After a round trip, a training step still moves a shared weight once for both tasks."""
    rng = np.random.default_rng(2)
    zipped = tfmot_zip.zip_models(mlp(14), mlp(15), calibration_data=(calib(rng, 40, (6, 6, 1)),) * 2, sharing=1.0)
    loaded = save_and_load(zipped, tmp_path, "keras")
    from tfmot_zip import training

    training.compile_multitask(loaded, 1e-2)
    train = [(calib(rng, 16, (6, 6, 1)), rng.integers(0, 3, 16)) for _ in range(2)]
    training.retrain(loaded, train, steps=2, batch_size=8)
    fc1 = loaded.get_layer("fc1")
    ka, _ = fc1.get_task_weights(0)
    kb, _ = fc1.get_task_weights(1)
    _, out_a = fc1.get_maps(0)
    _, out_b = fc1.get_maps(1)
    common = np.intersect1d(out_a, out_b)
    assert common.size == 16
    ia = [list(out_a).index(u) for u in common]
    ib = [list(out_b).index(u) for u in common]
    np.testing.assert_array_equal(ka[:, ia], kb[:, ib])
    assert not np.array_equal(ka, zipped.get_layer("fc1").get_task_weights(0)[0])


def test_zip_record_stays_out_of_keras_attribute_tracking():
    """A zip layer's record (pairs of thousands of units) is a plain dict, not a tracked one that every
    read of ``layer.weights`` walks element by element; it still travels in the config."""
    rng = np.random.default_rng(0)
    models = (mlp(1), mlp(2))
    zipped = tfmot_zip.zip_models(*models, calibration_data=tuple(calib(rng, 40, models[0].input_shape[1:]) for _ in models),
                                  sharing=0.5)
    layers = [l for l in zipped.layers if isinstance(l, ZipDense) and (l.zip_record or {}).get("pairs")]
    assert layers
    for layer in layers:
        assert type(layer.zip_record) is dict
        assert not any(hasattr(t, "keys") for t in layer._self_tracked_trackables)  # no tracked dict
        layer.zip_record = {**layer.zip_record, "note": [1, 2]}  # a later assignment stays plain too
        assert type(layer.zip_record) is dict and not any(hasattr(t, "keys") for t in layer._self_tracked_trackables)
        assert type(layer).from_config(layer.get_config()).zip_record == layer.zip_record
