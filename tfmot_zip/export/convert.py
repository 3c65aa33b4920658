"""Conversion of a (stripped) multi-task tf_keras model to ONE TFLite file, a signature per task.

:func:`export_tflite` writes the signatures planned by :mod:`tfmot_zip.export.signatures`.
All signatures read the same weight buffers: a weight shared by several tasks (one layer called
by several tasks in a stripped zipped model) and used by several signatures is stored once, in
float32, float16, dynamic and post-training int8 files. Exception: a quantization-aware (QAT)
model converts a shared Dense kernel with its per-tensor QAT scale in the one-task signatures
but re-quantizes it per channel in the all-tasks signatures (where the layer is called twice),
so the converter writes two int8 copies; post-training int8 keeps one. Each signature has its own
tensor metadata (names, and in int8 files the per-channel scales and zero points of every tensor it
reads), so files grow with the number of signatures: the folded, zipped MobileNetV2 pair's int8 file
holds its weight data once, yet is 1.11x the two int8 originals with four signatures and 0.51x with
only ``"all_tasks_shared_input"`` (``export_tflite(..., signatures=[...])``; docs/APPLICATIONS.md).
Identical operations on
the same tensor are merged by the converter, so in ``"all_tasks_shared_input"`` a block shared
by the tasks runs once.

The model is saved as a temporary SavedModel with these signatures (a ``tfmot_zip_export_*``
folder, removed on success, error, SIGTERM and SIGINT) and converted with
``tf.lite.TFLiteConverter.from_saved_model``. Representative data is checked before any work
(real numbers, no NaN or inf, not constant), and the converted file's tensor types are checked
against the mode asked for before it is written: "int8" gives int8 or an error.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from tfmot_zip.compat import keras, tf
from tfmot_zip.export.flatbuffer import EXPECTED_TYPES, tensor_type_problems
from tfmot_zip.export.inputs import per_input_arrays
from tfmot_zip.export.signatures import (
    ALL_TASKS,
    ALL_TASKS_SHARED_INPUT,
    SHARED_INPUT_NAME,
    SignaturePlan,
    plan_signatures,
    task_names,
    unwrap_layer,
)
from tfmot_zip.io import atomic_write_bytes, temporary_directory
from tfmot_zip.model.keras3 import as_tf_keras_model

__all__ = ["QUANTIZE_MODES", "export_tflite", "is_quantization_aware_model"]

QUANTIZE_MODES = (None, "dynamic", "float16", "int8")

PathLike = Union[str, "os.PathLike[str]"]


def _layer_problems(model: keras.Model) -> None:
    """Raises a clear error for models that must be transformed before export."""
    from tfmot_zip.model.depthwise import ZipDepthwiseConv2D
    from tfmot_zip.model.layers import ZIP_LAYERS

    def walk(m: keras.Model):
        for layer in m.layers:
            yield layer
            inner = unwrap_layer(layer)
            if inner is not layer:
                yield inner
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    for layer in walk(model):
        if isinstance(layer, ZIP_LAYERS + (ZipDepthwiseConv2D,)):
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



def is_quantization_aware_model(model: keras.Model) -> bool:
    """:func:`tfmot_zip.export.tfmot.is_quantization_aware`, without importing TFMOT for nothing.

    A model can only hold TFMOT's QAT layers once TFMOT is imported; float exports do not pay
    for its import.

    Example:
        >>> from tfmot_zip.compat import keras
        >>> is_quantization_aware_model(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]))
        False
    """
    if "tensorflow_model_optimization" not in sys.modules:
        return False
    from tfmot_zip.export.tfmot import is_quantization_aware

    return is_quantization_aware(model)


def _check_destination(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() != ".tflite" and not path.is_dir():
        raise ValueError(
            f"Cannot write a TFLite file to {str(path)!r}: the path must end in .tflite (export_tflite "
            f"writes TFLite bytes, never a {path.suffix or 'suffix-less'} file). Pass {str(path.with_suffix('.tflite'))!r}; "
            "save Keras models with model.save(...) instead."
        )
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


def _check_types(data: bytes, quantize: str | None, qat: bool) -> None:
    """A ValueError if the converter did not give the tensor types ``quantize`` asks for.

    A quantization-aware model converts with float32 parts where its QAT layers left an
    operation unannotated (e.g. one input fed to two differently quantized tasks): a warning.
    """
    problems = tensor_type_problems(data, quantize, integer_only=not qat)
    islands = tensor_type_problems(data, quantize) if qat and not problems else []
    if islands:
        warnings.warn(
            "The quantization-aware model converted to int8 with float32 parts: " + "; ".join(islands)
            + ". TFLite runs those operations in float32; verify_tflite checks the outputs.",
            UserWarning,
            stacklevel=3,
        )
    if problems:
        raise ValueError(
            f"export_tflite(quantize={quantize!r}) did not give the tensor types asked for ({EXPECTED_TYPES[quantize]}): "
            + "; ".join(problems) + ". Nothing was written. For int8, check that every task's "
            "representative data is typical input (it sets each activation's range), or use "
            "quantize='dynamic' (int8 weights, float activations)."
        )


def _concrete_functions(model: keras.Model, plans: Sequence[SignaturePlan]) -> dict:
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


def _representative_dataset(model: keras.Model, plans: Sequence[SignaturePlan], arrays: list[np.ndarray], samples: int):
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


def _check_finite_outputs(model: keras.Model, arrays: list[np.ndarray], samples: int) -> None:
    """A ValueError naming each output that is NaN or inf on some representative sample: the int8
    calibrator sets activation ranges from these values, so it would give a broken file or none."""
    count = min(samples, min(len(a) for a in arrays))
    feeds = [a[:count] for a in arrays]
    outputs = model.predict(feeds if len(feeds) > 1 else feeds[0], batch_size=64, verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    found = []
    for name, out in zip(model.output_names, outputs):
        bad = int(np.sum(~np.isfinite(np.asarray(out).reshape(len(out), -1)).all(axis=1)))
        if bad:
            found.append(f"output {name!r} on {bad} of {count} samples")
    if found:
        raise ValueError(
            "export_tflite(quantize='int8') calibrates activation ranges on representative_data, but the model's "
            f"outputs there are NaN or inf ({'; '.join(found)}). Nothing was written. The model overflows on this "
            "data: check that it is typical input at the scale the model was trained on, and the model itself (a "
            "BatchNormalization whose moving variance is near zero multiplies small differences); its float outputs "
            "must be finite before it can be quantized."
        )


def export_tflite(
    model: keras.Model,
    path: PathLike | None = None,
    *,
    quantize: str | None = None,
    representative_data: Any = None,
    representative_samples: int = 200,
    sparsity: bool = False,
    signatures: Sequence[str] | None = None,
) -> bytes:
    """Converts a multi-task tf_keras model to ONE TFLite file with a signature per task.

    Signatures: one per task (key = task name = output name), ``"all_tasks"`` (every input and
    output) and ``"all_tasks_shared_input"`` (one input ``"input"`` fed to every task, when all
    inputs have one shape) for models with several tasks. Weights shared by tasks or signatures
    are stored once (but see the module notes on QAT and on per-signature metadata). Inputs and outputs
    stay float32 in every mode.

    Args:
        model: a tf_keras model of standard layers: ``tfmot_zip.strip_zipping(zipped)``,
            possibly pruned (after ``tfmot.sparsity.keras.strip_pruning``) or quantization-aware
            (``tfmot.quantization.keras.quantize_model``); any single-task model works too.
        path: where to write the file, ending in ``.tflite`` (atomically: a temporary file in
            the same folder, then a rename; nothing is left behind on failure), or None to only
            return the bytes.
        quantize: None (float32), "dynamic" (int8 weights, float activations), "float16"
            (float16 weights) or "int8" (full integer: weights and activations; needs
            ``representative_data`` unless the model is quantization-aware).
        representative_data: calibration inputs for "int8": one array for every input, a
            sequence with one array (or ``tf.data`` dataset) per model input, or a dict keyed by
            input or task name. Every signature is calibrated on its inputs' data; the
            shared-input signature on every task's data. Not used for a quantization-aware
            model (its ranges were learnt during QAT). Refused (before any work) if a task's
            data holds NaN or inf values, is constant, or is not real numbers; integer images
            above 1 (uint8 0..255) are used as given, with a warning
            (:func:`tfmot_zip.data.checks.warn_if_unscaled`).
        representative_samples: calibration samples per input (the first ones).
        sparsity: also apply ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``, which stores pruned
            weights in a sparse format (smaller raw files for float weights that are mostly
            zeros). Its index metadata is kept per tensor and per signature, so with several
            signatures and int8 weights it can make the file larger: measure, and compare
            with the gzipped size of the dense file.
        signatures: the signature keys to write (e.g. ``["all_tasks_shared_input"]``), or None
            for every planned one. Each signature carries its own tensor metadata (int8 scales and
            zero points per channel, names), so a file with fewer signatures is smaller: writing
            only the shared-input signature of a zipped pair halved an int8 MobileNetV2 file
            (docs/APPLICATIONS.md).

    Returns:
        The TFLite flatbuffer bytes.

    Raises:
        ValueError: unknown ``quantize``; a ``path`` not ending in ``.tflite``; "int8" without
            ``representative_data`` for a model that is not quantization-aware, or with
            representative data that holds NaN or inf values (counted, per task), is
            constant, or on which the model's outputs are NaN or inf (counted, per output); a quantization-aware model with another mode; a model with zip layers
            (call ``tfmot_zip.strip_zipping`` first) or with pruning wrappers (call
            ``tfmot.sparsity.keras.strip_pruning`` first); a task named like a reserved
            signature; a converted file without the tensor types of ``quantize`` (nothing is
            written).
        FileNotFoundError, NotADirectoryError, PermissionError: ``path`` cannot be written
            (checked before converting).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import tflite_signatures
        >>> a, b = keras.Input((3,), name="a_in"), keras.Input((3,), name="b_in")
        >>> shared = keras.layers.Dense(4, name="shared")
        >>> model = keras.Model([a, b], [keras.layers.Dense(2, name="task_a")(shared(a)),
        ...                              keras.layers.Dense(2, name="task_b")(shared(b))])
        >>> data = export_tflite(model)  # export_tflite(model, "zipped.tflite") also writes the file
        >>> sorted(tflite_signatures(data))
        ['all_tasks', 'all_tasks_shared_input', 'task_a', 'task_b']
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"Unknown quantize={quantize!r}; expected one of {list(QUANTIZE_MODES)} (None is float32)."
        )
    destination = _check_destination(path) if path is not None else None
    model = as_tf_keras_model(model)
    if not isinstance(representative_samples, (int, np.integer)) or isinstance(representative_samples, bool) or representative_samples <= 0:
        raise ValueError(f"Expected a positive integer. Received: representative_samples={representative_samples!r}")
    _layer_problems(model)
    qat = is_quantization_aware_model(model)
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
    plans = plan_signatures(model)
    keys = [p.key for p in plans]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"Task names {task_names(model)} collide with the reserved signature keys "
            f"{[ALL_TASKS, ALL_TASKS_SHARED_INPUT]} or with each other; rename the outputs."
        )
    if signatures is not None:
        wanted = [signatures] if isinstance(signatures, str) else list(signatures)
        unknown = [k for k in wanted if k not in keys]
        if unknown or not wanted:
            problem = f"Unknown signatures {unknown!r}" if unknown else "signatures=[] asks for no signature"
            raise ValueError(
                f"{problem} for model {model.name!r}; it has {keys}. Pass some of those keys, or "
                f"signatures=None for all of them."
            )
        plans = [p for p in plans if p.key in wanted]
        keys = [p.key for p in plans]
    arrays = None
    if quantize == "int8" and representative_data is not None:
        arrays = per_input_arrays(model, representative_data, "representative_data", representative_samples, refuse_constant=True)
        _check_finite_outputs(model, arrays, representative_samples)

    functions = _concrete_functions(model, plans)
    root = tf.Module()
    root.model_variables = list(model.variables)
    with temporary_directory("tfmot_zip_export_") as folder:
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
    _check_types(data, quantize, qat)
    if destination is not None:
        atomic_write_bytes(destination, data)
    return data


