"""The offload job end to end: real Spark, chembed through the real JDBC driver, real
PostgreSQL ledger, real Iceberg (Hadoop and JDBC catalogs)."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal

import psycopg2
import pytest
from chispa import assert_df_equality

from coldtier import cli
from coldtier import config as config_mod
from coldtier.lock import AdvisoryLock
from coldtier.offset import CursorSpec
from coldtier.planning import Range, predicate
from coldtier.sinks import make_sink
from jobkit import (
    SINKS,
    assert_source_equals_sink,
    committed_batches,
    offloaded,
    progress_lines,
    run_inprocess,
    table_runner,
    three_batches,
)

pytestmark = pytest.mark.spark








@pytest.mark.parametrize("target", ["hadoop_cat", "jdbc_cat", "delta"])
def test_backfill_in_bounded_batches(job, spark, capsys, target):
    """Iceberg in a Hadoop and in a JDBC catalog, and Delta: the same job, the same checks."""
    if target == "delta":
        job.sink = "delta"
    else:
        job.catalog = target
    rows = 1_000_000
    trades = job.trades()
    trades.bulk(rows)
    cfg = job.write_config([job.table_entry("binance", trades.table, batch={"max_rows": rows // 4})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["batch_id"] for p in progress] == [1, 2, 3, 4]
    assert sum(p["rows"] for p in progress) == rows
    assert all(p["rows"] <= rows // 4 for p in progress)
    assert_source_equals_sink(job, spark, trades.table, job.target("binance"))
    assert committed_batches(spark, job, "binance") == [1, 2, 3, 4]  # one commit per batch, tagged
    sink = make_sink(spark, config_mod.load(cfg).tables[0].target)
    assert sink.latest_batch(job.pipeline, "binance") == (4, progress[-1]["end"])
    # nothing new: a relaunch moves nothing and creates no commit
    code, progress, _ = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and all(p.get("caught_up") for p in progress)
    assert committed_batches(spark, job, "binance") == [1, 2, 3, 4]


def test_ten_thousand_rows_on_one_timestamp(job, spark, capsys):
    trades = job.trades()
    trades.bulk(10_000, equal_timestamps=10_000)
    cfg = job.write_config([job.table_entry("ties", trades.table, batch={"max_rows": 3000})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["rows"] for p in progress] == [3000, 3000, 3000, 1000]
    assert len({p["end"]["ts"] for p in progress}) == 1  # the cap split one timestamp 4 ways
    assert_source_equals_sink(job, spark, trades.table, job.target("ties"))


def test_max_rows_one_moves_a_tie_run_row_by_row(job, spark, capsys):
    trades = job.trades()
    trades.bulk(12, equal_timestamps=12)
    cfg = job.write_config([job.table_entry("one", trades.table, batch={"max_rows": 1})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["rows"] for p in progress] == [1] * 12
    assert_source_equals_sink(job, spark, trades.table, job.target("one"))


@pytest.mark.slow  # 10,000 plan queries (~15 ms each on the embedded server), in two chains: ~1.5 min
def test_planner_walks_ten_thousand_ties_with_max_rows_one(job):
    """The planner alone (no Spark): 10,000 batches of one row over one timestamp; every
    range selects exactly one row, and together they select every row once. The walk is one
    chain of plans, each from the last one's end, run as two halves side by side: the second
    half starts at the 5,000th row's cursor, and the first half must end exactly there."""
    from concurrent.futures import ThreadPoolExecutor

    from coldtier.config import load
    from coldtier.offset import Offset
    from coldtier.source import Planner, resolve_cursor, source_client

    trades = job.trades()
    trades.bulk(10_000, equal_timestamps=10_000)
    cfg = load(job.write_config([job.table_entry("t", trades.table, batch={"max_rows": 1})]), job.env())
    t = cfg.tables[0]
    client = source_client(cfg, t)
    spec, _ = resolve_cursor(client, t)
    planner = Planner(client, t, spec)
    src = f"{job.database}.{trades.table}"
    half = job.client.rows(f"SELECT toUnixTimestamp64Milli(exchange_timestamp) AS t, sequence_number AS s "
                           f"FROM {src} ORDER BY exchange_timestamp, sequence_number LIMIT 1 OFFSET 4999")[0]
    middle = Offset(int(half["t"]), int(half["s"]))

    def walk(lo: Offset | None, steps: int | None) -> list[Offset]:
        ends: list[Offset] = []
        while (steps is None or len(ends) < steps) and (p := planner.plan(lo)).rng is not None:
            assert p.rows == 1
            ends.append(p.rng.hi)
            lo = p.rng.hi
        return ends

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(walk, None, 5000), pool.submit(walk, middle, None)
        ends = first.result() + second.result()
    assert ends[4999] == middle  # the halves join: the first ends where the second began
    assert len(ends) == 10_000 and len({e.inc for e in ends}) == 10_000
    # the SQL predicates agree: consecutive ranges partition the table
    sample = [Range(None, ends[0]), Range(ends[4999], ends[5000]), Range(ends[9998], ends[9999])]
    for r in sample:
        assert job.client.scalar(f"SELECT count() FROM {src} WHERE {predicate(spec, r)}") == "1"
    assert job.client.scalar(f"SELECT count() FROM {src} WHERE {predicate(spec, Range(None, ends[-1]))}") \
        == "10000"


def test_predicates_prune_the_primary_key(job):
    """ClickHouse does not prune on a tuple comparison alone; the redundant bounds make it."""
    trades = job.trades()
    trades.bulk(1_000_000)
    src = f"{job.database}.{trades.table}"
    keys = job.client.rows(f"SELECT toUnixTimestamp64Milli(exchange_timestamp) AS t, sequence_number AS s "
                           f"FROM {src} ORDER BY exchange_timestamp, sequence_number "
                           f"LIMIT 2 OFFSET 500000 SETTINGS max_threads = 1")
    from coldtier.offset import Offset

    lo = Offset(int(keys[0]["t"]), int(keys[0]["s"]))
    hi = Offset(int(keys[0]["t"]) + 3000, int(keys[0]["s"]) + 3000)
    spec = CursorSpec("timestamp+incrementing", "exchange_timestamp", "sequence_number", 3)

    def granules(where: str) -> tuple[int, int]:
        plan = job.client.scalar(f"EXPLAIN indexes = 1 SELECT * FROM {src} WHERE {where}")
        m = re.search(r"PrimaryKey.*?Granules: (\d+)/(\d+)", plan, re.S)
        assert m, plan
        return int(m.group(1)), int(m.group(2))

    selected, total = granules(predicate(spec, Range(lo, hi)))
    assert selected <= 2 and total >= 100
    tuple_only = predicate(spec, Range(lo, hi)).split(" AND exchange_timestamp >=")[0]
    assert granules(tuple_only)[0] > selected


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_crash_after_sink_commit_before_ledger_commit(job, spark):
    trades = job.trades()
    trades.bulk(30_000)
    cfg = job.write_config([job.table_entry("c", trades.table, batch={"max_rows": 10_000})])
    crashed = job.run_process(cfg, "run", "--trigger", "available-now",
                              extra_env={"COLDTIER_FAULT": "after-sink-commit:2"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert [p["batch_id"] for p in progress_lines(crashed.stdout)] == [1]
    conn = psycopg2.connect(job.postgres.dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT batch_id, status FROM coldtier.batches WHERE pipeline = %s ORDER BY 1",
                    (job.pipeline,))
        assert cur.fetchall() == [(1, "committed"), (2, "planned")]
    conn.close()
    again = job.run_process(cfg, "run", "--trigger", "available-now")
    assert again.returncode == 0, again.stderr[-2000:]
    progress = progress_lines(again.stdout)
    assert progress[0]["batch_id"] == 2 and progress[0]["recovered"] == "ledger-completed"
    assert [p["batch_id"] for p in progress] == [2, 3]
    assert_source_equals_sink(job, spark, trades.table, job.target("c"))
    assert committed_batches(spark, job, "c") == [1, 2, 3]


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_crash_after_plan_replays_the_same_range(job, spark, capsys):
    trades = job.trades()
    trades.bulk(20_000)
    cfg = job.write_config([job.table_entry("r", trades.table, batch={"max_rows": 20_000})])
    crashed = job.run_process(cfg, "run", "--trigger", "once", extra_env={"COLDTIER_FAULT": "after-plan:1"})
    assert crashed.returncode == -signal.SIGKILL
    conn = psycopg2.connect(job.postgres.dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT range_json FROM coldtier.batches WHERE pipeline = %s AND batch_id = 1",
                    (job.pipeline,))
        planned = cur.fetchone()[0]
    conn.close()
    trades.bulk(5_000, end_ms_ago=1000)  # new rows arrive meanwhile: not for the replayed batch 1
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "once")
    assert code == 0, err
    assert progress[0]["recovered"] == "replayed" and progress[0]["rows"] == 20_000
    assert progress[0]["end"] == planned["hi"]
    later = progress[1:]  # trigger once: after finishing the replay, one new batch
    code, progress, _ = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and sum(p["rows"] for p in later + progress) == 5_000
    assert_source_equals_sink(job, spark, trades.table, job.target("r"))


CONFORMANCE = """
CREATE TABLE {db}.types (
    id Int32, dt3 DateTime64(3, 'UTC'), dt6 DateTime64(6, 'UTC'), dt9 DateTime64(9, 'UTC'),
    d18 Decimal(18, 8), d38 Decimal(38, 18), u64 UInt64, f64 Float64,
    lc LowCardinality(String), ns Nullable(String), e8 Enum8('buy' = 1, 'sell' = 2), uid UUID, b Bool
) ENGINE = MergeTree ORDER BY (dt3, id)
"""


def test_every_conformance_type_survives_end_to_end(job, spark, capsys):
    from test_jdbc_driver import CONFORMANCE_ROWS, EXPECTED_ROWS, EXPECTED_SCHEMA

    job.client.execute(CONFORMANCE.format(db=job.database))
    job.client.execute(CONFORMANCE_ROWS.replace("default.conformance", f"{job.database}.types"))
    cfg = job.write_config([job.table_entry("types", "types", keep_nanos=True,
                                            cursor={"timestamp_column": "dt3", "incrementing_column": "id"})])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    got = spark.table(job.target("types"))
    # the columns are UTC: the expected instants too, whatever this process's zone
    rows = [tuple(v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) else v for v in r) for r in EXPECTED_ROWS]
    expected = spark.createDataFrame(rows, EXPECTED_SCHEMA)
    assert_df_equality(got.drop("dt9_nanos").select(*expected.columns), expected, ignore_nullable=True,
                       ignore_row_order=True, ignore_metadata=True)
    nanos = {r.id: r.dt9_nanos for r in got.collect()}
    assert nanos[1] == 1767323045123456789 and nanos[3] % 1000 == 1
    iceberg_types = {r.col_name: r.data_type for r in spark.sql(f"DESCRIBE {job.target('types')}").collect()}
    assert iceberg_types["u64"] == "decimal(20,0)" and iceberg_types["dt3"] == "timestamp"
    assert iceberg_types["uid"] == "string" and iceberg_types["d38"] == "decimal(38,18)"


def test_two_tables_one_run_with_plan_and_status(job, spark, capsys):
    binance, kraken = job.trades("binance"), job.trades("kraken")
    binance.bulk(5000)
    kraken.bulk(3000)
    cfg = job.write_config([job.table_entry("binance", binance.table, batch={"max_rows": 2000}),
                            job.table_entry("kraken", kraken.table, batch={"max_rows": 2000})])
    assert cli.main(["plan", "--config", str(cfg)]) == 0
    plans = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["table"], p["batch_id"], p["kind"], p["planned_rows"]) for p in plans] == \
        [("binance", 1, "next", 2000), ("kraken", 1, "next", 2000)]
    assert plans[0]["start"] is None and set(plans[0]["end"]) == {"ts", "inc"}
    assert plans[0]["end_text"].endswith(f"#{plans[0]['end']['inc']}")
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert {(p["table"], p["batch_id"]) for p in progress} == \
        {("binance", 1), ("binance", 2), ("binance", 3), ("kraken", 1), ("kraken", 2)}
    for p in progress:
        assert set(p) >= {"pipeline", "table", "batch_id", "start", "start_text", "end", "end_text", "rows",
                          "plan_s", "read_s", "write_s", "commit_s", "total_s", "source_lag_s", "backlog_rows",
                          "snapshot_id", "ttl_margin_s"}
    # one offset rendering everywhere: plan's end of batch 1 is run's end of batch 1
    first = next(p for p in progress if (p["table"], p["batch_id"]) == ("binance", 1))
    assert (first["end"], first["end_text"]) == (plans[0]["end"], plans[0]["end_text"])
    assert cli.main(["status", "--config", str(cfg), "--json"]) == 0
    status = {d["table"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert status["binance"]["watermark_batch"] == 3 and status["binance"]["backlog_rows"] == 0
    assert status["binance"]["pipeline"] == job.pipeline and status["binance"]["source_lag_s"] == 0
    last = next(p for p in progress if (p["table"], p["batch_id"]) == ("binance", 3))
    assert status["binance"]["watermark"] == last["end"] and status["binance"]["watermark_text"] == last["end_text"]
    assert status["binance"]["last_batch_text"].startswith("batch 3 committed 1,000 rows, ")
    assert status["kraken"]["last_batches"][0]["rows"] == 1000
    assert cli.main(["status", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "binance" in table and "kraken" in table and "backlog" in table
    assert_source_equals_sink(job, spark, binance.table, job.target("binance"))
    assert_source_equals_sink(job, spark, kraken.table, job.target("kraken"))


def test_exit_codes_config_and_lock(job, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: x\ntables: []\n")
    assert cli.main(["run", "--config", str(bad)]) == cli.EXIT_CONFIG
    assert "bad.yaml" in capsys.readouterr().err
    trades = job.trades()
    trades.bulk(100)
    cfg = job.write_config([job.table_entry("l", trades.table)])
    holder = AdvisoryLock(job.postgres.dsn, f"coldtier/{job.pipeline}/l")
    holder.acquire()
    try:
        assert cli.main(["run", "--config", str(cfg)]) == cli.EXIT_LOCK
        assert "lock" in capsys.readouterr().err
    finally:
        holder.release()


def test_table_layout_from_yaml_and_schema_changes(job, spark, capsys):
    trades = job.trades()
    trades.bulk(3000)
    cfg = job.write_config([job.table_entry(
        "evo", trades.table,
        target={"partition_by": ["days(exchange_timestamp)", "bucket(4, symbol)"], "sort_by": ["exchange_timestamp"],
                "properties": {"write.target-file-size-bytes": "67108864"}})])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    target = job.target("evo")
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {target}").collect()}
    assert props["write.target-file-size-bytes"] == "67108864" and props["write.distribution-mode"] == "none"
    assert props["sort-order"].startswith("exchange_timestamp ASC")
    spec = spark.sql(f"SELECT * FROM {target}.partitions").columns
    assert "partition" in spec
    part_fields = spark.table(f"{target}.partitions").schema["partition"].dataType.fieldNames()
    assert part_fields == ["exchange_timestamp_day", "symbol_bucket"]

    # a column added to the source appears in Iceberg on the next batch
    job.client.execute(f"ALTER TABLE {job.database}.{trades.table} ADD COLUMN venue String DEFAULT 'spot'")
    trades.bulk(1000, end_ms_ago=1000)
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert sum(p["rows"] for p in progress) == 1000
    venues = {r.venue: r.n for r in spark.sql(f"SELECT venue, count(*) AS n FROM {target} GROUP BY venue").collect()}
    assert venues == {None: 3000, "spot": 1000}

    # a dropped source column stops the job with a clear error and exit code 6
    job.client.execute(f"ALTER TABLE {job.database}.{trades.table} DROP COLUMN side")
    trades_rows = f"INSERT INTO {job.database}.{trades.table} (exchange, symbol, trade_id, price, quantity, " \
                  f"exchange_timestamp, sequence_number, ingested_at) SELECT 'binance', 'X', 999999, 1, 1, " \
                  f"now64(3, 'UTC'), 999999, now64(6, 'UTC')"
    job.client.execute(trades_rows)
    import time

    time.sleep(0.01)
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == cli.EXIT_SCHEMA
    assert "side" in err and "does not drop columns" in err
    # refused before planning: no ledger row for a batch that cannot be written
    conn = psycopg2.connect(job.postgres.dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM coldtier.batches WHERE pipeline = %s AND status = 'planned'",
                    (job.pipeline,))
        assert cur.fetchone()[0] == 0
    conn.close()


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_lost_ledger_is_refused_then_rebuilt_from_the_sink(job, spark, capsys):
    trades, cfg = three_batches(job, capsys, "lost")
    conn = psycopg2.connect(job.postgres.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DELETE FROM coldtier.batches WHERE pipeline = %s", (job.pipeline,))
        cur.execute("DELETE FROM coldtier.watermarks WHERE pipeline = %s", (job.pipeline,))
    trades.bulk(2000, end_ms_ago=1000)
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == cli.EXIT_LEDGER and "recover-ledger" in err  # never silently re-copies
    assert cli.main(["recover-ledger", "--config", str(cfg)]) == 0
    rebuilt = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rebuilt["batches"] == 3 and rebuilt["watermark_batch"] == 3
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["batch_id"] for p in progress] == [4] and progress[0]["rows"] == 2000
    assert_source_equals_sink(job, spark, trades.table, job.target("lost"))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM coldtier.batches WHERE pipeline = %s AND status = 'committed'",
                    (job.pipeline,))
        assert cur.fetchone()[0] == 4
    conn.close()


def test_delta_ignores_a_replayed_batch_by_its_txn_version(job, spark, capsys):
    """Delta's own idempotent write: the same batch appended again (same txnAppId/txnVersion)
    is skipped by Delta itself, even with the ledger out of the picture."""
    job.sink = "delta"
    trades, cfg, _ = offloaded(job, capsys, "idem", 5000)
    runner = table_runner(spark, cfg)
    batch = runner.ledger.last_committed(job.pipeline, "idem")
    again = runner.sink.append(runner._frame(batch), batch)  # a replay of batch 1, bypassing the ledger
    assert again.batch_id == 1 and committed_batches(spark, job, "idem") == [1]
    assert spark.table(job.target("idem")).count() == 5000
    assert_source_equals_sink(job, spark, trades.table, job.target("idem"))


def test_a_delta_relaunch_reads_the_transaction_record_beside_the_history(job, spark, capsys):
    """A relaunch's two cold reads of a Delta table, its commit history (the recovery check) and
    its transaction record (the state rebuild the first write's txnAppId needs), run side by
    side: the record is read once, started before the check, in a thread and a job group of
    its own (the fault watcher of the batch's group never mistakes it for the batch's read);
    the write uses it."""
    import threading

    job.sink = "delta"
    trades, cfg, _ = offloaded(job, capsys, "ahead", 2000)
    trades.bulk(1000, end_ms_ago=1000)
    runner = table_runner(spark, cfg)
    sink, reads, checked = runner.sink, [], []
    read, latest = sink._read_transactions, sink.latest_batch

    def recording_read():
        sc = spark.sparkContext
        reads.append((threading.current_thread().name, sc.getLocalProperty("spark.jobGroup.id"),
                      sc.getLocalProperty("spark.scheduler.pool")))
        return read()

    def recording_latest(*args):
        checked.append(sink._ahead is not None)  # the record's read is under way before the check
        return latest(*args)

    sink._read_transactions, sink.latest_batch = recording_read, recording_latest
    try:
        assert runner.recover() is None
        result = runner.step()
    finally:
        runner.close()
        runner.ledger.close()
    assert result is not None and result.rows == 1000
    assert checked == [True]
    assert reads == [("coldtier-delta-record", f"{runner.job_group}/delta-record", "ahead")]
    assert sink._app_id == f"coldtier/{job.pipeline}/ahead"
    assert committed_batches(spark, job, "ahead") == [1, 2]
    assert_source_equals_sink(job, spark, trades.table, job.target("ahead"))


def test_a_read_ahead_gives_its_value_or_none_when_it_failed(spark):
    """``ReadAhead``: the value of a read made in another thread, or None when it raised (the
    caller reads again and meets the error in its own thread)."""
    from coldtier.spark import ReadAhead

    assert ReadAhead.start(spark, lambda: spark.range(5).count(), "count").result() == 5
    assert ReadAhead.start(spark, lambda: spark.sql("SELECT * FROM no_such_table").count(), "fail").result() is None


def test_a_delta_commit_keeps_no_file_list_in_its_checksum(job, spark, capsys):
    """Delta 4.0 keeps a small table's file list in each commit's checksum (``.crc``) and, when the
    JVM's or the session's zone is not UTC (this suite's), verifies it by rebuilding the table's
    state once more on every commit. coldtier turns the list off (spark.delta_conf), in the jobs'
    sessions and in this suite's shared one; the checksums are still written."""
    assert spark.conf.get("spark.databricks.delta.allFilesInCrc.enabled") == "false"
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == "2"  # the shuffle width
    job.sink = "delta"
    trades = job.trades()
    trades.bulk(3000)
    cfg = job.write_config([job.table_entry("crc", trades.table, batch={"max_rows": 1000})])
    code, _, err = run_inprocess(capsys, cfg)
    assert code == 0, err
    log = job.delta_path("crc") / "_delta_log"
    # Delta's checksums (not Hadoop's hidden .*.crc) of the three batches' commits; version 0,
    # the empty table's creation, has its (empty) list from the state it starts from
    checksums = sorted(p for p in log.glob("[0-9]*.crc") if int(p.stem) > 0)
    assert len(checksums) == 3
    for path in checksums:
        doc = json.loads(path.read_text())
        assert "allFiles" not in doc and doc["numFiles"] > 0, (path.name, sorted(doc))
    assert spark.table(job.target("crc")).count() == 3000


def test_an_iceberg_batch_is_two_commits_and_a_run_leaves_no_stage(job, spark, capsys):
    """A batch stages and publishes in two commits: the stage branch a published batch leaves at
    main's head is the next batch's stage. A commit by another writer between batches moves main
    past it: the next batch stages on a new branch on top of that commit and is published as it
    was staged. The end of the run drops the stage; a stage holding a batch that was never
    published, found by the next run's recovery, is dropped and reported."""
    from coldtier.ledger import Ledger
    from coldtier.loop import TableRunner
    from coldtier.sinks.iceberg import stage_prefix

    trades = job.trades()
    trades.bulk(8000)
    cfg = job.write_config([job.table_entry("two", trades.table, batch={"max_rows": 2000})])
    conf = config_mod.load(cfg)
    target = job.target("two")
    ledger = Ledger(conf.ledger.dsn)
    ledger.ensure_schema()

    def runner() -> TableRunner:
        return table_runner(spark, cfg, ledger)

    def commits() -> int:  # each commit of the table writes one metadata file
        return spark.sql(f"SELECT count(*) FROM {target}.metadata_log_entries").collect()[0][0]

    def stages() -> dict[str, int]:
        return {r.name: r.snapshot_id for r in spark.sql(f"SELECT name, snapshot_id FROM {target}.refs").collect()
                if r.name.startswith("coldtier_stage_")}

    def head() -> int:
        return spark.sql(f"SELECT snapshot_id FROM {target}.refs WHERE name = 'main'").collect()[0][0]

    first = runner()
    first.recover()
    assert first.step().batch_id == 1  # creates the table (a first snapshot is appended, not staged)
    assert first.step().batch_id == 2
    kept = stages()
    assert list(kept.values()) == [head()]
    before = commits()
    assert first.step().batch_id == 3
    assert commits() - before == 2  # stage, publish
    assert stages().keys() == kept.keys() and list(stages().values()) == [head()]
    # another writer commits between batches: main moves past the kept stage
    spark.sql(f"INSERT INTO {target} SELECT * FROM {target} LIMIT 1")
    foreign, before = head(), commits()
    assert first.step().batch_id == 4
    assert commits() - before == 3  # a new stage (the old one dropped in the same commit), stage, publish
    snaps = spark.sql(f"SELECT snapshot_id, parent_id, summary['coldtier.batch-id'] AS b FROM {target}.snapshots "
                      f"WHERE summary['coldtier.batch-id'] = '4'").collect()
    assert len(snaps) == 1 and snaps[0].parent_id == foreign and snaps[0].snapshot_id == head()
    renewed = stages()
    assert len(renewed) == 1 and renewed.keys() != kept.keys() and list(renewed.values()) == [head()]
    first.close()
    assert stages() == {}
    # a run that died between staging and publishing left a staged batch on a stage branch
    left = stage_prefix(job.pipeline, "two") + "0123456789ab"
    spark.sql(f"ALTER TABLE {target} CREATE BRANCH `{left}`")
    spark.sql(f"INSERT INTO {target}.branch_{left} SELECT * FROM {target} LIMIT 5")
    rows = spark.table(target).count()
    capsys.readouterr()
    runner().recover()
    err = capsys.readouterr().err
    assert f"dropped 1 stage branch(es) of {target} holding a batch" in err and left in err, err
    assert stages() == {} and spark.table(target).count() == rows
    ledger.close()
