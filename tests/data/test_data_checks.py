"""Tests for tfmot_zip.data.checks (framework-free data checks) and the refusals of as_inputs (issue 16)."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tfmot_zip import data
from tfmot_zip.compat import tf
from tfmot_zip.data.checks import (
    UnscaledInputWarning,
    check_inputs,
    integer_range,
    nonfinite_counts,
    require_finite,
    require_real_numbers,
    require_varied,
    to_array,
    warn_if_unscaled,
)

REAL_DTYPES = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes())
OTHER_DTYPES = st.one_of(hnp.complex_number_dtypes(), hnp.unicode_string_dtypes(), hnp.byte_string_dtypes(),
                         hnp.datetime64_dtypes(), st.just(np.dtype(object)))
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)


@st.composite
def dirty_floats(draw):
    """A float array with a known number of NaN, +inf and -inf cells."""
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    x = draw(hnp.arrays(dtype, SHAPES, elements=st.floats(-10, 10, width=16)))
    kinds = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=x.size, min_size=0))
    cells = draw(st.permutations(range(x.size)))[: len(kinds)]
    flat = x.reshape(-1)
    for cell, value in zip(cells, kinds):
        flat[cell] = value
    nan = sum(1 for k in kinds if np.isnan(k))
    return x, nan, len(kinds) - nan


@settings(max_examples=60, deadline=None)
@given(dirty_floats())
def test_nonfinite_counts_and_require_finite_count_every_bad_value(case):
    x, nan, inf = case
    assert nonfinite_counts(x) == (nan, inf)
    if nan + inf == 0:
        require_finite(x, "representative_data for task 'b'")
        return
    with pytest.raises(ValueError) as info:
        require_finite(x, "representative_data for task 'b'")
    message = str(info.value)
    assert message.startswith("representative_data for task 'b' contains NaN or inf values")
    assert f"{nan} NaN and {inf} inf out of {x.size} values" in message
    assert "np.nan_to_num" in message  # the fix


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.boolean_dtypes()), SHAPES))
def test_integer_data_has_no_nonfinite_values(x):
    assert nonfinite_counts(x) == (0, 0)


@settings(max_examples=40, deadline=None)
@given(REAL_DTYPES)
def test_real_dtypes_pass(dtype):
    assert require_real_numbers(np.zeros(3, dtype), "x").dtype == dtype


@settings(max_examples=40, deadline=None)
@given(OTHER_DTYPES)
def test_other_dtypes_are_refused_naming_the_dtype(dtype):
    with pytest.raises(ValueError, match=re.escape(f"calibration_data[0] has dtype {dtype}")):
        require_real_numbers(np.zeros(3, dtype), "calibration_data[0]")


def test_complex_and_object_messages_give_the_fix():
    with pytest.raises(ValueError, match=r"complex numbers.*np\.abs\(x\) or x\.real"):
        require_real_numbers(np.ones(2, np.complex64), "x")
    with pytest.raises(ValueError, match=r"Python objects.*np\.stack"):
        require_real_numbers(np.array([np.ones(2), "a"], dtype=object), "x")


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.sampled_from([np.uint8, np.int16, np.int32, np.int64]), SHAPES, elements=st.integers(0, 127)))
def test_unscaled_integers_warn_exactly_when_a_value_exceeds_one(x):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warned = warn_if_unscaled(x, "calibration_data[1]")
    assert warned == (int(x.max()) > 1)
    assert len(caught) == int(warned)
    if warned:
        message = str(caught[0].message)
        assert caught[0].category is UnscaledInputWarning
        assert f"calibration_data[1] is {x.dtype} with values in [{x.min()}, {x.max()}]" in message
        assert "divides uint8 images by 255" in message and "x / 255" in message


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(st.one_of(hnp.floating_dtypes(), hnp.boolean_dtypes()), SHAPES))
def test_float_and_bool_data_never_warn(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_unscaled(x, "x")
    assert integer_range(x) is None


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, SHAPES, elements=st.floats(-5, 5, width=32)))
def test_require_varied_refuses_exactly_the_constant_arrays(x):
    if np.all(x == x.flat[0]):
        with pytest.raises(ValueError, match=r"is constant \(all \d+ values are"):
            require_varied(x, "representative_data for task 'a'")
    else:
        require_varied(x, "representative_data for task 'a'")


def test_require_varied_refuses_empty_data():
    with pytest.raises(ValueError, match="is empty"):
        require_varied(np.zeros((0, 3)), "representative_data for task 'a'")


def test_check_inputs_returns_the_array_uncopied_and_runs_every_check():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert check_inputs(x, "x") is x
    with pytest.raises(ValueError, match="1 NaN and 0 inf"):
        check_inputs(np.array([np.nan, 1.0]), "x")
    with pytest.raises(ValueError, match="dtype complex128"):
        check_inputs(np.array([1j]), "x")
    with pytest.warns(UnscaledInputWarning, match="uint8 with values in \\[0, 255\\]"):
        check_inputs(np.array([0, 255], np.uint8), "x")


def test_to_array_refuses_iterators_and_ragged_data():
    with pytest.raises(ValueError, match="received a generator .*tf.data.Dataset.from_generator"):
        to_array((x for x in [np.zeros(3)]), "as_inputs")
    with pytest.raises(ValueError, match="received a list_iterator"):
        to_array(iter([np.zeros(3)]), "as_inputs")
    with pytest.raises(ValueError, match="could not make one array of the list.*np.stack"):
        to_array([np.zeros(3), np.zeros(4)], "as_inputs")


# ------------------------------------------------------------------ as_inputs (the shared converter)


def test_as_inputs_refuses_generators_and_iterators_naming_the_type():
    x = np.random.default_rng(0).random((6, 3)).astype("float32")
    with pytest.raises(ValueError, match="as_inputs received a generator"):
        data.as_inputs(row for row in x)
    with pytest.raises(ValueError, match="as_inputs received a OwnedIterator .*instead of iter\\(dataset\\)"):
        data.as_inputs(iter(tf.data.Dataset.from_tensor_slices(x)))
    with pytest.raises(ValueError, match="as_inputs received a generator"):
        data.as_inputs(((row for row in x), np.zeros(6)))  # (x, y) with a generator x


@pytest.mark.parametrize("dtype, described", [(np.complex64, "complex numbers"), (object, "Python objects"), ("U3", "text")])
def test_as_inputs_refuses_values_that_are_not_real_numbers(dtype, described):
    x = np.ones((4, 3)).astype(dtype)
    with pytest.raises(ValueError, match=f"the data has dtype .*{described}"):
        data.as_inputs(x)
    with pytest.raises(ValueError, match=f"the data has dtype .*{described}"):
        data.as_inputs((x, np.zeros(4)))


def test_as_inputs_refuses_complex_datasets():
    ds = tf.data.Dataset.from_tensor_slices(np.ones((4, 3), np.complex64))
    with pytest.raises(ValueError, match="complex64"):
        data.as_inputs(ds)


def test_as_inputs_still_takes_lists_of_samples_and_integer_images():
    assert data.as_inputs([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]).shape == (4, 2)
    images = np.zeros((3, 4, 4, 1), np.uint8)
    assert data.as_inputs(images).dtype == np.uint8  # scaling is the callers' policy (check_inputs warns)
