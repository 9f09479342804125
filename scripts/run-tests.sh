#!/usr/bin/env bash
# Runs the test suite with the project's venv. pytest's exit 5 (no test collected) is
# turned into a failure: a run that tested nothing must never pass.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=lib:tests  # no TZ pin: the suite must pass in any process time zone
.venv/bin/ruff check lib jobs tests scripts || exit 1
# types: the whole package, and the pure modules strictly
.venv/bin/mypy lib/coldtier || exit 1
.venv/bin/mypy --strict --follow-imports=silent lib/coldtier/{errors,offset,planning,types,records,driver,consistency}.py || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "run-tests: pytest collected no tests; failing" >&2
  exit 1
fi
exit "$rc"
