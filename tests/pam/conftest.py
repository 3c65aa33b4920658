"""Fixtures of the PAM tests: three tiny conv nets (tasks a, b, c) and random data.

Plain helpers (``NAMES``, ``tiny``, ``own_or_shared_groups``) are in pam_fixtures.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from pam_fixtures import NAMES, tiny
from tfmot_zip import pam


@pytest.fixture(scope="module")
def models():
    return [tiny(s, name=n) for s, n in zip((1, 2, 3), NAMES)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(64, 8, 8, 1)).astype("float32"), rng.integers(0, 2, 64)) for _ in NAMES]


@pytest.fixture(scope="module")
def separate_nets(models):
    return [pam.separate_network(m, n) for m, n in zip(models, NAMES)]
