"""Prometheus metrics of a run, checked against the ledger: the textfile, a Pushgateway (a
stub HTTP server receiving the real push), and /metrics served during a loop."""

from __future__ import annotations

import contextlib
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coldtier import cli
from helpers import free_port
from jobkit import run_inprocess

pytestmark = pytest.mark.spark


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def ledger(job, query):
    with psycopg2.connect(job.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute(query, (job.pipeline,))
        return cur.fetchone()


def test_textfile_metrics_match_the_ledger(job, spark, capsys):
    trades = job.trades()
    trades.bulk(9000)
    prom = job.tmp / "coldtier.prom"
    cfg = job.write_config([job.table_entry("m", trades.table, batch={"max_rows": 3000})],
                           metrics={"textfile": str(prom)})
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    got = samples(prom.read_text())
    t = frozenset({"pipeline": job.pipeline, "table": "m"}.items())
    rows, batches, newest = ledger(job, "SELECT sum(rows), count(*), extract(epoch FROM max(committed_at)) "
                                        "FROM coldtier.batches WHERE pipeline = %s AND status = 'committed'")
    assert got[("coldtier_rows_committed_total", t)] == rows == 9000
    assert got[("coldtier_batches_committed_total", t)] == batches == 3
    assert got[("coldtier_batch_phase_seconds_count", t | {("phase", "total")})] == 3
    assert got[("coldtier_batch_phase_seconds_sum", t | {("phase", "write")})] == pytest.approx(
        sum(p["write_s"] for p in progress))
    assert got[("coldtier_last_batch_id", t)] == 3
    assert abs(got[("coldtier_last_commit_timestamp_seconds", t)] - float(newest)) < 5
    assert got[("coldtier_backlog_rows", t)] == 0 == progress[-1]["backlog_rows"]
    assert got[("coldtier_source_lag_seconds", t)] == progress[-1]["source_lag_s"]
    assert got[("coldtier_last_run_success", frozenset({"pipeline": job.pipeline}.items()))] == 1
    # a relaunch with nothing to do rewrites the file: no rows, the last commit still known
    code, _, _ = run_inprocess(capsys, cfg)
    again = samples(prom.read_text())
    assert code == 0 and again[("coldtier_rows_committed_total", t)] == 0
    assert again[("coldtier_last_batch_id", t)] == 3
    assert abs(again[("coldtier_last_commit_timestamp_seconds", t)] - float(newest)) < 1


class _Gateway(BaseHTTPRequestHandler):
    pushes: ClassVar[list[tuple[str, str, str]]] = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.pushes.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args):
        """Quiet: no request log on the test's stderr."""


def test_failure_by_phase_is_pushed_to_the_pushgateway(job, spark, capsys):
    from test_faults import _gate

    server = HTTPServer(("127.0.0.1", free_port()), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.pushes = []
    trades = job.trades()
    trades.bulk(2000)
    cfg = job.write_config([job.table_entry("pg", trades.table)],
                           metrics={"pushgateway": f"http://127.0.0.1:{server.server_port}"})
    _gate(job, "pg", 1).with_suffix(".fail").write_text("160")
    try:
        code, _, err = run_inprocess(capsys, cfg)
        assert code == cli.EXIT_RUNTIME, err
        code, _, err = run_inprocess(capsys, cfg)  # replays batch 1
        assert code == 0, err
    finally:
        server.shutdown()
    (m1, path, failed), (_, _, healed) = _Gateway.pushes
    assert m1 == "PUT" and path == f"/metrics/job/coldtier/pipeline/{job.pipeline}"
    t = {"pipeline": job.pipeline, "table": "pg"}
    # the rows are read inside the Spark job that writes them: the failure is in "write"
    assert samples(failed)[("coldtier_failures_total", frozenset({**t, "phase": "write"}.items()))] == 1
    assert samples(failed)[("coldtier_last_run_success", frozenset({"pipeline": job.pipeline}.items()))] == 0
    assert samples(healed)[("coldtier_rows_committed_total", frozenset(t.items()))] == 2000
    assert samples(healed)[("coldtier_last_run_success", frozenset({"pipeline": job.pipeline}.items()))] == 1


def test_metrics_served_while_a_loop_runs(job, spark, capsys):
    trades = job.trades()
    trades.bulk(6000)
    port = free_port()
    cfg = job.write_config([job.table_entry("srv", trades.table, batch={"max_rows": 3000})],
                           metrics={"port": port})
    scraped: list[str] = []
    stop = threading.Event()

    def scrape():
        while not stop.is_set():
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                scraped.append(r.read().decode())
            stop.wait(0.05)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        code, progress, err = run_inprocess(capsys, cfg, "--trigger", "processing-time=1s", "--max-batches", "2")
    finally:
        stop.set()
        scraper.join(5)
    assert code == 0 and len(progress) == 2, err
    t = frozenset({"pipeline": job.pipeline, "table": "srv"}.items())
    seen = [samples(s).get(("coldtier_rows_committed_total", t), 0) for s in scraped]
    assert 3000 in seen  # scraped between the two batches, from the live process
    with pytest.raises(OSError):  # the endpoint closes with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
