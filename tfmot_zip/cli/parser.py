"""The ``tfmot-zip`` command: its argument parser and :func:`main`, which maps errors to exit codes.

``zip`` merges pre-trained models into one multi-task model, ``retrain`` trains it jointly for a
few hundred steps, ``export`` strips the zipping and writes one TFLite file with a signature per
task, ``inspect`` describes a zipped ``.keras`` or a ``.tflite`` file, ``demo`` runs the main job.
Each command lives in its own module (``zip_cmd``, ``retrain_cmd``, ...) with its options and a
``run(args, console)``.

Exit codes: 0 success, 2 a user error (see :mod:`tfmot_zip.cli.errors`), 1 an unexpected failure
(rerun with ``--debug`` for the traceback), 130 interrupted. TensorFlow's start-up noise is
silenced here, not in the library.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from types import ModuleType
from typing import Sequence

from tfmot_zip.cli import demo_cmd, export_cmd, inspect_cmd, retrain_cmd, zip_cmd
from tfmot_zip.cli.console import Console, native_stderr_silenced, quiet_tensorflow
from tfmot_zip.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, is_user_error

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "COMMANDS", "build_parser", "main"]

EXIT_INTERRUPTED = 130
COMMANDS: tuple[ModuleType, ...] = (zip_cmd, retrain_cmd, export_cmd, inspect_cmd, demo_cmd)

SPEC_HELP = (
    "data specs: NAME:SPLIT (tensorflow-datasets; local_fashion_mnist reads the local Debian files, other names only "
    "if already prepared, never downloaded), FILE.npz (key 'x', or the first array; labels 'y') or FILE.npy (inputs "
    "only); options after '?': "
    "classes=0,1,2 (keep and remap labels), transform=transpose|flip_lr|flip_ud, count=N, scale=auto|none "
    "(auto: uint8 -> [0, 1])."
)
_COMMANDS_WITH_SPECS = ("zip", "retrain", "export")


def _version() -> str:
    from tfmot_zip import __version__
    from tfmot_zip.io import versions

    stack = versions()
    parts = [f"{name} {stack[name]}" for name in ("tensorflow", "tf_keras", "tensorflow_model_optimization") if stack.get(name)]
    parts.append(f"python {stack['python']}")
    return f"{__version__} ({', '.join(parts)})"


class _VersionAction(argparse.Action):
    """``--version``: the versions are read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _top_level_examples() -> str:
    lines = []
    for command in COMMANDS:
        example = command.EXAMPLE
        lines.append(f"  {example}" if "\\" in example else f"  {example.splitlines()[0]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tfmot-zip`` (every subcommand's ``--help`` shows an example).

    Example:
        >>> build_parser().parse_args(["inspect", "zipped.keras"]).command
        'inspect'
    """
    parser = argparse.ArgumentParser(
        prog="tfmot-zip",
        description=(
            "Multi-Task Zipping of pre-trained tf_keras models, in the TFMOT order: "
            "zip -> retrain -> export (strip + TFLite) -> inspect."
        ),
        epilog=f"examples:\n{_top_level_examples()}\n\nexit codes: 0 ok, 2 bad arguments or inputs, 1 unexpected failure.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="show the versions of tfmot_zip and its stack, then exit")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages on stderr")
    common.add_argument("--debug", action="store_true", help="show TensorFlow's logs and full tracebacks")
    common.add_argument("--tfds-data-dir", default=None, metavar="DIR",
                        help="tensorflow-datasets data folder (default: <cache>/tensorflow_datasets for local_fashion_mnist)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        specs = f"\n\n{SPEC_HELP}" if command.NAME in _COMMANDS_WITH_SPECS else ""
        p = sub.add_parser(
            command.NAME,
            parents=[common],
            help=command.HELP,
            description=f"{command.DESCRIPTION}{specs}",
            epilog=f"example:\n  {command.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def _run(args: argparse.Namespace, console: Console) -> int:
    """Runs the command's handler and maps what it raises to an exit code and a message."""
    try:
        return args.handler(args, console)
    except KeyboardInterrupt:
        print("tfmot-zip: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - mapped to exit codes below
        if args.debug:
            import traceback

            traceback.print_exc()
        if is_user_error(err):
            print(f"tfmot-zip {args.command}: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"tfmot-zip {args.command}: unexpected failure: {type(err).__name__}: {err}\n"
            "Rerun with --debug for the traceback, and report it if the inputs look right.",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfmot-zip`` with ``argv`` (default ``sys.argv[1:]``) and returns the exit code.

    Example:
        >>> main(["inspect", "missing.keras"])
        2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # --help, --version, argparse errors (code 2)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    console = Console(quiet=args.quiet)
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        sys.stdout.reconfigure(line_buffering=True)  # results interleave with progress in order, even piped
    started = time.perf_counter()
    with quiet_tensorflow(enabled=not args.debug), native_stderr_silenced(enabled=not args.debug):
        code = _run(args, console)
    if code == EXIT_OK:
        console.log(f"done in {time.perf_counter() - started:.1f} s")
    return code
