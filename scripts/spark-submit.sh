#!/usr/bin/env bash
# How every user starts coldtier:
#   scripts/spark-submit.sh [--print-only] [--master M] [--deploy-mode client|cluster] \
#       [--conf k=v ...] jobs/offload.py run --config conf/dev.yaml [--trigger ...]
# Builds the spark-submit command from the YAML (master, --conf flags), the pinned
# --packages and the lib/ zip; see lib/coldtier/submit.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${COLDTIER_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$py}
PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m coldtier.submit "$@"
