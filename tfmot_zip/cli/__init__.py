"""The ``tfmot-zip`` command line (``tfmot-zip --help``, or ``python -m tfmot_zip.cli``).

Modules: :mod:`~tfmot_zip.cli.parser` (the parser and :func:`main`), :mod:`~tfmot_zip.cli.errors`
(exit codes), :mod:`~tfmot_zip.cli.console` (stderr, progress bars, quiet TensorFlow),
:mod:`~tfmot_zip.cli.files` and :mod:`~tfmot_zip.cli.inputs` (arguments checked before any work),
and one module per command: ``zip_cmd``, ``retrain_cmd``, ``export_cmd``, ``inspect_cmd``, ``demo_cmd``.
Data specs are a library module: :mod:`tfmot_zip.data.specs`.
"""
from tfmot_zip.cli.parser import main

__all__ = ["main"]
