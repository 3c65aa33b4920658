"""Tests for the temporary-path cleanup of tfmot_zip.io: removed on success, error and signals (issue 16)."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tfmot_zip import io


@pytest.fixture
def recording_handler():
    """A SIGTERM handler that records its calls instead of ending the test process."""
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGTERM, previous)


def test_a_signal_removes_the_pending_paths_and_calls_the_previous_handler(tmp_path, recording_handler):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "inner.bin").write_bytes(b"x")
    single = tmp_path / "file.tmp"
    single.write_bytes(b"y")
    mine = signal.getsignal(signal.SIGTERM)
    with io.removed_on_signal(folder, is_dir=True), io.removed_on_signal(single):
        assert signal.getsignal(signal.SIGTERM) is not mine
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line
        assert not folder.exists() and not single.exists()
        assert recording_handler == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is mine  # restored at once
    assert signal.getsignal(signal.SIGTERM) is mine


def test_nested_blocks_restore_the_handlers_once_the_last_ends(tmp_path, recording_handler):
    mine = signal.getsignal(signal.SIGTERM)
    with io.removed_on_signal(tmp_path / "a"):
        ours = signal.getsignal(signal.SIGTERM)
        with io.removed_on_signal(tmp_path / "b"):
            assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGTERM) is ours
    assert signal.getsignal(signal.SIGTERM) is mine
    assert recording_handler == []


def test_ignored_signals_stay_ignored(tmp_path):
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with io.removed_on_signal(tmp_path):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler, SIGINT unblocked, for the test, whatever an earlier test in this
    worker left behind."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    signal.signal(signal.SIGINT, previous)


def test_sigint_raises_keyboard_interrupt_after_removing(tmp_path, default_sigint):
    with pytest.raises(KeyboardInterrupt):
        with io.temporary_directory("tfmot_zip_test_") as folder:
            os.kill(os.getpid(), signal.SIGINT)
            assert False, "KeyboardInterrupt expected"  # pragma: no cover
    assert not Path(folder).exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_temporary_directory_is_removed_on_error_and_from_other_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(io.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        with io.temporary_directory("tfmot_zip_test_") as folder:
            raise RuntimeError("boom")
    assert not Path(folder).exists()
    made = []

    def worker():  # no handler outside the main thread (signal.signal would raise), still removed
        with io.temporary_directory("tfmot_zip_test_") as inner:
            made.append((inner, signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert made and not Path(made[0][0]).exists() and made[0][1] is signal.SIG_DFL
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_no_temporary_file_on_a_signal(tmp_path, recording_handler, monkeypatch):
    target = tmp_path / "out.bin"
    removed = []

    def replace(source, destination):  # the signal arrives while the temporary file is complete
        assert Path(source).exists()
        os.kill(os.getpid(), signal.SIGTERM)
        removed.append(not Path(source).exists())  # by the handler, before the error path below
        raise OSError("stopped")

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="stopped"):
        io.atomic_write_bytes(target, b"payload")
    assert removed == [True] and list(tmp_path.iterdir()) == [] and recording_handler == [signal.SIGTERM]
