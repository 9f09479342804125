#!/usr/bin/env bash
# Tuning runs and benchmarks (docs/tuning.md):
#   scripts/bench.sh [--matrix conf/tuning/default.yaml] [--rows N] [--out bench-results] [--keep]
# Starts its own services, runs every cell of the matrix as a real offload through
# scripts/spark-submit.sh, measures the baselines in the same run and writes
# bench-results/<UTC timestamp>/ (results.csv, results.md, PNG plots, best-profile.yaml).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${COLDTIER_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
cd "$root"
PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m coldtier.bench "$@"
