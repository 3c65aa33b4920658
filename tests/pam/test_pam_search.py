"""Tests of tfmot_zip.pam.search: merge_and_prune and its merge candidates."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pam_fixtures import NAMES
from tfmot_zip import pam
from pam_fixtures import models, data, separate_nets  # noqa: F401  (pytest fixtures)


def test_merge_and_prune_never_grows_a_task_path(models, data):
    # targets of 0 accept the most aggressive threshold and every pruning round (at most max_rounds)
    result = pam.merge_and_prune(models, data, data, targets=[0.0] * 3, task_names=NAMES, thresholds=(10.0,),
                                 finetune_steps=2, prune_steps=2, max_rounds=3)
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
                                 finetune_steps=1, prune_steps=1, max_rounds=1, separate=separate_nets)
    assert [(t["threshold"], t["kept_separate"], t["accepted"]) for t in result.tried] == [(10.0, [], False), (10.0, ["b"], False)]
    assert result.threshold is None and result.kept_separate == []
    plain = pam.merge_and_prune(models, data, data, targets=[0.0, 101.0, 0.0], task_names=NAMES, thresholds=(10.0,),
                                finetune_steps=1, prune_steps=1, max_rounds=1, separate=separate_nets, protect=False)
    assert len(plain.tried) == 1
    # candidates run fewest all-tasks FLOPs first, whatever order they are given in
    order = pam.merge_and_prune(models, data, data, targets=[101.0] * 3, task_names=NAMES, thresholds=(0.0, 10.0),
                                finetune_steps=1, prune_steps=1, max_rounds=1, separate=separate_nets, protect=False)
    assert [t["threshold"] for t in order.tried] == [10.0, 0.0]
    assert order.tried[0]["flops"] < order.tried[1]["flops"]


def test_default_thresholds_add_conv_only_candidates(separate_nets):
    assert pam.default_thresholds(separate_nets[0], levels=(1.0, 0.3)) == [1.0, {"conv": 1.0}, 0.3, {"conv": 0.3}]
    conv_only = pam.merge_pruned_networks(separate_nets, [np.ones((4, 8, 8, 1), np.float32)] * 3,
                                          max_relative_error={"conv": 10.0})
    assert conv_only.group_sizes()[1] == {"a": 5, "b": 5, "c": 5, "name": "fc"}  # dense units stay per task


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none()))
def test_a_round_limit_that_prunes_nothing_is_refused_before_any_work(models, data, bad):
    # without the check, max_rounds=0 would return the models unpruned as if pruning had found nothing
    with pytest.raises(ValueError, match=r"max_rounds must be a positive integer .*received .*Pass 1 or more"):
        pam.merge_and_prune(models, data, data, targets=[0.0] * 3, task_names=NAMES, max_rounds=bad)
