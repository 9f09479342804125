"""Things that must not stop the pipeline: a TTL the check does not expect, metrics that cannot be
written, a column added to the source while a loop runs."""

from __future__ import annotations

import signal
import subprocess
import sys

import psycopg2
import pytest

from coldtier.synth import TradeTable
from helpers import ROOT, wait_until
from jobkit import assert_source_equals_sink, progress_lines, run_inprocess

pytestmark = pytest.mark.spark


@pytest.mark.parametrize("ttl", [
    "INTERVAL 30 DAY DELETE WHERE side = 'buy', toDateTime(exchange_timestamp) + INTERVAL 60 DAY",
    "INTERVAL 30 DAY DELETE WHERE symbol IN ('a', 'b,c')",
])
def test_a_ttl_of_any_shape_never_fails_a_batch(job, spark, capsys, ttl):
    trades = TradeTable(job.client, "binance", job.database, ttl=ttl)
    trades.create()
    trades.bulk(1000)
    cfg = job.write_config([job.table_entry("ttl", trades.table)])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert 29 * 86400 < progress[0]["ttl_margin_s"] < 30 * 86400  # the first deleting rule, evaluated
    assert_source_equals_sink(job, spark, trades.table, job.target("ttl"))


def test_metrics_that_cannot_be_written_never_change_the_outcome(job, spark, capsys, tmp_path):
    trades = job.trades()
    trades.bulk(1000)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cfg = job.write_config([job.table_entry("m", trades.table, batch={"max_rows": 400})],
                           metrics={"textfile": str(blocker / "coldtier.prom")})
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["batch_id"] for p in progress] == [1, 2, 3]  # the loop went on after the first failure
    assert "could not write metrics" in err or "could not deliver metrics" in err
    assert_source_equals_sink(job, spark, trades.table, job.target("m"))


@pytest.mark.slow
def test_a_column_added_to_the_source_is_copied_from_the_next_batch(job, spark):
    trades = job.trades()
    trades.bulk(1000, end_ms_ago=1000)
    cfg = job.write_config([job.table_entry("evolve", trades.table, cursor={"lag_s": 0})])
    phases = job.tmp / "evolve.log"
    proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--trigger", "processing-time=1s",
                             "--config", str(cfg)], cwd=ROOT, env={**job.env(), "COLDTIER_PHASE_FILE": str(phases)},
                            stdout=subprocess.PIPE, stderr=open(job.tmp / "evolve.err", "w"), text=True)
    try:
        def commits() -> int:
            return phases.read_text().count("after-ledger-commit") if phases.exists() else 0

        wait_until(lambda: commits() >= 1, 180, "the first batch")
        job.client.execute(f"ALTER TABLE {trades.fqn} ADD COLUMN venue String DEFAULT 'spot'")
        trades.bulk(200, end_ms_ago=500)  # rows with the new column's default
        job.client.execute(f"INSERT INTO {trades.fqn} (exchange, symbol, trade_id, price, quantity, side, "
                           f"exchange_timestamp, sequence_number, ingested_at, venue) SELECT exchange, symbol, "
                           f"trade_id + 100000, price, quantity, side, now64(3, 'UTC') - toIntervalMillisecond(100), "
                           f"sequence_number + 100000, ingested_at, 'perp' FROM {trades.fqn} LIMIT 5")
        def copied() -> int:
            conn = psycopg2.connect(job.postgres.dsn)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT coalesce(sum(rows), 0) FROM coldtier.batches WHERE pipeline = %s AND "
                                "status = 'committed'", (job.pipeline,))
                    return int(cur.fetchone()[0])
            finally:
                conn.close()

        wait_until(lambda: copied() >= 1205 or proc.poll() is not None, 180, "the rows with the new column")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = (job.tmp / "evolve.err").read_text()
    assert proc.returncode == 0, err[-3000:]
    assert len(progress_lines(out)) >= 2
    venues = {r.venue: r.n for r in spark.sql(f"SELECT venue, count(*) AS n FROM {job.target('evolve')} "
                                               f"GROUP BY venue").collect()}
    assert venues == {None: 1000, "spot": 200, "perp": 5}
