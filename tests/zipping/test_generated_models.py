"""Generated architectures (hypothesis): random small Dense/Conv2D/SeparableConv2D models with BatchNorm,
residual adds, pooling, upsampling and cropping, depthwise convolutions, activations and Dropout (BatchNorm and Dropout
sometimes called with ``training=False``), 2-3 models of differing widths. For each: sharing 0
reproduces the originals, ``strip_zipping`` matches the zipped model, save/load is bit-exact and
the input models are left unmodified; for a fifth of the examples (``TFMOT_ZIP_FUZZ_TFLITE_EXAMPLES``),
every TFLite signature of the float export of the stripped model matches Keras.

CI runs ``TFMOT_ZIP_FUZZ_EXAMPLES`` examples (15 by default, 3 of them exported to TFLite);
``benchmarks/fuzz.py --examples 200`` runs more.
"""
import os

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import tfmot_zip
from builders import generated_head
from tfmot_zip.compat import keras
from tfmot_zip.export import ALL_TASKS, ALL_TASKS_SHARED_INPUT, TOLERANCES, export_tflite, tflite_predict, verify_tflite

EXAMPLES = int(os.environ.get("TFMOT_ZIP_FUZZ_EXAMPLES", "15"))
TFLITE_EXAMPLES = int(os.environ.get("TFMOT_ZIP_FUZZ_TFLITE_EXAMPLES", str(max(1, EXAMPLES // 5))))
ACTIVATIONS = ["relu", "tanh", "elu", "linear", "sigmoid"]


@st.composite
def architectures(draw):
    """A spec: input kind, a list of blocks, the number of models and their width offsets."""
    conv = draw(st.booleans())
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        blocks.append({
            "width": draw(st.integers(2, 6)),
            "kernel": draw(st.sampled_from([1, 3])) if conv else None,
            "activation": draw(st.sampled_from(ACTIVATIONS)),
            "bn": draw(st.booleans()),
            "bn_called_in_inference": draw(st.booleans()),
            "dropout": draw(st.sampled_from([None, "plain", "called_in_inference"])),
            "residual": draw(st.booleans()),
            "pool": conv and draw(st.booleans()),
            "depthwise": conv and draw(st.booleans()),
            "depthwise_bias": draw(st.booleans()),
            "separable": conv and draw(st.booleans()),
            "resample": conv and draw(st.booleans()),
        })
    n_models = draw(st.integers(2, 3))
    offsets = [[draw(st.integers(0, 2)) for _ in blocks] for _ in range(n_models)]
    return {
        "conv": conv,
        "channels": draw(st.integers(1, 2)),
        "blocks": blocks,
        "gap": conv and draw(st.booleans()),
        "dense": draw(st.sampled_from([0, 3, 5])),
        "offsets": offsets,
        "sharing": draw(st.sampled_from([0.25, 0.5, 1.0])),
    }


def build(spec, m, seed):
    """Model ``m`` of a spec (widths base + offset; a residual block keeps its input's width)."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    shape = (8, 8, spec["channels"]) if spec["conv"] else (10,)
    x = inp = keras.Input(shape, name="x")
    width = None  # width of the current stream (None: the raw input)
    for k, block in enumerate(spec["blocks"]):
        residual = block["residual"] and width is not None and not block["pool"]
        units = width if residual else block["width"] + spec["offsets"][m][k]
        # zipped as its depthwise and 1x1 convolutions; a 1x1 one (a scaled Conv2D) is not drawn: TensorFlow's
        # oneDNN kernels abort in graph mode on a 1x1 depthwise without bias over 1 channel feeding a 1-filter
        # 1x1 Conv2D (a plain keras SeparableConv2D(1, 1) on a 1-channel input fails the same way), and every
        # later graph of the process then fails too
        if spec["conv"] and block.get("separable") and block["kernel"] > 1:
            y = L.SeparableConv2D(units, block["kernel"], padding="same", name=f"conv{k}")(x)
        elif spec["conv"]:
            y = L.Conv2D(units, block["kernel"], padding="same", name=f"conv{k}")(x)
        else:
            y = L.Dense(units, name=f"dense{k}")(x)
        if block["bn"]:
            bn = L.BatchNormalization(name=f"bn{k}")
            y = bn(y, training=False) if block.get("bn_called_in_inference") else bn(y)
        y = L.Activation(block["activation"], name=f"act{k}")(y)
        if block.get("dropout"):
            dropout = L.Dropout(0.25, name=f"drop{k}")
            y = dropout(y, training=False) if block["dropout"] == "called_in_inference" else dropout(y)
        if block.get("depthwise"):  # follows the pairing of the space it reads
            y = L.DepthwiseConv2D(3, padding="same", use_bias=block["depthwise_bias"], name=f"dw{k}")(y)
        x = L.Add(name=f"add{k}")([x, y]) if residual else y
        if block["pool"]:
            x = L.MaxPooling2D(2, name=f"pool{k}")(x)
        if block.get("resample"):  # size s -> 2s - 1
            x = L.Cropping2D(((1, 0), (0, 1)), name=f"crop{k}")(L.UpSampling2D(2, name=f"up{k}")(x))
        width = units
    return generated_head(inp, x, spec, m, seed)


def check(spec, tmp_dir):
    models = [build(spec, m, seed=10 + m) for m in range(len(spec["offsets"]))]
    before = [[w.numpy().copy() for w in model.weights] for model in models]
    rng = np.random.default_rng(0)
    shape = models[0].input_shape[1:]
    calibration = tuple(rng.random((24,) + shape).astype("float32") for _ in models)
    xs = [rng.random((5,) + shape).astype("float32") for _ in models]

    zero = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=0.0)
    for out, model, x in zip(zero(xs), models, xs):
        np.testing.assert_allclose(out.numpy(), model(x).numpy(), atol=1e-5, err_msg="sharing 0")

    zipped = tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=spec["sharing"])
    outs = [o.numpy() for o in zipped(xs)]
    plain = tfmot_zip.strip_zipping(zipped)
    for z, p in zip(outs, plain(xs)):
        np.testing.assert_allclose(z, p.numpy(), atol=1e-5, err_msg="strip_zipping")
    path = os.path.join(tmp_dir, "generated.keras")
    zipped.save(path)
    loaded = keras.models.load_model(path)
    for z, l in zip(outs, loaded(xs)):
        np.testing.assert_array_equal(z, l.numpy(), err_msg="save/load")

    for model, weights in zip(models, before):
        for w0, w1 in zip(weights, model.weights):
            np.testing.assert_array_equal(w0, w1.numpy(), err_msg=f"{model.name} modified")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TFMOT_ZIP_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=architectures())
def test_generated_architectures(spec, tmp_path):
    keras.backend.clear_session()
    check(spec, str(tmp_path))


def check_tflite(spec):
    """The float TFLite export of the stripped model: every signature agrees with Keras."""
    models = [build(spec, m, seed=20 + m) for m in range(len(spec["offsets"]))]
    rng = np.random.default_rng(1)
    shape = models[0].input_shape[1:]
    calibration = tuple(rng.random((32,) + shape).astype("float32") for _ in models)  # enough for BatchNorm
    xs = [rng.random((6,) + shape).astype("float32") for _ in models]
    plain = tfmot_zip.strip_zipping(tfmot_zip.zip_models(*models, calibration_data=calibration, sharing=spec["sharing"], method="mtz"))  # export only
    data = export_tflite(plain)
    report = verify_tflite(data, plain, xs)  # raises beyond TOLERANCES[None] (1e-5 x output scale)
    tasks = [m.name for m in models]
    assert sorted(report) == sorted(tasks + [ALL_TASKS, ALL_TASKS_SHARED_INPUT])
    for t, (name, x) in enumerate(zip(tasks, xs)):  # and directly, one task's signature against Keras
        np.testing.assert_allclose(tflite_predict(data, name, x)[name], plain(xs)[t].numpy(),
                                   atol=TOLERANCES[None].max_abs, err_msg=f"signature {name!r}")


@settings(max_examples=TFLITE_EXAMPLES, deadline=None, derandomize=not os.environ.get("TFMOT_ZIP_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=architectures())
def test_generated_architectures_tflite_signatures_match_keras(spec):
    keras.backend.clear_session()
    check_tflite(spec)
