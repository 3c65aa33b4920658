"""Hardening: every public entry point rejects bad input with a clear error before any work, never
modifies its inputs, writes outputs atomically, and is deterministic for a given seed.

Extends tests/test_bad_input.py (which covers the basic zip_models cases). "Before any work" is
checked, not assumed: the functions that do the work are replaced by ones that raise
``WorkStarted``, so a check that comes too late fails the test.

The section "bugs found by these tests" holds the cases that first failed here and were fixed
in the library.
"""
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfmot_zip
from tfmot_zip import training
from tfmot_zip.compat import keras, tf
from tfmot_zip.core import SingularHessianError
from tfmot_zip.model.graph import UnsupportedModelError

from builders import calib, cnn, mlp

ROOT = Path(__file__).resolve().parents[2]


class WorkStarted(AssertionError):
    """Raised by the patched work functions: validation came too late."""


def _boom(*args, **kwargs):
    raise WorkStarted("the work started before the arguments were validated")


@pytest.fixture
def no_work(monkeypatch):
    """zip_models may validate, but building the zipped model or zipping it fails the test."""
    import tfmot_zip.zipping.api as zip_api

    monkeypatch.setattr(zip_api, "build_zipped_model", _boom)
    monkeypatch.setattr(zip_api, "Zipper", _boom)


def snapshot(model):
    return {
        "config": model.get_config(),
        "weights": [w.numpy().copy() for w in model.weights],
        "names": [w.name for w in model.weights],
        "trainable": [l.trainable for l in model.layers],
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["config"] == before["config"]
    assert after["names"] == before["names"]
    assert after["trainable"] == before["trainable"]
    for x, y in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(x, y)


def keras3_model():
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3."):
        pytest.skip("the keras package is not Keras 3 here")
    return keras3.Sequential([keras3.Input((6, 6, 1)), keras3.layers.Flatten(), keras3.layers.Dense(3)])


def keras3_conv1d_model():
    """A Keras 3 model with a layer the converter refuses (Conv1D named 'temporal')."""
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3."):
        pytest.skip("the keras package is not Keras 3 here")
    return keras3.Sequential([keras3.Input((6, 6, 1)), keras3.layers.Reshape((36, 1)),
                              keras3.layers.Conv1D(2, 3, name="temporal"), keras3.layers.Flatten(), keras3.layers.Dense(3)])


def subclassed():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(self.flat(x))

    net = Net()
    net(np.zeros((1, 6, 6, 1), "float32"))
    return net


def functional(body, name, input_shape=(6, 6, 1)):
    inp = keras.Input(input_shape)
    return keras.Model(inp, body(inp), name=name)


def grouped_conv(seed):
    keras.utils.set_random_seed(seed)
    return functional(lambda x: keras.layers.Dense(3, name="head")(keras.layers.Flatten()(
        keras.layers.Conv2D(4, 3, groups=2, name="conv")(keras.layers.Conv2D(4, 1, name="pre")(x)))), f"g{seed}")


def hidden_softmax(seed):
    keras.utils.set_random_seed(seed)
    return functional(lambda x: keras.layers.Dense(3, name="head")(keras.layers.Dense(8, activation="softmax", name="fc1")(
        keras.layers.Flatten()(x))), f"s{seed}")


def shared_layer(seed):
    keras.utils.set_random_seed(seed)
    dense = keras.layers.Dense(36, activation="relu", name="twice")

    def body(x):
        h = keras.layers.Flatten()(x)
        return keras.layers.Dense(3, name="head")(dense(dense(h)))

    return functional(body, f"t{seed}")


def two_outputs(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Dense(8, activation="relu", name="fc1")(keras.layers.Flatten()(inp))
    return keras.Model(inp, [keras.layers.Dense(3, name="head_a")(h), keras.layers.Dense(2, name="head_b")(h)], name=f"o{seed}")


def unbuilt(seed):
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3, name="head")], name=f"u{seed}")


def residual(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1))
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inp)
    body = keras.layers.Conv2D(4, 3, padding="same", name="c1")(keras.layers.ReLU(name="r0")(stem))
    x = keras.layers.ReLU(name="r1")(keras.layers.Add(name="add")([stem, body]))
    out = keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="flat")(x))
    return keras.Model(inp, out, name=f"res{seed}")


def with_bad_weight(model, layer_name, index, value):
    layer = model.get_layer(layer_name)
    weights = layer.get_weights()
    weights[index].flat[0] = value
    layer.set_weights(weights)
    return model


def ds_of_dicts(x):
    return tf.data.Dataset.from_tensor_slices({"image": x})


X = np.random.default_rng(0).random((12, 6, 6, 1)).astype("float32")

# (id, models factory, keyword arguments, exception type, message pattern)
ZIP_CASES = [
    ("keras3 model second, unconvertible", lambda: (mlp(1), keras3_conv1d_model()), {}, UnsupportedModelError, r"'temporal' \(Conv1D\)"),
    ("subclassed model second", lambda: (mlp(1), subclassed()), {}, UnsupportedModelError, "subclassed.*functional"),
    ("numpy array as model", lambda: (mlp(1), X), {}, TypeError, r"models\[1\] must be a tf_keras.Model"),
    ("one model", lambda: (mlp(1),), {"calibration_data": (X,)}, ValueError, "at least two"),
    ("no model", lambda: (), {"calibration_data": ()}, ValueError, "at least two"),
    ("different input shapes", lambda: (mlp(1), mlp(2, input_shape=(5, 5, 1))), {}, UnsupportedModelError, "different input shapes"),
    ("two outputs", lambda: (two_outputs(1), two_outputs(2)), {}, UnsupportedModelError, "one input and one output"),
    ("grouped convolution", lambda: (grouped_conv(1), grouped_conv(2)), {}, UnsupportedModelError, "'conv'.*grouped"),
    ("hidden softmax", lambda: (hidden_softmax(1), hidden_softmax(2)), {}, UnsupportedModelError, "'fc1'.*softmax"),
    ("layer called twice", lambda: (shared_layer(1), shared_layer(2)), {}, UnsupportedModelError, "'twice'.*called 2 times"),
    ("NaN bias", lambda: (mlp(1), with_bad_weight(mlp(2), "fc2", 1, np.nan)), {}, ValueError, "'mlp2' has NaN or inf.*fc2/bias"),
    ("inf BatchNorm variance", lambda: (cnn(1, bn=True), with_bad_weight(cnn(2, bn=True), "bn1", 3, np.inf)),
     {"calibration_data": (calib(np.random.default_rng(1), 4, (10, 10, 1)),) * 2}, ValueError, "NaN or inf.*moving_variance"),
    ("inf calibration", lambda: (mlp(1), mlp(2)), {"calibration_data": (X, np.where(X > 0.5, np.inf, X))}, ValueError,
     r"calibration_data\[1\] contains NaN or inf"),
    ("calibration of wrong rank", lambda: (mlp(1), mlp(2)), {"calibration_data": (X[..., 0], X)}, ValueError,
     r"calibration_data\[0\] has samples of shape \(6, 6\).*\(6, 6, 1\)"),
    ("calibration dict", lambda: (mlp(1), mlp(2)), {"calibration_data": ({"x": X}, X)}, ValueError, r"calibration_data\[0\].*dict"),
    ("calibration dataset of dicts", lambda: (mlp(1), mlp(2)), {"calibration_data": (ds_of_dicts(X), X)}, ValueError,
     r"calibration_data\[0\].*dataset of dicts"),
    ("empty calibration dataset", lambda: (mlp(1), mlp(2)), {"calibration_data": (X, tf.data.Dataset.from_tensor_slices(X[:0]))},
     ValueError, r"calibration_data\[1\].*empty"),
    ("calibration not a tuple", lambda: (mlp(1), mlp(2)), {"calibration_data": X}, ValueError, "one entry per model"),
    ("calibration strings", lambda: (mlp(1), mlp(2)), {"calibration_data": ("a.npz", "b.npz")}, ValueError, "scalar"),
    ("sharing NaN", lambda: (mlp(1), mlp(2)), {"sharing": float("nan")}, ValueError, "sharing=nan"),
    ("sharing inf", lambda: (mlp(1), mlp(2)), {"sharing": float("inf")}, ValueError, "sharing=inf"),
    ("sharing None", lambda: (mlp(1), mlp(2)), {"sharing": None}, ValueError, "sharing=None"),
    ("sharing dict negative", lambda: (mlp(1), mlp(2)), {"sharing": {"fc1": -0.5}}, ValueError, r"sharing\['fc1'\]=-0.5"),
    ("sharing dict string", lambda: (mlp(1), mlp(2)), {"sharing": {"fc2": "all"}}, ValueError, r"sharing\['fc2'\]='all'"),
    ("residual stream with two fractions", lambda: (residual(1), residual(2)), {"sharing": {"stem": 0.5, "c1": 1.0}}, ValueError,
     "one residual stream"),
    ("damping negative", lambda: (mlp(1), mlp(2)), {"damping": -1e-4}, ValueError, "damping=-0.0001"),
    ("damping NaN", lambda: (mlp(1), mlp(2)), {"damping": float("nan")}, ValueError, "damping=nan"),
    ("damping string", lambda: (mlp(1), mlp(2)), {"damping": "1e-4"}, ValueError, "damping='1e-4'"),
    ("calibration_samples zero", lambda: (mlp(1), mlp(2)), {"calibration_samples": 0}, ValueError, "calibration_samples"),
    ("calibration_samples float", lambda: (mlp(1), mlp(2)), {"calibration_samples": 2.5}, ValueError, "calibration_samples"),
    ("unknown merged_hessian", lambda: (mlp(1), mlp(2), mlp(3)), {"merged_hessian": "mean", "calibration_data": (X, X, X)},
     ValueError, "merged_hessian 'mean'"),
    ("too few task names", lambda: (mlp(1), mlp(2)), {"task_names": ["only_one"]}, ValueError, "task_names needs 2 names"),
]


@pytest.mark.parametrize("case", ZIP_CASES, ids=[c[0] for c in ZIP_CASES])
def test_zip_models_rejects_bad_input_before_any_work(no_work, case):
    _, factory, kwargs, error, pattern = case
    models = factory()
    kwargs = {"calibration_data": (X, X), **kwargs}
    before = [snapshot(m) for m in models if isinstance(m, keras.Model) and m.built and not isinstance(m, np.ndarray)]
    with pytest.raises(error, match=pattern):
        tfmot_zip.zip_models(*models, **kwargs)
    for model, snap in zip([m for m in models if isinstance(m, keras.Model) and m.built], before):
        assert_unchanged(model, snap)


# --- bugs found by these tests (now fixed in the library) ----------------------------------------

# (id, zip_models keyword arguments for mlp(1) and mlp(2), exception types, message pattern).
# Registry for docs/BAD_INPUTS.md (rows marked fixed).
FIXED_ZIP_CASES = [
    ("seed='abc'", dict(seed="abc"), (ValueError, TypeError), "seed"),
    ("seed=-1", dict(seed=-1), (ValueError, TypeError), "seed"),
    ("seed=1.5", dict(seed=1.5), (ValueError, TypeError), "seed"),
    ("damping=True", dict(damping=True), ValueError, "damping=True"),
    ("calibration_samples=True", dict(calibration_samples=True), ValueError, "calibration_samples=True"),
    ("task_names=['head', 'b'] (collides with a layer)", dict(task_names=["head", "b"]), ValueError, "task_names"),
]
FIXED = {case[0]: case for case in FIXED_ZIP_CASES}


def assert_refused_before_work(case):
    _, kwargs, error, pattern = case
    with pytest.raises(error, match=pattern):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(X, X), **kwargs)


@pytest.mark.parametrize("case", [c for c in FIXED_ZIP_CASES if "seed" in c[1]], ids=lambda c: c[0])
def test_zip_models_validates_seed_before_work(no_work, case):
    assert_refused_before_work(case)


def test_zip_models_rejects_boolean_damping(no_work):
    assert_refused_before_work(FIXED["damping=True"])


def test_zip_models_rejects_boolean_calibration_samples(no_work):
    assert_refused_before_work(FIXED["calibration_samples=True"])


def test_zip_models_rejects_task_names_that_collide_with_layer_names(no_work):
    assert_refused_before_work(FIXED["task_names=['head', 'b'] (collides with a layer)"])




def test_unbuilt_sequential_gets_the_build_it_first_error(no_work):
    with pytest.raises(UnsupportedModelError, match="build it first"):
        tfmot_zip.zip_models(unbuilt(1), unbuilt(2), calibration_data=(X, X))


class _ReadTooFar(RuntimeError):
    pass
def test_infinite_calibration_dataset_without_a_limit_is_refused(no_work, monkeypatch):
    original = tf.data.Dataset.as_numpy_iterator

    def guarded(self):
        for count, element in enumerate(original(self)):
            if count >= 200:  # raised in this thread, not inside a TensorFlow callback
                raise _ReadTooFar("read 200 elements of an infinite dataset")
            yield element

    monkeypatch.setattr(tf.data.Dataset, "as_numpy_iterator", guarded)
    infinite = tf.data.Dataset.from_tensor_slices(X).repeat()
    assert int(infinite.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
    with pytest.raises(ValueError, match="infinite"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(X, infinite), calibration_samples=None)
def test_zipped_file_loads_after_plain_import_tfmot_zip(tmp_path):
    zipped = tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(X, X), sharing=0.5)
    path = tmp_path / "zipped.keras"
    zipped.save(path)
    code = (
        "import tfmot_zip\n"
        "from tfmot_zip.compat import keras\n"
        f"model = keras.models.load_model({str(path)!r})\n"
        "print(type(model.get_layer('fc1')).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ZipDense")


@pytest.fixture
def zipped_pair():
    rng = np.random.default_rng(3)
    return tfmot_zip.zip_models(mlp(21), mlp(22), calibration_data=(calib(rng, 40, (6, 6, 1)),) * 2, sharing=0.5)


def trainset(rng, n=32, classes=3):
    return calib(rng, n, (6, 6, 1)), rng.integers(0, classes, n)
def test_retrain_checks_one_train_set_per_task(zipped_pair, monkeypatch):
    rng = np.random.default_rng(4)
    monkeypatch.setattr(type(zipped_pair), "fit", _boom)
    with pytest.raises(ValueError, match="one .* per task"):
        training.retrain(zipped_pair, [trainset(rng)], steps=1, batch_size=8)
def test_retrain_checks_label_range_before_training(zipped_pair, monkeypatch):
    rng = np.random.default_rng(5)
    monkeypatch.setattr(type(zipped_pair), "fit", _boom)
    x, _ = trainset(rng)
    with pytest.raises(ValueError, match="label"):
        training.retrain(zipped_pair, [(x, np.full(32, 7)), trainset(rng)], steps=1, batch_size=8)
def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    from tfmot_zip.io import atomic_write_bytes

    umask = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "x.bin", b"abc")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --- singular Hessians ----------------------------------------------------------------------


def dead_pixel_data(seed, n=30):
    x = np.random.default_rng(seed).random((n, 6, 6, 1)).astype("float32")
    x[:, :2] = 0.0  # two dead rows of pixels: zero rows and columns of the first layer's Hessian
    return x


def test_undamped_singular_hessian_raises_a_clear_error_and_leaves_models_alone():
    a, b = mlp(31), mlp(32)
    before = [snapshot(a), snapshot(b)]
    with pytest.raises(SingularHessianError, match=r"singular even with damping=0\.0; increase damping \(e\.g\. 0\.001\)"):
        tfmot_zip.zip_models(a, b, calibration_data=(dead_pixel_data(1), dead_pixel_data(2)), damping=0.0)
    assert issubclass(SingularHessianError, ValueError)  # the CLI maps it to exit code 2
    assert_unchanged(a, before[0])
    assert_unchanged(b, before[1])


def test_the_suggested_damping_fixes_it():
    data = (dead_pixel_data(1), dead_pixel_data(2))
    zipped = tfmot_zip.zip_models(mlp(31), mlp(32), calibration_data=data, damping=1e-3)
    assert tfmot_zip.zip_summary(zipped).layers[0].shared_units == 16


def test_baselines_need_no_hessian_so_no_damping():
    data = (dead_pixel_data(1), dead_pixel_data(2))
    zipped = tfmot_zip.zip_models(mlp(31), mlp(32), calibration_data=data, damping=0.0, method="euclidean")
    assert all(np.all(np.isfinite(w.numpy())) for w in zipped.weights)
def test_singular_hessian_error_names_the_layer():
    with pytest.raises(SingularHessianError, match="fc1"):
        tfmot_zip.zip_models(mlp(31), mlp(32), calibration_data=(dead_pixel_data(1), dead_pixel_data(2)), damping=0.0)


# --- the other entry points -----------------------------------------------------------------


def test_strip_and_summary_reject_non_zipped_input():
    with pytest.warns(UserWarning, match="converted Keras 3"), pytest.raises(ValueError, match="no zip layers"):
        tfmot_zip.strip_zipping(keras3_model())
    with pytest.raises(TypeError, match="tf_keras.Model"):
        tfmot_zip.strip_zipping("zipped.keras")
    with pytest.warns(UserWarning, match="converted Keras 3"), pytest.raises(ValueError, match="no zip layers"):
        tfmot_zip.zip_summary(keras3_model())
    with pytest.raises(ValueError, match="no zip layers"):
        tfmot_zip.zip_summary(mlp(1))
    with pytest.raises(ValueError, match="no zip layers"):
        tfmot_zip.strip_zipping(tfmot_zip.strip_zipping(tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(X, X))))


REPORT_CASES = [
    ("accuracy wrong length", dict(accuracy_before=[90.0]), ValueError, r"accuracy_before\['original'\] has 1 values but the model has 2 tasks"),
    ("accuracy above 100", dict(accuracy_after=[90.0, 101.0]), ValueError, "within 0..100"),
    ("accuracy NaN", dict(accuracy_after=[90.0, float("nan")]), ValueError, "finite"),
    ("accuracy as strings", dict(accuracy_after=["90", "91"]), ValueError, "accuracy_after"),
    ("accuracy as one number", dict(accuracy_after=90.0), TypeError, "one accuracy per task"),
    ("accuracy booleans", dict(accuracy_before=[True, False]), ValueError, "accuracy_before"),
    ("same labels before and after", dict(accuracy_before={"x": [1, 2]}, accuracy_after={"x": [1, 2]}), ValueError, "same labels"),
    ("sizes negative", dict(sizes={"zipped": -1}), ValueError, r"sizes\['zipped'\]=-1"),
    ("sizes NaN", dict(sizes={"zipped": float("nan")}), ValueError, "sizes"),
    ("sizes not a mapping", dict(sizes=[1, 2]), TypeError, "mapping"),
]


@pytest.mark.parametrize("case", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_write_zip_report_validates_before_writing(zipped_pair, tmp_path, case):
    from tfmot_zip.report.zip_report import write_zip_report

    _, kwargs, error, pattern = case
    out = tmp_path / "report"
    with pytest.raises(error, match=pattern):
        write_zip_report(zipped_pair, out, **kwargs)
    assert not out.exists()


def test_write_zip_report_rejects_plain_models_and_unwritable_folders(zipped_pair, tmp_path):
    from tfmot_zip.report.zip_report import write_zip_report

    with pytest.raises(ValueError, match="no zip layers"):
        write_zip_report(mlp(1), tmp_path / "r1")
    assert not (tmp_path / "r1").exists()
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="Cannot create output folder"):
        write_zip_report(zipped_pair, blocker / "report")


def test_training_helpers_validate_arguments(zipped_pair, monkeypatch):
    monkeypatch.setattr(type(zipped_pair), "fit", _boom)
    rng = np.random.default_rng(6)
    for lr in (0.0, -1e-3, float("nan"), "1e-4"):
        with pytest.raises(ValueError, match="learning_rate"):
            training.compile_multitask(zipped_pair, lr)
    for steps in (-1, 2.5, "10"):
        with pytest.raises(ValueError, match="steps"):
            training.retrain(zipped_pair, [trainset(rng), trainset(rng)], steps=steps)
    with pytest.raises(ValueError, match="fewer than batch_size=128"):
        training.retrain(zipped_pair, [trainset(rng), trainset(rng)], steps=1, batch_size=128)


@pytest.fixture
def export_module():
    from tfmot_zip import export

    return export


@pytest.fixture
def no_conversion(monkeypatch):
    monkeypatch.setattr(tf.saved_model, "save", _boom)
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", staticmethod(_boom))


def test_export_tflite_validates_before_converting(zipped_pair, tmp_path, export_module, no_conversion):
    plain = tfmot_zip.strip_zipping(zipped_pair)
    export = export_module.export_tflite
    with pytest.raises(ValueError, match="quantize='int4'"):
        export(plain, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match="representative_data"):
        export(plain, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match="strip_zipping"):
        export(zipped_pair, tmp_path / "m.tflite")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OSError):
        export(plain, blocker / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


# --- inputs are never modified ------------------------------------------------------------------

UNTOUCHED_CASES = {
    "mtz hungarian": dict(),
    "mtz greedy": dict(selection="greedy"),
    "random": dict(method="random"),
    "euclidean": dict(method="euclidean"),
    "activation": dict(method="activation"),
    "single input": dict(single_input=True),
}


@pytest.mark.parametrize("name", list(UNTOUCHED_CASES))
def test_zip_models_never_modifies_models_or_calibration_data(name):
    kwargs = UNTOUCHED_CASES[name]
    a, b = cnn(41, bn=True), cnn(42, bn=True)
    rng = np.random.default_rng(7)
    xa, xb = calib(rng, 30, (10, 10, 1)), calib(rng, 20, (10, 10, 1))
    copies = xa.copy(), xb.copy()
    before = [snapshot(a), snapshot(b)]
    zipped = tfmot_zip.zip_models(a, b, calibration_data=(xa, xb), sharing=0.5, **kwargs)
    assert_unchanged(a, before[0])
    assert_unchanged(b, before[1])
    np.testing.assert_array_equal(xa, copies[0])
    np.testing.assert_array_equal(xb, copies[1])
    zipped_before = snapshot(zipped)
    tfmot_zip.strip_zipping(zipped)
    tfmot_zip.zip_summary(zipped)
    assert_unchanged(zipped, zipped_before)


def test_three_model_zip_never_modifies_models():
    models = [mlp(43), mlp(44), mlp(45)]
    before = [snapshot(m) for m in models]
    tfmot_zip.zip_models(*models, calibration_data=(X, X, X), sharing=0.5)
    for m, s in zip(models, before):
        assert_unchanged(m, s)


def test_write_zip_report_never_modifies_the_model(zipped_pair, tmp_path):
    from tfmot_zip.report.zip_report import write_zip_report

    before = snapshot(zipped_pair)
    write_zip_report(zipped_pair, tmp_path / "r", accuracy_before=[50, 60], accuracy_after=[40, 55], sizes={"a": 10})
    assert_unchanged(zipped_pair, before)


# --- atomic outputs -----------------------------------------------------------------------------


def leftovers(folder: Path, keep: set) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_atomic_save_model_keeps_the_old_file_when_saving_fails(zipped_pair, tmp_path, monkeypatch):
    from tfmot_zip.io import atomic_save_model

    target = tmp_path / "zipped.keras"
    target.write_bytes(b"previous version")

    def half_written_then_crash(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(type(zipped_pair), "save", half_written_then_crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_model(zipped_pair, target)
    assert target.read_bytes() == b"previous version"
    assert leftovers(tmp_path, {"zipped.keras"}) == []


def test_atomic_save_model_writes_a_loadable_file(zipped_pair, tmp_path):
    from tfmot_zip.io import atomic_save_model

    path = atomic_save_model(zipped_pair, tmp_path / "zipped.keras")
    assert leftovers(tmp_path, {"zipped.keras"}) == []
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.get_layer("fc1").physical_kernel().numpy(), zipped_pair.get_layer("fc1").physical_kernel().numpy())


def test_atomic_write_bytes_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    from tfmot_zip import io as io_utils

    target = tmp_path / "report.json"
    target.write_text("old")
    monkeypatch.setattr(io_utils.os, "replace", _boom)
    with pytest.raises(WorkStarted):
        io_utils.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert leftovers(tmp_path, {"report.json"}) == []


def test_report_leaves_no_partial_png_when_drawing_fails(zipped_pair, tmp_path, monkeypatch):
    import matplotlib.figure

    from tfmot_zip.report.zip_report import write_zip_report

    def crash(self, fname, *args, **kwargs):
        if hasattr(fname, "write"):
            fname.write(b"\x89PNG partial")
        raise RuntimeError("renderer crashed (simulated)")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", crash)
    out = tmp_path / "report"
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_zip_report(zipped_pair, out, accuracy_after=[10.0, 20.0])
    assert leftovers(out, set()) == []


def test_export_leaves_no_partial_tflite_when_conversion_fails(zipped_pair, tmp_path, export_module, monkeypatch):
    class Converter:
        optimizations = []

        def __init__(self, *args, **kwargs):
            self.target_spec = type("Spec", (), {})()

        def convert(self):
            raise RuntimeError("converter crashed (simulated)")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", staticmethod(lambda *a, **k: Converter()))
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_module.export_tflite(tfmot_zip.strip_zipping(zipped_pair), target)
    assert target.read_bytes() == b"previous"
    assert leftovers(tmp_path, {"model.tflite"}) == []


# --- determinism ----------------------------------------------------------------------------------

DETERMINISM_CASES = {
    "mtz hungarian": (mlp, dict(method="mtz", selection="hungarian")),
    "mtz greedy": (mlp, dict(method="mtz", selection="greedy")),
    "random": (mlp, dict(method="random")),
    "euclidean": (mlp, dict(method="euclidean")),
    "activation": (mlp, dict(method="activation")),
    "mtz conv": (lambda s: cnn(s, bn=True), dict(method="mtz")),
    "random conv": (cnn, dict(method="random")),
}


def plain(value):
    """Nested lists of Python numbers (pairs are stored as tuples of numpy arrays)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def zip_twice(builder, kwargs, seeds=(0, 0)):
    rng = np.random.default_rng(8)
    shape = builder(51).input_shape[1:]
    data = (calib(rng, 50, shape), calib(rng, 40, shape))
    results = []
    for seed in seeds:
        zipped = tfmot_zip.zip_models(builder(51), builder(52), calibration_data=data, sharing=0.5, seed=seed, **kwargs)
        pairs = {layer.name: layer.pairs for layer in tfmot_zip.zip_summary(zipped).layers if layer.pairs}
        results.append((pairs, [w.numpy() for w in zipped.weights]))
    return results


@pytest.mark.parametrize("name", list(DETERMINISM_CASES))
def test_same_seed_gives_the_same_pairs_and_weights(name):
    builder, kwargs = DETERMINISM_CASES[name]
    (pairs_1, weights_1), (pairs_2, weights_2) = zip_twice(builder, kwargs)
    assert pairs_1 and pairs_1 == pairs_2
    assert len(weights_1) == len(weights_2)
    for w1, w2 in zip(weights_1, weights_2):
        np.testing.assert_array_equal(w1, w2)


def test_random_pairs_follow_the_seed():
    (pairs_0, _), (pairs_1, _) = zip_twice(mlp, dict(method="random"), seeds=(0, 1))
    assert pairs_0 != pairs_1  # 16 units: two seeds pick the same 8 pairs with negligible probability


def test_three_models_are_deterministic():
    runs = []
    for _ in range(2):
        zipped = tfmot_zip.zip_models(mlp(53), mlp(54), mlp(55), calibration_data=(X, X, X), sharing=0.5, seed=3)
        runs.append([w.numpy() for w in zipped.weights])
    for w1, w2 in zip(*runs):
        np.testing.assert_array_equal(w1, w2)
