"""No silent wrong result at export (issue 16): bad data is refused before any work, with the task and
the count of bad values; a request for int8 yields int8 or an error; files that are not TFLite and
output paths that are not ``.tflite`` get clear errors; unscaled integer images get a warning.

A tiny two-task model (one shared Dense layer); every case runs in about a second.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import tfmot_zip
from builders import calib, mlp
from tfmot_zip.compat import keras, tf
from tfmot_zip.data.checks import UnscaledInputWarning
from tfmot_zip.export import (
    TFLiteVerificationError,
    export_tflite,
    load_interpreter,
    tflite_accuracy,
    tflite_predict,
    verify_tflite,
)
from tfmot_zip.export import convert as convert_module
from tfmot_zip.export import inputs as inputs_module
from tfmot_zip.export.flatbuffer import signature_tensor_types

N = 40


def two_tasks() -> keras.Model:
    keras.utils.set_random_seed(3)
    a, b = keras.Input((4,), name="a_in"), keras.Input((4,), name="b_in")
    shared = keras.layers.Dense(8, activation="relu", name="shared")
    return keras.Model([a, b], [keras.layers.Dense(3, name="task_a")(shared(a)), keras.layers.Dense(3, name="task_b")(shared(b))])


@pytest.fixture(scope="module")
def model():
    return two_tasks()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((N, 4)).astype("float32")


@pytest.fixture(scope="module")
def float_bytes(model):
    return export_tflite(model)


@pytest.fixture(scope="module")
def int8_bytes(model, x):
    return export_tflite(model, quantize="int8", representative_data=(x, x))


@pytest.fixture
def no_work(monkeypatch):
    """Conversion replaced by a failure: a check that passes lets the test fail, not segfault."""
    def work(*args, **kwargs):
        raise AssertionError("the export started working before refusing its input")

    monkeypatch.setattr(convert_module, "_concrete_functions", work)


def nan_and_inf(x, nan, inf):
    bad = x.copy()
    flat = bad.reshape(-1)
    flat[:nan] = np.nan
    flat[nan : nan + inf] = np.inf
    return bad


# ------------------------------------------------------------------ item 1: non-finite or degenerate data


# (case, representative data for task_b, pattern of the message). Registry for docs/BAD_INPUTS.md.
REPRESENTATIVE_CASES = [
    ("one task's representative data all NaN", lambda x: np.full_like(x, np.nan),
     rf"representative_data for task 'task_b' contains NaN or inf values: {N * 4} NaN and 0 inf out of {N * 4} values"),
    ("inf in representative data (was a segmentation fault)", lambda x: nan_and_inf(x, 0, 3),
     rf"representative_data for task 'task_b' contains NaN or inf values: 0 NaN and 3 inf out of {N * 4}"),
    ("NaN and inf in representative data", lambda x: nan_and_inf(x, 5, 2), r"task 'task_b'.*5 NaN and 2 inf.*np\.nan_to_num"),
    ("constant representative data", lambda x: np.zeros_like(x), r"task 'task_b' is constant \(all 160 values are 0\.0\).*typical inputs"),
    ("complex representative data", lambda x: x.astype(np.complex64), r"representative_data\[1\]: the data has dtype complex64"),
    ("object representative data", lambda x: np.array(list(x) + ["a"], dtype=object), r"representative_data\[1\]: the data has dtype object"),
    ("a generator as representative data", lambda x: (row for row in x), r"representative_data\[1\]: as_inputs received a generator"),
]


@pytest.mark.parametrize("case, make, pattern", REPRESENTATIVE_CASES, ids=[c[0] for c in REPRESENTATIVE_CASES])
def test_bad_representative_data_is_refused_before_any_work(model, x, tmp_path, no_work, case, make, pattern):
    target = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=pattern):
        export_tflite(model, target, quantize="int8", representative_data=(x, make(x)))
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_representative_data_is_checked_on_the_samples_used_and_dict_keys_name_the_task(model, x, no_work):
    bad = x.copy()
    bad[N - 1, 0] = np.nan  # beyond representative_samples: never read
    with pytest.raises(AssertionError, match="started working"):
        export_tflite(model, quantize="int8", representative_data={"task_a": x, "task_b": bad}, representative_samples=N - 1)
    with pytest.raises(ValueError, match="task 'task_b'.*1 NaN and 0 inf out of 160"):
        export_tflite(model, quantize="int8", representative_data={"task_a": x, "task_b": bad})


def test_verification_and_evaluation_data_with_nan_or_inf_is_refused(model, x, float_bytes):
    bad = nan_and_inf(x, 2, 1)
    with pytest.raises(ValueError, match="inputs for task 'task_a' contains NaN or inf values: 2 NaN and 1 inf out of 160"):
        verify_tflite(float_bytes, model, (bad, x))
    with pytest.raises(ValueError, match=r"inputs of signature 'task_b' \('b_in'\) contains NaN or inf values: 2 NaN and 1 inf"):
        tflite_predict(float_bytes, "task_b", bad)
    with pytest.raises(ValueError, match="inputs of signature 'task_a'.*2 NaN and 1 inf"):
        tflite_accuracy(float_bytes, "task_a", bad, np.zeros(N, int))
    labels = np.zeros(N)
    labels[0] = np.nan
    with pytest.raises(ValueError, match=r"labels for 'task_a' contains NaN or inf values: 1 NaN"):
        tflite_accuracy(float_bytes, "task_a", x, labels)
    with pytest.raises(ValueError, match="dtype complex128"):
        tflite_predict(float_bytes, "task_a", x.astype(complex))


# ------------------------------------------------------------------ item 2: int8 yields int8 or an error


def test_int8_export_has_int8_tensors_in_every_signature(int8_bytes):
    types = signature_tensor_types(int8_bytes)
    assert sorted(types) == ["all_tasks", "all_tasks_shared_input", "task_a", "task_b"]
    for key, entry in types.items():
        assert entry.counts.get("INT8", 0) > 0 and entry.inner_float == (), key


def test_int8_conversion_that_leaves_float_signatures_is_an_error(model, x, tmp_path, monkeypatch):
    # With the data checks bypassed, one task's all-NaN data makes the converter leave that task in
    # float32 (the bug of issue 16: a float model returned for quantize="int8"); the type check refuses it.
    monkeypatch.setattr(inputs_module, "check_inputs", lambda array, what: array)
    target = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"did not give the tensor types asked for \(full integer.*signature 'task_b' has no int8 tensors.*Nothing was written"):
        export_tflite(model, target, quantize="int8", representative_data=(x, np.full_like(x, np.nan)))
    assert list(tmp_path.iterdir()) == []


def test_verify_checks_the_tensor_types_it_was_asked_for(model, x, float_bytes, int8_bytes):
    with pytest.raises(TFLiteVerificationError, match="quantize='int8'.*signature 'task_a' has no int8 tensors"):
        verify_tflite(float_bytes, model, (x, x), quantize="int8")  # within the int8 tolerance, but float
    with pytest.raises(TFLiteVerificationError, match="quantize=None.*signature 'task_a' has quantized tensors"):
        verify_tflite(int8_bytes, model, (x, x))
    assert verify_tflite(int8_bytes, model, (x, x), quantize="int8")["all_tasks"]["max_abs_error"] < 0.25


def test_verify_of_a_file_checks_its_types_too(model, x, float_bytes, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(float_bytes)
    with pytest.raises(TFLiteVerificationError, match="no int8 tensors"):
        verify_tflite(path, model, (x, x), quantize="int8")


# ------------------------------------------------------------------ item 3: clear errors


def test_garbage_bytes_and_other_files_are_not_tflite(model, x, float_bytes, tmp_path):
    with pytest.raises(ValueError, match=r"the TFLite model is not a TFLite file: its bytes 4-8 are b'age'.*export_tflite"):
        verify_tflite(b"garbage", model, (x, x))
    keras_file = tmp_path / "m.keras"
    mlp(1).save(keras_file)
    with pytest.raises(ValueError, match=r"file '.*m\.keras' is not a TFLite file.*a zip archive, such as a \.keras model"):
        verify_tflite(keras_file, model, (x, x))
    with pytest.raises(ValueError, match="not a TFLite file"):
        load_interpreter(bytes(64))
    with pytest.raises(ValueError, match="LiteRT cannot read the TFLite bytes .*damaged"):
        load_interpreter(float_bytes[: len(float_bytes) // 2])  # the right identifier, a broken body


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "model", "m.tflite.tmp"])
def test_export_refuses_a_path_that_is_not_tflite_before_any_work(model, tmp_path, monkeypatch, name):
    def work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(convert_module, "as_tf_keras_model", work)
    with pytest.raises(ValueError, match=r"must end in \.tflite.*Pass '.*\.tflite'"):
        export_tflite(model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_export_accepts_any_case_of_tflite(model, tmp_path):
    assert (tmp_path / "M.TFLITE").exists() is False
    export_tflite(model, tmp_path / "M.TFLITE")
    assert (tmp_path / "M.TFLITE").read_bytes()[4:8] == b"TFL3"


# ------------------------------------------------------------------ item 4: the uint8 policy


def test_unscaled_uint8_images_warn_naming_the_task_dtype_and_range(model, x, float_bytes):
    images = (x * 255).astype(np.uint8)
    images[0, 0] = 255
    with pytest.warns(UnscaledInputWarning, match=r"inputs for task 'task_b' is uint8 with values in \[\d+, 255\].*divides uint8 images by 255.*x / 255"):
        verify_tflite(float_bytes, model, (x, images))
    with pytest.warns(UnscaledInputWarning, match=r"representative_data for task 'task_a' is uint8"):
        export_tflite(model, quantize="int8", representative_data=(images, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scaled (float) data: silent
        verify_tflite(float_bytes, model, (x, images.astype(np.float32) / 255))


def test_zip_models_warns_for_unscaled_uint8_calibration():
    rng = np.random.default_rng(0)
    scaled = calib(rng, 16, (6, 6, 1))
    raw = (scaled * 255).astype(np.uint8)
    raw[0, 0, 0, 0] = 255
    with pytest.warns(UnscaledInputWarning, match=r"calibration_data\[1\] is uint8 with values in \[\d+, 255\]"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(scaled, raw), sharing=0.5)


def test_zip_models_counts_nan_and_inf_in_calibration_and_refuses_generators():
    rng = np.random.default_rng(0)
    good = calib(rng, 16, (6, 6, 1))
    bad = good.copy()
    bad[:2, 0, 0, 0] = np.nan
    bad[5, 1, 1, 0] = -np.inf
    with pytest.raises(ValueError, match=r"calibration_data\[1\] contains NaN or inf values: 2 NaN and 1 inf out of 576"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(good, bad))
    with pytest.raises(ValueError, match=r"calibration_data\[0\]: as_inputs received a generator"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=((s for s in good), good))
    with pytest.raises(ValueError, match=r"calibration_data\[0\]: the data has dtype complex64"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(good.astype(np.complex64), good))
    ds = tf.data.Dataset.from_tensor_slices(good)
    with pytest.raises(ValueError, match=r"calibration_data\[1\]: as_inputs received a OwnedIterator"):
        tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=(good, iter(ds)))
