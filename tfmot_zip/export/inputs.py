"""Data for a multi-input model: one checked array per model input, from what users pass.

Export, verification and the size report take an array (for every input), a sequence (one per
input) or a dict keyed by input or task name; :func:`per_input_arrays` turns each form into one
array per model input, with the input's dtype, and says what was wrong when it cannot.

Example:
    >>> import numpy as np
    >>> from tfmot_zip.compat import keras
    >>> a, b = keras.Input((3,), name="a_in"), keras.Input((3,), name="b_in")
    >>> model = keras.Model([a, b], [keras.layers.Dense(2, name="task_a")(a),
    ...                              keras.layers.Dense(2, name="task_b")(b)])
    >>> x_a, x_b = per_input_arrays(model, {"task_a": np.zeros((4, 3)), "b_in": np.ones((4, 3))}, "data")
    >>> x_a.dtype, x_b.shape
    (dtype('float32'), (4, 3))
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.data.checks import check_inputs, require_varied
from tfmot_zip.export.signatures import input_dependencies, task_names

__all__ = ["per_input_arrays"]


def _as_array(data: Any, argument: str, count: int | None = None) -> np.ndarray:
    from tfmot_zip.data.tasks import as_inputs

    try:
        return np.asarray(as_inputs(data, count=count))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{argument}: {err}") from None


def data_labels(model: keras.Model, argument: str) -> list[str]:
    """How messages name the data of each model input: by the task(s) that read it.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> a, b = keras.Input((3,), name="a_in"), keras.Input((3,), name="b_in")
        >>> model = keras.Model([a, b], [keras.layers.Dense(2, name="task_a")(a),
        ...                              keras.layers.Dense(2, name="task_b")(b)])
        >>> data_labels(model, "representative_data")
        ["representative_data for task 'task_a'", "representative_data for task 'task_b'"]
    """
    names = task_names(model)
    deps = input_dependencies(model)
    labels = []
    for i, input_name in enumerate(model.input_names):
        readers = [names[t] for t, inputs in enumerate(deps) if i in inputs]
        if len(readers) == 1:
            labels.append(f"{argument} for task {readers[0]!r}")
        else:
            labels.append(f"{argument} for input {input_name!r} (tasks {readers})")
    return labels


def per_input_arrays(
    model: keras.Model, data: Any, argument: str, count: int | None = None, *, refuse_constant: bool = False
) -> list[np.ndarray]:
    """One array per model input from an array, a sequence (one per input) or a dict.

    Every array is checked (:func:`tfmot_zip.data.checks.check_inputs`): real numbers, no NaN or
    inf, and a warning for unscaled integer images.

    Args:
        model: the tf_keras model the data is for.
        data: one array (or ``tf.data`` dataset) given to every input, a sequence with one per
            model input (in order), or a dict keyed by input name or task name (a task name
            stands for the input(s) that task reads).
        argument: the argument's name, quoted in error messages.
        count: keep the first ``count`` samples of each array (None: all).
        refuse_constant: also refuse an array whose values are all the same (int8 calibration
            data, which must show the activations' range).

    Returns:
        One array per model input, in the input's dtype.

    Raises:
        ValueError: an unknown key, a missing input, a wrong number of arrays, samples of
            another shape than the input's (the message names the input and the shapes), values
            that are not real numbers, NaN or inf values (the message names the task and counts
            them), or constant data with ``refuse_constant``.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> [x.shape for x in per_input_arrays(m, np.zeros((5, 3)), "inputs", count=2)]
        [(2, 3)]
    """
    names = list(model.input_names)
    n_in = len(names)
    if isinstance(data, Mapping):
        tasks = task_names(model)
        deps = input_dependencies(model)
        arrays: list[Any] = [None] * n_in
        for key, value in data.items():
            if key in names:
                targets = [names.index(key)]
            elif key in tasks:
                targets = deps[tasks.index(key)]
            else:
                raise ValueError(
                    f"{argument} has the key {key!r}, which is neither a model input {names} nor a "
                    f"task {tasks}. Key the arrays by input or task name."
                )
            for i in targets:
                arrays[i] = _as_array(value, f"{argument}[{key!r}]", count)
        missing = [names[i] for i, a in enumerate(arrays) if a is None]
        if missing:
            raise ValueError(f"{argument} has no data for the model inputs {missing}; add them to the dict.")
        out = arrays
    elif isinstance(data, (list, tuple)):
        if len(data) != n_in:
            raise ValueError(
                f"{argument} is a sequence of {len(data)} entries, but model {model.name!r} has {n_in} "
                f"inputs {names}; pass one array per input (in that order), one array for every "
                "input, or a dict keyed by input or task name."
            )
        out = [_as_array(d, f"{argument}[{i}]", count) for i, d in enumerate(data)]
    else:
        array = _as_array(data, argument, count)
        out = [array] * n_in
    for i, (array, tensor) in enumerate(zip(out, model.inputs)):
        expected = tuple(tensor.shape[1:].as_list())
        if tuple(array.shape[1:]) != expected:
            raise ValueError(
                f"{argument} for input {names[i]!r} has samples of shape {tuple(array.shape[1:])}, but "
                f"the input expects {expected}. Pass arrays of shape (N, {', '.join(map(str, expected))})."
            )
    labels = data_labels(model, argument)
    if len({id(a) for a in out}) == 1 and n_in > 1:
        labels = [f"{argument} (for every input)"] * n_in
    checked: set[int] = set()
    for array, label in zip(out, labels):
        if id(array) not in checked:  # one array given for several inputs: checked (and warned) once
            checked.add(id(array))
            check_inputs(array, label)
            if refuse_constant:
                require_varied(array, label)
    return [np.asarray(a, dtype=tensor.dtype.as_numpy_dtype) for a, tensor in zip(out, model.inputs)]
