"""core.blocks: the block layout of a kernel stores exactly the cells some task reads (hypothesis,
against a brute-force count over every cell and task)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.core.blocks import block_layout, readers


@st.composite
def maps(draw):
    tasks = draw(st.integers(1, 4))
    in_cap, cap = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ins = [np.asarray(draw(st.lists(st.integers(0, in_cap - 1), min_size=1, max_size=in_cap)), np.int64) for _ in range(tasks)]
    outs = [np.asarray(draw(st.lists(st.integers(0, cap - 1), min_size=1, max_size=cap, unique=True)), np.int64)
            for _ in range(tasks)]
    prefix = draw(st.sampled_from([(), (2,), (1, 3)]))
    return ins, outs, in_cap, cap, prefix


def read_mask(ins, outs, in_cap, cap):
    mask = np.zeros((in_cap, cap), bool)
    for i_map, o_map in zip(ins, outs):
        for i in i_map:
            for j in o_map:
                mask[i, j] = True
    return mask


@settings(max_examples=150, deadline=None)
@given(maps(), st.integers(0, 2**31 - 1))
def test_blocks_hold_every_read_cell_once_and_nothing_else(case, seed):
    ins, outs, in_cap, cap, prefix = case
    layout = block_layout(ins, outs, in_cap, cap)
    mask = read_mask(ins, outs, in_cap, cap)
    assert layout.cells == int(mask.sum())
    # the row groups partition the rows; each row's block holds exactly the columns read with it
    assert sorted(np.concatenate(layout.rows).tolist()) == list(range(in_cap))
    for rows, columns in zip(layout.rows, layout.columns):
        for r in rows:
            assert np.flatnonzero(mask[r]).tolist() == columns.tolist()
    kernel = np.random.default_rng(seed).normal(size=prefix + (in_cap, cap))
    blocks = layout.split(kernel)
    assert sum(b.size for b in blocks) == layout.cells * int(np.prod(prefix, dtype=np.int64))
    joined = layout.join(blocks)
    np.testing.assert_array_equal(joined, np.where(mask, kernel, 0.0))
    for i_map, o_map in zip(ins, outs):  # every task's kernel survives the round trip
        np.testing.assert_array_equal(joined[..., i_map, :][..., o_map], kernel[..., i_map, :][..., o_map])
    # the assembly used by the layers: pad each block with a zero column, gather, stack, reorder rows
    parts = [np.concatenate([b, np.zeros(b.shape[:-1] + (1,))], axis=-1)[..., layout.column_index(k)]
             for k, b in enumerate(blocks)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=-2)[..., layout.row_order(), :], joined)


def test_two_tasks_drop_the_cross_cells_of_their_private_units():
    # rows/columns 0-1 shared, 2 private to A, 3 private to B
    ins = outs = [np.array([0, 1, 2]), np.array([0, 1, 3])]
    layout = block_layout(ins, outs, 4, 4)
    assert layout.cells == 16 - 2
    assert [c.tolist() for c in layout.columns] == [[0, 1, 2, 3], [0, 1, 2], [0, 1, 3]]


def test_bad_maps_are_refused_with_the_values():
    with pytest.raises(ValueError, match="points outside the 3 physical units"):
        readers([np.array([0, 3])], 3)
    with pytest.raises(ValueError, match="one in_map and one out_map per task"):
        block_layout([np.array([0])], [], 1, 1)
    with pytest.raises(ValueError, match=r"last two axes are \(2, 2\)"):
        block_layout([np.array([0])], [np.array([0])], 2, 2).split(np.zeros((3, 2)))
