"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A failure leaves the previous file (or nothing) in place, never a partial file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "check_writable_dir"]


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
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {str(folder)!r} of output file {str(target)!r} does not exist; create it first.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise PermissionError(f"Cannot write {str(target)!r}: {err.strerror}. Choose a writable path.") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


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
