"""The conv Hessian read from the Gram matrix of the flattened input maps equals the patch-row
Hessian (brute force) for any stride, padding and dilation; the plan picks the cheapest exact way
unless a capped sample is cheaper still."""
import numpy as np
import pytest
from builders import assert_patch_hessian
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.hessian import conv_output_shape
from tfmot_zip.core.pixel_gram import (CONV_HESSIAN_METHODS, PIXEL_GRAM_MAX_DIM, PixelGramAccumulator,
                                       conv_hessian_plan)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 3),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    dh=st.integers(1, 3), dw=st.integers(1, 3), padding=st.sampled_from(["valid", "same"]),
    block=st.booleans(), split=st.integers(0, 4), seed=st.integers(0, 999),
)
def test_equals_the_hessian_of_the_patch_rows(n, h, w, c, kh, kw, sh, sw, dh, dw, padding, block, split, seed):
    if (sh > 1 or sw > 1) and (dh > 1 or dw > 1):
        dh = dw = 1  # Keras refuses strides and dilation together
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, c)) + rng.normal(size=c)  # non-zero means: the bias column matters
    geometry = ((kh, kw), (sh, sw), padding, (dh, dw))
    if min(conv_output_shape((h, w), *geometry)) <= 0:
        with pytest.raises(ValueError, match="does not fit"):
            PixelGramAccumulator((h, w), c, (kh, kw), (sh, sw), padding, (dh, dw))
        return
    acc = PixelGramAccumulator((h, w), c, (kh, kw), (sh, sw), padding, (dh, dw), block=block, batch_dtype=np.float64)
    assert_patch_hessian(acc, x, geometry, block, split)


def test_maps_too_wide_are_refused_with_the_width():
    # non-finite batches and bad shapes: tests/core/test_conv_hessian.py, for both accumulators
    with pytest.raises(ValueError, match=f"4160 values are wider than PIXEL_GRAM_MAX_DIM={PIXEL_GRAM_MAX_DIM}"):
        PixelGramAccumulator((8, 8), 65, (3, 3))


@settings(max_examples=200, deadline=None)
@given(samples=st.integers(1, 20_000), h=st.integers(1, 40), w=st.integers(1, 40), c=st.integers(1, 600),
       kh=st.integers(1, 7), kw=st.integers(1, 7), stride=st.integers(1, 3), padding=st.sampled_from(["valid", "same"]),
       max_rows=st.one_of(st.none(), st.integers(1, 500_000)))
def test_the_plan_takes_the_cheapest_exact_way_unless_a_sample_is_cheaper(samples, h, w, c, kh, kw, stride, padding, max_rows):
    geometry = ((kh, kw), (stride, stride), padding)
    out = conv_output_shape((h, w), *geometry)
    if min(out) <= 0:
        return
    method, costs = conv_hessian_plan(samples, (h, w), c, *geometry, max_rows=max_rows)
    assert method in CONV_HESSIAN_METHODS and method in costs
    assert ("pixel_gram" in costs) == (h * w * c <= PIXEL_GRAM_MAX_DIM)
    assert ("shifted_products" in costs) == (stride == 1 and kh * kw > 1)
    rows = samples * out[0] * out[1]
    exact = {k: v for k, v in costs.items() if k != "sampled_rows"}
    if max_rows is None or rows <= max_rows:
        assert "sampled_rows" not in costs and costs[method] == min(exact.values())
    elif method == "sampled_rows":
        assert costs["sampled_rows"] < min(exact.values())
    else:
        assert costs[method] == min(exact.values()) <= costs["sampled_rows"]
