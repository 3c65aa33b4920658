"""spd_inverse: block-aware inverse of SPD matrices, against numpy's dense inverse."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.linalg import diagonal_blocks, spd_inverse


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5), seed=st.integers(0, 10 ** 6), couple=st.booleans())
def test_inverse_equals_the_dense_inverse_and_finds_the_blocks(sizes, seed, couple):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    m = np.zeros((n, n))
    start = 0
    for size in sizes:
        a = rng.normal(size=(size, size + 2))
        m[start : start + size, start : start + size] = a @ a.T + 0.1 * np.eye(size)
        start += size
    if couple and len(sizes) > 1:  # one coupling entry between the first and the last block
        m[0, n - 1] = m[n - 1, 0] = 0.01
    expected_blocks = [(0, n)] if couple and len(sizes) > 1 else None
    blocks = diagonal_blocks(m)
    if expected_blocks is not None:
        assert blocks == expected_blocks
    else:  # at least as fine as the blocks built (a block may split further only if it is itself block diagonal)
        edges = set(np.cumsum([0] + sizes).tolist())
        assert {s for s, _ in blocks} >= edges - {n}
    np.testing.assert_allclose(spd_inverse(m), np.linalg.inv(m), rtol=1e-8, atol=1e-8)


def test_a_matrix_that_is_not_positive_definite_is_refused():
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse(np.array([[1.0, 0.0], [0.0, -1.0]]))


def test_non_square_input_is_refused():
    with pytest.raises(ValueError, match=r"square matrix; received shape \(2, 3\)"):
        diagonal_blocks(np.zeros((2, 3)))
