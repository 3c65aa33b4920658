"""One wheel and one sdist per session, built from a copy of the sources (the tree stays clean).

The build runs with a ``tensorflow`` that cannot be imported on its path, so it also checks that
setuptools reads ``tfmot_zip.__version__`` statically (``attr:`` in pyproject.toml) instead of
importing the package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = 'raise ImportError("blocked by tests/packaging: building tfmot_zip must not import TensorFlow")\n'


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> SimpleNamespace:
    """``wheel``, ``sdist`` (paths) and ``source`` (the copied tree they were built from)."""
    pytest.importorskip("build", reason="python -m build comes with the [test] extra")
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "tfmot_zip", source / "tfmot_zip", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    blocker = work / "blocked" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"), str(source)],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    wheels, sdists = sorted((work / "dist").glob("*.whl")), sorted((work / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, os.listdir(work / "dist")
    return SimpleNamespace(wheel=wheels[0], sdist=sdists[0], source=source)
