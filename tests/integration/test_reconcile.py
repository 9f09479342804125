"""reconcile and --repair in the real world: a live table (lag_s > 0, the watermark mid-bucket),
cursors that repeat, a hot tier whose TTL has passed, rows another writer put in the target.

A repair compares whole rows as multisets, only at or below the committed watermark, inserts
what is missing and never deletes."""

from __future__ import annotations

import json

import pytest

from coldtier import cli
from jobkit import SINKS, assert_source_equals_sink, run_inprocess

pytestmark = pytest.mark.spark


def reconcile(capsys, cfg, *extra: str) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = cli.main(["reconcile", "--config", str(cfg), "--since", "1d", "--bucket", "1h", *extra])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def keys(spark, job, name: str) -> tuple[int, int]:
    """(rows, distinct trade ids) in the sink: equal when nothing is duplicated."""
    r = spark.sql(f"SELECT count(*) AS n, count(DISTINCT trade_id) AS k FROM {job.target(name)}").collect()[0]
    return r.n, r.k


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_periodic_repair_on_a_live_table_leaves_rows_above_the_watermark_to_the_loop(job, spark, capsys):
    """The runbook's `reconcile --since 1d --repair` while the newest rows sit inside lag_s."""
    trades = job.trades()
    trades.bulk(3000, end_ms_ago=1_200_000, step_ms=200)  # ten minutes of trades, ending 20 min ago
    trades.bulk(500, end_ms_ago=1_000, step_ms=100)  # the last minute: inside the lag window
    cfg = job.write_config([job.table_entry("live", trades.table, cursor={"lag_s": 300})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert sum(p["rows"] for p in progress) == 3000
    code, found = reconcile(capsys, cfg, "--repair")
    assert code == 0, found
    assert [f for f in found if "bucket" in f] == []  # clipped to the watermark: nothing to repair
    assert keys(spark, job, "live") == (3000, 3000)
    # the lag passes (here: the config says so): the loop copies the rest, exactly once
    cfg = job.write_config([job.table_entry("live", trades.table, cursor={"lag_s": 0})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert sum(p["rows"] for p in progress) == 500
    assert keys(spark, job, "live") == (3500, 3500)
    assert_source_equals_sink(job, spark, trades.table, job.target("live"))
    assert reconcile(capsys, cfg)[0] == 0


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_late_rows_sharing_the_watermark_cursor_are_copied_exactly_once(job, spark, capsys):
    trades = job.trades()
    trades.bulk(2000, step_ms=100, equal_timestamps=2)
    cfg = job.write_config([job.table_entry("ties", trades.table)])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    wm = job.client.rows(f"SELECT toString(exchange_timestamp) AS ts, toString(sequence_number) AS seq FROM "
                         f"{trades.fqn} ORDER BY exchange_timestamp DESC, sequence_number DESC LIMIT 1")[0]
    # five more rows with the watermark's exact cursor (ts, seq), other trade ids: late arrivals
    job.client.execute(f"INSERT INTO {trades.fqn} SELECT exchange, symbol, trade_id + 1000000 + number, price, "
                       f"quantity, side, exchange_timestamp, sequence_number, ingested_at FROM {trades.fqn}, "
                       f"numbers(5) AS n WHERE sequence_number = {wm['seq']}")
    code, progress, _ = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and all(p.get("caught_up") for p in progress)  # the loop is past them
    code, found = reconcile(capsys, cfg)
    assert code == cli.EXIT_MISMATCH
    bad = [f for f in found if "bucket" in f]
    assert len(bad) == 1 and bad[0]["source_rows"] - bad[0]["sink_rows"] == 5 and bad[0]["state"] == "mismatch"
    code, found = reconcile(capsys, cfg, "--repair")
    assert code == 0, found
    assert {"table": "ties", "repaired_buckets": True, "inserted_rows": 5} in found
    assert keys(spark, job, "ties") == (2005, 2005)
    assert_source_equals_sink(job, spark, trades.table, job.target("ties"))
    code, found = reconcile(capsys, cfg, "--repair")  # idempotent
    assert code == 0 and [f for f in found if "bucket" in f] == [] and keys(spark, job, "ties") == (2005, 2005)
    trades.bulk(100, end_ms_ago=1_000)
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and sum(p["rows"] for p in progress) == 100, err
    assert_source_equals_sink(job, spark, trades.table, job.target("ties"))


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_repair_keeps_expired_buckets_and_foreign_rows(job, spark, capsys):
    trades = job.trades()
    trades.bulk(3600, end_ms_ago=600_000, step_ms=4000)  # four hours of trades
    cfg = job.write_config([job.table_entry("hist", trades.table)])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    # the hot tier's TTL passes for the oldest two hours; another writer adds a row to the target
    job.client.execute(f"ALTER TABLE {trades.fqn} DELETE WHERE exchange_timestamp < now64(3, 'UTC') - "
                       f"toIntervalMinute(130) SETTINGS mutations_sync = 1")
    expired_rows = 3600 - trades.count()
    assert expired_rows > 1000
    foreign_ts = "current_timestamp() - INTERVAL 40 MINUTES"
    spark.sql(f"INSERT INTO {job.target('hist')} SELECT exchange, symbol, 999999999, price, quantity, side, "
              f"{foreign_ts}, 999999999, ingested_at FROM {job.target('hist')} LIMIT 1")
    # and late rows below the watermark that the loop cannot see
    trades.insert(7, "now64(3, 'UTC') - toIntervalMinute(90) - toIntervalMillisecond(number)")
    code, found = reconcile(capsys, cfg, "--since", "6h", "--bucket", "15m", "--repair")
    assert code == cli.EXIT_MISMATCH  # the foreign row's bucket still differs: reported, not deleted
    states = [(f["state"], f["sink_rows"] - f["source_rows"]) for f in found if "bucket" in f]
    assert ("mismatch", -7) in states and ("mismatch", 1) in states
    assert sum(n for s, n in states if s == "source_expired") == expired_rows
    assert {"table": "hist", "repaired_buckets": False, "inserted_rows": 7} in found
    assert spark.table(job.target("hist")).count() == 3600 + 1 + 7  # nothing deleted, 7 inserted
    assert spark.table(job.target("hist")).where("trade_id = 999999999").count() == 1
    summary = [f for f in found if "mismatched_buckets" in f][-1]
    assert summary["mismatched_buckets"] == 1 and summary["source_expired_buckets"] >= 2
