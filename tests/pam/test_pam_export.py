"""Tests of tfmot_zip.pam.export: one TFLite signature per task subset."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from pam_fixtures import NAMES, own_or_shared_groups
from tfmot_zip import pam
from tfmot_zip.compat import tf
from tfmot_zip.core.pam_math import SHARED
from pam_fixtures import models, data  # noqa: F401  (pytest fixtures)


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


def test_export_folder_is_removed_on_sigterm_and_the_previous_handler_runs(models, tmp_path, monkeypatch):
    """The SavedModel folder goes when SIGTERM arrives mid-export (issue 16), not only on success or error."""
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))  # instead of ending pytest
    folders = []

    def save_then_signal(module, folder, signatures=None):
        Path(folder, "saved_model.pb").write_bytes(b"partial")
        folders.append((folder, signal.getsignal(signal.SIGTERM)))
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line
        folders.append(Path(folder).exists())
        raise RuntimeError("stopped by SIGTERM (simulated)")

    monkeypatch.setattr(tf.saved_model, "save", save_then_signal)
    try:
        with pytest.raises(RuntimeError, match="stopped by SIGTERM"):
            pam.export_subsets_tflite(pam.separate_network(models[0], "a"), tmp_path / "pam.tflite")
        mine = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    (folder, handler), exists_after_signal = folders
    assert "tfmot_zip_pam_export_" in folder and handler is not mine  # the cleanup handler was installed
    assert exists_after_signal is False and not Path(folder).exists()
    assert calls == [signal.SIGTERM] and list(tmp_path.iterdir()) == []
