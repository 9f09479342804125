"""Failure recovery proven by fault injection: real processes killed for real (SIGKILL by
pid of processes the test started), then source == sink, with no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import jobkit
from coldtier import cli
from coldtier.sinks.iceberg import stage_prefix
from helpers import CH_PASSWORD, ROOT, ChembedProcess, free_port, wait_until
from jobkit import (
    SINKS,
    assert_source_equals_sink,
    batch_gate,
    ch_fingerprint,
    committed_batches,
    progress_lines,
    restart_postgres,
    run_inprocess,
    spark_fingerprint,
    sql,
)

pytestmark = pytest.mark.spark






def ledger_rows(job):
    return sql(job, "SELECT batch_id, status FROM coldtier.batches WHERE pipeline = %s ORDER BY 1",
               (job.pipeline,))


def stage_branches(spark, job, name):
    if job.sink != "iceberg":
        return []
    rows = spark.sql(f"SELECT name FROM {job.target(name)}.refs").collect()
    return [r.name for r in rows if r.name.startswith("coldtier_stage_")]


def snapshots(spark, target):
    return spark.sql(f"SELECT count(*) FROM {target}.snapshots").collect()[0][0]




PHASES = ["after-plan", "during-read", "during-write", "after-sink-commit", "after-ledger-commit"]


@pytest.mark.parametrize("reader", ["jdbc", "native"])
def test_every_batchs_read_is_observed_in_flight(job, spark, reader):
    """The fault hook sees each batch's Spark job while its tasks run, however short they are:
    every batch reaches during-read. (Watching Spark's status store alone saw none of seven
    3,000-row batches: it writes a stage's running-task count at most every 100 ms, and the
    crash loop then waited through hundreds of batches for a kill that never came.)"""
    trades = job.trades()
    trades.bulk(20_000)
    cfg = job.write_config([job.table_entry("obs", trades.table, batch={"max_rows": 3000, "reader": reader})])
    phases = job.tmp / "phases.log"
    done = job.run_process(cfg, "run", "--trigger", "available-now",
                           extra_env={"COLDTIER_PHASE_FILE": str(phases)})
    assert done.returncode == 0, done.stderr[-2000:]
    reached = phases.read_text().splitlines()
    batches = [line.split()[1] for line in reached if line.endswith(" after-ledger-commit")]
    assert len(batches) == 7
    assert [line.split()[1] for line in reached if line.endswith(" during-read")] == batches


@pytest.mark.slow
@pytest.mark.parametrize(("job", "phase", "reader"),
                         [(sink, phase, "jdbc") for sink in SINKS for phase in PHASES]
                         + [("iceberg", "during-read", "native")], indirect=["job"])
def test_driver_killed_at_each_phase(job, spark, capsys, phase, reader):
    trades = job.trades()
    trades.bulk(60_000)
    cfg = job.write_config([job.table_entry("k", trades.table, batch={"max_rows": 20_000, "reader": reader})])
    phases = job.tmp / "phases.log"
    hold = _gate(job, "k", 2).with_suffix(".hold")
    if phase.startswith("during-"):
        # batch 2's rows stay in flight (held at the source) until the driver has seen its
        # Spark tasks running and killed itself: on a busy machine a 20K-row batch could
        # otherwise finish before the phase watcher looks
        hold.touch()
    try:
        crashed = job.run_process(cfg, "run", "--trigger", "available-now",
                                  extra_env={"COLDTIER_FAULT": f"{phase}:2", "COLDTIER_PHASE_FILE": str(phases)})
    finally:
        hold.unlink(missing_ok=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    reached = phases.read_text().splitlines()
    assert reached[-1] == f"k 2 {phase}"  # killed exactly there, observed, not guessed
    expected_ledger = {"after-ledger-commit": [(1, "committed"), (2, "committed")]}.get(
        phase, [(1, "committed"), (2, "planned")])
    assert ledger_rows(job) == expected_ledger
    # an Iceberg batch stages on a branch, which stays at main's head once published (the next
    # batch's stage); batch 1, on an empty table, had no head to fast-forward from: its staged
    # files were appended to main as a new snapshot and its branch dropped
    iceberg = job.sink == "iceberg"
    assert len(stage_branches(spark, job, "k")) == (1 if iceberg and phase != "after-plan" else 0)
    others = []
    if iceberg:  # another pipeline writing the same table: its stage is not this run's to drop
        others = [stage_prefix("another-pipeline", "k") + "0123456789ab"]
        spark.sql(f"ALTER TABLE {job.target('k')} CREATE BRANCH `{others[0]}`")
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    # ... which the relaunch drops (a branch left behind keeps its files from ever expiring),
    # quietly: no write had committed onto it, so it held no batch
    assert stage_branches(spark, job, "k") == others
    assert "stage branch" not in err, err
    # batch 2 (replayed, or only its ledger completed) and batch 3; just batch 3 if 2 was whole
    assert sum(p["rows"] for p in progress) == (20_000 if phase == "after-ledger-commit" else 40_000)
    assert ledger_rows(job) == [(1, "committed"), (2, "committed"), (3, "committed")]
    assert committed_batches(spark, job, "k") == [1, 2, 3]  # one commit per batch id, never two
    assert_source_equals_sink(job, spark, trades.table, job.target("k"))


@pytest.fixture()
def three_batches(job, spark, capsys):
    return jobkit.three_batches(job, capsys, "w")


@pytest.mark.parametrize("job", SINKS, indirect=True)
@pytest.mark.parametrize("corruption", ["deleted", "null", "ahead", "behind"])
def test_corrupt_watermark_is_refused_then_recovered(job, spark, capsys, three_batches, corruption):
    trades, cfg = three_batches
    where = "WHERE pipeline = %s AND table_name = 'w'"
    if corruption == "deleted":
        sql(job, f"DELETE FROM coldtier.watermarks {where}", (job.pipeline,))
    elif corruption == "null":
        sql(job, f"UPDATE coldtier.watermarks SET end_offset = NULL {where}", (job.pipeline,))
    elif corruption == "ahead":
        sql(job, f"UPDATE coldtier.watermarks SET batch_id = 7, end_offset = "
                 f"jsonb_build_object('ts', 4102444800000, 'inc', 99999999) {where}", (job.pipeline,))
    else:
        sql(job, f"UPDATE coldtier.watermarks SET (batch_id, end_offset) = (SELECT batch_id, "
                 f"range_json->'hi' FROM coldtier.batches {where} AND batch_id = 1) {where}",
            (job.pipeline, job.pipeline))
    trades.bulk(1000, end_ms_ago=1000)
    code = cli.main(["run", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_LEDGER
    assert "watermark row" in err and "recover-ledger" in err
    assert committed_batches(spark, job, "w") == [1, 2, 3]  # refused before anything moved
    assert cli.main(["recover-ledger", "--config", str(cfg)]) == 0
    capsys.readouterr()
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["batch_id"] for p in progress] == [4] and progress[0]["rows"] == 1000
    assert_source_equals_sink(job, spark, trades.table, job.target("w"))


@pytest.mark.parametrize("job", SINKS, indirect=True)
@pytest.mark.parametrize("direction", ["behind", "ahead"])
def test_ledger_disagreeing_with_the_sink_is_refused(job, spark, capsys, three_batches, direction):
    """The ledger consistent with itself but not with the sink's record of batches."""
    trades, cfg = three_batches
    pid = (job.pipeline,)
    if direction == "behind":  # the ledger lost batch 3, Iceberg has it: running would copy it twice
        sql(job, "DELETE FROM coldtier.batches WHERE pipeline = %s AND batch_id = 3", pid)
        sql(job, "UPDATE coldtier.watermarks SET (batch_id, end_offset) = (SELECT batch_id, range_json->'hi' "
                 "FROM coldtier.batches WHERE pipeline = %s AND batch_id = 2) WHERE pipeline = %s", pid + pid)
    elif job.sink == "delta":  # Delta restored to batch 2's version: running would skip batch 3's rows
        spark.sql(f"RESTORE TABLE {job.target('w')} TO VERSION AS OF 2")  # 0 = create, 1-3 = batches
    else:  # Iceberg lost its newest snapshot (rolled back): running would skip batch 3's rows
        first = spark.sql(f"SELECT snapshot_id FROM {job.target('w')}.snapshots ORDER BY committed_at").collect()
        spark.sql(f"CALL {job.catalog}.system.rollback_to_snapshot('{job.pipeline}.w', {first[1].snapshot_id})")
    trades.bulk(1000, end_ms_ago=1000)
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == cli.EXIT_LEDGER
    kind = "Delta" if job.sink == "delta" else "Iceberg"
    assert f"the ledger is {direction} {'of ' if direction == 'ahead' else ''}{kind}" in err
    assert cli.main(["recover-ledger", "--config", str(cfg)]) == 0
    capsys.readouterr()
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert_source_equals_sink(job, spark, trades.table, job.target("w"))


@pytest.mark.parametrize("job", ["delta"], indirect=True)
def test_a_restored_delta_table_keeps_copying_after_log_cleanup(job, spark, capsys):
    """A RESTORE, recover-ledger and the re-copy, then Delta's log cleanup deletes the commits
    up to and past the RESTORE (they are older than delta.logRetentionDuration). The next batches
    must still be written: not skipped by Delta as duplicates of the batch ids the app id used
    before the RESTORE (its record of them survives the cleanup; the RESTORE commit does not)."""
    trades = job.trades()
    trades.bulk(4000)
    small = job.write_config([job.table_entry("w", trades.table, batch={"max_rows": 1000})])
    code, progress, err = run_inprocess(capsys, small, "--trigger", "available-now")
    assert code == 0 and len(progress) == 4, err  # versions 1-4: batches 1-4
    spark.sql(f"RESTORE TABLE {job.target('w')} TO VERSION AS OF 1")  # version 5: batch 1 only
    assert cli.main(["recover-ledger", "--config", str(small)]) == 0
    capsys.readouterr()
    big = job.write_config([job.table_entry("w", trades.table, batch={"max_rows": 100_000})])
    code, progress, err = run_inprocess(capsys, big, "--trigger", "available-now")
    assert code == 0 and [(p["batch_id"], p["rows"]) for p in progress] == [(2, 3000)], err  # version 6
    trades.bulk(1000, end_ms_ago=1000)
    code, progress, err = run_inprocess(capsys, big, "--trigger", "available-now")
    assert code == 0 and [p["batch_id"] for p in progress] == [3], err  # version 7
    # versions 0-6 are past the log retention (Delta rounds its cutoff down to a whole day)
    log = job.delta_path("w") / "_delta_log"
    old = time.time() - 3 * 86400
    for f in log.iterdir():
        if f.is_file() and not f.name.startswith(("00000000000000000007.", "_last_checkpoint")):
            os.utime(f, (old, old))
    spark.sql(f"ALTER TABLE {job.target('w')} SET TBLPROPERTIES ('delta.logRetentionDuration' = 'interval 1 days', "
              f"'delta.checkpointInterval' = '1')")  # version 8, checkpointed, then the cleanup
    history = spark.sql(f"DESCRIBE HISTORY {job.target('w')}").collect()
    assert min(r.version for r in history) == 7 and "RESTORE" not in {r.operation for r in history}
    trades.bulk(1000, end_ms_ago=1000)
    code, progress, err = run_inprocess(capsys, big, "--trigger", "available-now")
    assert code == 0, err
    assert [(p["batch_id"], p["rows"]) for p in progress] == [(4, 1000)]
    assert_source_equals_sink(job, spark, trades.table, job.target("w"))


@pytest.mark.parametrize("job", ["delta"], indirect=True)
def test_delta_batches_older_than_the_log_retention_are_neither_refused_nor_copied_again(job, spark, capsys):
    """A table that got no batch for longer than delta.logRetentionDuration while other commits
    went on (maintain, a foreign writer): Delta's log cleanup deletes every batch commit, the
    identities the recovery check reads; Delta's transaction record of them stays. The next run
    goes on from the ledger (not refused as "ledger ahead"), recover-ledger keeps the ledger (not
    emptied: the next run would copy every row again), and a lost ledger is refused, not refilled."""
    trades = job.trades()
    trades.bulk(2000)
    cfg = job.write_config([job.table_entry("a", trades.table, batch={"max_rows": 1000})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and [p["batch_id"] for p in progress] == [1, 2], err  # versions 1-2
    log = job.delta_path("a") / "_delta_log"
    old = time.time() - 3 * 86400
    for f in log.iterdir():
        if f.is_file() and f.name != "_last_checkpoint":
            os.utime(f, (old, old))
    spark.sql(f"ALTER TABLE {job.target('a')} SET TBLPROPERTIES ('delta.logRetentionDuration' = 'interval 1 days', "
              f"'delta.checkpointInterval' = '1')")  # version 3, checkpointed, then the cleanup
    assert {r.version for r in spark.sql(f"DESCRIBE HISTORY {job.target('a')}").collect()} == {3}
    ledger = ledger_rows(job)
    assert ledger == [(1, "committed"), (2, "committed")]

    assert cli.main(["recover-ledger", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert '"kept"' in out and '"watermark_batch": 2' in out, out
    assert ledger_rows(job) == ledger  # not emptied

    # the ledger lost: refused (copying from nothing would double 2,000 rows), and left empty
    where = "WHERE pipeline = %s AND table_name = 'a'"
    for t in ("batches", "watermarks"):
        sql(job, f"CREATE TABLE coldtier.{job.pipeline}_{t} AS SELECT * FROM coldtier.{t} {where}", (job.pipeline,))
        sql(job, f"DELETE FROM coldtier.{t} {where}", (job.pipeline,))
    code = cli.main(["run", "--config", str(cfg), "--trigger", "available-now"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_LEDGER and "transaction record" in err and "holds batch 2" in err, err
    assert cli.main(["recover-ledger", "--config", str(cfg)]) == cli.EXIT_LEDGER
    capsys.readouterr()
    assert ledger_rows(job) == [] and spark.read.format("delta").load(str(job.delta_path("a"))).count() == 2000
    for t in ("batches", "watermarks"):  # the ledger back from its "backup"
        sql(job, f"INSERT INTO coldtier.{t} SELECT * FROM coldtier.{job.pipeline}_{t}")
        sql(job, f"DROP TABLE coldtier.{job.pipeline}_{t}")

    trades.bulk(1000, end_ms_ago=1000)
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert "confirms it" in err
    assert [(p["batch_id"], p["rows"]) for p in progress] == [(3, 1000)]
    assert_source_equals_sink(job, spark, trades.table, job.target("a"))


def test_iceberg_batches_expired_by_another_process_are_checked_against_the_rows(job, spark, capsys):
    """Another process compacts the table and expires its snapshots while it gets no batch (a
    weekend, a paused feed): the current history ends at a deleted snapshot and holds no batch
    identity. The table's rows decide: while a foreign row lies past the ledger's watermark the
    run and recover-ledger refuse (and the ledger stays); once the rows end exactly at it, the
    run goes on from the ledger, and recover-ledger keeps it (not emptied: every row again)."""
    from pyspark.sql import functions as F

    trades = job.trades()
    trades.bulk(2000)
    cfg = job.write_config([job.table_entry("e", trades.table, batch={"max_rows": 1000})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and [p["batch_id"] for p in progress] == [1, 2], err
    target = job.target("e")
    name = f"{job.pipeline}.e"
    spark.sql(f"CALL {job.catalog}.system.rewrite_data_files(table => '{name}', "
              f"options => map('min-input-files', '2'))").collect()
    newest = spark.sql(f"SELECT cast(max(committed_at) + INTERVAL 1 SECOND AS string) "  # the session's zone
                       f"FROM {target}.snapshots").collect()[0][0]
    spark.sql(f"CALL {job.catalog}.system.expire_snapshots(table => '{name}', "
              f"older_than => TIMESTAMP '{newest}', retain_last => 1)").collect()
    summaries = [r.summary for r in spark.sql(f"SELECT summary FROM {target}.snapshots").collect()]
    assert len(summaries) == 1 and "coldtier.batch-id" not in summaries[0]
    ledger = ledger_rows(job)
    assert ledger == [(1, "committed"), (2, "committed")]

    # a foreign row past the watermark: the rows do not confirm the ledger
    last = spark.table(target).orderBy(F.desc("exchange_timestamp"), F.desc("sequence_number")).limit(1)
    seq_type = last.schema["sequence_number"].dataType
    last.withColumn("sequence_number", (F.col("sequence_number") + 10**9).cast(seq_type)).writeTo(target).append()
    trades.bulk(1000, end_ms_ago=1000)  # new rows: a run with none to copy stops before any check
    code = cli.main(["run", "--config", str(cfg), "--trigger", "available-now"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_LEDGER and "do not end at the ledger's watermark" in err, (code, err)
    assert cli.main(["recover-ledger", "--config", str(cfg)]) == cli.EXIT_LEDGER
    capsys.readouterr()
    assert ledger_rows(job) == ledger

    spark.sql(f"DELETE FROM {target} WHERE sequence_number > 1000000000")
    assert cli.main(["recover-ledger", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert '"kept"' in out and '"watermark_batch": 2' in out, out
    assert ledger_rows(job) == ledger  # not emptied
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert "end at the ledger's watermark" in err
    assert [(p["batch_id"], p["rows"]) for p in progress] == [(3, 1000)]
    assert_source_equals_sink(job, spark, trades.table, target)


@pytest.mark.slow
@pytest.mark.parametrize(("job", "reader"), [(sink, "jdbc") for sink in SINKS] + [("iceberg", "native")],
                         indirect=["job"])
def test_clickhouse_dies_mid_read(job, spark, tmp_path, capsys, reader):
    """The server dies with rows in flight: a cut answer is a failed batch for either reader
    (the Native reader never takes a cut stream for a short one), and the relaunch replays it."""
    own = ChembedProcess(tmp_path / "own-ch", gate_dir=tmp_path / "gates").start()
    try:
        job.chembed = own
        job.__post_init__()
        trades = job.trades()
        trades.bulk(1_500_000)
        cfg = job.write_config([job.table_entry("m", trades.table,
                                                batch={"max_rows": 1_500_000, "reader": reader})])
        # the answer streams slowly (0.3 s per block), so the kill lands while rows are in flight
        # on any machine, however fast or busy
        gate = batch_gate(job, "m", 1)
        gate.with_suffix(".pace").write_text("0.3")
        phases = tmp_path / "phases.log"
        env = {**job.env(), "COLDTIER_PHASE_FILE": str(phases)}
        proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--config", str(cfg)], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: phases.exists() and "during-read" in phases.read_text(), 180, "the JDBC read")
        time.sleep(1.0)  # blocks of rows have reached Spark; most are still to come
        own.stop(signal.SIGKILL)  # the server dies while Spark streams rows out of it
        started = time.monotonic()
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == cli.EXIT_RUNTIME, err[-3000:]
        assert "coldtier: runtime failure" in err
        assert time.monotonic() - started < 120
        assert ledger_rows(job) == [(1, "planned")]
        assert committed_batches(spark, job, "m") == []  # nothing committed to the sink
        gate.with_suffix(".pace").unlink()
        own = ChembedProcess(tmp_path / "own-ch", port=own.port, gate_dir=tmp_path / "gates").start()
        job.chembed = own
        code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
        assert code == 0, err
        assert progress[0]["batch_id"] == 1 and progress[0]["recovered"] == "replayed"
        assert progress[0]["rows"] == 1_500_000
        assert_source_equals_sink(job, spark, trades.table, job.target("m"))
    finally:
        own.stop()


def test_bad_input_fails_cleanly_without_partial_state(job, spark, capsys, tmp_path):
    trades = job.trades()
    trades.bulk(100)
    ok = [job.table_entry("b", trades.table)]

    def attempt(cfg_path, expected_code, *needles):
        code = cli.main(["run", "--config", str(cfg_path)])
        err = capsys.readouterr().err
        assert code == expected_code, err
        lines = [line for line in err.splitlines() if line.startswith("coldtier:")]
        assert len(lines) == 1, err  # one paragraph
        for n in needles:
            assert n in lines[0], lines[0]
        assert CH_PASSWORD not in err and job.postgres.password not in err
        return lines[0]

    # wrong ClickHouse password: error 516 named, endpoint named, no secret
    import os

    os.environ["TEST_CH_PASSWORD"] = "wrong-password"
    attempt(job.write_config(ok), cli.EXIT_RUNTIME, "516", job.chembed.http_url)
    os.environ["TEST_CH_PASSWORD"] = CH_PASSWORD
    # wrong PostgreSQL password: named, not retried for a minute
    os.environ["TEST_PG_PASSWORD"] = "wrong-pg"
    started = time.monotonic()
    attempt(job.write_config(ok), cli.EXIT_RUNTIME, "PostgreSQL ledger", "authentication failed")
    assert time.monotonic() - started < 10
    os.environ["TEST_PG_PASSWORD"] = job.postgres.password
    # unreachable ClickHouse (nothing listens there): bounded, no hang
    closed = job.write_config(ok)
    closed.write_text(closed.read_text().replace(f":{job.chembed.port}/", f":{free_port()}/"))
    started = time.monotonic()
    attempt(closed, cli.EXIT_RUNTIME, "did not answer")
    assert time.monotonic() - started < 30
    # missing source table; cursor column missing; cursor column of a non-sortable type
    attempt(job.write_config([job.table_entry("b", "no_such_table")]), cli.EXIT_SCHEMA, "does not exist")
    attempt(job.write_config([job.table_entry("b", trades.table, cursor={"incrementing_column": "nope"})]),
            cli.EXIT_SCHEMA, "'nope' does not exist")
    attempt(job.write_config([job.table_entry("b", trades.table, cursor={"timestamp_column": "symbol"})]),
            cli.EXIT_SCHEMA, "symbol", "DateTime")
    # target table whose schema conflicts with the source
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {job.catalog}.{job.pipeline}")
    spark.sql(f"CREATE TABLE {job.target('b')} (exchange int, price string) USING iceberg")
    attempt(job.write_config(ok), cli.EXIT_SCHEMA, "differ from target")
    # malformed YAML / unknown key / missing variable: exit 2 before anything else
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: [\n")
    attempt(bad, cli.EXIT_CONFIG, "bad.yaml:", "malformed YAML")
    text = job.write_config(ok).read_text()
    bad.write_text(text.replace("  ch:\n", "  ch:\n    colour: red\n", 1))
    attempt(bad, cli.EXIT_CONFIG, "sources.ch.colour: unknown key")
    bad.write_text(text.replace("${TEST_CH_PASSWORD}", "${NOT_SET_ANYWHERE_X}"))
    attempt(bad, cli.EXIT_CONFIG, "NOT_SET_ANYWHERE_X")
    # none of it left a ledger row or an Iceberg snapshot
    assert ledger_rows(job) in ([], None)
    assert spark.sql(f"SELECT count(*) FROM {job.target('b')}.snapshots").collect()[0][0] == 0


def test_passwords_never_appear_in_a_full_runs_output(job, spark):
    trades = job.trades()
    trades.bulk(5000)
    cfg = job.write_config([job.table_entry("s", trades.table, batch={"max_rows": 2000})])
    run = subprocess.run([str(ROOT / "scripts" / "spark-submit.sh"), "--verbose", "jobs/offload.py", "run",
                          "--config", str(cfg)], cwd=ROOT, env={**job.env(), "COLDTIER_SPARK_LOG_LEVEL": "INFO"},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(progress_lines(run.stdout)) >= 3
    everything = run.stdout + run.stderr + str(sql(job, "SELECT b.*, w.* FROM coldtier.batches b JOIN "
                                                        "coldtier.watermarks w USING (pipeline, table_name) "
                                                        "WHERE pipeline = %s", (job.pipeline,)))
    assert len(everything) > 10_000  # Spark's INFO log was in there too
    for secret in (CH_PASSWORD, job.postgres.password):
        assert secret not in everything
    printed = subprocess.run([str(ROOT / "scripts" / "spark-submit.sh"), "--print-only", "jobs/offload.py",
                              "run", "--config", str(cfg)], cwd=ROOT, env=job.env(), capture_output=True,
                             text=True, check=True).stdout
    assert CH_PASSWORD not in printed and job.postgres.password not in printed


def test_wait_for_lock_and_no_op_relaunch(job, spark, capsys):
    from coldtier.lock import AdvisoryLock

    trades = job.trades()
    trades.bulk(500)
    cfg = job.write_config([job.table_entry("q", trades.table)])
    holder = AdvisoryLock(job.postgres.dsn, f"coldtier/{job.pipeline}/q")
    holder.acquire()
    started = time.monotonic()
    assert cli.main(["run", "--config", str(cfg), "--wait-for-lock=1.5"]) == cli.EXIT_LOCK
    assert 1.4 < time.monotonic() - started < 10
    holder.release()
    assert cli.main(["run", "--config", str(cfg), "--wait-for-lock=5"]) == 0
    for _ in range(3):  # repeated runs with no new data: zero rows, no snapshot
        assert cli.main(["run", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count('"caught_up":true') == 3
    assert snapshots(spark, job.target("q")) == 1


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_late_rows_are_found_by_reconcile_and_repaired(job, spark, capsys):
    import json

    trades = job.trades()
    trades.bulk(6000, step_ms=1000)  # 100 minutes of trades, ending 10 minutes ago
    cfg = job.write_config([job.table_entry("late", trades.table, batch={"max_rows": 4000})])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    # rows committed late with old timestamps: at or below the watermark, invisible to the cursor
    nxt = trades.next_sequence()
    trades.insert(25, "now64(3, 'UTC') - toIntervalMinute(30) - toIntervalMillisecond(number % 7)", nxt)
    code, progress, _ = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and all(p.get("caught_up") for p in progress)
    assert cli.main(["reconcile", "--config", str(cfg), "--since", "3h", "--bucket", "15m"]) == cli.EXIT_MISMATCH
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    bad = [f for f in found if "bucket" in f]
    assert len(bad) in (1, 2) and sum(f["source_rows"] - f["sink_rows"] for f in bad) == 25
    assert "rows" in bad[0]["differs"] and "sequence_number" in bad[0]["differs"]
    assert cli.main(["reconcile", "--config", str(cfg), "--since", "3h", "--bucket", "15m", "--repair"]) == 0
    capsys.readouterr()
    assert_source_equals_sink(job, spark, trades.table, job.target("late"))
    repairs = sql(job, "SELECT count(*), sum(source_rows - sink_rows_before) FROM coldtier.repairs "
                       "WHERE pipeline = %s", (job.pipeline,))
    assert repairs[0][0] == len(bad) and repairs[0][1] == 25
    # idempotent, and the ledger still agrees with Iceberg: the job goes on
    assert cli.main(["reconcile", "--config", str(cfg), "--since", "3h", "--bucket", "15m", "--repair"]) == 0
    assert '"mismatched_buckets": 0' in capsys.readouterr().out
    trades.bulk(500, end_ms_ago=1000)
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert sum(p["rows"] for p in progress) == 500
    assert_source_equals_sink(job, spark, trades.table, job.target("late"))


@pytest.mark.slow
@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_crash_loop_while_rows_arrive(job, spark, capsys):
    """20 times: launch processing-time while the feed inserts and kill it (SIGKILL) at a phase
    marker, in turn after the plan, while rows stream, between the sink commit and the ledger
    commit, and after the ledger commit (the first batch of the launch to get there), then
    relaunch. Then drain and reconcile: zero lost, zero duplicated.

    The reader changes every four launches (JDBC, Native, JDBC, Native, JDBC): every phase is
    killed under both, and a batch planned and killed under one is replayed by the other (an
    operator switching ``batch.reader`` between runs)."""
    import collections

    trades = job.trades()
    trades.bulk(20_000, end_ms_ago=2000)
    configs = {}
    for reader in ("native", "jdbc"):  # one file each: write_config writes the pipeline's one path
        path = job.write_config([job.table_entry("loop", trades.table, cursor={"lag_s": 3},
                                                 batch={"max_rows": 3000, "reader": reader})])
        configs[reader] = path.rename(path.with_name(f"loop-{reader}.yaml"))
    cfg = configs["jdbc"]
    readers: collections.Counter[tuple[str, str]] = collections.Counter()
    feed = subprocess.Popen(
        [sys.executable, "-m", "coldtier.synth", "--url", job.chembed.http_url, "--password-env",
         "TEST_CH_PASSWORD", "--database", job.database, "--exchange", "binance", "live", "--rate", "300",
         "--interval", "0.25"], env=job.env(), stdout=subprocess.DEVNULL)
    targets = ["after-plan", "during-read", "after-sink-commit", "after-ledger-commit"]
    kills: collections.Counter[str] = collections.Counter()
    iterations = 20
    try:
        for i in range(iterations):
            phases = job.tmp / f"loop-{i}.log"
            reader = ("jdbc", "native")[(i // len(targets)) % 2]
            proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--trigger", "processing-time=1s",
                                     "--config", str(configs[reader])], cwd=ROOT,
                                    env={**job.env(), "COLDTIER_PHASE_FILE": str(phases),
                                         "COLDTIER_FAULT": targets[i % len(targets)]},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                assert proc.wait(300) == -signal.SIGKILL  # it killed itself at the marker
            finally:
                proc.kill()  # one that never reached it must not run on beside the rest of the suite
            phase = phases.read_text().splitlines()[-1].split()[-1]
            kills[phase] += 1
            readers[(phase, reader)] += 1
    finally:
        feed.send_signal(signal.SIGTERM)
        feed.wait(30)
    time.sleep(4)  # let the last rows age past the lag, then drain
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    got = spark_fingerprint(spark.table(job.target("loop")))
    want = ch_fingerprint(job.client, f"{job.database}.{trades.table}")
    print(f"crash loop: {iterations} iterations, {want['n']} rows in ClickHouse, {got['n']} in the sink, "
          f"{int(got['n']) - int(got['keys'])} duplicated; phase of each kill: {dict(kills)}")
    assert got == want
    assert got["keys"] == got["n"]
    # the kills landed in four distinct phases, five times each, including between the commits
    assert dict(kills) == {t: iterations // len(targets) for t in targets}
    assert dict(readers) == {(t, r): n for t in targets for r, n in (("jdbc", 3), ("native", 2))}


def test_ttl_race_warns_every_batch(job, spark, capsys):
    from coldtier.synth import TradeTable

    trades = TradeTable(job.client, "binance", job.database, ttl="INTERVAL 2 HOUR")
    trades.create()
    trades.bulk(6000, step_ms=1000)  # the oldest row is ~110 minutes old: it expires in ~10 minutes
    prom = job.tmp / "ttl.prom"
    cfg = job.write_config([
        job.table_entry("ttl", trades.table, cursor={"ttl_margin_s": 3600}, batch={"max_rows": 3000}),
    ], metrics={"textfile": str(prom)})
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert len(progress) == 2
    assert err.count("WARNING") == 2 and "expires by its TTL" in err
    for p in progress:
        assert p["ttl_warning"] is True and 0 < p["ttl_margin_s"] < 3600
    assert progress[1]["ttl_margin_s"] > progress[0]["ttl_margin_s"]  # the oldest unread row got younger
    from prometheus_client.parser import text_string_to_metric_families

    gauges = {s.name: s.value for f in text_string_to_metric_families(prom.read_text()) for s in f.samples}
    assert gauges["coldtier_ttl_margin_seconds"] == progress[1]["ttl_margin_s"]  # the metrics carry it too
    assert gauges["coldtier_ttl_warning"] == 1
    relaxed = job.write_config([job.table_entry("ttl2", trades.table, cursor={"ttl_margin_s": 60})])
    code, progress, err = run_inprocess(capsys, relaxed, "--trigger", "available-now")
    assert code == 0 and "WARNING" not in err
    assert "ttl_warning" not in progress[0] and progress[0]["ttl_margin_s"] > 60


@pytest.mark.slow
@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_postgres_restarted_during_a_run(job, spark, capsys):
    """The ledger's PostgreSQL restarts under a processing-time run: bounded retries with
    backoff carry the run through; the lock is re-taken; never two commits for one batch."""
    trades = job.trades()
    trades.bulk(2000, end_ms_ago=2000)
    # the lag must exceed the feed's insert-to-visible delay on a busy machine (rows stamped
    # now64() by an INSERT that becomes visible later would otherwise arrive "late")
    cfg = job.write_config([job.table_entry("pg", trades.table, cursor={"lag_s": 3},
                                            batch={"max_rows": 2000})])
    phases = job.tmp / "pg-phases.log"
    feed = subprocess.Popen(
        [sys.executable, "-m", "coldtier.synth", "--url", job.chembed.http_url, "--password-env",
         "TEST_CH_PASSWORD", "--database", job.database, "--exchange", "binance", "live", "--rate", "200",
         "--interval", "0.25"], env=job.env(), stdout=subprocess.DEVNULL)
    out_path, err_path = job.tmp / "pg.out", job.tmp / "pg.err"
    proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--trigger", "processing-time=1s",
                             "--config", str(cfg)], cwd=ROOT,
                            env={**job.env(), "COLDTIER_PHASE_FILE": str(phases)},
                            stdout=open(out_path, "w"), stderr=open(err_path, "w"))
    try:
        def committed() -> int:
            return phases.read_text().count("after-ledger-commit") if phases.exists() else 0

        wait_until(lambda: committed() >= 2, 180, "two committed batches")
        restart_postgres(job)
        before = committed()
        wait_until(lambda: committed() >= before + 3, 180, "three more batches after the restart")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, err_path.read_text()[-3000:]
    finally:
        proc.kill()
        feed.send_signal(signal.SIGTERM)
        feed.wait(30)
    time.sleep(4)  # let the last rows age past the lag, then drain
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    batches = sql(job, "SELECT count(*), count(DISTINCT snapshot_id) FROM coldtier.batches "
                       "WHERE pipeline = %s AND status = 'committed'", (job.pipeline,))[0]
    assert batches[0] == batches[1] == len(committed_batches(spark, job, "pg"))
    assert_source_equals_sink(job, spark, trades.table, job.target("pg"))




def _gate(job, table, batch_id):
    """The chembed gate path for one batch's reads (see chembed.server.Gates)."""
    from chembed.server import Gates
    from coldtier.source import query_tag

    return job.chembed.gate_dir / Gates.name(query_tag(job.pipeline, table, batch_id))


def test_concurrent_iceberg_writer_between_read_and_commit(job, spark, capsys):
    """Another writer commits to the target while a batch's rows are being read (the read is
    held at the source by a gate, so the interleaving is certain, not timed): Iceberg's
    commit retry puts the batch on top of the other snapshot, exactly once."""
    import threading

    trades = job.trades()
    trades.bulk(4000)
    cfg = job.write_config([job.table_entry("cw", trades.table, batch={"num_partitions": 1})])
    code, _, err = run_inprocess(capsys, cfg)
    assert code == 0, err
    target = job.target("cw")
    trades.bulk(6000, end_ms_ago=1000)
    gate = _gate(job, "cw", 2)
    gate.with_suffix(".hold").touch()
    seen: list[int] = []

    def other_writer() -> None:
        try:
            wait_until(lambda: gate.with_suffix(".arrived").exists(), 120, "batch 2's read at the source")
            before = spark.sql(f"SELECT snapshot_id FROM {target}.snapshots").count()
            # the other writer: one task (the batch holds the other slot), its own commit
            spark.sql(f"INSERT INTO {target} (exchange, symbol, trade_id, price, quantity, side, "
                      f"exchange_timestamp, sequence_number, ingested_at) VALUES ('foreign', 'X', 1, 1.0, "
                      f"1.0, 'buy', TIMESTAMP '2020-01-01 00:00:00', 1, TIMESTAMP '2020-01-01 00:00:00')")
            seen.extend([before, spark.sql(f"SELECT snapshot_id FROM {target}.snapshots").count()])
        finally:
            gate.with_suffix(".hold").unlink()

    writer = threading.Thread(target=other_writer)
    writer.start()
    result = [cli.main(["run", "--config", str(cfg)])]  # signal handlers: the main thread's
    writer.join(60)
    assert seen == [1, 2]  # the other commit landed while batch 2 was being read
    capsys.readouterr()
    assert result == [0]
    snaps = spark.sql(f"SELECT snapshot_id, parent_id, summary['coldtier.batch-id'] AS b FROM {target}.snapshots "
                      f"ORDER BY committed_at").collect()
    assert [s.b for s in snaps] == ["1", None, "2"]
    assert snaps[2].parent_id == snaps[1].snapshot_id  # batch 2 was rebased on the other commit
    assert ledger_rows(job) == [(1, "committed"), (2, "committed")]
    assert sql(job, "SELECT snapshot_id FROM coldtier.batches WHERE pipeline = %s AND batch_id = 2",
               (job.pipeline,)) == [(snaps[2].snapshot_id,)]
    ours = spark.table(target).where("exchange <> 'foreign'")
    assert spark_fingerprint(ours) == ch_fingerprint(job.client, f"{job.database}.{trades.table}")
    # the foreign snapshot in the ancestry does not upset the ledger check: the job goes on
    trades.bulk(500, end_ms_ago=500)
    code, progress, err = run_inprocess(capsys, cfg)
    assert code == 0 and [p["batch_id"] for p in progress] == [3], err
    assert spark.table(target).where("exchange = 'foreign'").count() == 1


@pytest.mark.parametrize(("job", "reader"), [(sink, "jdbc") for sink in SINKS] + [("iceberg", "native")],
                         indirect=["job"])
def test_sql_error_inside_a_batch_does_not_move_the_cursor(job, spark, capsys, reader):
    """A query of batch 2 fails at the source with an error the reader does not retry (160,
    once): the run fails with the range still planned; the relaunch reads exactly that range
    again: nothing skipped, nothing twice."""
    trades = job.trades()
    trades.bulk(9000)
    cfg = job.write_config([job.table_entry("se", trades.table, batch={"max_rows": 3000, "reader": reader})])
    _gate(job, "se", 2).with_suffix(".fail").write_text("160")
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == cli.EXIT_RUNTIME and "TOO_SLOW" in err, err
    assert [p["batch_id"] for p in progress] == [1]
    assert ledger_rows(job) == [(1, "committed"), (2, "planned")]
    planned = sql(job, "SELECT range_json FROM coldtier.batches WHERE pipeline = %s AND batch_id = 2",
                  (job.pipeline,))[0][0]
    assert committed_batches(spark, job, "se") == [1]
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert progress[0]["batch_id"] == 2 and progress[0]["recovered"] == "replayed"
    assert [progress[0]["start"], progress[0]["end"]] == [planned["lo"], planned["hi"]]
    assert [p["rows"] for p in progress] == [3000, 3000]
    assert sql(job, "SELECT range_json FROM coldtier.batches WHERE pipeline = %s AND batch_id = 2",
               (job.pipeline,))[0][0] == planned
    assert_source_equals_sink(job, spark, trades.table, job.target("se"))


@pytest.mark.parametrize("reader", ["jdbc", "native"])
def test_driver_retry_after_a_retryable_sql_error_reads_the_same_range(job, spark, capsys, reader):
    """Error 159 (TIMEOUT_EXCEEDED) is one both readers retry by themselves (the JDBC driver; the
    Native reader before it has read any byte of the answer): the retry, inside the batch, sends
    the same query again (the range is fixed in the plan, not a moving "last seen row"), and the
    batch commits exactly its planned rows."""
    trades = job.trades()
    trades.bulk(9000)
    cfg = job.write_config([job.table_entry("dr", trades.table, batch={"max_rows": 3000, "reader": reader})])
    gate = _gate(job, "dr", 2)
    gate.with_suffix(".fail").touch()
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert not gate.with_suffix(".fail").exists()  # the error was injected, and survived
    queries = gate.with_suffix(".queries").read_text().splitlines()
    assert len(queries) == 3 and len(set(queries)) == 2  # 2 partitions, one sent twice, unchanged
    assert [p["rows"] for p in progress] == [3000, 3000, 3000]
    assert sql(job, "SELECT batch_id, planned_rows, rows, attempts FROM coldtier.batches WHERE "
                    "pipeline = %s ORDER BY 1", (job.pipeline,)) == [(b, 3000, 3000, 1) for b in (1, 2, 3)]
    assert_source_equals_sink(job, spark, trades.table, job.target("dr"))


@pytest.mark.slow
def test_spark_task_retry_after_sql_error_reads_the_same_partition(job, spark):
    """With Spark task retries (master local[2,2]) a read failing with an error the driver does
    not retry is retried by Spark inside the batch: the batch commits its planned rows exactly,
    from the same partition predicate."""
    import yaml

    trades = job.trades()
    trades.bulk(9000)
    cfg = job.write_config([job.table_entry("tr", trades.table, batch={"max_rows": 3000})])
    doc = yaml.safe_load(cfg.read_text())
    doc["spark"]["master"] = "local[2,2]"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    gate = _gate(job, "tr", 2)
    gate.with_suffix(".fail").write_text("160")
    done = job.run_process(cfg, "run", "--trigger", "available-now")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not gate.with_suffix(".fail").exists()
    queries = gate.with_suffix(".queries").read_text().splitlines()
    assert len(queries) == 3 and len(set(queries)) == 2
    progress = progress_lines(done.stdout)
    assert [p["batch_id"] for p in progress] == [1, 2, 3] and all(p["rows"] == 3000 for p in progress)
    assert sql(job, "SELECT batch_id, planned_rows, rows, attempts FROM coldtier.batches WHERE "
                    "pipeline = %s ORDER BY 1", (job.pipeline,)) == [(b, 3000, 3000, 1) for b in (1, 2, 3)]
    assert_source_equals_sink(job, spark, trades.table, job.target("tr"))
