"""Many tables in one application: concurrent progress in FAIR pools, a failure that stops one
table only, one PostgreSQL session for every table lock, and exactly once across a crash with
several tables in flight."""

from __future__ import annotations

import psycopg2
import pytest

from coldtier import cli
from coldtier import config as config_mod
from coldtier.errors import LockHeld
from coldtier.ledger import Ledger
from coldtier.lock import AdvisoryLock, Fence, LockSession
from coldtier.synth import TradeTable
from jobkit import assert_source_equals_sink, committed_batches, progress_lines, run_inprocess, sql


def _feeds(job, n: int, rows: int) -> list[TradeTable]:
    out = []
    for i in range(n):
        t = TradeTable(job.client, f"venue{i}", job.database)
        t.create()
        t.bulk(rows)
        out.append(t)
    return out


def _pools(spark) -> set[str]:
    pools = spark.sparkContext._jsc.sc().getAllPools()
    return {pools.apply(i).name() for i in range(pools.size())}


def test_tables_progress_concurrently_in_pools_of_their_own(job, spark, capsys):
    feeds = _feeds(job, 5, 3000)
    names = [f"v{i}" for i in range(5)]
    cfg = job.write_config([job.table_entry(n, f.table, batch={"max_rows": 1000, "num_partitions": 1})
                            for n, f in zip(names, feeds, strict=True)], run={"max_concurrent_tables": 3})
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    for n, f in zip(names, feeds, strict=True):
        assert [p["batch_id"] for p in progress if p["table"] == n] == [1, 2, 3]
        assert committed_batches(spark, job, n) == [1, 2, 3]
        assert_source_equals_sink(job, spark, f.table, job.target(n))
    assert set(names) <= _pools(spark)  # each table's jobs ran in its own FAIR pool
    # batches of different tables were in flight at the same time (ledger: planned → committed)
    spans = sql(job, "SELECT table_name, planned_at, committed_at FROM coldtier.batches WHERE pipeline = %s",
                (job.pipeline,))
    assert spans is not None and len(spans) == 15
    overlapping = {(a[0], b[0]) for a in spans for b in spans
                   if a[0] < b[0] and a[1] < b[2] and b[1] < a[2]}
    assert overlapping, spans


def test_a_failing_table_stops_alone_and_the_exit_code_reports_it(job, spark, capsys):
    job.client.execute(f"CREATE TABLE {job.database}.bytes (ts DateTime64(6), id UInt64, note String) "
                       f"ENGINE = MergeTree ORDER BY (ts, id)")
    job.client.execute(f"INSERT INTO {job.database}.bytes VALUES ('2026-01-01 00:00:00', 1, 'fine'), "
                       f"('2026-01-01 00:00:01', 2, unhex('61ff62'))")
    feeds = _feeds(job, 2, 2000)
    bad = job.table_entry("bytes", "bytes", cursor={"timestamp_column": "ts", "incrementing_column": "id"},
                          batch={"max_rows": 1})
    good = [job.table_entry(f"v{i}", f.table, batch={"max_rows": 500, "num_partitions": 1})
            for i, f in enumerate(feeds)]
    cfg = job.write_config([bad, *good], run={"max_concurrent_tables": 2})
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == cli.EXIT_SCHEMA, err
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"coldtier: {job.pipeline}/bytes stopped (data problem") and "other tables go on" \
        in lines[0], err
    assert lines[-1].startswith("coldtier: data problem") and lines[-1].endswith("(exit 6)"), err
    assert '"failed_tables": ["bytes"]' in err
    for i, f in enumerate(feeds):  # the others moved every row
        assert [p["batch_id"] for p in progress if p["table"] == f"v{i}"] == [1, 2, 3, 4]
        assert_source_equals_sink(job, spark, f.table, job.target(f"v{i}"))
    assert spark.table(job.target("bytes")).count() == 1
    ledger = Ledger(config_mod.load(cfg, job.env()).ledger.dsn)
    try:
        last = ledger.last_batch(job.pipeline, "bytes")
        assert last is not None and (last.batch_id, last.status) == (2, "planned")
    finally:
        ledger.close()


def test_the_locks_of_many_tables_share_one_session(job):
    dsn = job.postgres.dsn
    sql(job, "CREATE SCHEMA IF NOT EXISTS coldtier")
    Ledger(dsn).ensure_schema()
    session = LockSession(dsn, f"coldtier-lock {job.pipeline}")
    locks = [AdvisoryLock(dsn, f"coldtier/{job.pipeline}/t{i}", fence=Fence("coldtier", job.pipeline, f"t{i}"),
                          session=session) for i in range(20)]
    try:
        for lock in locks:
            lock.acquire()
        count = sql(job, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (f"coldtier-lock {job.pipeline}",))
        assert count == [(1,)]
        rival = AdvisoryLock(dsn, f"coldtier/{job.pipeline}/t7")
        with pytest.raises(LockHeld):
            rival.acquire()
        # the session dies (a PostgreSQL failover, a NAT): every lock notices and takes itself back
        sql(job, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"coldtier-lock {job.pipeline}",))
        epochs = [lock.epoch for lock in locks]
        for lock in locks:
            lock.check_fence()  # nobody owned them in between: ours again, on the new session
        assert all(lock.epoch == e + 1 for lock, e in zip(locks, epochs, strict=True))
        with pytest.raises(LockHeld):
            rival.acquire()
        locks[7].release()
        rival.acquire()  # released on the shared session, the others still held
        rival.release()
        with pytest.raises(LockHeld):
            AdvisoryLock(dsn, f"coldtier/{job.pipeline}/t8").acquire()
    finally:
        for lock in locks:
            lock.release()
        session.drop()


@pytest.mark.slow
def test_a_crash_with_several_tables_in_flight_loses_and_doubles_nothing(job, spark):
    feeds = _feeds(job, 4, 4000)
    names = [f"v{i}" for i in range(4)]
    cfg = job.write_config([job.table_entry(n, f.table, batch={"max_rows": 1000, "num_partitions": 1})
                            for n, f in zip(names, feeds, strict=True)], run={"max_concurrent_tables": 4})
    crashed = job.run_process(cfg, "run", "--trigger", "available-now",
                              extra_env={"COLDTIER_FAULT": "after-sink-commit:3"})
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    assert any(p.get("batch_id") for p in progress_lines(crashed.stdout))
    relaunched = job.run_process(cfg, "run", "--trigger", "available-now")
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    for n, f in zip(names, feeds, strict=True):
        assert committed_batches(spark, job, n) == [1, 2, 3, 4]
        assert_source_equals_sink(job, spark, f.table, job.target(n))
    with psycopg2.connect(job.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM coldtier.batches WHERE pipeline = %s AND status = 'committed'",
                    (job.pipeline,))
        assert cur.fetchone() == (16,)


def test_concurrent_tables_hold_back_rows_inside_lag_s(job, spark, capsys):
    """Live tables (lag_s > 0) run concurrently: each copies only rows older than its lag, ties
    on the boundary timestamp included or excluded together, and the rest on a later run."""
    import time

    feeds = _feeds(job, 3, 2000)  # historical: 10 minutes old and more
    for f in feeds:  # fresh rows, inside the lag, several sharing one timestamp
        f.insert(500, "now64(3, 'UTC') - toIntervalMillisecond(intDiv(number, 5))")
    names = [f"v{i}" for i in range(3)]
    cfg = job.write_config([job.table_entry(n, f.table, cursor={"lag_s": 30},
                                            batch={"max_rows": 700, "num_partitions": 1})
                            for n, f in zip(names, feeds, strict=True)], run={"max_concurrent_tables": 3})
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    for n in names:
        assert spark.table(job.target(n)).count() == 2000  # the fresh rows wait
    time.sleep(31)
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    for n, f in zip(names, feeds, strict=True):
        assert_source_equals_sink(job, spark, f.table, job.target(n))


@pytest.mark.slow
def test_a_loop_on_a_jdbc_catalog_rides_out_a_postgres_restart(job, spark):
    """Found by the soak: with the Iceberg catalog in the ledger's PostgreSQL, a restart killed
    the catalog's pooled connection (SQLSTATE 57P01, not in Iceberg's retry list) and the table
    stopped for the life of the processing-time loop; and two tables creating their new shared
    namespace at once raced in the JDBC catalog. Now the catalog reconnects, a transient failure
    is retried from the ledger, and both tables keep committing through the restart."""
    import signal
    import subprocess
    import sys
    import time

    from coldtier.synth import venues
    from helpers import ROOT, wait_until
    from jobkit import JobEnv, restart_postgres

    job = JobEnv(job.chembed, job.postgres, job.warehouse, job.tmp, catalog="jdbc_cat")
    feeds = [TradeTable(job.client, v, job.database) for v in venues(2)]
    for f in feeds:
        f.create()
        f.bulk(500)
    names = ["pa", "pb"]
    cfg = job.write_config([job.table_entry(n, f.table, cursor={"lag_s": 3}, batch={"num_partitions": 1})
                            for n, f in zip(names, feeds, strict=True)], run={"max_concurrent_tables": 2})
    feed = subprocess.Popen(
        [sys.executable, "-m", "coldtier.synth", "--url", job.chembed.http_url, "--password-env",
         "TEST_CH_PASSWORD", "--database", job.database, "--venues", "2", "live", "--rate", "100", "--interval", "0.25"], env=job.env(), stdout=subprocess.DEVNULL)
    err_path = job.tmp / "loop.err"
    proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--trigger", "processing-time=1s",
                             "--config", str(cfg)], cwd=ROOT, env=job.env(), stdout=subprocess.DEVNULL,
                            stderr=open(err_path, "w"))

    def commits() -> dict[str, int]:
        try:
            rows = sql(job, "SELECT table_name, count(*) FROM coldtier.batches WHERE pipeline = %s AND "
                            "status = 'committed' GROUP BY table_name", (job.pipeline,))
        except psycopg2.Error:
            return {}
        return {str(t): int(n) for t, n in rows or []}

    try:
        wait_until(lambda: all(commits().get(n, 0) >= 2 for n in names), 240, "two batches per table")
        restart_postgres(job)
        before = commits()
        wait_until(lambda: all(commits().get(n, 0) >= before[n] + 3 for n in names), 240,
                   "three more batches per table after the restart")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, err_path.read_text()[-3000:]
    finally:
        proc.kill()
        feed.send_signal(signal.SIGTERM)
        feed.wait(30)
    assert "stopped (" not in err_path.read_text()  # no table gave up
    time.sleep(4)  # the last rows age past the lag; then drain
    drained = job.run_process(cfg, "run", "--trigger", "available-now")
    assert drained.returncode == 0, drained.stderr[-3000:]
    for n, f in zip(names, feeds, strict=True):
        assert_source_equals_sink(job, spark, f.table, job.target(n))
        assert len(committed_batches(spark, job, n)) == commits()[n]
