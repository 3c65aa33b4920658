"""The ``tfmot-zip`` command line."""
from tfmot_zip.cli.main import main

__all__ = ["main"]
