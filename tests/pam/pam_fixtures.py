"""Helpers and fixtures of the PAM tests (``from pam_fixtures import NAMES, models``...).

Test modules import the fixtures they use by name."""
from __future__ import annotations

import numpy as np
import pytest

from tfmot_zip import pam
from tfmot_zip.compat import keras

NAMES = ["a", "b", "c"]


def tiny(seed: int, classes: int = 2, name: str = "tiny") -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8, 1)),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(5, activation="relu", name="fc"),
            keras.layers.Dense(classes, activation="softmax", name="head"),
        ],
        name=name,
    )
    for layer in model.layers:  # non-zero biases so that a lost bias would show
        weights = layer.get_weights()
        if len(weights) == 2:
            layer.set_weights([weights[0], np.random.default_rng(seed).uniform(0.05, 0.2, weights[1].shape)])
    return model


def own_or_shared_groups(seed: int) -> list[np.ndarray]:
    """Conv units shared; every fc unit of model m goes to group m or to the shared group.

    Then no original connection is forbidden (a shared unit reads only shared units), so each
    task's path holds its whole original network.
    """
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(3), 5)
    return [np.full(9, 3), np.where(rng.random(owner.size) < 0.5, 3, owner)]


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
