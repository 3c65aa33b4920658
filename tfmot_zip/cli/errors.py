"""Exit codes of ``tfmot-zip`` and which errors are the user's.

Exit codes: 0 success, 2 a user error (bad arguments, files or inputs; the message says what and
how to fix it), 1 an unexpected failure. A user error is a :class:`UsageError` raised by the CLI's
own checks (files, suffixes, folders, spec syntax), or a ``ValueError``/``TypeError``/``OSError``
that tfmot_zip itself raised while validating what it was given (``zip_models``' arguments, a
data spec, a training setting), shown with the library's message. The same exception types
raised inside TensorFlow or Keras are unexpected failures.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "UsageError", "is_user_error"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

LIBRARY_DIR = Path(__file__).resolve().parents[1]  # the tfmot_zip package
_USER_ERRORS = (ValueError, TypeError, OSError)


class UsageError(ValueError):
    """A bad command-line argument or input file; the message says what is wrong and the fix.

    Example:
        >>> isinstance(UsageError("--out must end in .keras"), ValueError)
        True
    """


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's doing: a :class:`UsageError`, or a ValueError, TypeError or
    OSError raised by tfmot_zip code (the innermost frame of its traceback is in the package).

    Example:
        >>> from tfmot_zip.data.specs import parse_data_spec
        >>> try:
        ...     parse_data_spec("mnist")
        ... except ValueError as err:
        ...     is_user_error(err)
        True
        >>> is_user_error(KeyError("a bug"))
        False
    """
    if isinstance(err, UsageError):
        return True
    if not isinstance(err, _USER_ERRORS):
        return False
    tb = err.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    try:
        return Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(LIBRARY_DIR)
    except (OSError, ValueError):  # pragma: no cover - odd frames
        return False
