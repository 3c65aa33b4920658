"""Shared fixtures. Model builders live in tests/builders.py (``from builders import mlp``)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import tfmot_zip.compat  # noqa: E402,F401  (tf_keras before anything else)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
