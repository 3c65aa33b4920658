"""Tests of Pruning-Aware Merging (tfmot_zip.pam, tfmot_zip.core.pam_math) on tiny synthetic nets."""
from __future__ import annotations

import numpy as np
import pytest

from tfmot_zip import pam
from tfmot_zip.compat import keras
from tfmot_zip.core import pam_math
from tfmot_zip.core.pam_math import SHARED

NAMES = ["a", "b", "c"]


def tiny(seed: int, classes: int = 2, name: str = "tiny") -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8, 1)),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(5, activation="relu", name="fc"),
            keras.layers.Dense(classes, activation="softmax", name="head"),
        ],
        name=name,
    )
    for layer in model.layers:  # non-zero biases so that a lost bias would show
        weights = layer.get_weights()
        if len(weights) == 2:
            layer.set_weights([weights[0], np.random.default_rng(seed).uniform(0.05, 0.2, weights[1].shape)])
    return model


@pytest.fixture(scope="module")
def models():
    return [tiny(s, name=n) for s, n in zip((1, 2, 3), NAMES)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(64, 8, 8, 1)).astype("float32"), rng.integers(0, 2, 64)) for _ in NAMES]


def own_or_shared_groups(seed: int) -> list[np.ndarray]:
    """Conv units shared; every fc unit of model m goes to group m or to the shared group.

    Then no original connection is forbidden (a shared unit reads only shared units), so each
    task's path holds its whole original network.
    """
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(3), 5)
    return [np.full(9, 3), np.where(rng.random(owner.size) < 0.5, 3, owner)]


# --- core math -----------------------------------------------------------------------------


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


# --- merging -------------------------------------------------------------------------------


def test_block_diagonal_start_reproduces_every_original(models, data):
    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(0), task_names=NAMES)
    x = [d[0][:16] for d in data]
    merged = net.to_keras().predict(x, verbose=0)
    for t, model in enumerate(models):
        np.testing.assert_allclose(merged[t], model.predict(x[t], verbose=0), atol=1e-5)
    single = net.to_keras(single_input=True).predict(x[0], verbose=0)
    for t, model in enumerate(models):
        np.testing.assert_allclose(single[t], model.predict(x[0], verbose=0), atol=1e-5)


def test_connectivity_never_reads_from_narrower_groups(models, data):
    net = pam.merge_pam_network(models, data, threshold=0.6, task_names=NAMES)
    model = net.to_keras(single_input=True)
    assert model.output_names == NAMES
    for layer in model.layers:
        if "__from__" in layer.name:
            group, source = layer.name.split("__")[1], layer.name.split("__from__")[1]
            assert source in ("input", SHARED, group), layer.name
            assert not (group == SHARED and source != SHARED and source != "input"), layer.name
    for op in net.layers():  # cross-network blocks start at zero: untouched originals' weights only
        for group, sources in op.blocks.items():
            for src in sources:
                assert src in pam_math.allowed_sources(group) or src == "input"


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


def test_export_signature_per_subset(models, data, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(4), task_names=NAMES)
    path = tmp_path / "pam.tflite"
    keys = pam.export_subsets_tflite(net, path, subsets=[("a",), ("b", "c")])
    interpreter = Interpreter(model_path=str(path))
    assert sorted(interpreter.get_signature_list()) == sorted(keys.values())
    x = data[1][0][:3]
    out = interpreter.get_signature_runner(keys[("b", "c")])(image=x)
    assert sorted(out) == ["b", "c"]
    np.testing.assert_allclose(out["c"], models[2].predict(x, verbose=0), atol=1e-5)
    out = interpreter.get_signature_runner(keys[("a",)])(image=x)
    np.testing.assert_allclose(out["a"], models[0].predict(x, verbose=0), atol=1e-5)


def test_merge_pam_api_and_errors(models, data):
    merged = pam.merge_pam(*models, calibration_data=data, threshold=0.8)
    assert merged.output_names == NAMES and len(merged.inputs) == 3
    with pytest.raises(ValueError, match="same layer sequence"):
        pam.merge_pam(models[0], keras.Sequential([keras.layers.InputLayer(input_shape=(8, 8, 1)),
                                                   keras.layers.Flatten(), keras.layers.Dense(2)]),
                      calibration_data=data[:2])
    with pytest.raises(ValueError, match=r"\(x, y\) pair"):
        pam.merge_pam(*models, calibration_data=[d[0] for d in data])
    with pytest.raises(ValueError, match="relevance"):
        pam.merge_pam(*models, calibration_data=data, relevance="kde")


def test_taylor_grouping_gives_each_model_its_own_task(models, data):
    groups = pam.taylor_grouping(models, data, threshold=0.95, warmup_steps=5, batches=2)
    assert [g.shape for g in groups] == [(9,), (15,)]
    fc = groups[1]
    # a unit of model m can never be task-specific to another task (no path to its head at the start)
    for m in range(3):
        own = fc[m * 5 : (m + 1) * 5]
        assert set(own.tolist()) <= {-1, m, 3}
    assert (fc >= 0).any()


# --- subset groups and the Hessian merge of per-task networks --------------------------------


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


@pytest.fixture(scope="module")
def separate_nets(models):
    return [pam.separate_network(m, n) for m, n in zip(models, NAMES)]


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


def test_merge_and_prune_never_grows_a_task_path(models, data):
    # targets of 0 accept the most aggressive threshold and every pruning round
    result = pam.merge_and_prune(models, data, data, targets=[0.0] * 3, task_names=NAMES, thresholds=(10.0,),
                                 finetune_steps=2, prune_steps=2)
    assert result.threshold == 10.0 and result.tried[0]["accepted"]
    merged, pruned = result.merged.subset_costs(), result.net.subset_costs()
    for t, sep in zip(NAMES, result.separate):
        assert merged[(t,)][0] <= sep.subset_costs()[(t,)][0]
    assert all(pruned[s][0] <= merged[s][0] for s in merged)
    # impossible targets: every threshold is refused and the separate networks are kept side by side
    refused = pam.merge_and_prune(models, data, data, targets=[101.0] * 3, task_names=NAMES, thresholds=(10.0, 0.1),
                                  finetune_steps=1, prune_steps=1, separate=result.separate)
    assert refused.threshold is None and [t["accepted"] for t in refused.tried] == [False, False]
    assert all(set(g) - {"name"} <= set(NAMES) for g in refused.merged.group_sizes())
    with pytest.raises(ValueError, match="one name, train set"):
        pam.merge_and_prune(models, data, data[:2], targets=[0.0] * 3, task_names=NAMES)


def test_merge_and_prune_retries_a_threshold_with_failing_tasks_kept_separate(models, data, separate_nets):
    # b can never reach 101%: the threshold is retried once with b kept out, then given up
    result = pam.merge_and_prune(models, data, data, targets=[0.0, 101.0, 0.0], task_names=NAMES, thresholds=(10.0,),
                                 finetune_steps=1, prune_steps=1, separate=separate_nets)
    assert [(t["threshold"], t["kept_separate"], t["accepted"]) for t in result.tried] == [(10.0, [], False), (10.0, ["b"], False)]
    assert result.threshold is None and result.kept_separate == []
    plain = pam.merge_and_prune(models, data, data, targets=[0.0, 101.0, 0.0], task_names=NAMES, thresholds=(10.0,),
                                finetune_steps=1, prune_steps=1, separate=separate_nets, protect=False)
    assert len(plain.tried) == 1
    # candidates run fewest all-tasks FLOPs first, whatever order they are given in
    order = pam.merge_and_prune(models, data, data, targets=[101.0] * 3, task_names=NAMES, thresholds=(0.0, 10.0),
                                finetune_steps=1, prune_steps=1, separate=separate_nets, protect=False)
    assert [t["threshold"] for t in order.tried] == [10.0, 0.0]
    assert order.tried[0]["flops"] < order.tried[1]["flops"]


def test_default_thresholds_add_conv_only_candidates(separate_nets):
    assert pam.default_thresholds(separate_nets[0], levels=(1.0, 0.3)) == [1.0, {"conv": 1.0}, 0.3, {"conv": 0.3}]
    conv_only = pam.merge_pruned_networks(separate_nets, [np.ones((4, 8, 8, 1), np.float32)] * 3,
                                          max_relative_error={"conv": 10.0})
    assert conv_only.group_sizes()[1] == {"a": 5, "b": 5, "c": 5, "name": "fc"}  # dense units stay per task


def test_keep_units_with_an_emptied_reader_group(models, data):
    net = pam.merge_pam_network(models, data, groups=own_or_shared_groups(0), task_names=NAMES)
    fc = net.layers()[1]
    empty = next(g for g, n in fc.units().items() if g != SHARED)
    net.keep_units(1, empty, np.zeros(0, np.int64))  # a dense group with no unit left
    net.keep_units(0, SHARED, np.array([0, 2]))  # then the conv layer below it loses a unit
    assert fc.blocks[empty][SHARED].shape == (16 * 2, 0)
    assert net.layers()[0].units()[SHARED] == 2


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


def test_export_runs_subset_groups_of_a_hessian_merged_network(models, data, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    net = pam.merge_pruned_networks([pam.separate_network(m, n) for m, n in zip(models, NAMES)], [d[0] for d in data],
                                    max_relative_error=0.3)
    assert any("+" in g for sizes in net.group_sizes() for g in sizes) or any(SHARED in s for s in net.group_sizes())
    path = tmp_path / "pam.tflite"
    keys = pam.export_subsets_tflite(net, path)
    assert len(keys) == 7
    runner = Interpreter(model_path=str(path))
    x = data[0][0][:4]
    for subset in [("a", "c"), ("b",)]:
        out = runner.get_signature_runner(keys[subset])(image=x)
        expected = net.to_keras(list(subset), single_input=True).predict(x, verbose=0)
        expected = expected if isinstance(expected, list) else [expected]
        for t, e in zip(subset, expected):
            np.testing.assert_allclose(out[t], e, atol=1e-5)


def test_prune_step_never_disconnects_a_task(models, data, separate_nets):
    # a+b units read only shared units: emptying the shared group below would cut a's and b's path
    net = pam.merge_pruned_networks(separate_nets, [d[0] for d in data], max_relative_error=10.0)
    assert pam._task_paths_alive([{SHARED: 0, "a": 1, "b": 1}, {"a+b": 2, "b": 1}], ["a", "b"]) is False
    assert pam._task_paths_alive([{SHARED: 1, "a": 0}, {"a+b": 1}], ["a", "b"]) is True
    scores = {(li, g): np.zeros(n) for li, op in enumerate(net.layers()) if not op.head for g, n in op.units().items()}
    pruned = pam.prune_step(net, scores, fraction=1.0)  # try to remove everything
    model = pruned.to_keras(single_input=True)
    assert model.output_names == NAMES
    sizes = [{g: n for g, n in s.items() if g != "name"} for s in pruned.group_sizes()]
    assert pam._task_paths_alive(sizes, NAMES)


def test_prune_step_cuts_the_requested_flops(models, data, separate_nets):
    net = pam.merge_pruned_networks(separate_nets, [d[0] for d in data], max_relative_error=0.3)
    before = net.subset_costs()[tuple(NAMES)][0]
    rng = np.random.default_rng(0)
    scores = {(li, g): rng.random(n) for li, op in enumerate(net.layers()) if not op.head for g, n in op.units().items()}
    after = pam.prune_step(net, scores, fraction=0.25).subset_costs()[tuple(NAMES)][0]
    # counted with the readers' input rows and the groups left dead: at least the fraction, not far beyond
    assert 0.5 * before <= after <= 0.75 * before
