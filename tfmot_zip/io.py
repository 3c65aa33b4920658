"""Atomic file writes (a temporary file in the target folder, then ``os.replace``), atomic
model saves, temporary folders that never outlive their work, and the versions of the stack
that produced a result.

A failure leaves the previous file (or nothing) in place, never a partial file. Temporary files
and folders are removed on success, on error and when the process is stopped by SIGTERM or
SIGINT (Ctrl-C): see :func:`removed_on_signal`.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save_model", "check_writable_dir",
    "removed_on_signal", "temporary_directory", "versions",
]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_pending: dict[str, bool] = {}  # path -> is a folder; removed if a signal stops the process
_previous_handlers: dict[int, Any] = {}
_lock = threading.RLock()


def _remove(path: str, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _restore_handlers() -> None:
    for signum, previous in _previous_handlers.items():
        if signal.getsignal(signum) is _on_signal:  # not replaced by someone else meanwhile
            signal.signal(signum, previous)
    _previous_handlers.clear()


def _on_signal(signum: int, frame: Any) -> None:
    """Removes the pending temporary paths, then does what the previous handler would have done."""
    with _lock:
        for path, is_dir in list(_pending.items()):
            _remove(path, is_dir)
        _pending.clear()
        previous = _previous_handlers.get(signum, signal.SIG_DFL)
        _restore_handlers()
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default: raise KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action again (terminate), now that the handler is restored


@contextlib.contextmanager
def removed_on_signal(path: str | os.PathLike, is_dir: bool = False) -> Iterator[None]:
    """Removes ``path`` if SIGTERM or SIGINT arrives inside the block, then lets the signal act.

    Installs a handler (from the main thread only; Python runs handlers there) for the time any
    path is pending: it removes every pending path, restores the previous handlers and calls the
    previous handler (SIGINT: ``KeyboardInterrupt``) or re-sends the signal for its default action
    (SIGTERM: the process ends as it would have); if a previous handler returns, the work goes on
    without its temporary paths and fails. Ignored signals stay ignored. The block itself
    removes nothing: pair it with the removal on success and error, as :func:`temporary_directory` does.

    Example:
        >>> folder = tempfile.mkdtemp()
        >>> with removed_on_signal(folder, is_dir=True):
        ...     signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # our handler, while pending
        True
        >>> signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
        True
    """
    key = str(path)
    with _lock:
        _pending[key] = is_dir
        if not _previous_handlers and threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                previous = signal.getsignal(signum)
                if previous is None or previous == signal.SIG_IGN:
                    continue  # ignored (or set outside Python): nothing to clean up for
                _previous_handlers[signum] = previous
                signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        with _lock:
            _pending.pop(key, None)
            if not _pending and threading.current_thread() is threading.main_thread():
                _restore_handlers()


@contextlib.contextmanager
def temporary_directory(prefix: str) -> Iterator[str]:
    """A new temporary folder, removed on success, on error and on SIGTERM/SIGINT.

    Example:
        >>> with temporary_directory("tfmot_zip_doc_") as folder:
        ...     os.path.isdir(folder)
        True
        >>> os.path.exists(folder)
        False
    """
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        with removed_on_signal(folder, is_dir=True):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Creates ``path`` if needed and checks it is a writable folder; clear error otherwise.

    Example:
        >>> check_writable_dir(tempfile.gettempdir()).is_dir()
        True
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"Cannot create output folder {str(folder)!r}: {err.strerror}. Choose a writable path.") from None
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"Output folder {str(folder)!r} is not writable. Choose a writable path.")
    return folder


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Writes ``payload`` to ``path`` atomically.

    Example:
        >>> p = atomic_write_bytes(Path(tempfile.mkdtemp()) / "x.bin", b"abc")
        >>> p.read_bytes()
        b'abc'
    """
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    return _atomic(path, write, suffix=".tmp")


def _atomic(path: str | os.PathLike, write: Any, suffix: str) -> Path:
    """Calls ``write(tmp)`` on a temporary file beside ``path``, then renames it to ``path``."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {str(folder)!r} of output file {str(target)!r} does not exist; create it first.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=folder)
    except OSError as err:
        raise PermissionError(f"Cannot write {str(target)!r}: {err.strerror}. Choose a writable path.") from None
    os.close(fd)
    try:
        with removed_on_signal(tmp):
            write(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_save_model(model: Any, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Saves a tf_keras model to ``path`` atomically (``.keras``, ``.h5``: the suffix picks the format).

    A failure leaves the previous file (or nothing) in place, never a partial file.
    ``save_kwargs`` go to ``model.save`` (e.g. ``include_optimizer=False``).

    Example:
        >>> from tfmot_zip.compat import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> atomic_save_model(m, Path(tempfile.mkdtemp()) / "m.keras").suffix
        '.keras'
    """
    return _atomic(path, lambda tmp: model.save(tmp, overwrite=True, **save_kwargs), suffix=Path(path).suffix)


def versions() -> dict:
    """Versions of the stack (and the machine) that produced a result, for reports.

    Example:
        >>> sorted(versions())[:3]
        ['ai_edge_litert', 'machine', 'numpy']
    """
    from importlib import metadata

    import numpy

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    import tfmot_zip

    return {
        "tfmot_zip": tfmot_zip.__version__,
        "tensorflow": version("tensorflow"),
        "tf_keras": version("tf-keras"),
        "tensorflow_model_optimization": version("tensorflow-model-optimization"),
        "ai_edge_litert": version("ai-edge-litert"),
        "numpy": numpy.__version__,
        "scipy": version("scipy"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON atomically (numpy scalars converted)."""

    def default(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        if hasattr(value, "item"):
            return value.item()
        raise TypeError(f"Cannot serialise {type(value).__name__} to JSON")

    return atomic_write_text(path, json.dumps(obj, indent=2, default=default) + "\n")
