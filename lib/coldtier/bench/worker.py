"""The benchmark worker: runs inside one spark-submit application (``jobs/bench.py``).

It executes a plan of tasks written by the harness and appends one JSON line per task to
the results file as each finishes (the harness tails it for progress):

- ``cell``: a real ``run --trigger available-now`` of one cell's YAML (``cli.cmd_run``, the
  code path users run), with the wall time, per-phase seconds from the progress lines,
  files and bytes from the Iceberg snapshot summaries, and peak JVM heap / RSS sampled
  while it ran;
- ``sink-ceiling``: Spark writing the same rows from a cached DataFrame to Parquet (zstd):
  the sink's ceiling; and a warm session's smallest job (read 3K rows of Parquet, write them);
- ``incremental``: a warm processing-time loop (``TableRunner.step`` is its body) moving
  fixed-size batches, each inserted at the source just before its trigger.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from coldtier import cli
from coldtier import config as config_mod
from coldtier.driver import Trigger
from coldtier.faults import FaultHook
from coldtier.ledger import Ledger
from coldtier.loop import TableRunner
from coldtier.source import source_client
from coldtier.spark import session_for
from coldtier.synth import TradeTable

MB = 1024 * 1024
PHASES = ("plan", "read", "write", "commit")
LAUNCHER = "scripts/spark-submit.sh"


class PeakSampler:
    """Samples, every ``every`` seconds while active, the driver JVM's used heap, its heap
    retained after the last garbage collection (what the run keeps alive: flat when batches
    are bounded, whatever the backlog), and the RSS of the JVM and of this Python process.
    A garbage collection first, so a cell starts from a clean heap. In local mode the
    executors run inside the driver JVM."""

    def __init__(self, spark: Any, every: float = 0.2) -> None:
        import psutil

        self.jvm = spark.sparkContext._jvm
        mgmt = self.jvm.java.lang.management.ManagementFactory
        self.mem = mgmt.getMemoryMXBean()
        self.pools = [p for p in mgmt.getMemoryPoolMXBeans() if str(p.getType().toString()) == "Heap memory"]
        self.jvm_proc = psutil.Process(int(self.jvm.java.lang.ProcessHandle.current().pid()))
        self.py_proc = psutil.Process(os.getpid())
        # the whole application: the launcher the harness started (scripts/spark-submit.sh), the
        # JVM, this Python driver and any Python workers
        self.root = app_root(self.jvm_proc)
        self.every = every
        self.peak = {"heap": 0, "retained": 0, "jvm_rss": 0, "py_rss": 0, "tree_rss": 0}
        self.series: list[tuple[float, int]] = []  # (time.monotonic(), tree RSS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak["heap"] = max(self.peak["heap"], int(self.mem.getHeapMemoryUsage().getUsed()))
        after_gc = [p.getCollectionUsage() for p in self.pools]
        retained = sum(int(u.getUsed()) for u in after_gc if u is not None)
        self.peak["retained"] = max(self.peak["retained"], retained)
        self.peak["jvm_rss"] = max(self.peak["jvm_rss"], self.jvm_proc.memory_info().rss)
        self.peak["py_rss"] = max(self.peak["py_rss"], self.py_proc.memory_info().rss)
        tree = tree_rss(self.root)
        self.peak["tree_rss"] = max(self.peak["tree_rss"], tree)
        self.series.append((time.monotonic(), tree))

    def __enter__(self) -> PeakSampler:
        self.jvm.java.lang.System.gc()
        self._sample()

        def loop() -> None:
            while not self._stop.wait(self.every):
                try:
                    self._sample()
                except Exception:  # a sample racing the end of the run: skip it
                    continue

        self._thread = threading.Thread(target=loop, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._sample()

    def figures(self) -> dict[str, float]:
        return {"driver_peak_heap_mb": round(self.peak["heap"] / MB, 1),
                "driver_retained_heap_mb": round(self.peak["retained"] / MB, 1),
                "driver_jvm_peak_rss_mb": round(self.peak["jvm_rss"] / MB, 1),
                "driver_python_peak_rss_mb": round(self.peak["py_rss"] / MB, 1),
                "tree_peak_rss_mb": round(self.peak["tree_rss"] / MB, 1)}


def app_root(jvm: Any) -> Any:
    """The launcher this application was started by (scripts/spark-submit.sh, an ancestor of
    this process), else the driver JVM."""
    import psutil

    for p in psutil.Process().parents():
        try:
            if any(arg.endswith(LAUNCHER) for arg in p.cmdline()):
                return p
        except psutil.Error:
            continue
    return jvm


def tree_rss(root: Any) -> int:
    """RSS summed over a process and its descendants (shared pages counted in each: an upper
    bound of what the tree holds)."""
    import psutil

    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a process that ended between the listing and the read
            continue
    return total


def executor_peak_heap_mb(spark: Any) -> float | None:
    """Peak JVM heap over the executors (not the driver), from Spark's own executor metrics;
    None in local mode, where the executors are the driver JVM."""
    store = spark.sparkContext._jsc.sc().statusStore()
    it = store.executorList(True).iterator()
    peak = None
    while it.hasNext():
        e = it.next()
        if e.id() == "driver":
            continue
        metrics = e.peakMemoryMetrics()
        if metrics.isDefined():
            v = float(metrics.get().getMetricValue("JVMHeapMemory")) / MB
            peak = v if peak is None else max(peak, v)
    return None if peak is None else round(peak, 1)


def iceberg_files(spark: Any, ident: str) -> tuple[int, int]:
    """(data files, bytes) added by all snapshots of a table, from their summaries."""
    files = size = 0
    for row in spark.sql(f"SELECT summary FROM {ident}.snapshots").collect():
        files += int(row.summary.get("added-data-files", 0) or 0)
        size += int(row.summary.get("added-files-size", 0) or 0)
    return files, size


def run_cell(spark: Any, task: dict[str, Any]) -> dict[str, Any]:
    cfg = config_mod.load(task["config"])
    table = cfg.tables[0]
    progress: list[dict[str, Any]] = []
    with PeakSampler(spark) as sampler:
        started = time.perf_counter()
        code = cli.cmd_run(cfg, None, Trigger("available-now"), None, None, emit=progress.append)
        wall = time.perf_counter() - started
    batches = [p for p in progress if "batch_id" in p]
    rows = sum(p["rows"] for p in batches)
    files, size = iceberg_files(spark, table.target.identifier)
    out = {
        **task["cell"], "kind": task["kind"], "exit_code": code, "rows": rows, "expected_rows": task["rows"],
        "seconds": round(wall, 3), "rows_per_s": round(rows / wall) if wall else 0, "batches": len(batches),
        **{f"{ph}_s": round(sum(p[f"{ph}_s"] for p in batches), 3) for ph in PHASES},
        "files": files, "bytes_written": size, **sampler.figures(),
        "executor_peak_heap_mb": executor_peak_heap_mb(spark),
    }
    if task.get("purge"):
        spark.sql(f"DROP TABLE IF EXISTS {table.target.identifier} PURGE")
    return out


def run_sink_ceiling(spark: Any, task: dict[str, Any]) -> dict[str, Any]:
    from pyspark import StorageLevel

    cfg = config_mod.load(task["config"])
    src = cfg.sources[cfg.tables[0].connection]
    props = {"driver": "com.clickhouse.jdbc.ClickHouseDriver", "user": src.user, "password": src.password}
    predicates = [f"sequence_number % 2 = {i}" for i in range(2)]
    started = time.perf_counter()
    spark.read.jdbc(src.url, task["table"], properties=props, predicates=predicates) \
        .write.format("noop").mode("overwrite").save()
    jdbc_s = time.perf_counter() - started
    df = spark.read.jdbc(src.url, task["table"], properties=props, predicates=predicates)
    df = df.persist(StorageLevel.MEMORY_ONLY)
    cached = df.count()
    out_dir = task["dir"]
    started = time.perf_counter()
    df.write.mode("overwrite").option("compression", "zstd").parquet(out_dir + "/full")
    write_s = time.perf_counter() - started
    df.unpersist()
    size = sum(f.stat().st_size for f in Path(out_dir, "full").glob("*.parquet"))
    times = []
    for i in range(5):
        t = time.perf_counter()
        small = spark.read.parquet(out_dir + "/full").limit(3000)
        small.write.mode("overwrite").parquet(f"{out_dir}/small{i}")
        times.append(time.perf_counter() - t)
    return {"kind": "sink-ceiling", "rows": cached, "seconds": round(write_s, 3),
            "rows_per_s": round(cached / write_s), "bytes_written": size,
            "smallest_job_s": round(statistics.median(times), 3),
            "jdbc_read_s": round(jdbc_s, 3), "jdbc_read_rows_per_s": round(cached / jdbc_s)}


def run_incremental(spark: Any, task: dict[str, Any]) -> dict[str, Any]:
    cfg = config_mod.load(task["config"])
    t = cfg.tables[0]
    db, name = t.source_table.split(".", 1)
    feed = TradeTable(source_client(cfg, t), name.removeprefix("bronze_trades_"), db)
    feed.create()
    if feed.count() == 0:
        feed.bulk(task["rows"], end_ms_ago=3_600_000)
    ledger = Ledger(cfg.ledger.dsn, cfg.ledger.schema, cfg.ledger.connect_timeout_s)
    ledger.ensure_schema()
    progress: list[dict[str, Any]] = []
    runner = TableRunner(cfg, t, spark, ledger, FaultHook({}), progress.append)
    runner.recover()

    def next_rows() -> None:  # the next rows in cursor order, an hour old (visible at once)
        first = feed.next_sequence()
        feed.insert(task["rows"], f"(SELECT max(exchange_timestamp) FROM {feed.fqn}) + "
                                  f"toIntervalMillisecond(number - {first} + 1)", first)

    warm = runner.step()  # warm-up: the seed, the target's creation
    while warm is not None:
        warm = runner.step()
    walls = []
    for _ in range(task["batches"]):
        next_rows()
        started = time.perf_counter()
        result = runner.step()
        walls.append(time.perf_counter() - started)
        if result is None or result.rows != task["rows"]:
            raise RuntimeError(f"incremental batch moved {result.rows if result else 0} rows, "
                               f"expected {task['rows']}")
    runner.close()
    ledger.close()
    batches = progress[-task["batches"]:]
    totals = [p["total_s"] for p in batches]
    return {"kind": "incremental", "batches": len(batches), "rows_per_batch": task["rows"],
            "p50_s": percentile(walls, 50), "p95_s": percentile(walls, 95), "max_s": round(max(walls), 3),
            "progress_total_p50_s": percentile(totals, 50), "progress_total_p95_s": percentile(totals, 95),
            **{f"{ph}_p50_s": percentile([p[f"{ph}_s"] for p in batches], 50) for ph in PHASES},
            "walls_s": [round(w, 3) for w in walls]}


def run_many_tables(spark: Any, task: dict[str, Any]) -> dict[str, Any]:
    """``run --trigger processing-time`` over N tables (``cli.cmd_run``, the code path users run),
    each fed by the generator at the production rate, for ``duration_s``; stopped by SIGTERM
    as a supervisor stops it. A cycle is one trigger tick: from the tick until the last table
    triggered by it has committed. Ticks before every table committed its first batch (the
    targets' creation) are the warm-up, reported apart."""
    import signal
    import subprocess

    from coldtier.driver import TriggerRecord
    from coldtier.synth import venues

    cfg = config_mod.load(task["config"])
    n = len(cfg.tables)
    first = cfg.tables[0]
    db = first.source_table.split(".", 1)[0]
    client = source_client(cfg, first)
    for name in venues(n):
        TradeTable(client, name, db).create()
    feed = subprocess.Popen(
        [sys.executable, "-m", "coldtier.synth", "--url", client.url, "--password-env", task["password_env"],
         "--database", db, "--venues", str(n), "live", "--rate", str(task["rows_per_s"]),
         "--interval", str(task["feed_interval_s"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records: list[TriggerRecord] = []
    backlog: dict[str, int] = {}
    progress: list[dict[str, Any]] = []
    series: list[tuple[float, int]] = []  # (time, rows waiting over all tables)

    def emit(doc: dict[str, Any]) -> None:
        progress.append(doc)
        if doc.get("backlog_rows") is not None:
            backlog[doc["table"]] = int(doc["backlog_rows"])

    done = threading.Event()

    def sample_backlog() -> None:
        while not done.wait(2.0):
            series.append((time.monotonic(), sum(backlog.values())))

    threading.Thread(target=sample_backlog, name="bench-backlog", daemon=True).start()
    timer = threading.Timer(task["duration_s"], lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        with PeakSampler(spark, every=1.0) as sampler:
            started = time.monotonic()
            timer.start()
            trigger = Trigger("processing-time", task["trigger_s"])
            code = cli.cmd_run(cfg, None, trigger, None, None, emit=emit, on_trigger=records.append)
            wall = time.monotonic() - started
    finally:
        timer.cancel()
        done.set()
        feed.terminate()
        feed.wait(30)
    return {"kind": "tables", "exit_code": code, "seconds": round(wall, 1), "rss_series": [
        (round(t - started, 1), round(v / MB)) for t, v in sampler.series],
        "backlog_series": [(round(t - started, 1), v) for t, v in series],
        **cycle_figures(records, task["trigger_s"], n), **sampler.figures(),
        "rows": sum(int(p.get("rows", 0)) for p in progress if "batch_id" in p),
        "tables": n, "max_concurrent_tables": cfg.run.max_concurrent_tables, "trigger_s": task["trigger_s"],
        "rows_per_trigger": round(task["rows_per_s"] * task["trigger_s"])}


def cycle_figures(records: list[Any], interval: float, tables: int) -> dict[str, Any]:
    """Cycle times per trigger tick after the warm-up, and the trigger's verdict."""
    steps = [r for r in records if r.kind == "step"]
    firsts: dict[str, float] = {}
    for r in steps:
        if r.rows:
            firsts.setdefault(r.table, r.finished)
    if len(firsts) < tables or not steps:
        return {"warmup_s": None, "ticks": 0, "cycle_p50_s": None, "cycle_p95_s": None, "cycle_max_s": None,
                "batches": sum(1 for r in steps if r.rows), "kept_trigger": False}
    warm_end = max(firsts.values())
    t0 = min(r.due for r in records)
    by_tick: dict[float, float] = {}
    for r in steps:
        if r.due > warm_end:
            by_tick[r.due] = max(by_tick.get(r.due, 0.0), r.finished - r.due)
    cycles = [by_tick[k] for k in sorted(by_tick)]
    out: dict[str, Any] = {"warmup_s": round(warm_end - t0, 1), "ticks": len(cycles),
                           "batches": sum(1 for r in steps if r.rows)}
    if not cycles:
        return {**out, "cycle_p50_s": None, "cycle_p95_s": None, "cycle_max_s": None, "kept_trigger": False}
    p95 = percentile(cycles, 95)
    return {**out, "cycle_p50_s": percentile(cycles, 50), "cycle_p95_s": p95,
            "cycle_max_s": round(max(cycles), 3), "kept_trigger": p95 <= interval,
            "cycles_s": [round(c, 3) for c in cycles]}


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile, interpolated between the closest ranks (inclusive method)."""
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


TASKS = {"cell": run_cell, "sink-ceiling": run_sink_ceiling, "incremental": run_incremental,
         "tables": run_many_tables, "envelope": run_cell}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-worker")
    ap.add_argument("--config", required=True, help="the YAML the application's session is built from")
    ap.add_argument("--plan", required=True, help="plan.json written by the harness")
    ap.add_argument("--out", required=True, help="results file: one JSON line per task")
    args = ap.parse_args(argv)
    plan = json.loads(Path(args.plan).read_text())
    session_cfg = config_mod.load(args.config)
    spark = session_for(session_cfg)
    for task in plan["tasks"]:
        try:
            result = TASKS[task["kind"]](spark, task)
        except Exception as exc:  # record it and go on: one broken cell must not void the run
            error = config_mod.mask(f"{type(exc).__name__}: {exc}", session_cfg.secrets())[:2000]
            result = {**task.get("cell", {}), "kind": task["kind"], "error": error}
        with open(args.out, "a") as fh:
            fh.write(json.dumps({"task": task["id"], **result}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
