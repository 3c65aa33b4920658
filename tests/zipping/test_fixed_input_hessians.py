"""A layer reading the model's inputs is measured once per task: later passes of a zip of three or
more models reuse its Hessians (its inputs never change), which equal the closed form."""
import numpy as np
from hypothesis import given, settings, strategies as st

import tfmot_zip
from builders import calib, mlp
from tfmot_zip.zipping import statistics
from tfmot_zip.zipping.zipper import Zipper


@settings(max_examples=6, deadline=None)
@given(n_models=st.integers(3, 4), w1=st.integers(3, 9), w2=st.integers(2, 7), seed=st.integers(0, 40),
       sharing=st.sampled_from([0.5, 1.0]))
def test_first_layer_hessians_are_measured_once_per_task_and_equal_the_closed_form(n_models, w1, w2, seed, sharing):
    rng = np.random.default_rng(seed)
    data = [calib(rng, int(rng.integers(30, 80)), (6, 6, 1)) for _ in range(n_models)]
    models = [mlp(seed + i, widths=(w1, w2)) for i in range(n_models)]
    built, seen, kept = [], [], []
    original_accumulator, original_hessians = statistics.HessianAccumulator, Zipper.hessians

    class Counting(original_accumulator):
        def __init__(self, dim, *args, **kwargs):
            built.append(dim)
            super().__init__(dim, *args, **kwargs)

    def recording(self, node):
        out = original_hessians(self, node)
        if node.name == "fc1":
            seen.append((self.task, [h.copy() for h in out]))
            kept.append(sorted(self._fixed_input_hessians[node.index]))
        return out

    statistics.HessianAccumulator, Zipper.hessians = Counting, recording
    try:
        zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=sharing, method="mtz", progress=False)
    finally:
        statistics.HessianAccumulator, Zipper.hessians = original_accumulator, original_hessians
    assert built.count(36) == n_models  # the 6x6 inputs: once per task, not once per task and pass
    assert sorted({task for task, _ in seen}) == list(range(1, n_models))  # every pass measured fc1
    for task, hessians in seen:
        assert len(hessians) == task + 1
        for t, h in enumerate(hessians):  # E[[x 1] [x 1]^T] over task t's data
            x = np.hstack([data[t].reshape(len(data[t]), -1).astype(np.float64), np.ones((len(data[t]), 1))])
            np.testing.assert_allclose(h, x.T @ x / len(x), rtol=1e-6, atol=1e-9)
    # kept for the passes still to come only: the last pass's own measurement is not stored
    assert kept[-1] == list(range(n_models - 1))
    rows = zipped.get_layer("fc1").zip_record.get("hessian_rows")
    assert rows is None or rows[0] == rows[1]
