"""Where ``tfmot-zip`` talks: messages and tqdm progress bars on stderr, and a quiet TensorFlow.

TensorFlow's start-up noise is silenced here, in the command line, never in the library.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["Console", "StageBar", "quiet_tensorflow", "native_stderr_silenced"]


@dataclass
class Console:
    """Where messages and progress bars go (stderr), and whether to show them.

    Example:
        >>> console = Console(quiet=True)
        >>> console.log("not shown")
        >>> with console.bar(total=2, desc="work") as bar:
        ...     bar.update(2)
        >>> bar.disable
        True
    """

    quiet: bool = False

    def log(self, message: str) -> None:
        """Writes ``message`` on stderr without breaking a progress bar (nothing when quiet)."""
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    def bar(self, **kwargs: Any) -> Any:
        """A tqdm progress bar on stderr (disabled when quiet); ``kwargs`` go to ``tqdm``."""
        from tqdm import tqdm

        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("leave", False)
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(disable=self.quiet, **kwargs)


@dataclass
class StageBar:
    """A progress bar driven by a library's ``progress(done, total, stage)`` callback.

    Pass the object itself as the callback (e.g. ``zip_models(..., progress=bar)``): each call
    moves the bar to ``done`` of ``total`` and shows ``stage``; a call with ``done == total``
    fills it. Use it as a context manager so the bar is closed.

    Example:
        >>> with StageBar(Console(quiet=True), desc="zipping", unit="layer") as progress:
        ...     for done, stage in enumerate(["fc1", "fc2"]):
        ...         progress(done, 2, stage)
        ...     progress(2, 2, "")
        >>> progress.done, progress.total, progress.stages
        (2, 2, ['fc1', 'fc2'])
    """

    console: Console
    desc: str
    unit: str = "step"
    done: int = 0
    total: int = 0
    stages: list = field(default_factory=list)
    _bar: Any = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self._bar is None:
            self._bar = self.console.bar(total=total, desc=self.desc, unit=self.unit)
        if total != self.total:
            self._bar.total = total
        self.done, self.total = int(done), int(total)
        self._bar.update(self.done - self._bar.n)
        if stage:
            self.stages.append(str(stage))
            self._bar.set_postfix_str(str(stage))

    def close(self) -> None:
        """Closes the bar (safe to call twice, or when it never started)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "StageBar":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


@contextlib.contextmanager
def quiet_tensorflow(enabled: bool = True) -> Iterator[None]:
    """Silences TensorFlow's C++ start-up logs, Python warnings and absl/TF loggers (restored after).

    Example:
        >>> import logging
        >>> with quiet_tensorflow():
        ...     logging.getLogger("tensorflow").level == logging.ERROR
        True
    """
    if not enabled:
        yield
        return
    previous_env = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # effective when TensorFlow is imported below
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl", "h5py", "matplotlib")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    absl_level = None
    try:
        import absl.logging

        absl_level = absl.logging.get_verbosity()
        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TensorFlow
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if absl_level is not None:
            import absl.logging

            absl.logging.set_verbosity(absl_level)
        if previous_env is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = previous_env


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Sends C++ logs (file descriptor 2) to /dev/null while Python's ``sys.stderr`` still prints.

    TensorFlow 2.21 and LiteRT log from C++ straight to descriptor 2 (oneDNN, CUDA and CPU
    feature banners, the XNNPACK delegate line), some before ``TF_CPP_MIN_LOG_LEVEL`` is read.
    Python's own writes (progress bars, messages, errors) go to a duplicate of the real stderr.
    Without a real stderr (e.g. captured output) it does nothing.

    Example:
        >>> with native_stderr_silenced(enabled=False):
        ...     print("still printed")
        still printed
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        fd = sys.stderr.fileno()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real stderr
        yield
        return
    python_stderr = sys.stderr
    replacement = open(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None) or "utf-8",
                       errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        sys.stderr = replacement
        yield
    finally:
        with contextlib.suppress(Exception):
            replacement.flush()
        sys.stderr = python_stderr
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
        with contextlib.suppress(Exception):
            replacement.close()
