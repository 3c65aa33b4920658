"""The package imports without its optional extras; what needs one says which extra to install."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfmot_zip.compat import require

pytestmark = pytest.mark.packaging

LITERT = ("ai_edge_litert", "ai_edge_litert.interpreter")
MATPLOTLIB = ("matplotlib", "matplotlib.pyplot")


def hide(monkeypatch, modules):
    """Make ``import`` of these modules fail as if they were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_returns_the_module_or_names_the_extra(monkeypatch):
    assert require("json", "report").dumps([1]) == "[1]"
    hide(monkeypatch, ["json"])
    with pytest.raises(ImportError, match=r"Saving needs 'json'.*pip install 'tfmot_zip\[report\]'") as info:
        require("json", "report", "Saving")
    assert isinstance(info.value.__cause__, ImportError)


def test_litert_functions_name_the_tflite_extra(monkeypatch):
    from tfmot_zip.export.interpreter import load_interpreter, tflite_predict

    hide(monkeypatch, LITERT)
    with pytest.raises(ImportError, match=r"pip install 'tfmot_zip\[tflite\]'"):
        load_interpreter(b"not read: LiteRT is missing")
    with pytest.raises(ImportError, match=r"\[tflite\]"):
        tflite_predict(b"x", "task_a", np.zeros((1, 4)))


def test_plots_name_the_report_extra(monkeypatch, tmp_path):
    from tfmot_zip.report.plots import accuracy_bars

    hide(monkeypatch, MATPLOTLIB)
    with pytest.raises(ImportError, match=r"Drawing plots needs 'matplotlib'.*pip install 'tfmot_zip\[report\]'"):
        accuracy_bars(tmp_path / "a.png", ["a"], {"original": [90.0]})
    assert not (tmp_path / "a.png").exists()


def test_every_module_imports_without_the_extras():
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        for name in {LITERT + MATPLOTLIB!r}:
            sys.modules[name] = None
        import tfmot_zip
        names = [m.name for m in pkgutil.walk_packages(tfmot_zip.__path__, "tfmot_zip.")
                 if not m.name.endswith("__main__")]
        for name in names:
            importlib.import_module(name)
        print(len(names))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 40  # every module of every subpackage was imported
