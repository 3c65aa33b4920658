"""TFLite export of (stripped) multi-task models: one file, one signature per task.

:func:`export_tflite` writes ONE TFLite flatbuffer holding

* one signature per task: key = the task name (the model output's name), inputs named after
  the model inputs the task reads (``<task>_input`` for a zipped model), one output named after
  the task;
* ``"all_tasks"`` (models with several outputs): every input, every output;
* ``"all_tasks_shared_input"`` (several outputs and all inputs of one shape and dtype): one
  input named ``"input"`` fed to every task. Identical operations on the same tensor are merged
  by the converter, so a block shared by the tasks runs once: this is the figure for "all tasks
  on one shared input".

All signatures read the same weight buffers: a weight shared by several tasks (one layer called
by several tasks in a stripped zipped model) and used by several signatures is stored once, in
float32, float16, dynamic and post-training int8 files. Exception: a quantization-aware (QAT)
model converts a shared Dense kernel with its per-tensor QAT scale in the one-task signatures
but re-quantizes it per channel in the all-tasks signatures (where the layer is called twice),
so the converter writes two int8 copies; post-training int8 keeps one.
The model is saved as a temporary SavedModel with these signatures and converted with
``tf.lite.TFLiteConverter.from_saved_model``.

:func:`verify_tflite` runs every signature in the LiteRT interpreter and compares it with the
Keras model under the tolerances of :data:`TOLERANCES`; :func:`tflite_predict` and
:func:`tflite_accuracy` evaluate data through a signature in batches.

Example:
    >>> plain = tfmot_zip.strip_zipping(zipped)  # doctest: +SKIP
    >>> data = export_tflite(plain, "zipped.tflite", quantize="int8",
    ...                      representative_data=(x_a, x_b))  # doctest: +SKIP
    >>> verify_tflite(data, plain, (x_a[:200], x_b[:200]), quantize="int8")  # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from tfmot_zip.compat import check_tf_keras_model, keras, tf
from tfmot_zip.io import atomic_write_bytes

__all__ = [
    "ALL_TASKS",
    "ALL_TASKS_SHARED_INPUT",
    "SHARED_INPUT_NAME",
    "QUANTIZE_MODES",
    "TOLERANCES",
    "Tolerance",
    "TFLiteVerificationError",
    "export_tflite",
    "verify_tflite",
    "tflite_predict",
    "tflite_accuracy",
    "tflite_signatures",
    "load_interpreter",
    "task_names",
]

ALL_TASKS = "all_tasks"
ALL_TASKS_SHARED_INPUT = "all_tasks_shared_input"
SHARED_INPUT_NAME = "input"
QUANTIZE_MODES = (None, "dynamic", "float16", "int8")

PathLike = Union[str, "os.PathLike[str]"]
TFLiteSource = Union[bytes, bytearray, PathLike, Any]


@dataclass(frozen=True)
class Tolerance:
    """How far a TFLite signature may be from the Keras model.

    Errors are in units of ``scale = max(1, max |keras output|)``, so probabilities are
    compared absolutely and large logits relatively.

    Attributes:
        max_abs: largest allowed ``|tflite - keras|`` over all outputs and samples (/ scale).
        max_mean_abs: largest allowed mean of ``|tflite - keras|`` (/ scale), or None.
        min_argmax_agreement: smallest allowed fraction of samples whose argmax over the last
            axis agrees, or None (only checked for outputs with more than one class).
    """

    max_abs: float
    max_mean_abs: float | None = None
    min_argmax_agreement: float | None = None


#: Default tolerances per quantization mode (``None`` is float32), for classifier
#: probabilities. float32 differs only by operation order (measured ~1e-7). float16 stores
#: weights in half precision (measured max ~3e-3 on LeNet-5). "dynamic" stores int8 weights
#: and quantizes activations on the fly, full "int8" quantizes every activation to 256 levels:
#: the typical error is a few 1e-3 (mean) but the worst of 1000 samples reaches ~0.08-0.14 on
#: a lightly trained LeNet-5, so these modes are bounded by the mean error, a loose maximum,
#: and the agreement of the predicted class.
TOLERANCES: dict[str | None, Tolerance] = {
    None: Tolerance(max_abs=1e-5),
    "float16": Tolerance(max_abs=1e-2),
    "dynamic": Tolerance(max_abs=0.2, max_mean_abs=2e-2, min_argmax_agreement=0.95),
    "int8": Tolerance(max_abs=0.25, max_mean_abs=3e-2, min_argmax_agreement=0.95),
}


class TFLiteVerificationError(ValueError):
    """A TFLite signature disagrees with its Keras model beyond the tolerance."""


# ------------------------------------------------------------------------------------------
# Model inspection
# ------------------------------------------------------------------------------------------


def _unwrap(layer: Any) -> Any:
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def task_names(model: keras.Model) -> list[str]:
    """Task names of a multi-task model: the names of its output layers.

    TFMOT wrappers rename layers (``quant_<name>``, ``prune_low_magnitude_<name>``); the name
    of the wrapped layer is used, so a QAT copy keeps the task names of its source.

    Example:
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,), name="head")])
        >>> task_names(m)
        ['head']
    """
    names = []
    for tensor in model.outputs:
        layer = tensor._keras_history.layer
        names.append(_unwrap(layer).name)
    return names


def _input_dependencies(model: keras.Model) -> list[list[int]]:
    """For each model output, the sorted indices of the model inputs it depends on."""
    input_index = {name: i for i, name in enumerate(model.input_names)}
    result = []
    for output in model.outputs:
        deps: set[int] = set()
        seen: set[int] = set()
        stack = [output]
        while stack:
            tensor = stack.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            layer, node_index, _ = tensor._keras_history
            if isinstance(layer, keras.layers.InputLayer):
                if layer.name in input_index:
                    deps.add(input_index[layer.name])
                continue
            node = layer._inbound_nodes[node_index]
            stack.extend(tf.nest.flatten(node.keras_inputs))
        result.append(sorted(deps) or list(range(len(model.inputs))))
    return result


@dataclass(frozen=True)
class _Signature:
    key: str
    inputs: tuple[int, ...]  # model input indices (for the shared signature: all of them)
    outputs: tuple[int, ...]  # model output indices
    shared_input: bool = False


def _plan_signatures(model: keras.Model) -> list[_Signature]:
    names = task_names(model)
    deps = _input_dependencies(model)
    n_in = len(model.inputs)
    plans = [_Signature(name, tuple(deps[t]), (t,)) for t, name in enumerate(names)]
    if len(names) > 1:
        every_output = tuple(range(len(names)))
        plans.append(_Signature(ALL_TASKS, tuple(range(n_in)), every_output))
        specs = {(tuple(x.shape[1:].as_list()), x.dtype) for x in model.inputs}
        if len(specs) == 1:
            plans.append(_Signature(ALL_TASKS_SHARED_INPUT, tuple(range(n_in)), every_output, shared_input=True))
    return plans


def _layer_problems(model: keras.Model) -> None:
    """Raises a clear error for models that must be transformed before export."""
    from tfmot_zip.model.layers import ZIP_LAYERS

    def walk(m: keras.Model):
        for layer in m.layers:
            yield layer
            inner = _unwrap(layer)
            if inner is not layer:
                yield inner
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    for layer in walk(model):
        if isinstance(layer, ZIP_LAYERS):
            raise ValueError(
                f"Model {model.name!r} still has zip layers (layer {layer.name!r} is a "
                f"{type(layer).__name__}). Export the stripped model: "
                "plain = tfmot_zip.strip_zipping(model); tfmot_zip.export_tflite(plain, ...). "
                "Stripping stores every shared weight once as a standard layer."
            )
        if type(layer).__name__ == "PruneLowMagnitude":
            raise ValueError(
                f"Model {model.name!r} still has TFMOT pruning wrappers (layer {layer.name!r}). "
                "Call tfmot.sparsity.keras.strip_pruning(model) after fine-tuning and export the "
                "result (its zeros shrink the gzipped file; sparsity=True stores them in a sparse format)."
            )


def _is_qat(model: keras.Model) -> bool:
    return any(type(l).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer") for l in model.layers)


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


def _as_array(data: Any, argument: str, count: int | None = None) -> np.ndarray:
    from tfmot_zip.data.tasks import as_inputs

    try:
        return np.asarray(as_inputs(data, count=count))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{argument}: {err}") from None


def _per_input(model: keras.Model, data: Any, argument: str, count: int | None = None) -> list[np.ndarray]:
    """One array per model input from an array, a sequence (one per input) or a dict.

    Dict keys may be input names or task names (a task name stands for the input(s) it reads).
    """
    names = list(model.input_names)
    n_in = len(names)
    if isinstance(data, Mapping):
        tasks = task_names(model)
        deps = _input_dependencies(model)
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
    return [np.asarray(a, dtype=tensor.dtype.as_numpy_dtype) for a, tensor in zip(out, model.inputs)]


# ------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------


def _check_destination(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"Cannot write the TFLite file to {str(path)!r}: it is a directory. Pass a file path like {str(path / 'model.tflite')!r}.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise FileNotFoundError(
            f"Cannot write the TFLite file {str(path)!r}: the folder {str(parent)!r} does not exist. "
            "Create it first (os.makedirs(folder, exist_ok=True)) or pass another path."
        )
    if not parent.is_dir():
        raise NotADirectoryError(
            f"Cannot write the TFLite file {str(path)!r}: {str(parent)!r} is not a folder. Pass a path "
            "inside an existing folder."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write the TFLite file {str(path)!r}: the folder {str(parent)!r} is not writable. "
            "Pass a path in a writable folder."
        )
    return path


def _concrete_functions(model: keras.Model, plans: Sequence[_Signature]) -> dict:
    names = task_names(model)
    input_names = list(model.input_names)
    specs = [
        tf.TensorSpec([None, *x.shape[1:].as_list()], x.dtype, name=name)
        for x, name in zip(model.inputs, input_names)
    ]

    def run(feeds: list) -> list:
        outputs = model(feeds if len(feeds) > 1 else feeds[0], training=False)
        return tf.nest.flatten(outputs)

    functions = {}
    for plan in plans:
        if plan.shared_input:
            spec = tf.TensorSpec(specs[0].shape, specs[0].dtype, name=SHARED_INPUT_NAME)

            def shared_fn(x, plan=plan):
                outputs = run([x] * len(specs))
                return {names[t]: outputs[t] for t in plan.outputs}

            functions[plan.key] = tf.function(shared_fn).get_concrete_function(spec)
            continue
        if len(plan.outputs) == 1 and len(plan.inputs) < len(specs):
            # A task reading only some inputs: a sub-model over the same layers (same weights).
            sub = keras.Model([model.inputs[i] for i in plan.inputs], model.outputs[plan.outputs[0]])

            def task_fn(*xs, sub=sub, plan=plan):
                y = sub(list(xs) if len(xs) > 1 else xs[0], training=False)
                return {names[plan.outputs[0]]: y}

            functions[plan.key] = tf.function(task_fn).get_concrete_function(*[specs[i] for i in plan.inputs])
            continue

        def all_fn(*xs, plan=plan):
            outputs = run(list(xs))
            return {names[t]: outputs[t] for t in plan.outputs}

        functions[plan.key] = tf.function(all_fn).get_concrete_function(*specs)
    return functions


def _representative_dataset(model: keras.Model, plans: Sequence[_Signature], arrays: list[np.ndarray], samples: int):
    input_names = list(model.input_names)
    count = min(samples, min(len(a) for a in arrays))
    distinct = list({id(a): a for a in arrays}.values())  # one array given for every input: once

    def generate():
        for i in range(count):
            for plan in plans:
                if plan.shared_input:
                    for array in distinct:
                        yield plan.key, {SHARED_INPUT_NAME: array[i : i + 1]}
                else:
                    yield plan.key, {input_names[j]: arrays[j][i : i + 1] for j in plan.inputs}

    return generate


def export_tflite(
    model: keras.Model,
    path: PathLike | None = None,
    *,
    quantize: str | None = None,
    representative_data: Any = None,
    representative_samples: int = 200,
    sparsity: bool = False,
) -> bytes:
    """Converts a multi-task tf_keras model to ONE TFLite file with a signature per task.

    Signatures: one per task (key = task name = output name), ``"all_tasks"`` (every input and
    output) and ``"all_tasks_shared_input"`` (one input ``"input"`` fed to every task, when all
    inputs have one shape) for models with several tasks. Weights shared by tasks or signatures
    are stored once. Inputs and outputs stay float32 in every mode.

    Args:
        model: a tf_keras model of standard layers: ``tfmot_zip.strip_zipping(zipped)``,
            possibly pruned (after ``tfmot.sparsity.keras.strip_pruning``) or quantization-aware
            (``tfmot.quantization.keras.quantize_model``); any single-task model works too.
        path: where to write the file (atomically: a temporary file in the same folder, then a
            rename; nothing is left behind on failure), or None to only return the bytes.
        quantize: None (float32), "dynamic" (int8 weights, float activations), "float16"
            (float16 weights) or "int8" (full integer: weights and activations; needs
            ``representative_data`` unless the model is quantization-aware).
        representative_data: calibration inputs for "int8": one array for every input, a
            sequence with one array (or ``tf.data`` dataset) per model input, or a dict keyed by
            input or task name. Every signature is calibrated on its inputs' data; the
            shared-input signature on every task's data. Not used for a quantization-aware
            model (its ranges were learnt during QAT).
        representative_samples: calibration samples per input (the first ones).
        sparsity: also apply ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``, which stores pruned
            weights in a sparse format (smaller raw files for float weights that are mostly
            zeros). Its index metadata is kept per tensor and per signature, so with several
            signatures and int8 weights it can make the file larger: measure, and compare
            with the gzipped size of the dense file.

    Returns:
        The TFLite flatbuffer bytes.

    Raises:
        ValueError: unknown ``quantize``; "int8" without ``representative_data`` for a model
            that is not quantization-aware; a quantization-aware model with another mode; a
            model with zip layers (call ``tfmot_zip.strip_zipping`` first) or with pruning
            wrappers (call ``tfmot.sparsity.keras.strip_pruning`` first); a task named like a
            reserved signature.
        FileNotFoundError, NotADirectoryError, PermissionError: ``path`` cannot be written
            (checked before converting).

    Example:
        >>> plain = tfmot_zip.strip_zipping(zipped)  # doctest: +SKIP
        >>> data = export_tflite(plain, "out/zipped.tflite")  # doctest: +SKIP
        >>> sorted(tflite_signatures(data))  # doctest: +SKIP
        ['all_tasks', 'all_tasks_shared_input', 'task_a', 'task_b']
    """
    check_tf_keras_model(model)
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"Unknown quantize={quantize!r}; expected one of {list(QUANTIZE_MODES)} (None is float32)."
        )
    if not isinstance(representative_samples, (int, np.integer)) or isinstance(representative_samples, bool) or representative_samples <= 0:
        raise ValueError(f"Expected a positive integer. Received: representative_samples={representative_samples!r}")
    _layer_problems(model)
    qat = _is_qat(model)
    if qat and quantize != "int8":
        raise ValueError(
            f"Model {model.name!r} is quantization-aware (TFMOT QAT), which converts to full integer "
            f"only; pass quantize='int8' (received quantize={quantize!r}). Export the float model "
            "for other modes."
        )
    if quantize == "int8" and representative_data is None and not qat:
        raise ValueError(
            "quantize='int8' needs representative_data to calibrate the activation ranges: pass a few "
            "hundred typical inputs per task, e.g. representative_data=(x_a[:200], x_b[:200]) "
            "(one array per model input), or use quantize='dynamic', which needs none."
        )
    destination = _check_destination(path) if path is not None else None
    plans = _plan_signatures(model)
    keys = [p.key for p in plans]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"Task names {task_names(model)} collide with the reserved signature keys "
            f"{[ALL_TASKS, ALL_TASKS_SHARED_INPUT]} or with each other; rename the outputs."
        )
    arrays = None
    if quantize == "int8" and representative_data is not None:
        arrays = _per_input(model, representative_data, "representative_data", representative_samples)

    functions = _concrete_functions(model, plans)
    root = tf.Module()
    root.model_variables = list(model.variables)
    with tempfile.TemporaryDirectory(prefix="tfmot_zip_export_") as folder:
        tf.saved_model.save(root, folder, signatures=functions)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=keys)
        optimizations = []
        if quantize is not None:
            optimizations.append(tf.lite.Optimize.DEFAULT)
        if sparsity:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8" and arrays is not None:
            converter.representative_dataset = _representative_dataset(model, plans, arrays, representative_samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with warnings.catch_warnings():
            # The int8 calibrator builds a tf.lite.Interpreter internally; its deprecation
            # warning is TensorFlow's, not the user's.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            data = bytes(converter.convert())
    if destination is not None:
        atomic_write_bytes(destination, data)
    return data


# ------------------------------------------------------------------------------------------
# Running TFLite
# ------------------------------------------------------------------------------------------


def load_interpreter(tflite: TFLiteSource, num_threads: int | None = None) -> Any:
    """A LiteRT ``Interpreter`` for TFLite bytes or a file path (an interpreter passes through).

    Example:
        >>> interpreter = load_interpreter("zipped.tflite", num_threads=1)  # doctest: +SKIP
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(tflite, Interpreter):
        return tflite
    if isinstance(tflite, (bytes, bytearray)):
        return Interpreter(model_content=bytes(tflite), num_threads=num_threads)
    if isinstance(tflite, (str, os.PathLike)):
        path = Path(tflite).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"TFLite file {str(path)!r} does not exist; pass the path export_tflite wrote.")
        return Interpreter(model_path=str(path), num_threads=num_threads)
    raise TypeError(
        f"Expected TFLite bytes, a file path or a LiteRT Interpreter; received {type(tflite).__name__}."
    )


def tflite_signatures(tflite: TFLiteSource) -> dict[str, dict[str, list[str]]]:
    """``{signature key: {"inputs": [...], "outputs": [...]}}`` of a TFLite model.

    Example:
        >>> tflite_signatures(data)["all_tasks"]["outputs"]  # doctest: +SKIP
        ['task_a', 'task_b']
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
        >>> probs = tflite_predict(data, "task_a", x_a)["task_a"]  # doctest: +SKIP
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"Expected a positive integer. Received: batch_size={batch_size!r}")
    interpreter = load_interpreter(tflite, num_threads)
    runner, spec = _runner(interpreter, signature)
    details = runner.get_input_details()
    feeds = _signature_feeds(signature, list(spec["inputs"]), inputs)
    for name, array in feeds.items():
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
        ``{output name: accuracy in [0, 1]}``.

    Example:
        >>> tflite_accuracy(data, "task_a", task_a.x_test, task_a.y_test)  # doctest: +SKIP
        {'task_a': 0.905}
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
        y = np.asarray(y).reshape(-1)
        predictions = outputs[name]
        if len(y) != len(predictions):
            raise ValueError(f"labels for {name!r} has {len(y)} entries, but {len(predictions)} samples were run.")
        result[name] = float(np.mean(np.argmax(predictions, axis=-1) == y))
    return result


def _compare(reference: np.ndarray, actual: np.ndarray) -> dict:
    reference = np.asarray(reference, np.float64)
    actual = np.asarray(actual, np.float64)
    scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
    finite = bool(np.all(np.isfinite(actual)))
    difference = np.abs(reference - actual)
    error = float(np.max(difference)) if finite else math.inf
    mean = float(np.mean(difference)) if finite else math.inf
    out = {"max_abs_error": error, "mean_abs_error": mean, "scale": scale}
    if reference.ndim >= 2 and reference.shape[-1] > 1:
        out["argmax_agreement"] = float(np.mean(np.argmax(reference, -1) == np.argmax(actual, -1)))
    return out


def verify_tflite(
    tflite: TFLiteSource,
    keras_model: keras.Model,
    inputs: Any,
    *,
    quantize: str | None = None,
    tolerance: Tolerance | None = None,
    batch_size: int = 256,
) -> dict[str, dict]:
    """Runs every signature of a TFLite model and compares it with the Keras model.

    Per-task and ``"all_tasks"`` signatures get each input's data; ``"all_tasks_shared_input"``
    gets the first input's data, compared with the Keras model fed that array on every input.

    Args:
        tflite: TFLite bytes, a file path or a LiteRT ``Interpreter``.
        keras_model: the model that was exported (for a QAT export: the QAT model).
        inputs: test inputs: one array for every input, a sequence with one array per model
            input, or a dict keyed by input or task name.
        quantize: the mode the file was exported with; selects :data:`TOLERANCES` [quantize].
        tolerance: overrides the default tolerance.
        batch_size: samples per interpreter invocation.

    Returns:
        ``{signature: {output: {"max_abs_error", "mean_abs_error", "scale",
        "argmax_agreement"}, ...}}`` plus, per signature, ``"max_abs_error"`` and
        ``"mean_abs_error"`` (worst output) and ``"argmax_agreement"`` (lowest).

    Raises:
        TFLiteVerificationError: a signature is missing or is beyond the tolerance; the message
            names the signature, output, the measured value and the bound.

    Example:
        >>> report = verify_tflite(data, plain, (x_a[:500], x_b[:500]))  # doctest: +SKIP
        >>> report["all_tasks"]["max_abs_error"] < 1e-5  # doctest: +SKIP
        True
    """
    check_tf_keras_model(keras_model, "keras_model")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"Unknown quantize={quantize!r}; expected one of {list(QUANTIZE_MODES)}.")
    bound = tolerance or TOLERANCES[quantize]
    arrays = _per_input(keras_model, inputs, "inputs")
    plans = _plan_signatures(keras_model)
    interpreter = load_interpreter(tflite)
    available = interpreter.get_signature_list()
    missing = [p.key for p in plans if p.key not in available]
    if missing:
        raise TFLiteVerificationError(
            f"The TFLite model lacks the signatures {missing} of Keras model {keras_model.name!r} (it has "
            f"{sorted(available)}). Verify it against the model it was exported from."
        )
    input_names = list(keras_model.input_names)
    names = task_names(keras_model)

    def reference(feeds: list[np.ndarray]) -> list[np.ndarray]:
        out = keras_model.predict(feeds if len(feeds) > 1 else feeds[0], batch_size=batch_size, verbose=0)
        return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]

    ref_all = reference(arrays)
    ref_shared = None
    report: dict[str, dict] = {}
    failures = []
    for plan in plans:
        if plan.shared_input:
            feeds = {SHARED_INPUT_NAME: arrays[0]}
            if ref_shared is None:
                ref_shared = reference([arrays[0]] * len(arrays))
            refs = ref_shared
        else:
            feeds = {input_names[j]: arrays[j] for j in plan.inputs}
            refs = ref_all
        outputs = tflite_predict(interpreter, plan.key, feeds, batch_size=batch_size)
        entry: dict[str, Any] = {}
        for t in plan.outputs:
            name = names[t]
            stats = _compare(refs[t], outputs[name])
            entry[name] = stats
            if stats["max_abs_error"] > bound.max_abs * stats["scale"]:
                failures.append(
                    f"signature {plan.key!r}, output {name!r}: max |tflite - keras| = "
                    f"{stats['max_abs_error']:.3g} > {bound.max_abs:g} x {stats['scale']:.3g}"
                )
            if bound.max_mean_abs is not None and stats["mean_abs_error"] > bound.max_mean_abs * stats["scale"]:
                failures.append(
                    f"signature {plan.key!r}, output {name!r}: mean |tflite - keras| = "
                    f"{stats['mean_abs_error']:.3g} > {bound.max_mean_abs:g} x {stats['scale']:.3g}"
                )
            agreement = stats.get("argmax_agreement")
            if bound.min_argmax_agreement is not None and agreement is not None and agreement < bound.min_argmax_agreement:
                failures.append(
                    f"signature {plan.key!r}, output {name!r}: argmax agreement {agreement:.4f} < "
                    f"{bound.min_argmax_agreement:g}"
                )
        entry["max_abs_error"] = max(entry[names[t]]["max_abs_error"] for t in plan.outputs)
        entry["mean_abs_error"] = max(entry[names[t]]["mean_abs_error"] for t in plan.outputs)
        agreements = [entry[names[t]].get("argmax_agreement") for t in plan.outputs]
        agreements = [a for a in agreements if a is not None]
        entry["argmax_agreement"] = min(agreements) if agreements else None
        report[plan.key] = entry
    if failures:
        raise TFLiteVerificationError(
            f"TFLite model disagrees with Keras model {keras_model.name!r} (quantize={quantize!r}, "
            f"tolerance {bound}): " + "; ".join(failures) + ". Check that the file was exported from "
            "this model with this quantize mode; for int8, calibrate with more representative data "
            "(or use quantization-aware training), or pass a looser tolerance=Tolerance(...)."
        )
    return report
