#!/usr/bin/env bash
# The soak (make soak DURATION=1h): the whole job under a supervisor for DURATION, fed at 10x the
# production rate, with random faults; then drain, reconcile, and a report under
# soak-results/<UTC timestamp>/ (soak.md, soak.png). lib/coldtier/soak/harness.py; --help for options.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${COLDTIER_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m coldtier.soak "$@"
