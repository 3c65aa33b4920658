"""Two shortcuts of a zip that must not change its result: merges that share every input coordinate
work from the damped Hessians (no inverse), taken exactly where it applies; and a reader re-indexed by a
pairing is written once, when it is merged."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tfmot_zip
from builders import calib, cnn, mlp, tiny_resnet
from tfmot_zip.zipping.zipper import Zipper

BUILDERS = {"mlp": (mlp, (6, 6, 1)), "cnn": (cnn, (10, 10, 1)), "resnet": (tiny_resnet, (8, 8, 1))}


def _zip(models, data, sharing, force_inverses, monkeypatch):
    used = []
    original = Zipper._hessian_sides

    def spy(self, node, groups, ids_n):
        answer = original(self, node, groups, ids_n)
        used.append((node.name, answer))
        return False if force_inverses else answer

    with monkeypatch.context() as patch:
        patch.setattr(Zipper, "_hessian_sides", spy)
        zipped = tfmot_zip.zip_models(*models, calibration_data=data, sharing=sharing, method="mtz", progress=False)
    return zipped, used


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(BUILDERS)), sharing=st.sampled_from([0.5, 1.0]), seed=st.integers(0, 1000),
       models=st.integers(2, 3))
def test_hessian_sides_zip_as_the_inverses_do(kind, sharing, seed, models, monkeypatch):
    build, shape = BUILDERS[kind]
    nets = [build(seed + m) for m in range(models)]
    rng = np.random.default_rng(seed)
    data = [calib(rng, 64, shape) for _ in nets]
    fast, used = _zip(nets, data, sharing, False, monkeypatch)
    slow, _ = _zip(nets, data, sharing, True, monkeypatch)
    by_layer = dict(used)
    # the first zip layer reads the (fully shared) input: with two models it always qualifies
    first = used[0][0]
    if models == 2:
        assert by_layer[first]
        if sharing == 1.0:
            assert all(answer for _, answer in used)
    for a, b in zip(fast.weights, slow.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.name)
    x = [d[:16] for d in data]
    for out_fast, out_slow in zip(fast(x), slow(x)):
        np.testing.assert_allclose(out_fast.numpy(), out_slow.numpy(), atol=1e-5)


def test_three_models_merge_their_later_passes_through_the_inverses(monkeypatch):
    """A merged group serving two tasks has no single Hessian: the third model's pass at full sharing
    uses the inverses (sum of inverses), the second's does not."""
    nets = [mlp(s) for s in (1, 2, 3)]
    rng = np.random.default_rng(0)
    data = [calib(rng, 64, (6, 6, 1)) for _ in nets]
    _, used = _zip(nets, data, 1.0, False, monkeypatch)
    answers = [answer for _, answer in used]
    assert answers[:2] == [True, True] and answers[2:] == [False, False]


def test_damping_zero_keeps_the_inverses_and_their_errors(monkeypatch):
    nets = [mlp(1), mlp(2)]
    rng = np.random.default_rng(0)
    data = [calib(rng, 64, (6, 6, 1)) for _ in nets]
    used = []
    original = Zipper._hessian_sides
    monkeypatch.setattr(Zipper, "_hessian_sides", lambda self, *a: used.append(original(self, *a)) or used[-1])
    from tfmot_zip.core import SingularHessianError

    try:  # random ReLU features may leave a Hessian singular: then the inverse path's error names the layer
        tfmot_zip.zip_models(*nets, calibration_data=data, sharing=1.0, damping=0.0, progress=False)
    except SingularHessianError as err:
        assert "increase damping" in str(err)
    assert used and not any(used)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(BUILDERS)), sharing=st.sampled_from([0.5, 1.0]), seed=st.integers(0, 1000),
       models=st.integers(2, 3), method=st.sampled_from(["mtz", "mtz-lsq", "default"]))
def test_deferred_writes_give_the_same_zip_with_fewer_writes(kind, sharing, seed, models, method, monkeypatch):
    """A reader re-indexed by a pairing is written when it is merged (or before anything runs it), not
    also when its input space is paired: the same weights, and fewer writes of the physical kernels."""
    from tfmot_zip.model.layers import ZipLayerMixin

    build, shape = BUILDERS[kind]
    nets = [build(seed + m) for m in range(models)]
    rng = np.random.default_rng(seed)
    data = [calib(rng, 64, shape) for _ in nets]
    zipped, writes = {}, {}
    original = ZipLayerMixin.set_tasks_weights
    for defer in (True, False):
        count = []

        def counting(self, weights, unwritten_zero=False):
            count.append(self.name)
            return original(self, weights, unwritten_zero)

        with monkeypatch.context() as patch:
            patch.setattr(Zipper, "DEFER_WRITES", defer)
            patch.setattr(ZipLayerMixin, "set_tasks_weights", counting)
            kwargs = {} if method == "default" else {"method": method}
            zipped[defer] = tfmot_zip.zip_models(*nets, calibration_data=data, sharing=sharing, progress=False, **kwargs)
        writes[defer] = len(count)
    for a, b in zip(zipped[True].weights, zipped[False].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    # mtz-lsq re-solves each layer from its stored weights before pairing it: its deferred write happens then
    assert writes[True] <= writes[False] if method == "mtz-lsq" else writes[True] < writes[False]
