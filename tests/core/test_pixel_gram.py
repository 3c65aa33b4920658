"""The conv Hessian read from the Gram matrix of the flattened input maps equals the patch-row
Hessian (brute force) for any stride, padding and dilation; the plan picks the cheapest exact way
unless a capped sample is cheaper still."""
import numpy as np
import pytest
from builders import assert_patch_hessian
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.hessian import HessianAccumulator, conv_output_shape, extract_patches
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


def test_float32_batches_sum_in_float64():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 7, 7, 2))
    acc = PixelGramAccumulator((7, 7), 2, (3, 3), padding="same")  # float32 products
    for part in np.array_split(x, 3):
        acc.update(part)
    ref = HessianAccumulator(18)
    ref.update(extract_patches(x, (3, 3), padding="same"))
    got = acc.hessian()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref.hessian(), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(got, ref.hessian())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 999), value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_non_finite_batch_is_refused_and_leaves_the_sums(seed, value):
    rng = np.random.default_rng(seed)
    acc = PixelGramAccumulator((5, 6), 2, (3, 2), (2, 1), "same")
    acc.update(rng.normal(size=(2, 5, 6, 2)))
    before = acc.hessian()
    bad = rng.normal(size=(3, 5, 6, 2))
    bad[tuple(rng.integers(0, s) for s in bad.shape)] = value
    with pytest.raises(ValueError, match="non-finite"):
        acc.update(bad)
    np.testing.assert_array_equal(acc.hessian(), before)


def test_bad_shapes_and_maps_too_wide_are_refused_with_the_values():
    acc = PixelGramAccumulator((5, 5), 3, (3, 3))
    with pytest.raises(ValueError, match=r"\[n, 5, 5, 3\]. Received \(2, 5, 5, 4\)"):
        acc.update(np.zeros((2, 5, 5, 4)))
    with pytest.raises(ValueError, match="channels=0"):
        PixelGramAccumulator((5, 5), 0, (3, 3))
    with pytest.raises(ValueError, match="No layer inputs"):
        acc.hessian()
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
