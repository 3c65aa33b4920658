"""Running a TFLite file in the LiteRT interpreter: signatures, batched predictions, accuracy.

:func:`load_interpreter` opens TFLite bytes or a file; :func:`tflite_predict` and
:func:`tflite_accuracy` evaluate many samples through one signature, in batches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from tfmot_zip.data.checks import check_inputs, require_finite, require_real_numbers
from tfmot_zip.export.flatbuffer import tflite_bytes
from tfmot_zip.training import accuracy

__all__ = ["TFLiteSource", "load_interpreter", "tflite_signatures", "tflite_predict", "tflite_accuracy"]

#: TFLite bytes, a file path or a LiteRT ``Interpreter``.
TFLiteSource = Union[bytes, bytearray, str, "os.PathLike[str]", Any]


def load_interpreter(tflite: TFLiteSource, num_threads: int | None = None) -> Any:
    """A LiteRT ``Interpreter`` for TFLite bytes or a file path (an interpreter passes through).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> interpreter = load_interpreter(export_tflite(model), num_threads=1)  # or a file path
        >>> list(interpreter.get_signature_list())
        ['task_a']
    """
    from tfmot_zip.compat import require

    Interpreter = require("ai_edge_litert.interpreter", "tflite", "Running a TFLite file").Interpreter
    if isinstance(tflite, Interpreter):
        return tflite
    if not isinstance(tflite, (bytes, bytearray, str, os.PathLike)):
        raise TypeError(
            f"Expected TFLite bytes, a file path or a LiteRT Interpreter; received {type(tflite).__name__}."
        )
    data = tflite_bytes(tflite)  # a clear error for a file that is not TFLite
    where = "the TFLite bytes" if isinstance(tflite, (bytes, bytearray)) else f"TFLite file {str(Path(tflite).expanduser())!r}"
    try:
        return Interpreter(model_content=data, num_threads=num_threads)
    except ValueError as err:
        raise ValueError(
            f"LiteRT cannot read {where} ({err}); the file is damaged or was not written by a TFLite "
            "converter. Export it again with export_tflite."
        ) from None


def tflite_signatures(tflite: TFLiteSource) -> dict[str, dict[str, list[str]]]:
    """``{signature key: {"inputs": [...], "outputs": [...]}}`` of a TFLite model.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> tflite_signatures(export_tflite(model))
        {'task_a': {'inputs': ['task_a_input'], 'outputs': ['task_a']}}
    """
    return load_interpreter(tflite).get_signature_list()


def _runner(interpreter: Any, signature: str):
    available = interpreter.get_signature_list()
    if signature not in available:
        raise ValueError(f"The TFLite model has no signature {signature!r}; it has {sorted(available)}.")
    return interpreter.get_signature_runner(signature), available[signature]


def _signature_feeds(signature: str, input_names: list[str], inputs: Any) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        missing = [n for n in input_names if n not in inputs]
        if missing:
            raise ValueError(f"Signature {signature!r} needs inputs {input_names}; missing {missing}.")
        feeds = {n: np.asarray(inputs[n]) for n in input_names}
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) != len(input_names):
            raise ValueError(
                f"Signature {signature!r} takes {len(input_names)} inputs {input_names}; received a "
                f"sequence of {len(inputs)}. Pass one array per input or a dict keyed by input name."
            )
        feeds = {n: np.asarray(x) for n, x in zip(input_names, inputs)}
    else:
        if len(input_names) != 1:
            raise ValueError(
                f"Signature {signature!r} takes {len(input_names)} inputs {input_names}; received one "
                "array. Pass one array per input or a dict keyed by input name."
            )
        feeds = {input_names[0]: np.asarray(inputs)}
    sizes = {len(x) for x in feeds.values()}
    if len(sizes) != 1:
        raise ValueError(f"Inputs of signature {signature!r} have different numbers of samples: { {n: len(x) for n, x in feeds.items()} }.")
    return feeds


def tflite_predict(
    tflite: TFLiteSource,
    signature: str,
    inputs: Any,
    *,
    batch_size: int = 256,
    num_threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Runs one signature of a TFLite model on many samples, in batches.

    The signature runner resizes its inputs to each batch (the last one may be smaller).

    Args:
        tflite: TFLite bytes, a file path or a LiteRT ``Interpreter``.
        signature: signature key (a task name, ``"all_tasks"``, ``"all_tasks_shared_input"``).
        inputs: one array (a one-input signature), a sequence in the signature's input order,
            or a dict keyed by input name; samples along the first axis.
        batch_size: samples per invocation.
        num_threads: interpreter threads (None: LiteRT's default).

    Returns:
        ``{output name: array of every sample's outputs}``.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> data = export_tflite(model)
        >>> tflite_predict(data, "task_a", np.ones((10, 4)), batch_size=4)["task_a"].shape
        (10, 3)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"Expected a positive integer. Received: batch_size={batch_size!r}")
    interpreter = load_interpreter(tflite, num_threads)
    runner, spec = _runner(interpreter, signature)
    details = runner.get_input_details()
    feeds = _signature_feeds(signature, list(spec["inputs"]), inputs)
    for name, array in feeds.items():
        check_inputs(array, f"inputs of signature {signature!r} ({name!r})")
        dtype = details[name]["dtype"]
        feeds[name] = array.astype(dtype, copy=False)
    total = len(next(iter(feeds.values())))
    if total == 0:
        raise ValueError(f"tflite_predict received 0 samples for signature {signature!r}.")
    chunks: dict[str, list] = {n: [] for n in spec["outputs"]}
    for start in range(0, total, int(batch_size)):
        outputs = runner(**{n: np.ascontiguousarray(x[start : start + batch_size]) for n, x in feeds.items()})
        for name in chunks:
            chunks[name].append(np.array(outputs[name]))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def tflite_accuracy(
    tflite: TFLiteSource,
    signature: str,
    inputs: Any,
    labels: Any,
    *,
    batch_size: int = 256,
    num_threads: int | None = None,
) -> dict[str, float]:
    """Classification accuracy (argmax over the last axis) of each output of a signature.

    Args:
        tflite: TFLite bytes, a file path or a LiteRT ``Interpreter``.
        signature: signature key.
        inputs: as for :func:`tflite_predict`.
        labels: integer labels: one array (a one-output signature), a sequence in output order
            or a dict keyed by output (task) name.
        batch_size: samples per invocation.
        num_threads: interpreter threads.

    Returns:
        ``{output name: top-1 accuracy in percent}`` (the unit of every accuracy in tfmot_zip).

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
        >>> data = export_tflite(model)
        >>> x = np.random.default_rng(0).random((10, 4)).astype("float32")
        >>> labels = np.argmax(model.predict(x, verbose=0), axis=-1)
        >>> tflite_accuracy(data, "task_a", x, labels)
        {'task_a': 100.0}
    """
    outputs = tflite_predict(tflite, signature, inputs, batch_size=batch_size, num_threads=num_threads)
    names = list(outputs)
    if isinstance(labels, Mapping):
        missing = [n for n in names if n not in labels]
        if missing:
            raise ValueError(f"labels has no entry for the outputs {missing} of signature {signature!r}.")
        per_output = {n: labels[n] for n in names}
    elif isinstance(labels, (list, tuple)) and len(names) > 1:
        if len(labels) != len(names):
            raise ValueError(f"Signature {signature!r} has outputs {names}; received {len(labels)} label arrays.")
        per_output = dict(zip(names, labels))
    else:
        if len(names) != 1:
            raise ValueError(f"Signature {signature!r} has outputs {names}; pass labels as a dict keyed by output name.")
        per_output = {names[0]: labels}
    result = {}
    for name, y in per_output.items():
        y = require_real_numbers(y, f"labels for {name!r}").reshape(-1)
        require_finite(y, f"labels for {name!r}")
        predictions = outputs[name]
        if len(y) != len(predictions):
            raise ValueError(f"labels for {name!r} has {len(y)} entries, but {len(predictions)} samples were run.")
        result[name] = accuracy(predictions, y)
    return result


