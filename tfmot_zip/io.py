"""Atomic file writes (a temporary file in the target folder, then ``os.replace``), atomic
model saves, and the versions of the stack that produced a result.

A failure leaves the previous file (or nothing) in place, never a partial file.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save_model", "check_writable_dir", "versions",
]


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
