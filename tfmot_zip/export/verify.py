"""Verification of a TFLite file against its Keras model, signature by signature.

:func:`verify_tflite` runs every signature in the LiteRT interpreter and compares it with the
Keras model under the tolerances of :data:`TOLERANCES` (one per quantization mode).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfmot_zip.compat import keras
from tfmot_zip.export.convert import QUANTIZE_MODES, is_quantization_aware_model
from tfmot_zip.export.flatbuffer import check_tensor_types
from tfmot_zip.export.inputs import per_input_arrays
from tfmot_zip.export.interpreter import TFLiteSource, load_interpreter, tflite_predict
from tfmot_zip.export.signatures import SHARED_INPUT_NAME, plan_signatures, task_names
from tfmot_zip.model.keras3 import as_tf_keras_model

__all__ = ["Tolerance", "TOLERANCES", "TFLiteVerificationError", "verify_tflite"]


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

    Example:
        >>> TOLERANCES["int8"].min_argmax_agreement
        0.95
        >>> Tolerance(max_abs=1e-3, min_argmax_agreement=0.99).max_mean_abs is None
        True
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
    """A TFLite signature disagrees with its Keras model beyond the tolerance.

    A ``ValueError``, so callers that catch bad-argument errors catch it too.

    Example:
        >>> issubclass(TFLiteVerificationError, ValueError)
        True
    """


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
        quantize: the mode the file was exported with; selects :data:`TOLERANCES` [quantize]
            and the tensor types the file must have (``"int8"``: int8 tensors in every signature,
            and float32 only at its inputs and outputs unless ``keras_model`` is
            quantization-aware; None: no quantized tensor). The types are read from bytes or a
            file; an ``Interpreter`` is compared by its outputs only.
        tolerance: overrides the default tolerance.
        batch_size: samples per interpreter invocation.

    Returns:
        ``{signature: {output: {"max_abs_error", "mean_abs_error", "scale",
        "argmax_agreement"}, ...}}`` plus, per signature, ``"max_abs_error"`` and
        ``"mean_abs_error"`` (worst output) and ``"argmax_agreement"`` (lowest).

    Raises:
        TFLiteVerificationError: a signature is missing, has other tensor types than ``quantize``
            asks for, or is beyond the tolerance; the message names the signature, output, the
            measured value and the bound.
        ValueError: ``tflite`` is not a TFLite model; ``inputs`` are not real numbers, hold NaN
            or inf values (counted, per task) or do not fit the model.

    Example:
        >>> import numpy as np
        >>> from tfmot_zip.compat import keras
        >>> from tfmot_zip.export import export_tflite
        >>> a, b = keras.Input((4,), name="a_in"), keras.Input((4,), name="b_in")
        >>> shared = keras.layers.Dense(8, activation="relu", name="shared")
        >>> model = keras.Model([a, b], [keras.layers.Dense(3, name="task_a")(shared(a)),
        ...                              keras.layers.Dense(3, name="task_b")(shared(b))])
        >>> x = np.random.default_rng(0).random((20, 4))
        >>> report = verify_tflite(export_tflite(model), model, (x, x))
        >>> sorted(report)
        ['all_tasks', 'all_tasks_shared_input', 'task_a', 'task_b']
        >>> report["all_tasks"]["max_abs_error"] < 1e-5
        True
    """
    keras_model = as_tf_keras_model(keras_model, "keras_model")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"Unknown quantize={quantize!r}; expected one of {list(QUANTIZE_MODES)}.")
    bound = tolerance or TOLERANCES[quantize]
    arrays = per_input_arrays(keras_model, inputs, "inputs")
    plans = plan_signatures(keras_model)
    interpreter = load_interpreter(tflite)
    if isinstance(tflite, (bytes, bytearray, str, os.PathLike)):
        try:
            check_tensor_types(tflite, quantize, integer_only=not is_quantization_aware_model(keras_model))
        except ValueError as err:
            raise TFLiteVerificationError(f"{err} (verify_tflite was asked for quantize={quantize!r})") from None
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
            "this model with this quantize mode; " + (
                "a float file of a deep network (tens of layers, large activations) can differ from Keras by "
                "float32 rounding of about 1e-4 of the output scale, which the default 1e-5 does not allow: "
                "if the argmax agrees, pass tolerance=Tolerance(max_abs=1e-3)." if quantize is None else
                "for quantized files, calibrate with more representative data (or use quantization-aware "
                "training), or pass a looser tolerance=Tolerance(...)."
            )
        )
    return report
