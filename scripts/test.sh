#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite, in one worker process per core (at
# most 4; pytest-xdist, each test module kept in one worker so its fixtures are built once).
# Extra arguments go to pytest; `-n 0` runs in this process (e.g. one test under a debugger).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -n auto --maxprocesses=4 --dist loadscope "$@"
