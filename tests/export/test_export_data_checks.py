"""No silent wrong result at export (issue 16): bad data is refused before any work, with the task and
the count of bad values; a request for int8 yields int8 or an error; files that are not TFLite and
output paths that are not ``.tflite`` get clear errors; unscaled integer images get a warning.

A tiny two-task model (one shared Dense layer); every case runs in about a second.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

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


def inputs() -> np.ndarray:
    return np.random.default_rng(0).random((N, 4)).astype("float32")


@dataclasses.dataclass
class Setup:
    """What the case lists below run on: the fixtures' values, or :func:`make_setup`'s (the docs script)."""

    model: keras.Model
    x: np.ndarray
    float_bytes: bytes
    int8_bytes: bytes
    folder: Path


def make_setup(folder: Path) -> Setup:
    model, x = two_tasks(), inputs()
    return Setup(model, x, export_tflite(model), export_tflite(model, quantize="int8", representative_data=(x, x)), Path(folder))


@pytest.fixture(scope="module")
def model():
    return two_tasks()


@pytest.fixture(scope="module")
def x():
    return inputs()


@pytest.fixture(scope="module")
def float_bytes(model):
    return export_tflite(model)


@pytest.fixture(scope="module")
def int8_bytes(model, x):
    return export_tflite(model, quantize="int8", representative_data=(x, x))


@pytest.fixture
def setup(model, x, float_bytes, int8_bytes, tmp_path):
    return Setup(model, x, float_bytes, int8_bytes, tmp_path)


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


def overflowing(x, rows):
    """``x`` with ``rows`` replaced by finite inputs of float32's largest size, signed along the shared layer's
    largest-weight unit, so that unit's pre-activation (and every output after it) overflows."""
    kernel = two_tasks().get_layer("shared").get_weights()[0]
    unit = int(np.argmax(np.abs(kernel).sum(axis=0)))
    bad = x.copy()
    bad[list(rows)] = np.sign(kernel[:, unit]) * np.finfo(np.float32).max
    return bad


# (case, representative data for task_b, pattern of the message). Registry for docs/BAD_INPUTS.md.
REPRESENTATIVE_CASES = [
    ("one task's representative data all NaN", lambda x: np.full_like(x, np.nan),
     rf"representative_data for task 'task_b' contains NaN or inf values: {N * 4} NaN and 0 inf out of {N * 4} values"),
    ("inf in representative data (was a segmentation fault)", lambda x: nan_and_inf(x, 0, 3),
     rf"representative_data for task 'task_b' contains NaN or inf values: 0 NaN and 3 inf out of {N * 4}"),
    ("NaN and inf in representative data", lambda x: nan_and_inf(x, 5, 2), r"task 'task_b'.*5 NaN and 2 inf.*np\.nan_to_num"),
    ("constant representative data", lambda x: np.zeros_like(x), r"task 'task_b' is constant \(all 160 values are 0\.0\).*typical inputs"),
    ("representative data on which the model overflows (was a file whose run is a segmentation fault)", lambda x: overflowing(x, range(0, N, 2)),
     rf"the model's outputs there are NaN or inf \(output 'task_b' on {N // 2} of {N} samples\)\. Nothing was written"),
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


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(blown=st.sets(st.integers(0, N - 1), max_size=N - 1))
def test_outputs_that_overflow_on_representative_data_are_counted_per_output_before_any_work(model, x, no_work, blown):
    """The count in the message is the number of samples whose output is NaN or inf (counted here directly)."""
    bad = overflowing(x, sorted(blown))
    outputs = model.predict([x, bad], verbose=0)
    expected = {name: int(np.sum(~np.isfinite(out).all(axis=1))) for name, out in zip(model.output_names, outputs)}
    assert expected["task_a"] == 0 and expected["task_b"] == len(blown)
    if not blown:
        with pytest.raises(AssertionError, match="started working"):
            export_tflite(model, quantize="int8", representative_data=(x, bad))
        return
    with pytest.raises(ValueError, match=rf"outputs there are NaN or inf \(output 'task_b' on {expected['task_b']} of {N} samples\)"):
        export_tflite(model, quantize="int8", representative_data=(x, bad))


def test_representative_data_is_checked_on_the_samples_used_and_dict_keys_name_the_task(model, x, no_work):
    bad = x.copy()
    bad[N - 1, 0] = np.nan  # beyond representative_samples: never read
    with pytest.raises(AssertionError, match="started working"):
        export_tflite(model, quantize="int8", representative_data={"task_a": x, "task_b": bad}, representative_samples=N - 1)
    with pytest.raises(ValueError, match="task 'task_b'.*1 NaN and 0 inf out of 160"):
        export_tflite(model, quantize="int8", representative_data={"task_a": x, "task_b": bad})


def nan_labels():
    labels = np.zeros(N)
    labels[0] = np.nan
    return labels


# (entry point, case, call on a Setup, pattern of the ValueError). Registry for docs/BAD_INPUTS.md.
EVALUATION_CASES = [
    ("verify_tflite", "NaN and inf in verification inputs", lambda s: verify_tflite(s.float_bytes, s.model, (nan_and_inf(s.x, 2, 1), s.x)),
     "inputs for task 'task_a' contains NaN or inf values: 2 NaN and 1 inf out of 160"),
    ("tflite_predict", "NaN and inf in the inputs", lambda s: tflite_predict(s.float_bytes, "task_b", nan_and_inf(s.x, 2, 1)),
     r"inputs of signature 'task_b' \('b_in'\) contains NaN or inf values: 2 NaN and 1 inf"),
    ("tflite_accuracy", "NaN and inf in the inputs",
     lambda s: tflite_accuracy(s.float_bytes, "task_a", nan_and_inf(s.x, 2, 1), np.zeros(N, int)), "inputs of signature 'task_a'.*2 NaN and 1 inf"),
    ("tflite_accuracy", "NaN in the labels", lambda s: tflite_accuracy(s.float_bytes, "task_a", s.x, nan_labels()),
     r"labels for 'task_a' contains NaN or inf values: 1 NaN"),
    ("tflite_predict", "complex inputs", lambda s: tflite_predict(s.float_bytes, "task_a", s.x.astype(complex)), "dtype complex128"),
]


@pytest.mark.parametrize("entry, case, call, pattern", EVALUATION_CASES, ids=[f"{c[0]}: {c[1]}" for c in EVALUATION_CASES])
def test_verification_and_evaluation_data_with_nan_or_inf_is_refused(setup, entry, case, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(setup)


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


# (case, call on a Setup, pattern of the TFLiteVerificationError). Registry for docs/BAD_INPUTS.md.
TENSOR_TYPE_CASES = [
    ("a float file verified with quantize='int8'",  # within the int8 tolerance, but float
     lambda s: verify_tflite(s.float_bytes, s.model, (s.x, s.x), quantize="int8"), "quantize='int8'.*signature 'task_a' has no int8 tensors"),
    ("an int8 file verified as float", lambda s: verify_tflite(s.int8_bytes, s.model, (s.x, s.x)),
     "quantize=None.*signature 'task_a' has quantized tensors"),
]


@pytest.mark.parametrize("case, call, pattern", TENSOR_TYPE_CASES, ids=[c[0] for c in TENSOR_TYPE_CASES])
def test_verify_checks_the_tensor_types_it_was_asked_for(setup, case, call, pattern):
    with pytest.raises(TFLiteVerificationError, match=pattern):
        call(setup)
    assert verify_tflite(setup.int8_bytes, setup.model, (setup.x, setup.x), quantize="int8")["all_tasks"]["max_abs_error"] < 0.25


def test_verify_of_a_file_checks_its_types_too(model, x, float_bytes, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(float_bytes)
    with pytest.raises(TFLiteVerificationError, match="no int8 tensors"):
        verify_tflite(path, model, (x, x), quantize="int8")


# ------------------------------------------------------------------ item 3: clear errors


def keras_file(folder: Path) -> Path:
    path = Path(folder) / "m.keras"
    mlp(1).save(path)
    return path


# (entry point, case, call on a Setup, pattern of the ValueError). Registry for docs/BAD_INPUTS.md.
NOT_TFLITE_CASES = [
    ("verify_tflite", "b'garbage' as the TFLite model", lambda s: verify_tflite(b"garbage", s.model, (s.x, s.x)),
     r"the TFLite model is not a TFLite file: its bytes 4-8 are b'age'.*export_tflite"),
    ("verify_tflite", "a .keras file as the TFLite model", lambda s: verify_tflite(keras_file(s.folder), s.model, (s.x, s.x)),
     r"file '.*m\.keras' is not a TFLite file.*a zip archive, such as a \.keras model"),
    ("load_interpreter", "64 zero bytes", lambda s: load_interpreter(bytes(64)), "not a TFLite file"),
    ("load_interpreter", "a truncated TFLite file (right identifier, broken body)",
     lambda s: load_interpreter(s.float_bytes[: len(s.float_bytes) // 2]), "LiteRT cannot read the TFLite bytes .*damaged"),
]


@pytest.mark.parametrize("entry, case, call, pattern", NOT_TFLITE_CASES, ids=[f"{c[0]}: {c[1]}" for c in NOT_TFLITE_CASES])
def test_garbage_bytes_and_other_files_are_not_tflite(setup, entry, case, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(setup)


NOT_TFLITE_PATHS = ["m.keras", "m.h5", "model", "m.tflite.tmp"]  # registry for docs/BAD_INPUTS.md
NOT_TFLITE_PATH_PATTERN = r"must end in \.tflite.*Pass '.*\.tflite'"


@pytest.mark.parametrize("name", NOT_TFLITE_PATHS)
def test_export_refuses_a_path_that_is_not_tflite_before_any_work(model, tmp_path, monkeypatch, name):
    def work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(convert_module, "as_tf_keras_model", work)
    with pytest.raises(ValueError, match=NOT_TFLITE_PATH_PATTERN):
        export_tflite(model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_export_accepts_any_case_of_tflite(model, tmp_path):
    assert (tmp_path / "M.TFLITE").exists() is False
    export_tflite(model, tmp_path / "M.TFLITE")
    assert (tmp_path / "M.TFLITE").read_bytes()[4:8] == b"TFL3"


# ------------------------------------------------------------------ item 4: the uint8 policy


def unscaled(x):
    images = (x * 255).astype(np.uint8)
    images.reshape(len(x), -1)[0, 0] = 255
    return images


def unscaled_calibration():
    scaled = calib(np.random.default_rng(0), 16, (6, 6, 1))
    return scaled, unscaled(scaled)


# (entry point, case, call on a Setup, pattern of the UnscaledInputWarning). Registry for docs/BAD_INPUTS.md.
UNSCALED_CASES = [
    ("verify_tflite", "uint8 images 0..255", lambda s: verify_tflite(s.float_bytes, s.model, (s.x, unscaled(s.x))),
     r"inputs for task 'task_b' is uint8 with values in \[\d+, 255\].*divides uint8 images by 255.*x / 255"),
    ("export_tflite", "uint8 images 0..255 as representative data",
     lambda s: export_tflite(s.model, quantize="int8", representative_data=(unscaled(s.x), s.x)), r"representative_data for task 'task_a' is uint8"),
    ("zip_models", "uint8 images 0..255 as calibration data",
     lambda s: tfmot_zip.zip_models(mlp(1), mlp(2), calibration_data=unscaled_calibration(), sharing=0.5),
     r"calibration_data\[1\] is uint8 with values in \[\d+, 255\]"),
]


def test_unscaled_uint8_images_warn_naming_the_task_dtype_and_range(setup):
    for _, _, call, pattern in UNSCALED_CASES[:2]:
        with pytest.warns(UnscaledInputWarning, match=pattern):
            call(setup)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scaled (float) data: silent
        verify_tflite(setup.float_bytes, setup.model, (setup.x, unscaled(setup.x).astype(np.float32) / 255))


def test_zip_models_warns_for_unscaled_uint8_calibration():
    _, _, call, pattern = UNSCALED_CASES[2]
    with pytest.warns(UnscaledInputWarning, match=pattern):
        call(None)  # needs no Setup


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
