"""The measured comparisons of tfmot_zip (see ``benchmarks/README.md``; run ``benchmarks/run.py``)."""
