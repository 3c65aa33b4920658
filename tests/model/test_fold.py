"""Folding BatchNormalization into the preceding layer (tfmot_zip.model.fold)."""
from __future__ import annotations

import numpy as np
import pytest

from tfmot_zip.compat import keras
from tfmot_zip.model.fold import fold_batchnorm
from tfmot_zip.apps.zoo import small_vgg


def _randomise_batchnorm(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.2, 3.0, n)])


def test_folded_small_vgg_computes_the_same_function():
    keras.utils.set_random_seed(0)
    model = small_vgg(3, input_shape=(12, 12, 1))
    _randomise_batchnorm(model, 0)
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batchnorm(model)
    assert not any(isinstance(l, (keras.layers.BatchNormalization, keras.layers.ReLU)) for l in folded.layers)
    assert [l.name for l in folded.layers if isinstance(l, keras.layers.Conv2D)] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    x = np.random.default_rng(1).normal(size=(8, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    for a, b in zip(before, model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)


def test_fold_matches_the_closed_form_on_one_dense_layer():
    dense = keras.layers.Dense(2, use_bias=True, name="d")
    bn = keras.layers.BatchNormalization(epsilon=0.0, name="bn")
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(1,)), dense, bn])
    dense.set_weights([np.array([[2.0, -1.0]]), np.array([1.0, 0.5])])
    bn.set_weights([np.array([3.0, 1.0]), np.array([0.0, 2.0]), np.array([1.0, 0.5]), np.array([4.0, 0.25])])
    kernel, bias = fold_batchnorm(model).layers[0].get_weights()
    # scale = gamma / sqrt(var): 1.5, 2.0; W' = W * scale; b' = (b - mean) * scale + beta
    np.testing.assert_allclose(kernel, [[3.0, -2.0]])
    np.testing.assert_allclose(bias, [0.0, 2.0])


def test_batchnorm_after_an_activation_is_refused():
    model = keras.Sequential(
        [keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(3, activation="relu", name="d"), keras.layers.BatchNormalization(name="bn")]
    )
    with pytest.raises(ValueError, match="Cannot fold BatchNormalization 'bn'"):
        fold_batchnorm(model)
