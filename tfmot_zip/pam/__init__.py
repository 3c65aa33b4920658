"""Pruning-Aware Merging: networks regrouped so that every subset of tasks runs only what it needs.

The names below are re-exported from the modules of this package.
"""
from tfmot_zip.pam.pipeline import *  # noqa: F401,F403
from tfmot_zip.pam.pipeline import __all__  # noqa: F401
