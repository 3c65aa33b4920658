"""Reading and aligning models, unit spaces, the zip layers, building and stripping zipped models.

Keras glue only: the mathematics lives in :mod:`tfmot_zip.core`.
"""
