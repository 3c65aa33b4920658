"""On a small TRAINED pair, MTZ's Hessian-guided pairing beats random pairing (and, on a
pair that splits one task's classes, Euclidean pairing) at sharing 1.0, right after zipping."""
import numpy as np
import pytest

import tfmot_zip
from tfmot_zip.compat import keras

from builders import mlp

DIM, N = 24, 3000


def task(rng, projection, classes):
    """Inputs on a low-dimensional manifold (so layer Hessians carry information), linear labels."""
    latent = rng.normal(size=(N, 6))
    x = np.tanh(latent @ projection).astype("float32")
    return x, classes(latent)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(6, DIM))
    directions = rng.normal(size=(6, 6))
    sets = {
        "a": task(rng, projection, lambda z: np.argmax(z @ directions[:, :3], 1)),
        "b": task(rng, projection, lambda z: np.argmax(z @ directions[:, 3:], 1)),
    }
    models = {}
    for seed, (name, (x, y)) in enumerate(sets.items()):
        model = mlp(seed, widths=(24,), input_shape=(DIM,), name=name)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=8, batch_size=64, verbose=0)
        models[name] = model
    return models, sets


def accuracy_after_zip(models, sets, method, seed=0):
    names = list(models)
    zipped = tfmot_zip.zip_models(*models.values(), calibration_data=tuple(sets[n][0][:1000] for n in names),
                                  sharing=1.0, method=method, seed=seed)
    outs = zipped([sets[n][0] for n in names])
    return np.mean([np.mean(np.argmax(np.asarray(o), 1) == sets[n][1]) for o, n in zip(outs, names)])


def test_mtz_beats_random_pairing_on_a_trained_pair(trained):
    models, sets = trained
    original = np.mean([np.mean(np.argmax(models[n].predict(sets[n][0], verbose=0), 1) == sets[n][1]) for n in models])
    assert original > 0.85
    mtz = accuracy_after_zip(models, sets, "mtz")
    random = max(accuracy_after_zip(models, sets, "random", seed=s) for s in range(3))
    assert mtz > random + 0.02, (mtz, random, original)


def test_mtz_beats_euclidean_on_a_split_class_pair():
    """One 6-class problem split into two 3-class tasks (classes 0-2 and 3-5), as a split of
    Fashion-MNIST would be: the tasks see different parts of one input distribution."""
    rng = np.random.default_rng(1)
    projection = rng.normal(size=(6, DIM))
    latent = rng.normal(size=(3 * N, 6))
    x = np.tanh(latent @ projection).astype("float32")
    y = np.argmax(latent @ rng.normal(size=(6, 6)), 1)
    models, sets = {}, {}
    for seed, (name, keep) in enumerate((("low", y < 3), ("high", y >= 3))):
        sets[name] = (x[keep][:N], y[keep][:N] % 3)
        model = mlp(10 + seed, widths=(24,), input_shape=(DIM,), name=name)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        model.fit(*sets[name], epochs=8, batch_size=64, verbose=0)
        models[name] = model
    mtz = accuracy_after_zip(models, sets, "mtz")
    euclidean = accuracy_after_zip(models, sets, "euclidean")
    assert mtz > euclidean, (mtz, euclidean)
