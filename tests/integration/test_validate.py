"""``coldtier validate``: the config, the services, the tables, the locks and what the next run
would do, without Spark and without writing anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coldtier import cli
from coldtier.lock import AdvisoryLock
from helpers import ROOT
from jobkit import sql

pytestmark = pytest.mark.spark  # the shared services (the checks themselves use no Spark)


def validate(job, cfg, *args, env=None):
    return subprocess.run([sys.executable, "-m", "coldtier", "validate", "--config", str(cfg), *args],
                          env={**job.env(), **(env or {})}, capture_output=True, text=True, timeout=120, cwd=ROOT)


def lines(out: str) -> dict[str, tuple[str, str]]:
    """check name → (level, detail)"""
    found = {}
    for line in out.splitlines()[:-1]:
        level, rest = line.split(None, 1)
        what, _, detail = rest.partition("  ")
        found[what.strip()] = (level, detail.strip())
    return found


def test_validate_checks_everything_and_writes_nothing(job):
    trades = job.trades()
    trades.bulk(2500)
    schema = f"v_{job.pipeline}"
    cfg = job.write_config([job.table_entry("t", trades.table, batch={"max_rows": 1000})],
                           ledger={"dsn": f"host={job.postgres.host} port={job.postgres.port} "
                                          f"dbname={job.postgres.dbname} user={job.postgres.user} "
                                          f"password=${{TEST_PG_PASSWORD}}", "schema": schema})
    done = validate(job, cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    got = lines(done.stdout)
    assert got["config"][0] == "ok" and got["ledger"] == ("ok", got["ledger"][1])
    assert "absent (the first run creates it)" in got["ledger"][1]
    assert got["source ch"][0] == "ok" and "ClickHouse" in got["source ch"][1]
    assert got[f"catalog {job.catalog}"][0] == "ok"
    assert got["table t"][0] == "ok" and "plans batch 1: 1,000 rows up to" in got["table t"][1]
    assert got["lock t"] == ("ok", "free")
    assert done.stdout.splitlines()[-1] == "6 checks: 6 ok"
    # nothing was written: no ledger schema, no owner epoch
    assert sql(job, "SELECT to_regclass(%s)", (f"{schema}.batches",)) == [(None,)]
    # a held lock is a warning (a run now would exit 3), not a failure
    holder = AdvisoryLock(job.postgres.dsn, f"coldtier/{job.pipeline}/t")
    holder.acquire()
    try:
        held = validate(job, cfg)
    finally:
        holder.release()
    assert held.returncode == 0 and lines(held.stdout)["lock t"][0] == "warn", held.stdout


def test_validate_names_each_failure_with_its_exit_code(job):
    trades = job.trades()
    trades.bulk(10)
    cfg = job.write_config([job.table_entry("t", trades.table)])
    wrong = validate(job, cfg, env={"TEST_CH_PASSWORD": "not-it"})
    got = lines(wrong.stdout)
    assert wrong.returncode == cli.EXIT_RUNTIME and got["source ch"][0] == "fail", wrong.stdout
    assert "Authentication failed" in got["source ch"][1] and "not-it" not in wrong.stdout
    assert got["ledger"][0] == "ok"  # every check runs, not just up to the first failure
    missing = job.write_config([job.table_entry("t", trades.table, cursor={"incrementing_column": "nope"})])
    done = validate(job, missing)
    assert done.returncode == cli.EXIT_SCHEMA and "nope" in lines(done.stdout)["table t"][1], done.stdout
    # a password equal to a name coldtier prints: a warning, since masking cannot hide it
    weak = validate(job, cfg, env={"TEST_PG_PASSWORD": job.pipeline})
    assert lines(weak.stdout)["secrets"][0] == "warn"
