"""Statistics repair math: streaming moments against numpy, the affine fit against its closed form."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tfmot_zip.core.repair import MomentAccumulator, fit_affine

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(values=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40), elements=finite),
       splits=st.integers(1, 6), offset=st.sampled_from([0.0, 1e6]))
def test_streaming_moments_equal_numpy(values, splits, offset):
    values = values + offset  # a large common offset: the naive sum-of-squares formula would lose it all
    moments = MomentAccumulator(values.shape[1])
    for part in np.array_split(values, splits):
        moments.update(part)
    assert moments.count == len(values)
    np.testing.assert_allclose(moments.mean, values.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(moments.var, values.var(axis=0), rtol=1e-7, atol=1e-6)


def test_moments_run_over_positions_of_a_convolution_output():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 3, 4, 2)) * [1.0, 4.0] + [0.0, -2.0]  # [batch, h, w, channels]
    moments = MomentAccumulator(2)
    moments.update(maps[:2]); moments.update(maps[2:])
    per_channel = maps.reshape(-1, 2)
    np.testing.assert_allclose(moments.mean, per_channel.mean(0))
    np.testing.assert_allclose(moments.std, per_channel.std(0))


def test_moments_refuse_wrong_widths_and_empty_reads():
    moments = MomentAccumulator(3)
    with pytest.raises(ValueError, match="3 units"):
        moments.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="No values"):
        moments.var
    with pytest.raises(ValueError, match="units=0"):
        MomentAccumulator(0)


@settings(max_examples=60, deadline=None)
@given(original=hnp.arrays(np.float64, (50, 3), elements=finite), merged=hnp.arrays(np.float64, (50, 3), elements=finite))
def test_repaired_units_have_the_original_statistics(original, merged):
    fit = fit_affine(original.mean(0), original.std(0), merged.mean(0), merged.std(0), min_std=1e-6)
    repaired = fit.apply(merged)
    ok = ~fit.guarded
    np.testing.assert_allclose(repaired.mean(0), original.mean(0), atol=1e-6 * (1 + np.abs(original).max()))
    np.testing.assert_allclose(repaired.std(0)[ok], original.std(0)[ok], rtol=1e-6, atol=1e-9)
    # Guarded units (constant merged pre-activation) keep scale 1 and only move to the original mean.
    assert np.all(fit.scale[fit.guarded] == 1.0)
    assert np.array_equal(fit.guarded, merged.std(0) <= 1e-6)


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(0.1, 10), shift=st.floats(-5, 5))
def test_an_affine_image_is_undone_exactly(scale, shift):
    rng = np.random.default_rng(1)
    original = rng.normal(size=(200, 1))
    merged = (original - shift) / scale  # the merged unit is an affine image of the original
    fit = fit_affine(original.mean(0), original.std(0), merged.mean(0), merged.std(0))
    np.testing.assert_allclose(fit.scale, [scale], rtol=1e-9)
    np.testing.assert_allclose(fit.shift, [shift], atol=1e-9)
    np.testing.assert_allclose(fit.apply(merged), original, atol=1e-9)


def test_fit_affine_closed_form_and_guard():
    fit = fit_affine([1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [2.0, 5.0, 1.0], [1.5, 1e-9, 2.0], min_std=1e-6)
    np.testing.assert_allclose(fit.scale, [2.0, 1.0, 0.0])   # a dead original unit gets scale 0
    np.testing.assert_allclose(fit.shift, [1.0 - 2.0 * 2.0, 2.0 - 5.0, 0.0])
    assert fit.guarded.tolist() == [False, True, False]


def test_fit_affine_refuses_bad_statistics():
    with pytest.raises(ValueError, match="one length"):
        fit_affine([0.0], [1.0], [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        fit_affine([0.0], [-1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="min_std"):
        fit_affine([0.0], [1.0], [0.0], [1.0], min_std=float("nan"))
