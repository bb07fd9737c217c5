#!/usr/bin/env bash
# The GPU training benchmark in one command (issue #19): bash scripts/bench_gpu.sh [OUT_DIR] [--cpu-smoke]
# Writes OUT_DIR/bench_gpu.json and OUT_DIR/bench_gpu.md (default OUT_DIR: bench-gpu). scripts/bench_gpu.py says more.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" scripts/bench_gpu.py "$@"
