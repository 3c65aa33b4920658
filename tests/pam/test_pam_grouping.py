"""Tests of tfmot_zip.pam.grouping: the published PAM grouping and merge_pam."""
from __future__ import annotations

import pytest

from pam_fixtures import NAMES
from tfmot_zip import pam
from tfmot_zip.compat import keras
from tfmot_zip.core import pam_math
from tfmot_zip.core.pam_math import SHARED
from pam_fixtures import models, data  # noqa: F401  (pytest fixtures)


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
