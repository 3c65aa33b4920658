"""Zipping the models people ship: nested transfer-learning models (every entry point), MobileNet-style
activations (ReLU(6), TF-op hard-sigmoid), per-task input preprocessing, unit-axis Reshapes, and the
refusal of an already zipped model."""
import numpy as np
import pytest

import tfmot_zip
import tfmot_zip.zipping.callbacks
from tfmot_zip import data, training
from tfmot_zip.cli.errors import EXIT_OK, EXIT_USAGE
from tfmot_zip.cli.parser import main
from tfmot_zip.compat import keras, tf
from tfmot_zip.model.graph import UnsupportedModelError, align_models

from builders import calib, mlp

L = keras.layers
SHAPE = (8, 8, 3)


def hard_sigmoid(x):
    """As tf_keras' MobileNetV3 builds it: two TF-op layers around a ReLU(6)."""
    return L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)


def base_model(seed, width=4, name="base", dropout=True):
    """A small functional feature extractor with BatchNorm, ReLU(6), a TF-op hard-sigmoid and Dropout."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input(SHAPE, name=f"{name}_in")
    x = L.Conv2D(width, 3, padding="same", name="conv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(max_value=6.0, name="relu6")(x)
    x = L.Conv2D(width + 2, 3, padding="same", name="conv2")(x)
    x = hard_sigmoid(x)
    if dropout:
        x = L.Dropout(0.3, name="drop")(x)
    model = keras.Model(inp, x, name=name)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 1.5, w.shape) if i != 1 else rng.normal(size=w.shape) * 0.1
                    for i, w in enumerate(bn.get_weights())])
    return model


def sequential_transfer(seed, classes=3):
    """``Sequential([base, GlobalAveragePooling2D(), Dense(k)])`` as in the Keras guides."""
    base = base_model(seed)
    keras.utils.set_random_seed(seed + 100)
    return keras.Sequential([base, L.GlobalAveragePooling2D(name="gap"), L.Dense(classes, name="head")],
                            name=f"seq{seed}")


def functional_transfer(seed, classes=3, twice_nested=False):
    """A functional model calling ``base(x, training=False)`` (optionally a base nested in a base)."""
    base = base_model(seed)
    if twice_nested:
        inner_in = keras.Input(SHAPE, name="wrap_in")
        base = keras.Model(inner_in, L.Conv2D(5, 1, name="wrap_conv")(base(inner_in)), name="wrapper")
    keras.utils.set_random_seed(seed + 100)
    inputs = keras.Input(SHAPE, name="image")
    x = base(inputs, training=False)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(classes, name="head")(x)
    return keras.Model(inputs, outputs, name=f"fun{seed}")


def outputs_of(model, xs):
    return [o.numpy() for o in model(xs)]


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize("build", [sequential_transfer, functional_transfer,
                                   lambda s: functional_transfer(s, twice_nested=True)])
def test_nested_models_zip_flat_reproduce_at_sharing_0_and_strip_smaller_at_1(rng, build):
    a, b = build(1), build(2)
    before = [weights_of(a), weights_of(b)]
    xs = [calib(rng, 40, SHAPE), calib(rng, 40, SHAPE)]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=0.0)
    assert not any(isinstance(l, keras.Model) for l in zipped.layers)
    for out, original, x in zip(zipped(xs), (a, b), xs):
        np.testing.assert_allclose(out.numpy(), original(x).numpy(), atol=1e-5)
    full = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=1.0)
    names = [l.name for l in tfmot_zip.zip_summary(full).layers]
    assert names[:2] == ["conv1", "conv2"] and names[-1] == "head"  # the inner layers' own names
    stripped = tfmot_zip.strip_zipping(full)
    assert not any(isinstance(l, keras.Model) for l in stripped.layers)
    assert stripped.count_params() < a.count_params() + b.count_params()
    for z, s in zip(full(xs), stripped(xs)):
        np.testing.assert_allclose(z.numpy(), s.numpy(), atol=2e-5)
    for model, weights in zip((a, b), before):  # the user's models are never modified
        assert all(np.array_equal(w, v) for w, v in zip(model.get_weights(), weights))
        assert any(isinstance(l, keras.Model) for l in model.layers)


def test_base_called_with_training_false_stays_in_inference_mode_when_the_zipped_model_trains(rng):
    a, b = functional_transfer(1), functional_transfer(2)
    xs = [calib(rng, 40, SHAPE), calib(rng, 40, SHAPE)]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=0.0, recalibrate_batchnorm=False)
    bns = [l for l in zipped.layers if isinstance(l, L.BatchNormalization)]
    assert len(bns) == 2 and not any(l.trainable for l in bns)
    assert not any(isinstance(l, L.Dropout) for l in zipped.layers)  # never active under training=False
    for out, original, x in zip(zipped(xs, training=True), (a, b), xs):
        np.testing.assert_allclose(out.numpy(), original(x, training=True).numpy(), atol=1e-5)


def test_nested_model_called_twice_is_refused(rng):
    base = base_model(1)
    inputs = keras.Input(SHAPE)
    x = L.Add()([base(inputs), base(inputs)])
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    with pytest.raises(UnsupportedModelError, match="nested model called 2 times .shared weights"):
        tfmot_zip.zip_models(model, model, calibration_data=(calib(rng, 8, SHAPE),) * 2)


def test_scheduled_zipping_of_nested_models_inside_fit(rng):
    a, b = sequential_transfer(1), sequential_transfer(2)
    zipped = tfmot_zip.zip_models(a, b, calibration_data=None, sharing=1.0,
                                  schedule=tfmot_zip.LayerwiseSchedule(calibration_steps=2, retrain_steps=1))
    assert tfmot_zip.zipping.callbacks.pending_layers(zipped) == ["conv1", "conv2"]
    training.compile_multitask(zipped, 1e-3)
    sets = [(calib(rng, 64, SHAPE), rng.integers(0, 3, 64)) for _ in range(2)]
    zipped.fit(data.multitask(*sets, batch_size=16), steps_per_epoch=8, epochs=1, verbose=0,
               callbacks=[tfmot_zip.ZipCallback()])
    assert tfmot_zip.zipping.callbacks.pending_layers(zipped) == []
    assert [l.shared_units for l in tfmot_zip.zip_summary(zipped).layers][:2] == [4, 6]


def test_cli_zips_nested_models_from_keras_files(rng, tmp_path):
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"m{seed}.keras"
        functional_transfer(seed).save(path)
        paths.append(str(path))
    np.savez(tmp_path / "x.npz", x=calib(rng, 16, SHAPE))
    out = tmp_path / "zipped.keras"
    code = main(["zip", *paths, "--calibration", str(tmp_path / "x.npz"), "--sharing", "1.0", "--out", str(out)])
    assert code == EXIT_OK
    loaded = keras.models.load_model(out)
    assert not any(isinstance(l, keras.Model) for l in loaded.layers)
    assert {"conv1", "conv2"} <= {l.name for l in loaded.layers}


def test_align_models_flattens_and_refuses_colliding_names():
    graph = align_models([sequential_transfer(1), sequential_transfer(2)])
    assert [n.name for n in graph.hidden_zip_nodes()] == ["conv1", "conv2"]
    base = base_model(1)
    keras.utils.set_random_seed(0)
    clash = keras.Sequential([base, L.GlobalAveragePooling2D(), L.Dense(3, name="conv1")])
    with pytest.raises(UnsupportedModelError, match="two layers named 'conv1'"):
        align_models([clash, clash])


# --- layers of the shipped applications --------------------------------------------------------
def preprocessed(seed, scale, mean):
    """Rescaling and a per-channel Normalization on the input, then a small CNN (each task its own)."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input(SHAPE, name="image")
    x = L.Rescaling(scale, offset=-0.5, name="rescale")(x)
    x = L.Normalization(axis=-1, mean=mean, variance=[2.0, 0.5, 1.5], name="norm")(x)
    x = L.Conv2D(4, 3, activation="relu", name="conv1")(x)
    x = L.Rescaling(0.5, name="half")(x)  # a scalar Rescaling between zip layers is elementwise
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(6, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name=f"pre{seed}")


def unit_reshapes(seed, width=6):
    """GAP -> Reshape((1, 1, C)) -> 1x1 Conv2D -> Reshape((C',)) -> Dense, as in MobileNet's top."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input(SHAPE, name="image")
    x = L.Conv2D(width, 3, activation="relu", name="conv1")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Reshape((1, 1, width), name="to_map")(x)
    x = L.Conv2D(5, 1, activation="relu", name="conv_1x1")(x)
    x = L.Reshape((5,), name="to_vector")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name=f"reshape{seed}")


def tf_ops(seed):
    """Elementwise TF-op layers of one tensor and a scalar, on both sides."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input(SHAPE, name="image")
    x = L.Conv2D(4, 3, name="conv1")(x)
    x = tf.nn.relu6(x) - 1.0
    x = 2.0 - tf.math.sigmoid(x / 4.0)
    x = L.Flatten(name="flat")(L.Conv2D(4, 3, name="conv2")(tf.nn.silu(x)))
    return keras.Model(inp, L.Dense(3, name="head")(x), name=f"ops{seed}")


@pytest.mark.parametrize("pair", [
    lambda: (preprocessed(1, 1 / 255, [0.1, 0.2, 0.3]), preprocessed(2, 1 / 127.5, [0.0, -0.1, 0.5])),
    lambda: (unit_reshapes(1), unit_reshapes(2, width=8)),
    lambda: (tf_ops(1), tf_ops(2)),
])
def test_application_layers_reproduce_at_sharing_0_and_strip_smaller_at_1(rng, pair):
    a, b = pair()
    xs = [calib(rng, 40, SHAPE), calib(rng, 40, SHAPE)]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=0.0)
    for out, original, x in zip(zipped(xs), (a, b), xs):
        np.testing.assert_allclose(out.numpy(), original(x).numpy(), atol=1e-5)
    full = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=1.0)
    stripped = tfmot_zip.strip_zipping(full)
    assert stripped.count_params() < a.count_params() + b.count_params()
    for z, s in zip(full(xs), stripped(xs)):
        np.testing.assert_allclose(z.numpy(), s.numpy(), atol=2e-5)


def test_relu_max_value_6_is_elementwise(rng):
    def model(seed):
        keras.utils.set_random_seed(seed)
        x = inp = keras.Input(SHAPE)
        x = L.ReLU(max_value=6.0, name="relu6")(L.Conv2D(4, 3, name="conv1")(x))
        return keras.Model(inp, L.Dense(3, name="head")(L.Flatten(name="flat")(x)), name=f"r{seed}")

    a, b = model(1), model(2)
    xs = [calib(rng, 40, SHAPE) * 50, calib(rng, 40, SHAPE) * 50]  # large inputs reach the cap
    zipped = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=0.0)
    for out, original, x in zip(zipped(xs), (a, b), xs):
        np.testing.assert_allclose(out.numpy(), original(x).numpy(), atol=1e-5)


def test_normalization_after_a_zip_layer_is_refused_with_the_fix(rng):
    def model(seed):
        keras.utils.set_random_seed(seed)
        x = inp = keras.Input(SHAPE)
        x = L.Normalization(axis=-1, mean=[0.0] * 4, variance=[1.0] * 4, name="late_norm")(L.Conv2D(4, 3, name="c")(x))
        return keras.Model(inp, L.Dense(3, name="head")(L.Flatten()(L.Conv2D(4, 3, name="c2")(x))), name=f"n{seed}")

    with pytest.raises(UnsupportedModelError, match="'late_norm'.*only as input preprocessing"):
        align_models([model(1), model(2)])


def test_other_tf_ops_are_refused_naming_the_layer_and_the_fix():
    def model(seed):
        keras.utils.set_random_seed(seed)
        x = inp = keras.Input(SHAPE)
        x = tf.math.square(L.Conv2D(4, 3, name="c")(x))
        return keras.Model(inp, L.Dense(3, name="head")(L.Flatten()(L.Conv2D(4, 3, name="c2")(x))), name=f"o{seed}")

    with pytest.raises(UnsupportedModelError, match=r"'tf.math.square(_[0-9]+)?'.*TensorFlow op.*Replace it by a Keras layer"):
        align_models([model(1), model(2)])


def test_an_already_zipped_model_is_refused_up_front(rng, tmp_path):
    a, b = mlp(1), mlp(2)
    xs = (calib(rng, 16, (6, 6, 1)), calib(rng, 16, (6, 6, 1)))
    zipped = tfmot_zip.zip_models(a, b, calibration_data=xs, sharing=0.5)
    with pytest.raises(UnsupportedModelError, match=r"models\[0\] .* is already zipped.*zip the original|Zip the originals"):
        tfmot_zip.zip_models(zipped, mlp(3), calibration_data=xs)
    path = tmp_path / "zipped.keras"
    zipped.save(path)
    mlp(3).save(tmp_path / "c.keras")
    np.savez(tmp_path / "x.npz", x=xs[0])
    code = main(["zip", str(path), str(tmp_path / "c.keras"), "--calibration", str(tmp_path / "x.npz"),
                 "--out", str(tmp_path / "out.keras")])
    assert code == EXIT_USAGE
