"""A short run of the benchmark harness: 2 cells on tiny data, through the same code and
scripts as `make bench`; checks the results it writes are there and well formed."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest
import yaml

from coldtier import config as config_mod
from coldtier.bench.report import CSV_COLUMNS
from helpers import ROOT

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # a benchmarks' smoke (pyproject's marker): ~2 min

MATRIX = """
dataset: {rows: 20000, scaling_rows: 5000}
base: {master: "local[2]", driver_memory: 1g, num_partitions: 2, max_rows: 10000}
sweep:
  num_partitions: [1]
incremental: {batches: 3, rows_per_batch: 300}
noop_relaunches: 1
repeat: 2
tables: {counts: [3], trigger_s: 4, rows_per_s: 50, feed_interval_s: 1, duration_s: 30, longest_s: 30,
         max_concurrent_tables: 2, driver_memory: 1g}
envelope: {driver_memory: 1g}
"""


def test_bench_harness_smoke(tmp_path):
    (tmp_path / "m.yaml").write_text(MATRIX)
    log = tmp_path / "bench.log"
    with log.open("w") as fh:
        code = subprocess.run([str(ROOT / "scripts" / "bench.sh"), "--matrix", str(tmp_path / "m.yaml"),
                               "--out", str(tmp_path / "out")], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=600).returncode
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "[8/10] incremental" in text and "ETA" in text  # progress while it runs
    assert "[10/10] tables-3: 3 tables: cycle p50" in text
    (run,) = list((tmp_path / "out").iterdir())
    with (run / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["cell"] for r in rows] == ["base", "num_partitions=1", "scaling=5,000 rows"]
    for r in rows:
        assert not r["error"] and int(r["rows"]) == (5000 if r["knob"] == "scaling" else 20000)
        assert float(r["rows_per_s"]) > 0 and int(r["batches"]) >= 1 and int(r["files"]) >= 1
        assert float(r["driver_peak_heap_mb"]) > 0 and float(r["driver_jvm_peak_rss_mb"]) > 0
        assert float(r["write_s"]) > 0 and float(r["mb_per_s"]) > 0
        assert len(r["rows_per_s_runs"].split("/")) == 2  # repeat: 2, both runs reported
    for png in ("throughput.png", "phases.png", "tables.png"):
        data = (run / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    md = (run / "results.md").read_text()
    for want in ("## Baselines measured in the same run", "## Targets", "no-Spark peer", "serial ceiling",
                 "through the JDBC driver", "peaked at",
                 "Incremental: 3 batches of 300 rows", "Relaunch with no new rows",
                 "## Many tables in one application", "Envelope profile (driver memory 1g)",
                 "3 tables keep a 4 s trigger", "peak RSS of the process tree, 20,000-row backfill",
                 "peak RSS of the process tree, live run of 3 tables"):
        assert want in md
    assert "error" not in md
    raw = [json.loads(line) for line in (run / "raw.jsonl").read_text().splitlines()]
    (live,) = [r for r in raw if r["kind"] == "tables"]
    assert live["exit_code"] == 0 and live["tables"] == 3 and live["rows"] > 0 and live["ticks"] >= 1
    assert live["tree_peak_rss_mb"] > live["driver_jvm_peak_rss_mb"] > 0  # launcher + JVM + Python
    (envelope,) = [r for r in raw if r["kind"] == "envelope"]
    assert envelope["rows"] == 20000 and envelope["tree_peak_rss_mb"] > 0
    # the best cell's profile is valid coldtier YAML once merged into a config
    profile = yaml.safe_load((run / "best-profile.yaml").read_text())
    cfg = yaml.safe_load((run / "configs" / "base-r1.yaml").read_text())
    cfg["spark"] = profile["spark"]
    cfg["tables"][0]["batch"] = profile["tables"][0]["batch"]
    (tmp_path / "merged.yaml").write_text(yaml.safe_dump(cfg))
    loaded = config_mod.load(tmp_path / "merged.yaml", {"BENCH_CH_PASSWORD": "x", "BENCH_PG_PASSWORD": "y"})
    assert loaded.tables[0].batch.num_partitions == profile["tables"][0]["batch"]["num_partitions"]
    assert not (run / "warehouse").exists()  # cleaned up: the cells' tables are not kept
