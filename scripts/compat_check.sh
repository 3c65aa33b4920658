#!/usr/bin/env bash
# Compatibility check with the OLDEST supported stack (not part of scripts/test.sh).
#
# Builds the wheel, installs it into a fresh virtual environment (.venv-compat/) with every
# lower bound of pyproject.toml pinned exactly (tensorflow, tf-keras, TFMOT, numpy, ... and the
# tflite/report/test extras), then runs a fast subset of the tests (zip, strip, save/load, TFLite
# export) against the INSTALLED wheel, from a copy of tests/ outside the source tree.
#
#   bash scripts/compat_check.sh                                   # the lower bounds
#   bash scripts/compat_check.sh tensorflow==2.17.1 tf-keras==2.17.0   # override some pins
#
# Environment: PYTHON (default python3), COMPAT_VENV (default .venv-compat),
# COMPAT_TESTS (default below). Downloads ~1-2.5 GB from PyPI; takes 10+ minutes.
# Results are recorded by hand in docs/COMPATIBILITY.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${COMPAT_VENV:-$ROOT/.venv-compat}"
TESTS="${COMPAT_TESTS:-tests/zipping/test_zip_api.py tests/model/test_roundtrip.py tests/export/test_export.py}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "== fresh venv: $VENV"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip build

echo "== building the wheel (from a copy of the sources)"
mkdir -p "$WORK/src"
cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/tfmot_zip" "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$VPY" -m build -q --wheel --outdir "$WORK/dist" "$WORK/src" >/dev/null
WHEEL="$(ls "$WORK"/dist/*.whl)"
echo "   $(basename "$WHEEL")"

echo "== pins: the lower bounds of pyproject.toml, then the overrides: $*"
"$VPY" - "$ROOT/pyproject.toml" "$@" > "$WORK/oldest.txt" <<'PYEOF'
import re
import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
requirements = list(project["dependencies"])
for extra in project["optional-dependencies"].values():
    requirements += [r for r in extra if not r.startswith(project["name"])]
pins = {}
for requirement in requirements:
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?.*?>=\s*([^,;\s]+)", requirement)
    if match:
        pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
for override in sys.argv[2:]:
    name, version = override.split("==")
    pins[re.sub(r"[-_.]+", "-", name).lower()] = version
for name, version in pins.items():
    print(f"{name}=={version}")
PYEOF
cat "$WORK/oldest.txt" | sed 's/^/   /'

echo "== installing the wheel with the pins"
"$VPY" -m pip install -q -c "$WORK/oldest.txt" "$WHEEL[tflite,report,test]"

echo "== installed versions"
"$VPY" -m pip list 2>/dev/null | grep -iE "^(tensorflow|tf.keras|tensorflow-model-optimization|tensorflow-datasets|numpy|scipy|ai-edge-litert|matplotlib|protobuf|ml-dtypes|keras|pytest|hypothesis) " | sed 's/^/   /'

echo "== tests against the installed wheel: $TESTS"
mkdir -p "$WORK/run"
cp -r "$ROOT/tests" "$ROOT/pyproject.toml" "$WORK/run/"
cd "$WORK/run"
"$VPY" -c "import tfmot_zip, sys; assert 'site-packages' in tfmot_zip.__file__, tfmot_zip.__file__; print('   tfmot_zip', tfmot_zip.__version__, 'from', tfmot_zip.__file__)"
# shellcheck disable=SC2086
"$VPY" -m pytest -p no:cacheprovider $TESTS
