#!/usr/bin/env bash
# Every GPU measurement in one short run (< 8 minutes on one GPU): see scripts/gpu_check.py.
#   scripts/gpu_check.sh                 # on a GPU machine: writes outputs/gpu_check/gpu_check.json
#   scripts/gpu_check.sh --cpu --no-bench  # tiny sizes on the CPU (what the test suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py "$@"
