#!/usr/bin/env bash
# Installs everything tfmot_zip needs on a fresh Debian machine: the Fashion-MNIST
# data package and a Python virtual environment (.venv) with tfmot_zip (editable) and every
# extra, at the exact versions of constraints.txt (pyproject.toml holds the supported ranges).
# Idempotent: a second run only checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
  $SUDO apt-get update
  $SUDO apt-get install -y dataset-fashion-mnist
fi
PY="${PYTHON:-python3}"
STAMP=".venv/.tfmot_zip_installed"
HASH="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[tflite,report,test]"
  echo "$HASH" > "$STAMP"
fi
