"""The shipped alert rules, evaluated by a real Prometheus server (Debian's ``prometheus``)
against the series it scrapes from a live run's ``/metrics`` — not only ``promtool test rules``
on hand-written series."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import yaml

from coldtier.synth import TradeTable
from helpers import ROOT, free_port, wait_until


def _api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as r:
        return json.loads(r.read())["data"]


def _alerts(port: int, pipeline: str) -> dict[str, dict[str, Any]]:
    try:
        alerts = _api(port, "alerts")["alerts"]
    except OSError:
        return {}
    return {a["labels"]["alertname"]: a for a in alerts if a["labels"].get("pipeline") == pipeline}


def test_a_real_prometheus_fires_the_shipped_alert_on_a_live_run(job, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus is not installed: scripts/bootstrap.sh installs it (as root)"
    # rows ~110 minutes old in a table whose TTL is 2 hours: unread rows expire in ~10 minutes,
    # inside the table's ttl_margin_s of an hour — ColdtierTTLMarginLow must fire (for: 0m)
    trades = TradeTable(job.client, "binance", job.database, ttl="INTERVAL 2 HOUR")
    trades.create()
    trades.bulk(6000, step_ms=1000)
    metrics_port, prom_port = free_port(), free_port()
    cfg = job.write_config([job.table_entry("ttl", trades.table, cursor={"ttl_margin_s": 3600},
                                            batch={"max_rows": 300, "num_partitions": 1})],
                           metrics={"port": metrics_port})
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "conf" / "prometheus" / "alerts.yml")],
        "scrape_configs": [{"job_name": "coldtier", "honor_labels": True,
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    server = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    err_path = tmp_path / "run.err"
    run = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--trigger", "processing-time=2s",
                            "--config", str(cfg)], cwd=ROOT, env=job.env(), stdout=subprocess.DEVNULL,
                           stderr=open(err_path, "w"))
    try:
        wait_until(lambda: _alerts(prom_port, job.pipeline).get("ColdtierTTLMarginLow", {}).get("state")
                   == "firing", 240, "ColdtierTTLMarginLow firing in Prometheus")
        alerts = _alerts(prom_port, job.pipeline)
        ttl = alerts["ColdtierTTLMarginLow"]
        assert ttl["labels"]["table"] == "ttl" and ttl["labels"]["severity"] == "critical"
        # the summary's template queried the real series: "expire by TTL in 9m 12s"-like
        assert "unread rows expire by TTL in " in ttl["annotations"]["summary"]
        assert any(ch.isdigit() for ch in ttl["annotations"]["summary"].split("expire by TTL in ")[1])
        # 110-minute-old rows with a backlog: the lag alert is pending (its for: 10m has not passed)
        wait_until(lambda: "ColdtierSourceLagHigh" in _alerts(prom_port, job.pipeline), 60,
                   "ColdtierSourceLagHigh pending")
        assert _alerts(prom_port, job.pipeline)["ColdtierSourceLagHigh"]["state"] == "pending"
        # a healthy, committing run: nothing else
        assert set(_alerts(prom_port, job.pipeline)) == {"ColdtierTTLMarginLow", "ColdtierSourceLagHigh"}
        rows = _api(prom_port, f"query?query=coldtier_rows_committed_total%7Bpipeline%3D%22{job.pipeline}%22%7D")
        assert float(rows["result"][0]["value"][1]) >= 300
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            code = run.wait(120)
        finally:
            run.kill()
            server.terminate()
            server.wait(30)
    assert code == 0, err_path.read_text()[-3000:]
