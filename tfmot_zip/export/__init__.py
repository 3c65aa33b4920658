"""TFLite export and verification, size and latency reports, TFMOT quantization glue.

One concern per module: :mod:`~tfmot_zip.export.signatures` (task names, the signatures a model
gets), :mod:`~tfmot_zip.export.inputs` (one array per model input), :mod:`~tfmot_zip.export.convert`
(:func:`export_tflite`), :mod:`~tfmot_zip.export.flatbuffer` (is it TFLite; the tensor types of
each signature), :mod:`~tfmot_zip.export.interpreter` (running a file in LiteRT),
:mod:`~tfmot_zip.export.verify` (:func:`verify_tflite`), :mod:`~tfmot_zip.export.size` (size and
latency against the separate models) and :mod:`~tfmot_zip.export.tfmot` (TFMOT pruning and QAT
of zip layers; imported on its own, as it imports TFMOT). The names below are re-exported.

Example:
    >>> from tfmot_zip.export import TOLERANCES, export_tflite, verify_tflite
    >>> TOLERANCES[None].max_abs
    1e-05
"""
from tfmot_zip.export.convert import QUANTIZE_MODES, export_tflite
from tfmot_zip.export.interpreter import load_interpreter, tflite_accuracy, tflite_predict, tflite_signatures
from tfmot_zip.export.signatures import ALL_TASKS, ALL_TASKS_SHARED_INPUT, SHARED_INPUT_NAME, task_names
from tfmot_zip.export.verify import TOLERANCES, TFLiteVerificationError, Tolerance, verify_tflite

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
