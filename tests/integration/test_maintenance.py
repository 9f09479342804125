"""Table maintenance, for both sinks: 200 tiny files (ten batches of twenty one-row partitions)
and the leftovers of a killed write, then `maintain`: far fewer files, the same content, the old
snapshots expired, orphans gone, recovery still works."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import yaml

from coldtier import cli
from helpers import ROOT
from jobkit import SINKS, assert_source_equals_sink, run_inprocess, spark_fingerprint

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def data_dir(job, name) -> Path:
    if job.sink == "delta":
        return job.delta_path(name)
    return job.warehouse / "hadoop" / job.pipeline / name / "data"


def files_on_disk(job, name) -> set[str]:
    """Data files under the table's data location (not Delta's log checkpoints)."""
    return {str(p) for p in data_dir(job, name).rglob("*.parquet") if "_delta_log" not in p.parts}


def referenced(spark, job, name) -> set[str]:
    """The data files the table's current state reads."""
    if job.sink == "delta":
        files = spark.read.format("delta").load(str(job.delta_path(name))).inputFiles()
    else:
        files = [r.file_path for r in spark.sql(f"SELECT file_path FROM {job.target(name)}.files").collect()]
    return {f.removeprefix("file://").removeprefix("file:") for f in files}


def kill_mid_write(job, cfg, name) -> None:
    """Launch a run and SIGKILL it as soon as its write has put a new data file on disk: the
    leftovers of a crashed write (files no commit references)."""
    before = files_on_disk(job, name)
    log = open(job.tmp / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--config", str(cfg)], env=job.env(),
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 300
    while not (files_on_disk(job, name) - before) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL, (job.tmp / "killed.log").read_text()[-2000:]


@pytest.mark.parametrize("job", SINKS, indirect=True)
def test_maintenance_compacts_expires_and_cleans_up(job, spark, capsys):
    trades = job.trades()
    trades.bulk(200)
    # 200 one-row files in 10 commits: each batch reads 20 one-row partitions, a file each (the
    # files are what compaction is about; 200 one-row commits cost minutes, 10 cost seconds)
    cfg = job.write_config([job.table_entry("mt", trades.table, batch={"max_rows": 20, "num_partitions": 20})],
                           maintenance={"target_file_size_mb": 64, "snapshot_retention_h": 0, "retain_last": 1,
                                        "orphan_age_h": 0,
                                        "unsafe_short_retention": True})
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and [p["rows"] for p in progress] == [20] * 10, err
    target = job.target("mt")
    content = spark_fingerprint(spark.table(target))
    live_before = referenced(spark, job, "mt")
    assert len(live_before) >= 200
    trades.bulk(400_000, end_ms_ago=1000)  # batch 11: big enough to be caught mid-write
    doc = yaml.safe_load(cfg.read_text())
    doc["tables"][0]["batch"] = {"max_rows": 400_000, "num_partitions": 1}
    cfg.write_text(yaml.safe_dump(doc))
    kill_mid_write(job, cfg, "mt")
    orphans = files_on_disk(job, "mt") - referenced(spark, job, "mt")
    assert orphans, "the killed write left no file behind"

    tracker = spark.sparkContext.statusTracker()
    jobs_before = set(tracker.getJobIdsForGroup(None))
    assert cli.main(["maintain", "--config", str(cfg)]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    stages = [tracker.getStageInfo(s) for j in set(tracker.getJobIdsForGroup(None)) - jobs_before
              for s in tracker.getJobInfo(j).stageIds]
    widest = max(s.numTasks for s in stages if s is not None)
    # Delta's VACUUM listed two directories in Spark's 10,000 partition-discovery tasks (a minute)
    assert widest <= result["files_before"], f"a stage of {widest} tasks"
    live_after = referenced(spark, job, "mt")
    assert result["files_before"] >= 200 and result["files_after"] * 10 <= result["files_before"], result
    assert len(live_after) * 10 <= len(live_before)
    assert spark_fingerprint(spark.table(target)) == content  # same rows, fewer files
    assert not (orphans & files_on_disk(job, "mt")), "orphans of the killed write survived"
    with psycopg2.connect(job.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT result FROM coldtier.maintenance WHERE pipeline = %s", (job.pipeline,))
        assert [r[0]["files_after"] for r in cur.fetchall()] == [result["files_after"]]
        # recovery after expiry: the killed batch is replayed, then the ledger is lost and rebuilt
        code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
        assert code == 0 and progress[0]["batch_id"] == 11 and progress[0]["recovered"] == "replayed", err
        cur.execute("DELETE FROM coldtier.batches WHERE pipeline = %s", (job.pipeline,))
        cur.execute("DELETE FROM coldtier.watermarks WHERE pipeline = %s", (job.pipeline,))
    assert cli.main(["recover-ledger", "--config", str(cfg)]) == 0
    rebuilt = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rebuilt["watermark_batch"] == 11
    trades.bulk(100, end_ms_ago=500)
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and [p["batch_id"] for p in progress] == [12], err
    assert_source_equals_sink(job, spark, trades.table, target)


def test_maintain_a_namespace_named_like_its_catalog(job, spark, capsys):
    """conf/dev.yaml's shape: catalog `cold`, table `cold.trades_binance`. Iceberg's procedures
    read 'cold.trades_binance' as table `trades_binance` of catalog `cold` unless the argument is
    fully qualified: maintain failed on the demo's own config."""
    trades = job.trades()
    trades.bulk(3000)
    name = f"{job.catalog}.{job.pipeline}"  # namespace = the catalog's name
    cfg = job.write_config([job.table_entry("same", trades.table, batch={"max_rows": 1000},
                                            target={"table": name})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0 and [p["rows"] for p in progress if "batch_id" in p] == [1000] * 3, err
    assert cli.main(["maintain", "--config", str(cfg)]) == 0, capsys.readouterr().err
    [report] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert report["maintained"] == f"{job.catalog}.{name}" and report["files_after"] < report["files_before"]
    assert_source_equals_sink(job, spark, trades.table, f"{job.catalog}.{name}")
