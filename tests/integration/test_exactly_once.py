"""Exactly once when the world misbehaves: a writer that lost its lock, rows that vanish from a
planned range, a ledger COMMIT whose answer is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg2
import pytest

from coldtier import cli
from coldtier.ledger import BatchMetrics, Ledger
from coldtier.planning import Range
from coldtier.source import Planner, resolve_cursor
from helpers import ROOT, wait_until
from jobkit import (
    SINKS,
    assert_source_equals_sink,
    batch_gate,
    committed_batches,
    run_inprocess,
    sql,
    while_held,
)

pytestmark = pytest.mark.spark


def restart_postgres(job) -> None:
    log = str(job.postgres.datadir) + "/../postgres.log"
    done = subprocess.run([str(ROOT / "scripts" / "pg_ctl"), "restart", "-w", "-m", "fast", "-D",
                           job.postgres.datadir, "-l", log], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_a_writer_that_lost_its_lock_never_publishes(job, spark, capsys):
    """Instance A reads batch 1 (held at the source, then frozen); PostgreSQL restarts, so A's
    lock dies with its session; instance B takes the table over and runs batch 1 and on; A wakes
    up with batch 1's rows in hand. A must not publish them, nor touch the ledger."""
    trades = job.trades()
    trades.bulk(4000)
    cfg = job.write_config([job.table_entry("fence", trades.table,
                                            batch={"max_rows": 2000, "num_partitions": 1})])
    held = batch_gate(job, "fence", 1)
    held.with_suffix(".hold").touch()
    err_path = job.tmp / "a.err"
    a = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--trigger", "available-now",
                          "--config", str(cfg)], cwd=ROOT, env=job.env(), stdout=subprocess.PIPE,
                         stderr=open(err_path, "w"), text=True, start_new_session=True)
    try:
        wait_until(lambda: held.with_suffix(".arrived").exists(), 180, "A's read of batch 1 at the source")
        os.killpg(a.pid, signal.SIGSTOP)  # A: rows requested, process frozen
        restart_postgres(job)  # A's lock session is gone
        held.with_suffix(".hold").unlink()  # (A's query runs; its answer waits in A's socket)
        code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")  # instance B
        assert code == 0, err
        assert [p["batch_id"] for p in progress] == [1, 2] and progress[0]["recovered"] == "replayed"
        os.killpg(a.pid, signal.SIGCONT)
        a.communicate(timeout=300)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    err = err_path.read_text()
    assert a.returncode == cli.EXIT_LOCK, err[-3000:]
    assert "not published" in err and err.count("coldtier:") == 1
    assert committed_batches(spark, job, "fence") == [1, 2]  # batch 1 exactly once on main
    rows = sql(job, "SELECT batch_id, status, attempts FROM coldtier.batches WHERE pipeline = %s ORDER BY 1",
               (job.pipeline,))
    assert [r[:2] for r in rows] == [(1, "committed"), (2, "committed")]
    assert_source_equals_sink(job, spark, trades.table, job.target("fence"))
    # and the next run finds nothing wrong
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and all(p.get("caught_up") for p in progress), err


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_a_short_read_is_never_published(job, spark, capsys):
    """Rows vanish from batch 2's planned range before it is read (a TTL, a mutation, a replica
    behind): nothing is published, the run fails naming the batch, the ledger keeps the range
    planned, and once the rows are back the relaunch copies the range exactly once."""
    trades = job.trades()
    trades.bulk(6000)
    cfg = job.write_config([job.table_entry("short", trades.table, batch={"max_rows": 3000})])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "once")
    assert code == 0, err
    saved = f"{job.database}.saved"
    job.client.execute(f"CREATE TABLE {saved} AS {trades.fqn} ENGINE = MergeTree ORDER BY tuple()")

    def vanish() -> None:
        job.client.execute(f"INSERT INTO {saved} SELECT * FROM {trades.fqn} WHERE sequence_number % 97 = 0 "
                           f"AND sequence_number >= 3000")
        job.client.execute(f"ALTER TABLE {trades.fqn} DELETE WHERE sequence_number % 97 = 0 AND "
                           f"sequence_number >= 3000 SETTINGS mutations_sync = 1")

    thread = while_held(batch_gate(job, "short", 2), vanish, "batch 2's read at the source")
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "once")
    thread.join(60)
    assert code == cli.EXIT_RUNTIME and progress == []
    assert "batch 2 read 2969 rows but planned 3000" in err and "Nothing was published" in err, err
    assert committed_batches(spark, job, "short") == [1]
    assert spark.table(job.target("short")).count() == 3000
    assert sql(job, "SELECT batch_id, status FROM coldtier.batches WHERE pipeline = %s ORDER BY 1",
               (job.pipeline,)) == [(1, "committed"), (2, "planned")]
    job.client.execute(f"INSERT INTO {trades.fqn} SELECT * FROM {saved}")  # the replica catches up
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [(p["batch_id"], p["rows"]) for p in progress] == [(2, 3000)]
    assert committed_batches(spark, job, "short") == [1, 2]
    assert_source_equals_sink(job, spark, trades.table, job.target("short"))


def test_short_read_warn_publishes_with_a_warning(job, spark, capsys):
    """For engines that collapse rows (ReplacingMergeTree), ``short_read: warn``."""
    trades = job.trades()
    trades.bulk(2000)
    cfg = job.write_config([job.table_entry("collapse", trades.table, short_read="warn")])
    thread = while_held(batch_gate(job, "collapse", 1), lambda: job.client.execute(
        f"ALTER TABLE {trades.fqn} DELETE WHERE sequence_number < 10 SETTINGS mutations_sync = 1"),
        "batch 1's read at the source")
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "once")
    thread.join(60)
    assert code == 0 and progress[0]["rows"] == 1990, err
    assert "WARNING" in err and "read 1990 rows but planned 2000" in err and "short_read: warn" in err


class _LosesCommitAnswer:
    """A psycopg2 connection whose first COMMIT reaches the server, then fails on the client."""

    def __init__(self, conn, lost: list[bool]) -> None:
        self._conn, self._lost = conn, lost

    def commit(self) -> None:
        self._conn.commit()
        if not self._lost:
            self._lost.append(True)
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_commit_whose_answer_was_lost_is_success(job, postgres, monkeypatch):
    trades = job.trades()
    trades.bulk(100)
    cfg = job.write_config([job.table_entry("lost", trades.table)])
    from coldtier import config as config_mod

    conf = config_mod.load(cfg)
    t = conf.tables[0]
    client = job.client
    spec, _ = resolve_cursor(client, t)
    planned = Planner(client, t, spec).plan(None)
    assert planned.rng is not None
    from coldtier.ledger import Batch

    batch = Batch(conf.pipeline, t.name, 1, "planned", planned.rng, planned.partitions, planned.rows)
    ledger = Ledger(conf.ledger.dsn, backoff_s=0.01)
    ledger.ensure_schema()
    ledger.record_plan(batch)
    lost: list[bool] = []
    real_connect = ledger._connect
    ledger.close()
    monkeypatch.setattr(ledger, "_connect", lambda: _LosesCommitAnswer(real_connect(), lost))
    m = BatchMetrics(planned.rows, 42, 0.0, 0.0, 0.0, 0.0, 0.0, None, None)
    ledger.commit(batch, m)  # the first COMMIT's answer is lost; the retry finds it done
    assert lost == [True]
    assert ledger.last_committed(conf.pipeline, t.name).snapshot_id == 42
    exists, wm_batch, wm = ledger.watermark(conf.pipeline, t.name)
    assert (exists, wm_batch, wm) == (True, 1, planned.rng.hi)
    # a different snapshot is still a contradiction
    other = BatchMetrics(planned.rows, 43, 0.0, 0.0, 0.0, 0.0, 0.0, None, None)
    from coldtier.ledger import LedgerInconsistent

    with pytest.raises(LedgerInconsistent):
        ledger.commit(batch, other)
    ledger.close()
    assert isinstance(planned.rng, Range)


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_a_renamed_table_is_refused_until_it_adopts_its_old_watermark(job, spark, capsys):
    trades = job.trades()
    trades.bulk(3000)
    old = job.write_config([job.table_entry("before", trades.table, batch={"max_rows": 2000})])
    code, progress, err = run_inprocess(capsys, old, "--trigger", "available-now")
    assert code == 0 and [p["batch_id"] for p in progress] == [1, 2], err
    # the YAML renames the table (same source, same target)
    entry = job.table_entry("after", trades.table, batch={"max_rows": 2000})
    entry["target"] = job.table_entry("before", trades.table)["target"]
    renamed = job.write_config([entry])
    code, progress, err = run_inprocess(capsys, renamed, "--trigger", "available-now")
    assert code == cli.EXIT_LEDGER and progress == []
    assert f"{job.pipeline}/before (batch 2)" in err and f"--from {job.pipeline}/before" in err, err
    assert committed_batches(spark, job, "before") == [1, 2]  # nothing copied again
    assert cli.main(["adopt", "--config", str(renamed), "--tables", "after", "--from",
                     f"{job.pipeline}/before"]) == 0
    capsys.readouterr()
    trades.bulk(500, end_ms_ago=1_000)
    code, progress, err = run_inprocess(capsys, renamed, "--trigger", "available-now")
    assert code == 0, err
    assert [(p["batch_id"], p["rows"]) for p in progress] == [(3, 500)]
    assert_source_equals_sink(job, spark, trades.table, job.target("before"))


def test_a_batch_published_twice_is_refused_naming_both_snapshots(job, spark, capsys):
    """If a takeover ever raced a publish, batch N is in the ancestry twice: coldtier stops."""
    trades = job.trades()
    trades.bulk(2000)
    cfg = job.write_config([job.table_entry("twice", trades.table, batch={"max_rows": 1000})])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    from coldtier import config as config_mod
    from coldtier.sinks.iceberg import IcebergSink

    sink = IcebergSink(spark, config_mod.load(cfg).tables[0].target)
    first = sink.find_batch(job.pipeline, "twice", 2).snapshot_id
    second = sink.adopt(job.pipeline, "twice", 2, sink.latest_batch(job.pipeline, "twice")[1], {})
    trades.bulk(100, end_ms_ago=1_000)  # work to do: the run starts Spark and checks the table
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == cli.EXIT_LEDGER and progress == []
    assert "batch 2 was published twice" in err and str(first) in err and str(second) in err, err
    assert committed_batches(spark, job, "twice") == [1, 2, 2]  # nothing more written


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_a_crash_between_the_commits_of_the_very_first_batch_is_completed(job, spark, capsys):
    """Killed after the sink committed batch 1 and before the ledger did: the ledger has no
    committed batch yet, the sink has one. The relaunch completes the ledger (no exit 5)."""
    trades = job.trades()
    trades.bulk(1000)
    cfg = job.write_config([job.table_entry("first", trades.table)])
    done = job.run_process(cfg, "run", extra_env={"COLDTIER_FAULT": "after-sink-commit:1"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [(p["batch_id"], p.get("recovered")) for p in progress] == [(1, "ledger-completed")]
    assert committed_batches(spark, job, "first") == [1]
    assert_source_equals_sink(job, spark, trades.table, job.target("first"))


def test_a_writer_whose_stage_was_dropped_by_a_takeover_never_publishes(job, spark, capsys, monkeypatch):
    """Instance A has written batch 2 to its stage branch when instance B takes the table over
    (a new owner epoch) and B's recovery drops the table's stage branches, A's among them. A
    must stop naming the takeover (exit 3) with nothing published and the ledger untouched;
    the relaunch replays batch 2 exactly once."""
    from coldtier import config as config_mod
    from coldtier.sinks.iceberg import IcebergSink

    trades = job.trades()
    trades.bulk(4000)
    cfg = job.write_config([job.table_entry("gone", trades.table, batch={"max_rows": 2000})])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "once")
    assert code == 0, err
    target = config_mod.load(cfg).tables[0].target
    write_stage = IcebergSink._write_stage
    dropped: list[list[str]] = []

    def taken_over(self, df, batch, branch):
        write_stage(self, df, batch, branch)
        sql(job, "UPDATE coldtier.owners SET epoch = epoch + 1 WHERE pipeline = %s AND table_name = 'gone'",
            (job.pipeline,))
        dropped.append(IcebergSink(spark, target).drop_stale_stages(job.pipeline, "gone"))

    with monkeypatch.context() as patch:
        patch.setattr(IcebergSink, "_write_stage", taken_over)
        code, progress, err = run_inprocess(capsys, cfg, "--trigger", "once")
    assert len(dropped) == 1 and len(dropped[0]) == 1  # B found A's staged batch 2, and dropped it
    assert code == cli.EXIT_LOCK and progress == [], err
    assert "another run took" in err and "not published" in err, err
    assert committed_batches(spark, job, "gone") == [1]
    assert spark.table(job.target("gone")).count() == 2000
    assert sql(job, "SELECT batch_id, status FROM coldtier.batches WHERE pipeline = %s ORDER BY 1",
               (job.pipeline,)) == [(1, "committed"), (2, "planned")]
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [(p["batch_id"], p.get("recovered")) for p in progress] == [(2, "replayed")]
    assert committed_batches(spark, job, "gone") == [1, 2]
    assert_source_equals_sink(job, spark, trades.table, job.target("gone"))
