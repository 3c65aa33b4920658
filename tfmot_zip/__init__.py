"""tfmot_zip: Multi-Task Zipping of tf_keras models, composable with TFMOT.

Example:
    >>> import tfmot_zip
    >>> zipped = tfmot_zip.zip_models(model_a, model_b, calibration_data=(x_a, x_b), sharing=0.5)  # doctest: +SKIP

Public names resolve lazily; importing the package registers the zip layers with tf_keras (so
TensorFlow is imported). ``tfmot_zip.core`` itself depends only on numpy and scipy.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "zip_models": "tfmot_zip.zip_api",
    "strip_zipping": "tfmot_zip.zip_api",
    "zip_summary": "tfmot_zip.zip_api",
    "zip_scope": "tfmot_zip.zip_api",
    "ZipReport": "tfmot_zip.zip_api",
    "ZipDense": "tfmot_zip.layers",
    "ZipConv2D": "tfmot_zip.layers",
    "write_zip_report": "tfmot_zip.report",
    "ZipCallback": "tfmot_zip.callbacks",
    "pending_layers": "tfmot_zip.callbacks",
    "LayerwiseSchedule": "tfmot_zip.schedules",
    "OneShotSchedule": "tfmot_zip.schedules",
    "extract_task_models": "tfmot_zip.builder",
    "export_tflite": "tfmot_zip.export",
    "verify_tflite": "tfmot_zip.export",
    "tflite_predict": "tfmot_zip.export",
    "tflite_accuracy": "tfmot_zip.export",
    "size_latency_report": "tfmot_zip.size_report",
    "register_with_tfmot": "tfmot_zip.tfmot_support",
    "quantize_annotate_zipped": "tfmot_zip.tfmot_support",
    "quantize_zipped": "tfmot_zip.tfmot_support",
    "zip_quantize_scope": "tfmot_zip.tfmot_support",
}
_SUBMODULES = {
    "core", "data", "datasets", "zoo", "compat", "layers", "zip_api", "report", "cli",
    "training", "callbacks", "schedules",
    "export", "size_report", "tfmot_support", "tflite_chain",
}

__all__ = sorted(set(_EXPORTS) | _SUBMODULES)


def _started_as_cli() -> bool:
    """The ``tfmot-zip`` command (or ``python -m tfmot_zip.cli``) silences TensorFlow's start-up
    logs before importing it, so the package must not import TensorFlow first."""
    import os
    import sys

    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return program in ("tfmot-zip", "-m")


# Registers ZipDense/ZipConv2D with tf_keras so that `import tfmot_zip` is enough to load a
# zipped `.keras` file (imports TensorFlow; the numpy core itself does not depend on it).
if not _started_as_cli():
    from tfmot_zip import layers as _layers  # noqa: E402,F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfmot_zip.{name}")
    raise AttributeError(f"module 'tfmot_zip' has no attribute {name!r}")
