"""Fuzz command: many generated architectures through zip, strip and save/load.

Usage:
    .venv/bin/python benchmarks/fuzz.py [--examples 200] [--seed-free]

Runs ``tests/zipping/test_generated_models.py`` (a hypothesis strategy of random small
Dense/Conv2D models with BatchNorm, residual adds, pooling, activations, 2-3 models of
differing widths) with ``--examples`` examples instead of CI's 15. Each example checks that
sharing 0 reproduces the originals, ``strip_zipping`` matches the zipped model, save/load is
bit-exact and the inputs stay unmodified. A fifth of the examples (CI: 3; set
``TFMOT_ZIP_FUZZ_TFLITE_EXAMPLES`` to change it) also go through the TFLite signature check: the
stripped model is exported as float TFLite and every signature (one per task, ``all_tasks`` and
``all_tasks_shared_input``) must match Keras within ``TOLERANCES[None]``, each task's signature
also compared directly. CI draws the same examples every run (``derandomize``); ``--seed-free``
lets hypothesis draw new ones (and shrink a failure to a minimal spec, printed as "Falsifying
example"). About 4 s per example on one core, more for those exported to TFLite.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="generated architectures to try (default 200)")
    parser.add_argument("--seed-free", action="store_true", help="new random examples instead of CI's fixed ones")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error(f"--examples must be positive. Received: {args.examples}")
    env = {**os.environ, "TFMOT_ZIP_FUZZ_EXAMPLES": str(args.examples)}
    if args.seed_free:
        env["TFMOT_ZIP_FUZZ_RANDOM"] = "1"
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "zipping" / "test_generated_models.py")]
    print(f"fuzz: {args.examples} generated architectures", flush=True)
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
