"""center_hessian against the covariance computed directly, and what mtz-centered changes."""
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from tfmot_zip.core import HessianAccumulator, center_hessian


@settings(max_examples=40, deadline=None)
@given(
    x=st.integers(2, 40).flatmap(
        lambda n: arrays(np.float64, (n, 3), elements=st.floats(-50, 50, allow_nan=False, width=32))
    )
)
def test_center_hessian_is_the_covariance_with_a_free_bias(x):
    acc = HessianAccumulator(3)
    acc.update(x)
    h = center_hessian(acc.hessian())
    expected = np.zeros((4, 4))
    expected[:3, :3] = np.cov(x, rowvar=False, bias=True)
    expected[3, 3] = 1.0
    if np.any(x.mean(0)):
        np.testing.assert_allclose(h, expected, atol=1e-7 * (1 + np.abs(x).max() ** 2))


def test_centering_is_invariant_to_shifting_the_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    hs = []
    for shift in (0.0, 3.0, -7.5):
        acc = HessianAccumulator(4)
        acc.update(x + shift + 1e-3)  # keep a non-zero mean
        hs.append(center_hessian(acc.hessian()))
    np.testing.assert_allclose(hs[0], hs[1], atol=1e-9)
    np.testing.assert_allclose(hs[0], hs[2], atol=1e-9)


def test_block_hessians_without_mean_terms_are_unchanged():
    h = np.diag([2.0, 3.0, 1.0])
    np.testing.assert_array_equal(center_hessian(h), h)


def _first_layer_pairs(method, models, data):
    import tfmot_zip

    zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=1.0, method=method)
    record = zipped.get_layer(zipped.layers[[type(l).__name__ for l in zipped.layers].index("ZipDense")].name).zip_record
    (_, units, columns), = record["pairs"]
    return dict(zip(columns, units))


def test_zipping_with_mtz_centered_pairs_by_the_covariance_costs():
    """The first layer's pairs equal a Hungarian assignment on costs built by hand from covariances."""
    from scipy.optimize import linear_sum_assignment

    from builders import mlp
    from tfmot_zip.core import MergeSide, invert_hessian, merge_cost_matrix

    rng = np.random.default_rng(3)
    models = [mlp(1, widths=(6, 4), input_shape=(5,)), mlp(2, widths=(6, 4), input_shape=(5,))]
    data = [(rng.normal(size=(300, 5)) + 4.0 * rng.random(5)).astype("float32") for _ in range(2)]
    sides = []
    for model, x in zip(models, data):
        acc = HessianAccumulator(5)
        acc.update(x.astype(np.float64))
        inverse = invert_hessian(center_hessian(acc.hessian()), 1e-4)
        kernel, bias = model.get_layer("fc1").get_weights()
        rows = np.hstack([kernel.T, bias[:, None]]).astype(np.float64)
        sides.append(MergeSide.from_hessian_inverse(rows, inverse, np.arange(6)))
    costs = merge_cost_matrix(*sides)
    units, columns = linear_sum_assignment(costs)
    expected = {int(c): int(u) for u, c in zip(units, columns)}
    assert _first_layer_pairs("mtz-centered", models, data) == expected
    assert _first_layer_pairs("mtz", models, data) != expected  # the mean changes plain MTZ's choice
