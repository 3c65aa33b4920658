"""Tests of tfmot_zip.pam.merging: the Hessian merge of one-task networks into subset groups."""
from __future__ import annotations

import numpy as np
import pytest

from pam_fixtures import NAMES
from tfmot_zip import pam
from tfmot_zip.core import pam_math
from tfmot_zip.core.pam_math import SHARED
from pam_fixtures import models, data, separate_nets  # noqa: F401  (pytest fixtures)


def test_merge_pruned_without_merging_reproduces_every_network(models, data, separate_nets):
    net = pam.merge_pruned_networks(separate_nets, [d[0] for d in data], max_relative_error=0.0)
    assert [sorted(g for g in sizes if g != "name") for sizes in net.group_sizes()] == [NAMES, NAMES]
    x = data[1][0][:16]
    merged = net.to_keras(single_input=True).predict(x, verbose=0)
    for t, model in enumerate(models):
        np.testing.assert_allclose(merged[t], model.predict(x, verbose=0), atol=1e-5)


def test_merge_pruned_shares_units_without_growing_any_task_path(models, data, separate_nets):
    net = pam.merge_pruned_networks(separate_nets, [d[0] for d in data], max_relative_error=10.0)
    sizes = net.group_sizes()
    assert sizes[0] == {SHARED: 3, "name": "conv"}  # every first-layer unit merged across the three
    assert sum(n for g, n in sizes[1].items() if g != "name") < 15  # some fc units merged
    costs = net.subset_costs()
    for t, sep in enumerate(separate_nets):
        assert costs[(NAMES[t],)][0] <= sep.subset_costs()[(NAMES[t],)][0]
    assert costs[tuple(NAMES)][0] < sum(s.subset_costs()[(n,)][0] for s, n in zip(separate_nets, NAMES))
    for op in net.layers():  # a group reads only groups serving a superset of its tasks
        for group, sources in op.blocks.items():
            assert all(src == "input" or pam_math.covers(src, group) for src in sources), (op.name, group, list(sources))
    # per-subset models run only their groups and count exactly what the counter says
    for subset in [("a",), ("a", "c"), tuple(NAMES)]:
        assert net.to_keras(list(subset), single_input=True).count_params() == costs[subset][1]
    # the first layer's shared weights are the Hessian-weighted least-squares compromise: with the
    # inputs' Hessians equal, the merged unit is the average of its members
    same = pam.merge_pruned_networks(separate_nets, [data[0][0]] * 3, max_relative_error=10.0)
    kernels = [sep.layers()[0].blocks[n]["input"] for sep, n in zip(separate_nets, NAMES)]
    shared = same.layers()[0].blocks[SHARED]["input"]
    for column in range(shared.shape[-1]):
        candidates = [np.mean([k[..., p] for k, p in zip(kernels, perm)], axis=0) for perm in _perms(3)]
        assert min(np.abs(shared[..., column] - c).max() for c in candidates) < 1e-3


def _perms(n):
    from itertools import product

    return list(product(range(n), repeat=3))  # one unit of each of the three tasks


def test_merge_pruned_keeps_a_protected_task_out_of_every_merge(models, data, separate_nets):
    net = pam.merge_pruned_networks(separate_nets, [d[0] for d in data], max_relative_error=10.0, keep_separate=["b"])
    for sizes, own in zip(net.group_sizes(), separate_nets[1].group_sizes()):  # b keeps all its units, alone
        assert sizes["b"] == own["b"] and SHARED not in sizes, sizes
        assert all("b" not in pam_math.group_tasks(g) for g in sizes if g not in ("name", "b")), sizes
    assert net.group_sizes()[0] == {"a+c": 3, "b": 3, "name": "conv"}
    x = data[1][0][:16]
    outputs = net.to_keras(single_input=True).predict(x, verbose=0)
    np.testing.assert_allclose(outputs[1], models[1].predict(x, verbose=0), atol=1e-5)  # b's path is untouched
    with pytest.raises(ValueError, match=r"keep_separate names unknown tasks \['d'\]"):
        pam.merge_pruned_networks(separate_nets, [d[0] for d in data], keep_separate=["d"])


def test_merge_pruned_bad_input(separate_nets, data):
    with pytest.raises(ValueError, match="one-task networks"):
        pam.merge_pruned_networks(separate_nets[:1], [data[0][0]])
    with pytest.raises(ValueError, match="calibration images per network"):
        pam.merge_pruned_networks(separate_nets, [data[0][0]])
