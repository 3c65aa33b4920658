"""TFLite export and verification, size and latency reports, TFMOT quantization glue.

The names below are re-exported from :mod:`tfmot_zip.export.tflite`.
"""
from tfmot_zip.export.tflite import *  # noqa: F401,F403
from tfmot_zip.export.tflite import __all__  # noqa: F401
