"""Framework-free mathematics of Multi-Task Zipping (numpy/scipy only).

Nothing here knows about Keras: layers hand over weight matrices and layer inputs,
and get back costs, pairs and updated weights.
"""
from tfmot_zip.core.hessian import (
    BlockHessianAccumulator,
    HessianAccumulator,
    SingularHessianError,
    center_hessian,
    damped,
    extract_patches,
    invert_hessian,
)
from tfmot_zip.core.merge import MergeSide, apply_merge, merge_cost_matrix, pair_cost
from tfmot_zip.core.selection import SELECTORS, select_pairs

__all__ = [
    "BlockHessianAccumulator",
    "HessianAccumulator",
    "SingularHessianError",
    "center_hessian",
    "damped",
    "extract_patches",
    "invert_hessian",
    "MergeSide",
    "apply_merge",
    "merge_cost_matrix",
    "pair_cost",
    "SELECTORS",
    "select_pairs",
]
