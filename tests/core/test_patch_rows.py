"""extract_patches_at: chosen rows of the full patch matrix, gathered directly."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.hessian import conv_output_shape, extract_patches, extract_patches_at


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3), h=st.integers(3, 9), w=st.integers(3, 9), c=st.integers(1, 3),
    kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 3),
    dh=st.integers(1, 2), dw=st.integers(1, 2), padding=st.sampled_from(["valid", "same"]),
    seed=st.integers(0, 99),
)
def test_chosen_rows_equal_the_rows_of_the_full_patch_matrix(n, h, w, c, kh, kw, sh, sw, dh, dw, padding, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    geometry = ((kh, kw), (sh, sw), padding, (dh, dw))
    oh, ow = conv_output_shape((h, w), *geometry)
    if oh <= 0 or ow <= 0:
        with pytest.raises(ValueError, match="does not fit"):
            extract_patches_at(x, *geometry)
        return
    full = extract_patches(x, *geometry)
    assert full.shape[0] == n * oh * ow
    rows = rng.choice(full.shape[0], size=rng.integers(1, full.shape[0] + 1), replace=False)
    np.testing.assert_array_equal(extract_patches_at(x, *geometry, rows=rows), full[rows])
    np.testing.assert_array_equal(extract_patches_at(x, *geometry), full)


def test_rows_out_of_range_are_refused():
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        extract_patches_at(x, (2, 2), rows=np.array([9]))
