"""The export's temporary folders (``tfmot_zip_export_*``) are removed on success, on error, on SIGTERM
and on SIGINT, and the signal handlers are restored afterwards (issue 16)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tfmot_zip.compat import keras, tf
from tfmot_zip.export import export_tflite

ROOT = Path(__file__).resolve().parents[2]


def tiny() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("tfmot_zip_export_"))


def test_success_leaves_no_temporary_folder_and_restores_the_handlers(private_tmp, tmp_path, monkeypatch):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    seen = []
    original = tf.saved_model.save

    def save(obj, folder, **kwargs):  # the export does use a folder of the private temp dir
        seen.append(Path(folder))
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]  # our handler meanwhile
        return original(obj, folder, **kwargs)

    monkeypatch.setattr(tf.saved_model, "save", save)
    export_tflite(tiny(), tmp_path / "m.tflite")
    assert seen and seen[0].parent == private_tmp and seen[0].name.startswith("tfmot_zip_export_")
    assert leftovers(private_tmp) == []
    assert {s: signal.getsignal(s) for s in before} == before


def test_error_leaves_no_temporary_folder(private_tmp, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export_tflite(tiny(), tmp_path / "m.tflite")
    assert leftovers(private_tmp) == []
    assert not (tmp_path / "m.tflite").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from tfmot_zip.compat import keras, tf
    from tfmot_zip.export import export_tflite

    original = tf.lite.TFLiteConverter.from_saved_model

    def slow(folder, *args, **kwargs):  # the SavedModel is written: announce it, then take long
        print("READY", folder, flush=True)
        time.sleep(60)
        return original(folder, *args, **kwargs)

    tf.lite.TFLiteConverter.from_saved_model = slow
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="task_a")])
    try:
        export_tflite(model, sys.argv[1])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(3)
    """
)


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM at their default disposition, unblocked."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("signum, expected_code", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 3)])
def test_a_signal_during_export_leaves_no_temporary_folder(tmp_path, signum, expected_code):
    private = tmp_path / "tmp"
    private.mkdir()
    env = {**os.environ, "TMPDIR": str(private), "PYTHONPATH": str(ROOT)}
    # A child inherits an ignored or blocked SIGINT (and Python then leaves it ignored): start it with
    # the default disposition and an empty mask, as a shell does, whatever an earlier test left behind.
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "m.tflite")], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env, cwd=str(tmp_path),
                               preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while not line.startswith("READY") and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
        assert line.startswith("READY"), "the export subprocess never reached the conversion"
        folder = Path(line.split(" ", 1)[1].strip())
        assert folder.parent == private and folder.is_dir()
        process.send_signal(signum)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == expected_code
    assert leftovers(private) == [] and not folder.exists()
    assert not (tmp_path / "m.tflite").exists()
