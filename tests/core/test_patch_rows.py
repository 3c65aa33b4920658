"""extract_patches_at: chosen rows of the full patch matrix, gathered directly."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.hessian import conv_output_shape, extract_patches, extract_patches_at, gather_patches


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


class _Ranges:
    """An array that may only be read by sample ranges (as a file-backed cache is)."""

    def __init__(self, x):
        self.x, self.shape, self.reads = x, x.shape, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        assert isinstance(key, slice) and key.step is None, key
        self.reads.append((key.start, key.stop))
        return self.x[key]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 7), h=st.integers(3, 8), c=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 2),
    padding=st.sampled_from(["valid", "same"]), max_images=st.integers(1, 8), seed=st.integers(0, 99),
    sort=st.booleans(),
)
def test_gathered_by_sample_ranges_equals_the_whole_array_gather(n, h, c, k, s, padding, max_images, seed, sort):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, h, c)).astype(np.float32)
    geometry = ((k, k), (s, s), padding, (1, 1))
    total = n * int(np.prod(conv_output_shape((h, h), *geometry)))
    rows = rng.choice(total, size=rng.integers(1, total + 1), replace=False)
    rows = np.sort(rows) if sort else rows
    source = _Ranges(x)
    got = gather_patches(source, *geometry, rows=rows, max_images=max_images)
    np.testing.assert_array_equal(got, extract_patches_at(x, *geometry, rows=rows))
    assert all(b - a <= max_images for a, b in source.reads)  # never more than max_images samples at once
    np.testing.assert_array_equal(gather_patches(x, *geometry, max_images=max_images), extract_patches(x, *geometry))


def test_gather_refuses_rows_out_of_range_and_a_bad_chunk():
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"\[0, 18\)"):
        gather_patches(x, (2, 2), rows=np.array([18]))
    with pytest.raises(ValueError, match="max_images must be a positive integer or None; received 0"):
        gather_patches(x, (2, 2), max_images=0)
