"""Checks of input data before any work: numeric dtype, finite values, a real spread, and the scale.

Framework-free (numpy only). Every entry point that takes data (``zip_models`` calibration,
``export_tflite`` representative data, ``verify_tflite``, ``tflite_predict`` and the size report)
calls :func:`check_inputs`, so a bad array is refused once, the same way, with the place it was
passed (``what``), the count of bad values and the fix.

The scale policy lives here too (:func:`warn_if_unscaled`). Like Keras and TFMOT, the library never
rescales inputs: integer images (uint8 0..255) are used as given, which is right for a model trained
on 0..255 and wrong for one trained on x / 255. Dividing silently would break the first kind, refusing
would block it; so integer data with values above 1 gets an :class:`UnscaledInputWarning` that names
the data, its dtype and range, and says what to pass. The command line decides for its users
instead: it divides uint8 images by 255 (``scale=auto`` in a data spec).

Example:
    >>> import numpy as np
    >>> nonfinite_counts(np.array([0.0, np.nan, np.inf, -np.inf]))
    (1, 2)
    >>> check_inputs(np.ones((2, 3), np.float32), "calibration_data[0]").shape
    (2, 3)
"""
from __future__ import annotations

import collections.abc
import warnings
from typing import Any

import numpy as np

__all__ = [
    "UnscaledInputWarning",
    "nonfinite_counts",
    "to_array",
    "require_real_numbers",
    "require_finite",
    "require_varied",
    "integer_range",
    "warn_if_unscaled",
    "check_inputs",
]


class UnscaledInputWarning(UserWarning):
    """Integer inputs with values above 1 (such as uint8 images 0..255) were used as given.

    Silence it by passing float data (``x.astype("float32")`` if the models take 0..255), or with
    ``warnings.filterwarnings("ignore", category=UnscaledInputWarning)``.

    Example:
        >>> issubclass(UnscaledInputWarning, UserWarning)
        True
    """


def nonfinite_counts(array: Any) -> tuple[int, int]:
    """``(number of NaN values, number of +inf or -inf values)`` of an array (integers: ``(0, 0)``).

    Example:
        >>> import numpy as np
        >>> nonfinite_counts(np.array([[1.0, np.nan], [np.inf, np.nan]]))
        (2, 1)
        >>> nonfinite_counts(np.arange(3))
        (0, 0)
    """
    values = np.asarray(array)
    if not np.issubdtype(values.dtype, np.inexact):
        return 0, 0
    return int(np.count_nonzero(np.isnan(values))), int(np.count_nonzero(np.isinf(values)))


def to_array(data: Any, who: str) -> np.ndarray:
    """``np.asarray(data)``, refusing one-pass iterators (generators) and ragged data with the fix.

    ``tf.data`` datasets are iterables, not iterators; read them before calling this.

    Example:
        >>> to_array([[1, 2], [3, 4]], "as_inputs").shape
        (2, 2)
        >>> to_array((x for x in range(3)), "as_inputs")
        Traceback (most recent call last):
        ...
        ValueError: as_inputs received a generator (a one-pass iterator), which it cannot size or read twice; pass an array (np.concatenate(list(batches))) or a tf.data.Dataset (tf.data.Dataset.from_generator(...), or the dataset itself instead of iter(dataset)).
    """
    if isinstance(data, collections.abc.Iterator):
        raise ValueError(
            f"{who} received a {type(data).__name__} (a one-pass iterator), which it cannot size or read "
            "twice; pass an array (np.concatenate(list(batches))) or a tf.data.Dataset "
            "(tf.data.Dataset.from_generator(...), or the dataset itself instead of iter(dataset))."
        )
    try:
        return np.asarray(data)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{who} could not make one array of the {type(data).__name__} it received ({err}). Pass "
            "samples of one shape as one numeric array, e.g. np.stack(samples)."
        ) from None


def require_real_numbers(array: Any, what: str) -> np.ndarray:
    """Returns ``array`` as a numpy array if its dtype is bool, integer or floating; ValueError otherwise.

    Object arrays (samples of different shapes, Python objects), complex numbers, strings and
    dates are refused with the dtype and the fix.

    Example:
        >>> import numpy as np
        >>> require_real_numbers(np.zeros(2, np.uint8), "x").dtype
        dtype('uint8')
        >>> require_real_numbers(np.zeros(2, complex), "calibration_data[0]")
        Traceback (most recent call last):
        ...
        ValueError: calibration_data[0] has dtype complex128 (complex numbers); the models take real numbers. Pass np.abs(x) or x.real, as float32.
    """
    values = np.asarray(array)
    kind = values.dtype.kind
    if kind in "biuf":
        return values
    if kind == "c":
        fix = "the models take real numbers. Pass np.abs(x) or x.real, as float32."
        described = "complex numbers"
    elif kind == "O":
        fix = ("it usually holds samples of different shapes or Python objects. Pass one numeric array of "
               "samples of one shape, e.g. np.stack(samples).astype(np.float32).")
        described = "Python objects"
    else:
        fix = "pass a numeric array of samples, e.g. np.asarray(x, dtype=np.float32)."
        described = {"U": "text", "S": "bytes", "M": "dates", "m": "time spans", "V": "raw records"}.get(kind, "not numbers")
    raise ValueError(f"{what} has dtype {values.dtype} ({described}); {fix}")


def require_finite(array: Any, what: str) -> None:
    """Raises a ValueError with the counts of NaN and inf values if ``array`` holds any.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((2, 5))
        >>> x[0, :3] = np.nan
        >>> require_finite(x, "representative_data for task 'b'")
        Traceback (most recent call last):
        ...
        ValueError: representative_data for task 'b' contains NaN or inf values: 3 NaN and 0 inf out of 10 values. Clean the data first: drop the samples that have any (x = x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]) or replace them (np.nan_to_num(x)).
    """
    nan, inf = nonfinite_counts(array)
    if nan or inf:
        raise ValueError(
            f"{what} contains NaN or inf values: {nan} NaN and {inf} inf out of {np.size(array)} values. "
            "Clean the data first: drop the samples that have any "
            "(x = x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]) or replace them (np.nan_to_num(x))."
        )


def require_varied(array: Any, what: str, purpose: str = "int8 calibration") -> None:
    """Raises a ValueError if ``array`` is empty or every value is the same (no range to measure).

    Example:
        >>> import numpy as np
        >>> require_varied(np.zeros((4, 3)), "representative_data for task 'a'")
        Traceback (most recent call last):
        ...
        ValueError: representative_data for task 'a' is constant (all 12 values are 0.0), so int8 calibration would measure no range. Pass a few hundred typical inputs of that task (the first ones of its training data are fine).
    """
    values = np.asarray(array)
    if values.size == 0:
        raise ValueError(f"{what} is empty, so {purpose} has nothing to measure. Pass a few hundred typical inputs of that task.")
    first = values.flat[0]
    if np.all(values == first):
        raise ValueError(
            f"{what} is constant (all {values.size} values are {first.item()!r}), so {purpose} would measure "
            "no range. Pass a few hundred typical inputs of that task (the first ones of its training data are fine)."
        )


def integer_range(array: Any) -> tuple[int, int] | None:
    """``(min, max)`` of an integer array (not bool), or None for other dtypes and empty arrays.

    Example:
        >>> import numpy as np
        >>> integer_range(np.array([3, 250], np.uint8))
        (3, 250)
        >>> integer_range(np.array([0.5])) is None
        True
    """
    values = np.asarray(array)
    if values.dtype.kind not in "iu" or values.size == 0:
        return None
    return int(values.min()), int(values.max())


def warn_if_unscaled(array: Any, what: str) -> bool:
    """Warns (:class:`UnscaledInputWarning`) if ``array`` is integer data with values above 1.

    The library's one policy for unscaled inputs (see the module docstring): the values are used
    as given, and the user is told how the command line differs and what to pass.

    Returns:
        Whether it warned.

    Example:
        >>> import numpy as np, warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_unscaled(np.array([0, 255], np.uint8), "calibration_data[1]")
        True
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        calibration_data[1] is uint8 with values in [0, 255]; tfmot_zip uses them as given ... pass x / 255 ...
        >>> warn_if_unscaled(np.array([0.0, 255.0]), "x")  # float data: the user chose its scale
        False
    """
    bounds = integer_range(array)
    if bounds is None or bounds[1] <= 1:
        return False
    dtype = np.asarray(array).dtype
    warnings.warn(
        f"{what} is {dtype} with values in [{bounds[0]}, {bounds[1]}]; tfmot_zip uses them as given "
        f"(as float32 {bounds[0]}..{bounds[1]}), while the command line divides uint8 images by 255. If the "
        "models were trained on scaled inputs, pass x / 255 (x.astype('float32') / 255); if they take the "
        "raw values, pass x.astype('float32') to silence this warning.",
        UnscaledInputWarning,
        stacklevel=3,
    )
    return True


def check_inputs(array: Any, what: str) -> np.ndarray:
    """The checks every entry point runs on input data: real numbers, no NaN or inf, the scale.

    Args:
        array: the samples (any shape).
        what: where the data was passed, quoted in messages (e.g. ``"representative_data for task 'b'"``).

    Returns:
        ``array`` as a numpy array (not copied, not cast).

    Raises:
        ValueError: a non-numeric or complex dtype, or NaN or inf values (with their counts).

    Example:
        >>> import numpy as np
        >>> check_inputs(np.array([[0.1, np.inf]]), "inputs for task 'a'")
        Traceback (most recent call last):
        ...
        ValueError: inputs for task 'a' contains NaN or inf values: 0 NaN and 1 inf out of 2 values. Clean the data first: drop the samples that have any (x = x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]) or replace them (np.nan_to_num(x)).
    """
    values = require_real_numbers(array, what)
    require_finite(values, what)
    warn_if_unscaled(values, what)
    return values
