"""Tests of tfmot_zip.core.pam_math: FLOPs counting, relevance, grouping, the group lattice, merge costs."""
from __future__ import annotations

import numpy as np
import pytest

from pam_fixtures import NAMES
from tfmot_zip.core import pam_math
from tfmot_zip.core.pam_math import SHARED


def test_lenet5_flops_match_hand_count():
    # conv1 (2*25-1)*28*28*6 + conv2 (2*150-1)*10*10*16 + fc1 (800-1)*120 + fc2 (240-1)*84 + head (168-1)*3
    layers = [
        pam_math.LayerShape("conv", {"a": 6}, 5, (28, 28), input_units=1),
        pam_math.LayerShape("conv", {"a": 16}, 5, (10, 10)),
        pam_math.LayerShape("dense", {"a": 120}, in_positions=25),
        pam_math.LayerShape("dense", {"a": 84}),
        pam_math.LayerShape("dense", {"a": 3}, head=True),
    ]
    flops, params = pam_math.subset_cost(layers, ["a"])
    assert flops == 230496 + 478400 + 95880 + 20076 + 501
    assert params == 156 + 2416 + 48120 + 10164 + 255


def test_subset_cost_reads_only_allowed_groups():
    l1 = pam_math.LayerShape("dense", {SHARED: 4, "a": 2, "b": 3}, input_units=10)
    l2 = pam_math.LayerShape("dense", {SHARED: 1, "a": 1, "b": 1})
    # subset a: l1 shared 19*4 + a 19*2; l2 shared (2*4-1)*1, a reads shared+a (2*6-1)*1
    assert pam_math.subset_cost([l1, l2], ["a"])[0] == 76 + 38 + 7 + 11
    # all tasks add b: l1 19*3, l2 b reads shared+b (2*7-1)
    assert pam_math.subset_cost([l1, l2], ["a", "b"])[0] == 76 + 38 + 7 + 11 + 57 + 13


def test_mutual_information_orders_units():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    informative = y + 0.3 * rng.normal(size=y.size)
    noise = rng.normal(size=y.size)
    mi = pam_math.binned_mutual_information(np.stack([informative, noise, np.zeros(y.size)], 1), y)
    assert mi[0] > 0.7 and mi[1] < 0.02 and mi[2] == 0.0


def test_grouping_rules():
    relevance = np.array([[5.0, 4.0, 0.1, 0.0, 3.0], [5.0, 0.0, 4.0, 0.0, 0.1]])
    relevant = pam_math.relevant_units(relevance, 0.9)
    np.testing.assert_array_equal(relevant, [[1, 1, 0, 0, 1], [1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(pam_math.assign_groups(relevant), [2, 0, 1, -1, 0])
    with pytest.raises(ValueError, match="threshold"):
        pam_math.relevant_units(relevance, 0.0)


def test_group_lattice_helpers():
    assert pam_math.sources_of("a", [SHARED, "a+b", "b+c", "a", "b"]) == [SHARED, "a+b", "a"]
    assert pam_math.sources_of("a+b", [SHARED, "a+b", "a+c", "a"]) == [SHARED, "a+b"]
    assert pam_math.group_key(["c", "a"], NAMES) == "a+c" and pam_math.group_key(NAMES, NAMES) == SHARED
    assert pam_math.group_order(["c", "b+c", "a", SHARED], NAMES) == [SHARED, "b+c", "a", "c"]
    with pytest.raises(ValueError, match="non-empty subset"):
        pam_math.group_key(["d"], NAMES)
    # a+b reads shared only; a reads shared and a+b; subset {c} runs shared and c only
    l1 = pam_math.LayerShape("dense", {SHARED: 2, "a+b": 3, "a": 1, "c": 4}, input_units=5)
    l2 = pam_math.LayerShape("dense", {"a+b": 1, "a": 1, "c": 1})
    assert pam_math.subset_cost([l1, l2], ["c"])[0] == 9 * 2 + 9 * 4 + (2 * 6 - 1)
    # {a}: l1 shared, a+b, a (6 units * 9); l2 a+b reads shared+a+b (2*5-1), a reads all three (2*6-1)
    assert pam_math.subset_cost([l1, l2], ["a"])[0] == 9 * 6 + 9 + 11


def _brute_merge(hs, targets, allowed):
    """Least sum_t (w - a_t)^T H_t (w - a_t) over w zero outside ``allowed``, by explicit least squares."""
    rows, rhs = [], []
    for h, a in zip(hs, targets):
        root = np.linalg.cholesky(h).T  # (w - a)^T H (w - a) = |root (w - a)|^2
        rows.append(root[:, allowed])
        rhs.append(root @ a)
    w_a, *_ = np.linalg.lstsq(np.vstack(rows), np.concatenate(rhs), rcond=None)
    w = np.zeros(len(allowed))
    w[allowed] = w_a
    return w, sum(float((w - a) @ h @ (w - a)) for h, a in zip(hs, targets))


def test_merged_unit_costs_and_fit_match_brute_force():
    rng = np.random.default_rng(3)
    d = 6
    spd = lambda: (lambda m: m @ m.T + 0.1 * np.eye(d))(rng.normal(size=(d, d)))
    h_a, h_b, h_c = spd(), spd(), spd()
    a, b, c = rng.normal(size=(2, d)), rng.normal(size=(3, d)), rng.normal(size=(1, d))
    allowed = np.array([1, 1, 0, 1, 0, 1], bool)
    # side X already merged a[i] with c[0] (tasks a, c) under the full mask; side Y single units of b
    h_x = h_a + h_c
    g_x = a @ h_a + c @ h_c
    e_x = np.einsum("id,de,ie->i", a, h_a, a) + float(c[0] @ h_c @ c[0])
    r_x = np.array([_brute_merge([h_a, h_c], [a[i], c[0]], np.ones(d, bool))[1] for i in range(2)])
    g_y, e_y = b @ h_b, np.einsum("jd,de,je->j", b, h_b, b)
    costs = pam_math.merged_unit_costs(h_x, g_x, e_x, r_x, h_b, g_y, e_y, np.zeros(3), allowed, damping=0.0)
    for i in range(2):
        for j in range(3):
            _, err = _brute_merge([h_a, h_c, h_b], [a[i], c[0], b[j]], allowed)
            assert costs[i, j] == pytest.approx(err - r_x[i], rel=1e-6, abs=1e-8)
            w, fit_err = pam_math.restricted_fit(h_x + h_b, g_x[i] + g_y[j], e_x[i] + e_y[j], allowed, damping=0.0)
            w_ref, _ = _brute_merge([h_a, h_c, h_b], [a[i], c[0], b[j]], allowed)
            np.testing.assert_allclose(w, w_ref, atol=1e-6)
            assert fit_err == pytest.approx(err, rel=1e-6)
            assert np.all(w[~allowed] == 0)
    # the batched fits (one factorisation, every pair with side X's unit 0 and b's units) agree
    ws, errs = pam_math.restricted_fits(h_x + h_b, g_x[0] + g_y, e_x[0] + e_y, allowed, damping=0.0)
    for j in range(3):
        w_ref, err_ref = _brute_merge([h_a, h_c, h_b], [a[0], c[0], b[j]], allowed)
        np.testing.assert_allclose(ws[j], w_ref, atol=1e-6)
        assert errs[j] == pytest.approx(err_ref, rel=1e-6)


def test_live_units_drops_constant_and_unread_groups():
    # forward: layer 1's "b" reads shared and b below, both empty (a constant), so layer 2's "b" too
    sizes = [{SHARED: 0, "a": 2, "b": 0}, {"a": 1, "b": 4}, {"a": 2, "b": 1}]
    assert pam_math.live_units(sizes) == [{SHARED: 0, "a": 2, "b": 0}, {"a": 1, "b": 0}, {"a": 2, "b": 0}]
    assert sizes[1]["b"] == 4  # the input is not modified
    # backward: nothing above may read layer 0's "b"
    assert pam_math.live_units([{SHARED: 1, "a": 1, "b": 1}, {"a": 1}]) == [{SHARED: 1, "a": 1, "b": 0}, {"a": 1}]
    assert not pam_math.task_paths_alive([{SHARED: 1, "a": 1, "b": 1}, {"a": 1}], ["a", "b"])
    assert pam_math.task_paths_alive([{SHARED: 1, "b": 0}, {"a": 1, "b": 1}], ["a", "b"])
