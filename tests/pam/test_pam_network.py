"""Tests of tfmot_zip.pam.network and tfmot_zip.pam.reading: grouped networks, their Keras models, unit removal."""
from __future__ import annotations

import numpy as np

from pam_fixtures import NAMES, own_or_shared_groups
from tfmot_zip import pam
from tfmot_zip.core.pam_math import SHARED
from pam_fixtures import models, data  # noqa: F401  (pytest fixtures)


def test_block_diagonal_start_reproduces_every_original(models, data):
    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(0), task_names=NAMES)
    x = [d[0][:16] for d in data]
    merged = net.to_keras().predict(x, verbose=0)
    for t, model in enumerate(models):
        np.testing.assert_allclose(merged[t], model.predict(x[t], verbose=0), atol=1e-5)
    single = net.to_keras(single_input=True).predict(x[0], verbose=0)
    for t, model in enumerate(models):
        np.testing.assert_allclose(single[t], model.predict(x[0], verbose=0), atol=1e-5)


def test_subset_model_params_match_counter(models, data):
    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(1), task_names=NAMES)
    costs = net.subset_costs()
    assert len(costs) == 7
    for subset in [("a",), ("b", "c"), tuple(NAMES)]:
        assert net.to_keras(list(subset), single_input=True).count_params() == costs[subset][1]
    assert costs[("a",)][0] < costs[("a", "b")][0] < costs[tuple(NAMES)][0]


def test_removing_a_dead_unit_keeps_outputs_and_lowers_flops(models, data):
    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(2), task_names=NAMES)
    fc = net.layers()[1]
    for src in fc.blocks[SHARED]:
        fc.blocks[SHARED][src][:, 0] = 0.0
    fc.biases[SHARED][0] = -1.0  # relu(-1) == 0: unit 0 of the shared fc group is dead
    x = [d[0][:16] for d in data]
    before, cost = net.to_keras().predict(x, verbose=0), net.subset_costs()[("a",)][0]
    n = fc.biases[SHARED].shape[0]
    net.keep_units(1, SHARED, np.arange(1, n))
    after = net.to_keras().predict(x, verbose=0)
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-5)
    n_in = sum(net.layers()[0].units().get(g, 0) for g in (SHARED,)) * 16
    assert cost - net.subset_costs()[("a",)][0] == (2 * n_in - 1) + 2 * 2  # its fc unit and its head inputs


def test_keep_units_with_an_emptied_reader_group(models, data):
    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(0), task_names=NAMES)
    fc = net.layers()[1]
    empty = next(g for g, n in fc.units().items() if g != SHARED)
    net.keep_units(1, empty, np.zeros(0, np.int64))  # a dense group with no unit left
    net.keep_units(0, SHARED, np.array([0, 2]))  # then the conv layer below it loses a unit
    assert fc.blocks[empty][SHARED].shape == (16 * 2, 0)
    assert net.layers()[0].units()[SHARED] == 2
