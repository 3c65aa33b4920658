"""tfmot_zip: Multi-Task Zipping of tf_keras models, composable with TFMOT.

The public API, in the order a user meets it: zip (:func:`zip_models`, or deferred to ``fit``
with a schedule and :class:`ZipCallback`), inspect (:func:`zip_summary`, :class:`ZipReport`),
strip (:func:`strip_zipping`), quantize (:func:`quantize_zipped`) and export
(:func:`export_tflite`, :func:`verify_tflite`). Subpackages (``tfmot_zip.data``,
``tfmot_zip.export``, ``tfmot_zip.pam``, ...) hold the rest; ``docs/ARCHITECTURE.md`` maps them.

Example:
    >>> import tfmot_zip
    >>> sorted(tfmot_zip.__all__)[:3]
    ['Budget', 'LayerwiseSchedule', 'OneShotSchedule']

Public names resolve lazily; importing the package registers the zip layers with tf_keras (so
TensorFlow is imported). ``tfmot_zip.core`` itself depends only on numpy and scipy.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# A zip interleaves TensorFlow's thread pool with numpy's and scipy's OpenBLAS pools (two
# libraries). OpenBLAS worker threads busy-wait about 2^28 cycles (~0.1 s) after each call by
# default; on a small machine one pool's spinning threads then stall the next call of the other
# (a 151x151 Cholesky measured at 50-100 ms instead of 0.5 ms). 2^4 cycles makes them sleep at
# once. OpenBLAS reads the setting when it loads, so it applies to the pools loaded after this
# import (all of them when ``tfmot_zip`` is imported before numpy); a value set by the user stays.
# Three LeNet-5 zipped at 10,000 images: 2.7-2.9 s with it, 3.4-3.5 s without (docs/ZIP_COST.md).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.2.0"

_EXPORTS = {
    "zip_models": "tfmot_zip.zipping.api",
    "strip_zipping": "tfmot_zip.zipping.api",
    "zip_summary": "tfmot_zip.zipping.api",
    "zip_scope": "tfmot_zip.zipping.api",
    "ZipReport": "tfmot_zip.zipping.report",
    "Budget": "tfmot_zip.zipping.budget",
    "ZipCallback": "tfmot_zip.zipping.callbacks",
    "LayerwiseSchedule": "tfmot_zip.zipping.schedules",
    "OneShotSchedule": "tfmot_zip.zipping.schedules",
    "extract_task_models": "tfmot_zip.model.builder",
    "quantize_zipped": "tfmot_zip.export.tfmot",
    "export_tflite": "tfmot_zip.export.convert",
    "verify_tflite": "tfmot_zip.export.verify",
    "write_zip_report": "tfmot_zip.report.zip_report",
    "UnsupportedModelError": "tfmot_zip.model.graph",
    "TFLiteVerificationError": "tfmot_zip.export.verify",
    "from_keras3": "tfmot_zip.model.keras3",
    "fold_batchnorm": "tfmot_zip.model.fold",
    "compact_zipped": "tfmot_zip.model.compact",
}

_SUBPACKAGES = {
    "apps", "cli", "compat", "core", "data", "export", "io", "model", "pam", "report", "training", "zipping",
}

__all__ = sorted(_EXPORTS)


def _started_as_cli() -> bool:
    """The ``tfmot-zip`` command (or ``python -m tfmot_zip.cli``) silences TensorFlow's start-up
    logs before importing it, so the package must not import TensorFlow first."""
    import os
    import sys

    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return program in ("tfmot-zip", "-m")


# Registers ZipDense/ZipConv2D/ZipDepthwiseConv2D with tf_keras so that `import tfmot_zip` is enough to load a
# zipped `.keras` file (imports TensorFlow; the numpy core itself does not depend on it).
if not _started_as_cli():
    from tfmot_zip.model import register_serializables as _register  # noqa: E402

    _register()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBPACKAGES:  # tfmot_zip.data, tfmot_zip.export, ... on first use
        return importlib.import_module(f"tfmot_zip.{name}")
    raise AttributeError(f"module 'tfmot_zip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
