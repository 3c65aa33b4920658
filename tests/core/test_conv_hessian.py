"""The stride-1 conv Hessian from shifted products equals the patch-row Hessian (brute force); both
accumulators of input maps (shifted products, Gram matrix) sum float32 products in float64 and
refuse bad batches alike."""
import numpy as np
import pytest
from builders import assert_patch_hessian
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.conv_hessian import ConvHessianAccumulator
from tfmot_zip.core.pixel_gram import PixelGramAccumulator
from tfmot_zip.core.hessian import HessianAccumulator, conv_output_shape, extract_patches

ACCUMULATORS = [ConvHessianAccumulator, PixelGramAccumulator]  # the two exact ways from the input maps


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 3),
    kh=st.integers(1, 4), kw=st.integers(1, 4), dh=st.integers(1, 3), dw=st.integers(1, 3),
    padding=st.sampled_from(["valid", "same"]), block=st.booleans(), split=st.integers(0, 4),
    product_rows=st.sampled_from([1, 20, 2048]), seed=st.integers(0, 999),
)
def test_equals_the_hessian_of_the_patch_rows(n, h, w, c, kh, kw, dh, dw, padding, block, split, product_rows, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, c)) + rng.normal(size=c)  # non-zero means: the bias column matters
    geometry = ((kh, kw), (1, 1), padding, (dh, dw))
    if min(conv_output_shape((h, w), *geometry)) <= 0:
        with pytest.raises(ValueError, match="does not fit"):
            ConvHessianAccumulator((h, w), c, (kh, kw), padding, (dh, dw))
        return
    acc = ConvHessianAccumulator((h, w), c, (kh, kw), padding, (dh, dw), block=block, batch_dtype=np.float64,
                                 product_rows=product_rows)  # 1: one sample at a time
    assert_patch_hessian(acc, x, geometry, block, split)


@pytest.mark.parametrize("accumulator", ACCUMULATORS)
def test_float32_batches_sum_in_float64(accumulator):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 7, 7, 2))
    acc = accumulator((7, 7), 2, (3, 3), padding="same")  # float32 products
    for part in np.array_split(x, 3):
        acc.update(part)
    ref = HessianAccumulator(18)
    ref.update(extract_patches(x, (3, 3), padding="same"))
    got = acc.hessian()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref.hessian(), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(got, ref.hessian())  # the products were float32: same to 1e-5, not bit-equal


@pytest.mark.parametrize("accumulator", ACCUMULATORS)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 999), value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_non_finite_batch_is_refused_and_leaves_the_sums(accumulator, seed, value):
    rng = np.random.default_rng(seed)
    acc = accumulator((5, 6), 2, (3, 2), padding="same")
    acc.update(rng.normal(size=(2, 5, 6, 2)))
    before = acc.hessian()
    bad = rng.normal(size=(3, 5, 6, 2))
    bad[tuple(rng.integers(0, s) for s in bad.shape)] = value
    with pytest.raises(ValueError, match="non-finite"):
        acc.update(bad)
    np.testing.assert_array_equal(acc.hessian(), before)
    assert acc.count == 2 * 5 * 6


@pytest.mark.parametrize("accumulator", ACCUMULATORS)
def test_bad_shapes_are_refused_with_the_shape(accumulator):
    acc = accumulator((5, 5), 3, (3, 3))
    with pytest.raises(ValueError, match=r"\[n, 5, 5, 3\]. Received \(2, 5, 5, 4\)"):
        acc.update(np.zeros((2, 5, 5, 4)))
    with pytest.raises(ValueError, match="channels=0"):
        accumulator((5, 5), 0, (3, 3))
    with pytest.raises(ValueError, match="No layer inputs"):
        acc.hessian()
