"""quantize_zipped on models whose preprocessing (Rescaling, Normalization: keras.applications'
MobileNetV3 and EfficientNets) TFMOT's default 8-bit scheme has no rule for. TFMOT's whole-model
``quantize_model`` refuses them; quantize_zipped leaves them float and quantizes the rest. Generated
pairs (hypothesis) are zipped, optionally stripped, made quantization-aware, run a few steps to
estimate the ranges, and exported to a full-int8 TFLite file that must agree with the QAT model."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tensorflow_model_optimization as tfmot  # noqa: E402  (tfmot_zip sets TF_USE_LEGACY_KERAS on import)

from tfmot_zip import data
from tfmot_zip.compat import keras
from tfmot_zip.export import TOLERANCES, export_tflite, verify_tflite
from tfmot_zip.export.tfmot import TFMOT_LAYERS, quantize_zipped

from builders import preprocessed_pair

L = keras.layers
PREPROCESSING = (L.Rescaling, L.Normalization)


def outputs(model, xs):
    return [np.asarray(o) for o in model(xs, training=False)]


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(preprocessing=st.sampled_from(["rescaling", "both"]), sharing=st.sampled_from([0.5, 1.0]),
       stripped=st.booleans())
def test_quantize_zipped_keeps_preprocessing_float_and_exports_int8(preprocessing, sharing, stripped):
    model, xs, ys = preprocessed_pair(preprocessing, sharing, stripped)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(RuntimeError, match="Rescaling.*is not supported"):  # what quantize_zipped is for
        tfmot.quantization.keras.quantize_model(model)
    qat = quantize_zipped(model)
    plain = [l for l in qat.layers if isinstance(l, PREPROCESSING)]
    wrapped = [l.layer for l in qat.layers if type(l).__name__ == "QuantizeWrapperV2"]
    assert len(plain) == sum(isinstance(l, PREPROCESSING) for l in model.layers) >= 1
    kernels = [l for l in model.layers if isinstance(l, (L.Dense, L.Conv2D, L.DepthwiseConv2D) + TFMOT_LAYERS)]
    assert {l.name for l in kernels} <= {l.name for l in wrapped}
    # The ranges are estimated while training; a learning rate of 0 leaves the weights as they are.
    qat.compile(keras.optimizers.Adam(0.0), loss={n: "sparse_categorical_crossentropy" for n in qat.output_names})
    qat.fit(data.multitask(*zip(xs, ys), batch_size=32), steps_per_epoch=4, epochs=1, verbose=0)
    for q, f in zip(outputs(qat, xs), outputs(model, xs)):
        assert np.mean(np.abs(q - f)) < TOLERANCES["int8"].max_mean_abs
    if stripped:  # a model with zip layers is stripped before export (export_tflite says so)
        # Random 3-class heads have near-ties, so the outputs are compared by value, not by argmax.
        tolerance = dataclasses.replace(TOLERANCES["int8"], min_argmax_agreement=0.0)
        report = verify_tflite(export_tflite(qat, quantize="int8"), qat, xs, quantize="int8", tolerance=tolerance)
        assert max(r["mean_abs_error"] for r in report.values()) < TOLERANCES["int8"].max_mean_abs
    for w0, w1 in zip(before, model.get_weights()):  # the model given is never trained
        np.testing.assert_array_equal(w0, w1)
