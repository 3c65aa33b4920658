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


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12), seed=st.integers(0, 10 ** 6),
       min_size=st.integers(1, 10), rows=st.integers(0, 4))
def test_block_products_and_inverses_equal_dense_ones_for_any_chunking(sizes, seed, min_size, rows):
    from tfmot_zip.core.linalg import block_diagonal_product, coalesce_blocks

    rng = np.random.default_rng(seed)
    n = sum(sizes)
    m = np.zeros((n, n))
    edges = np.cumsum([0] + sizes)
    for start, stop in zip(edges[:-1], edges[1:]):
        a = rng.normal(size=(stop - start, stop - start + 1))
        m[start:stop, start:stop] = a @ a.T + 0.1 * np.eye(stop - start)
    chunks = coalesce_blocks(diagonal_blocks(m), min_size)
    # chunks tile [0, n) in order and never split a block
    assert [s for s, _ in chunks][0] == 0 and chunks[-1][1] == n
    assert all(e == s for (_, e), (s, _) in zip(chunks[:-1], chunks[1:]))
    assert {s for s, _ in chunks} <= set(edges[:-1].tolist())
    x = rng.normal(size=(rows, n))
    np.testing.assert_allclose(block_diagonal_product(x, m, diagonal_blocks(m)), x @ m, rtol=1e-12, atol=1e-12)
    inverse = spd_inverse(m)
    np.testing.assert_allclose(inverse, np.linalg.inv(m), rtol=1e-8, atol=1e-8)
    outside = np.ones((n, n), bool)
    for start, stop in zip(edges[:-1], edges[1:]):
        outside[start:stop, start:stop] = False
    assert np.all(inverse[outside] == 0.0)  # exact zeros off the blocks, even inside a chunk
