"""Fashion-MNIST from the local Debian files, tasks made from it, and the multi-task pipeline.

The names below are re-exported from :mod:`tfmot_zip.data.tasks`.
"""
from tfmot_zip.data.tasks import *  # noqa: F401,F403
from tfmot_zip.data.tasks import __all__  # noqa: F401
