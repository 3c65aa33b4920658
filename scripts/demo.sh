#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job: zip two pre-trained
# LeNet-300-100 on Fashion-MNIST, retrain lightly, export TFLite, write a report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python examples/zip_lenet300.py "$@"
