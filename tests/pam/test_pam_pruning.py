"""Tests of tfmot_zip.pam.pruning and tfmot_zip.pam.train: importance, pruning, fine-tuning."""
from __future__ import annotations

import numpy as np
import pytest

from pam_fixtures import NAMES, own_or_shared_groups
from tfmot_zip import pam
from tfmot_zip.core import pam_math
from tfmot_zip.core.pam_math import SHARED
from pam_fixtures import models, data, separate_nets  # noqa: F401  (pytest fixtures)


def test_prune_step_removes_units_and_keeps_paths(models, data):
    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(3), task_names=NAMES)
    scores = pam.taylor_importance(net, data, batches=2, batch_size=32)
    assert all(np.all(s >= 0) for s in scores.values())
    smaller = pam.prune_step(net, scores, 0.9)
    full, small = net.subset_costs(), smaller.subset_costs()
    assert all(small[s][0] < full[s][0] for s in full)
    for op in smaller.layers():
        units = op.units()
        assert all(sum(units.get(g, 0) for g in pam_math.allowed_sources(t)) >= 1 for t in NAMES)
    assert len(smaller.to_keras().predict([d[0][:4] for d in data], verbose=0)) == 3


def test_finetune_task_weight_zero_leaves_that_head_untouched(models, data):
    net = pam.merge_pruned_networks([pam.separate_network(m, n) for m, n in zip(models, NAMES)], [d[0] for d in data],
                                    max_relative_error=10.0)
    heads = {g: {s: k.copy() for s, k in net.layers()[-1].blocks[g].items()} for g in NAMES}
    pam.finetune(net, data, steps=5, learning_rate=1e-2, task_weights=[1.0, 0.0, 1.0])
    head = net.layers()[-1]
    for src, kernel in heads["b"].items():
        np.testing.assert_array_equal(head.blocks["b"][src], kernel)
    assert any(not np.array_equal(head.blocks["a"][s], k) for s, k in heads["a"].items())
    with pytest.raises(ValueError, match="one non-negative loss weight per output"):
        pam.finetune(net, data, steps=1, task_weights=[1.0, 1.0])


def test_prune_unstructured_sparsifies_every_kernel_and_keeps_the_input(models, data):
    net = pam.merge_pruned_networks([pam.separate_network(m, n) for m, n in zip(models, NAMES)], [d[0] for d in data],
                                    max_relative_error=0.5)
    before = net.copy()
    sparse = pam.prune_unstructured(net, data, sparsity=0.75, steps=20)
    for op_before, op_sparse, op in zip(before.layers(), sparse.layers(), net.layers()):
        for group, sources in op_sparse.blocks.items():
            for src, kernel in sources.items():
                if kernel.size >= 8:
                    assert np.mean(kernel == 0) >= 0.7, (op.name, group, src)
                np.testing.assert_array_equal(op.blocks[group][src], op_before.blocks[group][src])
    with pytest.raises(ValueError, match="sparsity"):
        pam.prune_unstructured(net, data, sparsity=1.0)


def test_prune_step_never_disconnects_a_task(models, data, separate_nets):
    # a+b units read only shared units: emptying the shared group below would cut a's and b's path
    net = pam.merge_pruned_networks(separate_nets, [d[0] for d in data], max_relative_error=10.0)
    assert pam_math.task_paths_alive([{SHARED: 0, "a": 1, "b": 1}, {"a+b": 2, "b": 1}], ["a", "b"]) is False
    assert pam_math.task_paths_alive([{SHARED: 1, "a": 0}, {"a+b": 1}], ["a", "b"]) is True
    scores = {(li, g): np.zeros(n) for li, op in enumerate(net.layers()) if not op.head for g, n in op.units().items()}
    pruned = pam.prune_step(net, scores, fraction=1.0)  # try to remove everything
    model = pruned.to_keras(single_input=True)
    assert model.output_names == NAMES
    sizes = [{g: n for g, n in s.items() if g != "name"} for s in pruned.group_sizes()]
    assert pam_math.task_paths_alive(sizes, NAMES)


def test_prune_step_cuts_the_requested_flops(models, data, separate_nets):
    net = pam.merge_pruned_networks(separate_nets, [d[0] for d in data], max_relative_error=0.3)
    before = net.subset_costs()[tuple(NAMES)][0]
    rng = np.random.default_rng(0)
    scores = {(li, g): rng.random(n) for li, op in enumerate(net.layers()) if not op.head for g, n in op.units().items()}
    after = pam.prune_step(net, scores, fraction=0.25).subset_costs()[tuple(NAMES)][0]
    # counted with the readers' input rows and the groups left dead: at least the fraction, not far beyond
    assert 0.5 * before <= after <= 0.75 * before
