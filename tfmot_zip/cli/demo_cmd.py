"""``tfmot-zip demo``: the main job (two LeNet-300-100 on Fashion-MNIST: train, zip, retrain, export)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tfmot_zip.cli.console import Console
from tfmot_zip.cli.errors import EXIT_OK
from tfmot_zip.cli.files import check_output_dir

if TYPE_CHECKING:
    from tfmot_zip.apps.demo import DemoConfig

__all__ = ["NAME", "HELP", "DESCRIPTION", "EXAMPLE", "add_arguments", "demo_config", "run"]

NAME = "demo"
HELP = "run the main job (LeNet-300-100 pair on Fashion-MNIST)"
DESCRIPTION = "Train (once, cached) two LeNet-300-100, zip, retrain, export and write a report."
EXAMPLE = "tfmot-zip demo --out out/demo --quick"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``demo``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args([]).out
        'out/demo'
    """
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default out/demo)")
    parser.add_argument("--quick", action="store_true", help="one sharing fraction, fewer samples and steps (a minute)")


def demo_config(out_dir: str, quick: bool) -> "DemoConfig":
    """The :class:`tfmot_zip.apps.demo.DemoConfig` of ``demo`` (``--quick``: a small one).

    Example:
        >>> demo_config("out/demo", quick=True).sharings
        (1.0,)
    """
    from tfmot_zip.apps.demo import DemoConfig

    if quick:
        return DemoConfig(out_dir=out_dir, sharings=(1.0,), calibration_samples=2000, retrain_steps=100, eval_every=100)
    return DemoConfig(out_dir=out_dir)


def run(args: argparse.Namespace, console: Console) -> int:
    """Runs ``demo``; returns the exit code.

    Example:
        >>> from tfmot_zip.cli.parser import build_parser
        >>> build_parser().parse_args(["demo", "--quick"]).handler is run
        True
    """
    out = check_output_dir(args.out, "--out")
    from tfmot_zip.apps import demo

    demo.run_demo(demo_config(str(out), args.quick), log=print)
    print(f"wrote {out / 'report.md'}")
    return EXIT_OK
