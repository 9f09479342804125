#!/usr/bin/env bash
# Copies the pinned Spark-side jars (conf/dependencies.yaml) into a directory, for clusters
# without internet access:
#   scripts/fetch-jars.sh DIR [--extra org:artifact:version,...]
#   COLDTIER_JARS_DIR=DIR scripts/spark-submit.sh jobs/offload.py run --config FILE   # uses --jars
# Run it where Maven Central (or your Ivy mirror) is reachable; ship DIR with the code.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 DIR [--extra org:artifact:version,...]" >&2; exit 2; }
dir=$1; shift
py=${COLDTIER_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m coldtier.deps --fetch "$dir" "$@"
