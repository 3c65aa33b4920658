"""Shared pieces of the command-line tests: two small models and labelled .npz data on disk, a
zipped model made by ``tfmot-zip zip``, and helpers to run the command in-process or as the
installed script.

Test modules import the fixtures they use (``from cli_fixtures import files``); this is not a
``conftest.py`` because a second ``conftest`` module would shadow ``tests/conftest.py`` for the
``from builders import mlp`` imports of the other test modules.
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfmot_zip.cli.parser import EXIT_OK, main

from builders import calib, mlp

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("tfmot-zip")
NOISE = ("I0000", "W0000", "E0000", "absl::InitializeLog", "oneDNN", "cuda", "cpu_feature_guard", "XNNPACK")


def sha256(path: Path) -> str:
    """Digest of a file, or of every file in a folder (inputs must stay untouched)."""
    if path.is_dir():
        digest = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                digest.update(str(p.relative_to(path)).encode() + p.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_inputs(folder: Path) -> dict:
    """Two small trained-looking models and labelled .npz data for each task, plus unlabelled data."""
    rng = np.random.default_rng(0)
    paths = {"folder": folder}
    for i, seed in enumerate((1, 2)):
        paths[f"model{i}"] = folder / f"model{i}.keras"
        mlp(seed, name=f"task{'ab'[i]}").save(paths[f"model{i}"])
        paths[f"data{i}"] = folder / f"data{i}.npz"
        np.savez(paths[f"data{i}"], x=calib(rng, 64, (6, 6, 1)), y=rng.integers(0, 3, 64))
    paths["unlabelled"] = folder / "unlabelled.npz"
    np.savez(paths["unlabelled"], calib(rng, 32, (6, 6, 1)))
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The paths of :func:`write_inputs` in a folder of the test module."""
    return write_inputs(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def zipped_file(files):
    """A model zipped by ``tfmot-zip zip`` at sharing 0.5."""
    out = files["folder"] / "zipped.keras"
    code = main(["zip", str(files["model0"]), str(files["model1"]), "--calibration", str(files["data0"]), str(files["data1"]),
                 "--sharing", "0.5", "--out", str(out), "-q"])
    assert code == EXIT_OK
    return out


def run(argv, capsys=None):
    """``main(argv)`` in-process: (exit code, captured output or None)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr() if capsys is not None else None
    return code, captured


def script(*args, timeout=300):
    """The installed ``tfmot-zip`` script in a subprocess, with TF_CPP_MIN_LOG_LEVEL unset."""
    assert SCRIPT.exists(), f"{SCRIPT} missing: run .venv/bin/pip install -e . --no-deps"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the CLI must silence TF itself
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
