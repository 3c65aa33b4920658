"""prune_zipped: TFMOT pruning of the layers TFMOT can prune, for models whose preprocessing layers
(Rescaling, Normalization: keras.applications' MobileNetV3 and EfficientNets) make TFMOT's whole-model
``prune_low_magnitude`` refuse. Generated pairs (hypothesis) are zipped, optionally stripped, pruned and
trained a few steps; the pruned kernels reach the target sparsity, the rest is untouched."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tensorflow_model_optimization as tfmot  # noqa: E402  (tfmot_zip sets TF_USE_LEGACY_KERAS on import)

from tfmot_zip import data, training
from tfmot_zip.compat import keras
from tfmot_zip.export.tfmot import prune_zipped

from builders import preprocessed_pair

L = keras.layers
sparsity_api = tfmot.sparsity.keras


def is_wrapper(layer):
    return type(layer).__name__ == "PruneLowMagnitude"


def pruned_weights(layer):
    """The weights TFMOT prunes in ``layer`` (a zip layer says; Dense/Conv2D/DepthwiseConv2D: their kernel)."""
    if hasattr(layer, "get_prunable_weights"):
        return layer.get_prunable_weights()
    return [getattr(layer, name) for name in ("kernel", "depthwise_kernel") if getattr(layer, name, None) is not None]


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(preprocessing=st.sampled_from(["none", "rescaling", "both"]), sharing=st.sampled_from([0.5, 1.0]),
       stripped=st.booleans())
def test_prune_zipped_prunes_what_tfmot_can_and_keeps_the_rest(preprocessing, sharing, stripped):
    model, xs, ys = preprocessed_pair(preprocessing, sharing, stripped)
    before = [w.copy() for w in model.get_weights()]
    if preprocessing != "none":  # what prune_zipped is for
        with pytest.raises(ValueError, match="supported layer"):
            sparsity_api.prune_low_magnitude(model, pruning_schedule=sparsity_api.ConstantSparsity(0.5, 0))
    pruned = prune_zipped(model, pruning_schedule=sparsity_api.ConstantSparsity(0.5, begin_step=0, frequency=1))
    inner = [l.layer for l in pruned.layers if is_wrapper(l)]
    kept = [l for l in pruned.layers if not is_wrapper(l)]
    assert not any(isinstance(l, (L.Rescaling, L.Normalization)) for l in inner)
    assert not any(isinstance(l, (L.Dense, L.Conv2D, L.DepthwiseConv2D)) or pruned_weights(l) for l in kept)
    assert sum(len(pruned_weights(l)) for l in inner) >= 3  # conv, depthwise, fc and heads (or their zip layers)
    for p, q in zip(pruned.predict(xs, verbose=0), model.predict(xs, verbose=0)):
        np.testing.assert_allclose(p, q, atol=1e-5)  # no mask applied before the first training step
    training.compile_multitask(pruned, 1e-3)
    pruned.fit(data.multitask(*zip(xs, ys), batch_size=16), steps_per_epoch=3, epochs=1, verbose=0,
               callbacks=[sparsity_api.UpdatePruningStep()])
    final = sparsity_api.strip_pruning(pruned)
    for layer in inner:
        for weight in pruned_weights(final.get_layer(layer.name)):
            kernel = weight.numpy()
            assert abs(np.mean(kernel == 0) - 0.5) <= 1.0 / kernel.size + 0.01, (layer.name, np.mean(kernel == 0))
    for w0, w1 in zip(before, model.get_weights()):  # the model given is never trained
        np.testing.assert_array_equal(w0, w1)
