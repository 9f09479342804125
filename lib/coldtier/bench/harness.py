"""``scripts/bench.sh``: tuning runs and benchmarks, measured side by side in one run.

1. starts its own services (embedded ClickHouse + PostgreSQL, scripts/dev-services.sh) on
   free ports under the run's directory, and generates the datasets inside ClickHouse;
2. measures the no-Spark baselines: the source's export ceiling, the PyIceberg peer path;
3. runs every cell of the matrix: one spark-submit application per group of cells sharing
   application settings (``jobs/bench.py``), each cell a real ``run`` into a fresh Iceberg
   table; the base group also measures the sink ceiling, the 1M-row scaling cell and the
   warm incremental loop;
4. times scheduled relaunches that find nothing to do, through scripts/spark-submit.sh;
5. writes ``bench-results/<UTC timestamp>/``: results.csv, results.md, throughput.png,
   phases.png, best-profile.yaml, raw.jsonl; prints the targets and the best cell.

Longer than 300 lines: the benchmark's whole protocol (services, matrix, interleaved runs,
baselines, report) in the order it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from coldtier import deps
from coldtier.bench import matrix as matrix_mod
from coldtier.bench import peers, report
from coldtier.bench.matrix import Cell, Matrix
from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.synth import TradeTable

DB = "bench"
BACKFILL, SCALING, INCREMENTAL = "binance", "kraken", "bybit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text: str) -> None:
    print(f"bench: {text}", flush=True)


@dataclasses.dataclass
class Services:
    """Embedded ClickHouse + PostgreSQL for this run only (scripts/dev-services.sh)."""

    root: Path
    home: Path
    ch_port: int = 0
    pg_port: int = 0
    ch_password: str = dataclasses.field(default_factory=lambda: secrets.token_hex(12), repr=False)
    pg_password: str = dataclasses.field(default_factory=lambda: secrets.token_hex(12), repr=False)

    def env(self) -> dict[str, str]:
        return {**os.environ, "COLDTIER_DEV_DIR": str(self.home), "COLDTIER_CH_PORT": str(self.ch_port),
                "COLDTIER_PG_PORT": str(self.pg_port), "COLDTIER_CH_PASSWORD": self.ch_password,
                "COLDTIER_PG_PASSWORD": self.pg_password, "BENCH_CH_PASSWORD": self.ch_password,
                "BENCH_PG_PASSWORD": self.pg_password}

    def _script(self, action: str) -> None:
        subprocess.run([str(self.root / "scripts" / "dev-services.sh"), action], env=self.env(), check=True,
                       stdout=subprocess.DEVNULL, timeout=300)

    def start(self) -> Services:
        self.ch_port, self.pg_port = self.ch_port or free_port(), self.pg_port or free_port()
        self._script("start")
        return self

    def destroy(self) -> None:
        self._script("destroy")

    def client(self) -> ClickHouseHTTP:
        return ClickHouseHTTP(f"http://127.0.0.1:{self.ch_port}", "default", self.ch_password, timeout_s=60,
                             read_timeout_s=3600)


def coldtier_config(services: Services, warehouse: Path, cell: Cell, pipeline: str, source_table: str,
                    batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """A coldtier YAML document running ``cell`` against the bench services."""
    return {
        "pipeline": pipeline,
        "spark": {"master": cell.master, "conf": {**cell.spark_conf(), "spark.ui.enabled": "false",
                                                   "spark.sql.shuffle.partitions": "2",
                                                   "spark.driver.host": "127.0.0.1"}},
        "sources": {"ch": {"url": f"jdbc:clickhouse://127.0.0.1:{services.ch_port}/default",
                           "user": "default", "password": "${BENCH_CH_PASSWORD}"}},
        "ledger": {"dsn": f"host=127.0.0.1 port={services.pg_port} dbname=coldtier user=coldtier "
                          "password=${BENCH_PG_PASSWORD}"},
        "catalogs": {"bench": {"type": "hadoop", "warehouse": str(warehouse)}},
        "tables": [{"name": "trades", "source": {"connection": "ch", "table": f"{DB}.{source_table}"},
                    "cursor": {"lag_s": 0}, "batch": batch or cell.batch_section(),
                    "target": {"catalog": "bench", "table": f"{pipeline}.trades",
                               "properties": cell.target_properties()}}],
    }


def tables_config(services: Services, warehouse: Path, base: Cell, pipeline: str, n: int,
                  tr: matrix_mod.TablesRun) -> dict[str, Any]:
    """N live tables (``coldtier.synth --venues N``) in one application, at the defaults but
    for the envelope's driver memory and the matrix's concurrency."""
    from coldtier.synth import venues

    cell = dataclasses.replace(base, driver_memory=tr.driver_memory)
    doc = coldtier_config(services, warehouse, cell, pipeline, "unused")
    entry = doc["tables"][0]
    options = cell.batch_section()["options"]
    doc["tables"] = [{**entry, "name": name,
                      "source": {**entry["source"], "table": f"{DB}.bronze_trades_{name}"},
                      "batch": {"max_rows": 100_000, "num_partitions": 1, "options": options},
                      "target": {**entry["target"], "table": f"{pipeline}.{name}"}} for name in venues(n)]
    if tr.max_concurrent_tables is not None:
        doc["run"] = {"max_concurrent_tables": tr.max_concurrent_tables}
    return doc


class Run:
    def __init__(self, root: Path, matrix: Matrix, out: Path, services: Services) -> None:
        self.root, self.matrix, self.out, self.services = root, matrix, out, services
        self.warehouse = out / "warehouse"
        self.configs = out / "configs"
        self.logs = out / "logs"
        for d in (self.warehouse, self.configs, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.raw = out / "raw.jsonl"
        self.started = time.monotonic()
        self.done = 0
        self.total = 0

    def write_config(self, name: str, doc: dict[str, Any]) -> Path:
        path = self.configs / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def record(self, result: dict[str, Any]) -> None:
        with self.raw.open("a") as fh:
            fh.write(json.dumps(result) + "\n")

    # -- data ------------------------------------------------------------------------
    def load_data(self) -> None:
        client = self.services.client()
        for exchange, rows in ((BACKFILL, self.matrix.rows), (SCALING, self.matrix.scaling_rows)):
            t = TradeTable(client, exchange, DB)
            t.create()
            started = time.perf_counter()
            t.bulk(rows)
            client.execute(f"OPTIMIZE TABLE {t.fqn} FINAL")
            say(f"generated {rows:,} trades in {t.fqn} ({time.perf_counter() - started:.1f} s)")

    # -- tasks -----------------------------------------------------------------------
    def cell_task(self, task_id: str, cell: Cell, source: str, rows: int, purge: bool,
                  batch: dict[str, Any] | None = None, kind: str = "cell") -> dict[str, Any]:
        doc = coldtier_config(self.services, self.warehouse, cell, f"c_{task_id.replace('-', '_')}",
                              f"bronze_trades_{source}", batch)
        return {"kind": kind, "id": task_id, "rows": rows, "cell": cell.as_row(), "purge": purge,
                "config": str(self.write_config(task_id, doc))}

    def plan_groups(self) -> list[tuple[Path, list[dict[str, Any]]]]:
        """One task list per Spark application. Each starts with an unreported warm-up cell
        (JIT, class loading), so the first measured cell is not penalised; repetitions are
        interleaved (all cells once, then again), so a drift in the machine's speed spreads
        over every cell instead of biasing one."""
        m = self.matrix
        plans = []
        for i, group in enumerate(m.groups()):
            tasks = self.cell_tasks(f"g{i}", group)
            if i == 0:
                scale = dataclasses.replace(m.base, knob="scaling", value=f"{m.scaling_rows:,} rows")
                tasks += [self.cell_task(f"scaling-r{r + 1}", scale, SCALING, m.scaling_rows, purge=True)
                          for r in range(m.repeat)]
                tasks.append({"kind": "sink-ceiling", "id": "sink-ceiling", "config": tasks[1]["config"],
                              "table": f"{DB}.bronze_trades_{BACKFILL}",
                              "dir": str(self.out / "sink-ceiling")})
                incr = {"max_rows": 100_000, "num_partitions": m.incremental_partitions,
                        "options": m.base.batch_section()["options"]}
                task = self.cell_task("incremental", m.base, INCREMENTAL, m.incremental_rows, False, incr,
                                      kind="incremental")
                tasks.append({**task, "batches": m.incremental_batches})
            plans.append((Path(tasks[1]["config"]), tasks))
        self.total = sum(1 for _, tasks in plans for t in tasks if not t["id"].endswith("-warmup"))
        return plans

    def cell_tasks(self, prefix: str, group: tuple[Cell, ...]) -> list[dict[str, Any]]:
        warm = dataclasses.replace(group[0], knob="warmup", value="")
        tasks = [self.cell_task(f"{prefix}-warmup", warm, SCALING, self.matrix.scaling_rows, purge=True)]
        for r in range(self.matrix.repeat):
            # the base cell's first table stays: the no-op relaunches run against it
            tasks += [self.cell_task(f"{c.slug}-r{r + 1}", c, BACKFILL, self.matrix.rows,
                                     purge=not (c.knob == "base" and r == 0)) for c in group]
        return tasks

    def progress(self, result: dict[str, Any]) -> None:
        if result["task"].endswith("-warmup"):
            return
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        what = result.get("cell") or result["task"]
        if result["kind"] == "cell" and self.matrix.repeat > 1:
            what += f" (run {result['task'].rsplit('-r', 1)[-1]}/{self.matrix.repeat})"
        if result.get("error"):
            figure = f"ERROR {result['error'][:200]}"
        elif result["kind"] == "tables":
            figure = (f"{result['tables']} tables: cycle p50 {result['cycle_p50_s']} s, p95 "
                      f"{result['cycle_p95_s']} s, tree RSS {result['tree_peak_rss_mb']:,.0f} MB")
        elif result["kind"] == "incremental":
            figure = f"p50 {result['p50_s']:.3f} s, p95 {result['p95_s']:.3f} s"
        else:
            figure = f"{result['rows_per_s']:,} rows/s ({result['seconds']:.1f} s)"
        say(f"[{self.done}/{self.total}] {what}: {figure} — elapsed {elapsed / 60:.1f} min, "
            f"ETA {eta / 60:.1f} min")

    def run_group(self, index: int, session_config: Path,
                  tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        plan = self.out / f"plan-g{index}.json"
        plan.write_text(json.dumps({"tasks": tasks}, indent=1))
        results_path = self.out / f"results-g{index}.jsonl"
        results_path.touch()
        env = {**self.services.env(), "PYTHONPATH": str(self.root / "lib"),
               "COLDTIER_SPARK_LOG_LEVEL": "ERROR"}
        cmd = [str(self.root / "scripts" / "spark-submit.sh"), "jobs/bench.py", "--config",
               str(session_config), "--plan", str(plan), "--out", str(results_path)]
        log = self.logs / f"worker-g{index}.log"
        with log.open("w") as fh:
            proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=fh, stderr=subprocess.STDOUT)
            seen = 0
            while True:
                finished = proc.poll() is not None
                lines = results_path.read_text().splitlines()
                for line in lines[seen:]:
                    self.progress(json.loads(line))
                seen = len(lines)
                if finished:
                    break
                time.sleep(0.5)
        results = [json.loads(line) for line in results_path.read_text().splitlines()]
        done = {r["task"] for r in results}
        for t in tasks:  # a worker that died leaves its remaining tasks as errors, never silently absent
            if t["id"] not in done:
                results.append({"task": t["id"], "kind": t["kind"], **t.get("cell", {}),
                                "error": f"worker exited {proc.returncode} before this task; see {log}"})
        return results

    def collect(self, results: list[dict[str, Any]], extras: dict[str, Any]) -> list[dict[str, Any]]:
        """Records a group's results; returns its measured cell runs, baselines go to extras."""
        runs = []
        for r in results:
            self.record(r)
            if r["kind"] == "cell" and not r["task"].endswith("-warmup"):
                runs.append(with_mb_per_s(r, extras))
            elif r["kind"] == "sink-ceiling":
                extras["sink"] = r
                extras.update(jdbc_extra(r))
            elif r["kind"] == "incremental":
                extras["incremental"] = r
            elif r["kind"] == "envelope":
                extras["envelope"] = r
            elif r["kind"] == "tables":
                extras.setdefault("tables", []).append(r)
        return runs

    def scale_plan(self) -> list[tuple[Path, list[dict[str, Any]]]]:
        """The envelope backfill (the base cell under the envelope's driver memory) and the
        many-table runs, one application each."""
        m = self.matrix
        plans = []
        if m.envelope_driver_memory:
            cell = dataclasses.replace(m.base, driver_memory=m.envelope_driver_memory, knob="envelope",
                                       value=m.envelope_driver_memory)
            task = self.cell_task("envelope", cell, BACKFILL, m.rows, purge=True, kind="envelope")
            plans.append((Path(task["config"]), [task]))
        if m.tables:
            tr = m.tables
            tasks: list[dict[str, Any]] = []
            configs = []
            for n in tr.counts:
                doc = tables_config(self.services, self.warehouse, m.base, f"t{n}", n, tr)
                configs.append(self.write_config(f"tables-{n}", doc))
                tasks.append({"kind": "tables", "id": f"tables-{n}", "config": str(configs[-1]),
                              "trigger_s": tr.trigger_s, "rows_per_s": tr.rows_per_s,
                              "feed_interval_s": tr.feed_interval_s, "duration_s": tr.seconds(n),
                              "password_env": "BENCH_CH_PASSWORD"})
            plans.append((configs[0], tasks))
        self.total += sum(len(t) for _, t in plans)
        return plans

    def noop_relaunches(self, config: Path) -> list[float]:
        times = []
        env = {**self.services.env(), "PYTHONPATH": str(self.root / "lib")}
        for i in range(self.matrix.noop_relaunches):
            started = time.perf_counter()
            cmd = [str(self.root / "scripts" / "spark-submit.sh"), "jobs/offload.py", "run", "--config",
                   str(config), "--trigger", "available-now"]
            done = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=600)
            took = time.perf_counter() - started
            (self.logs / f"noop-{i}.log").write_text(done.stdout + done.stderr)
            if done.returncode != 0 or '"caught_up":true' not in done.stdout:
                raise RuntimeError(f"no-op relaunch {i} exited {done.returncode}; "
                                   f"see {self.logs}/noop-{i}.log")
            times.append(round(took, 3))
            say(f"relaunch with nothing to do: exit 0 in {took:.2f} s")
        return times


def with_mb_per_s(run: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    """A cell run's MB/s: its rows/s times the source's RowBinary bytes per row."""
    if not run.get("error"):
        run["mb_per_s"] = round(run["rows_per_s"] * extras["source"]["bytes_per_row"] / 1e6, 1)
    return run


def jdbc_extra(sink: dict[str, Any]) -> dict[str, Any]:
    """The Spark-JDBC-read-only figure the sink-ceiling task also measures, as a baseline."""
    if sink.get("error"):
        return {}
    return {"jdbc": {"rows": sink["rows"], "seconds": sink["jdbc_read_s"],
                     "rows_per_s": sink["jdbc_read_rows_per_s"]}}


def write_report(out: Path, m: Matrix, label: str, cells: list[dict[str, Any]],
                 extras: dict[str, Any]) -> int:
    """results.csv, results.md, the plots and best-profile.yaml; prints the summary. Returns
    the number of failed tasks."""
    matrix_cells = [c for c in cells if c["knob"] != "scaling"]
    base = next((c for c in cells if c["knob"] == "base"), None)
    scaling = next((c for c in cells if c["knob"] == "scaling"), None)
    checks = report.targets(matrix_cells, base, scaling, extras.get("source"), extras.get("sink"),
                            extras.get("peer"), extras.get("incremental"), extras.get("noop_s") or [])
    checks += report.scale_targets(extras.get("tables") or [], extras.get("envelope"))
    report.write_csv(out / "results.csv", cells)
    refs = {}
    if extras.get("sink") and not extras["sink"].get("error"):
        s, k = extras["source"], extras["sink"]
        refs["serial ceiling"] = 1 / (1 / s["rows_per_s"] + 1 / k["rows_per_s"])
    if extras.get("peer") and not extras["peer"].get("error"):
        refs["no-Spark peer"] = extras["peer"]["rows_per_s"]
    report.plot_throughput(out / "throughput.png", matrix_cells, refs)
    report.plot_phases(out / "phases.png", cells)
    if extras.get("tables"):
        report.plot_tables(out / "tables.png", extras["tables"])
    rec = report.recommended(matrix_cells)
    (out / "results.md").write_text(report.markdown(label, m, cells, extras, checks, rec))
    if rec:
        (out / "best-profile.yaml").write_text(report.profile(rec, label))
    print((out / "results.md").read_text())
    fastest = report.best_cell(matrix_cells)
    if fastest and rec:
        say(f"fastest cell: {fastest['cell']} — {fastest['rows_per_s']:,} rows/s; recommended: {rec['cell']} "
            f"({report.why(rec, base)}); profile: {out / 'best-profile.yaml'}")
    return len([c for c in cells if c.get("error")]) + len(
        [v for v in extras.values() if isinstance(v, dict) and v.get("error")])


def rerender(run_dir: Path, m: Matrix) -> int:
    """Rebuild a run's report from its raw.jsonl (e.g. after a change to the report)."""
    raw = [json.loads(line) for line in (run_dir / "raw.jsonl").read_text().splitlines()]
    extras: dict[str, Any] = {}
    kinds = {"source-ceiling": "source", "peer-path": "peer", "sink-ceiling": "sink",
             "incremental": "incremental", "envelope": "envelope"}
    for r in raw:
        if r["kind"] in kinds:
            extras[kinds[r["kind"]]] = r
        elif r["kind"] == "tables":
            extras.setdefault("tables", []).append(r)
        elif r["kind"] == "noop-relaunch":
            extras["noop_s"] = r["seconds"]
    if extras.get("sink"):
        extras.update(jdbc_extra(extras["sink"]))
    runs = [r for r in raw if r["kind"] == "cell" and not r["task"].endswith("-warmup")]
    for r in runs:
        if r.get("knob") == "combined":
            r["cell"] = "combined"
        with_mb_per_s(r, extras)
    label = (run_dir / "results.md").read_text().splitlines()[0].removeprefix("# coldtier benchmark — ")
    return write_report(run_dir, m, label, aggregate(runs), extras)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell from its repetitions: the run with the lower median throughput
    (``median_low``: with 2 runs, the slower — conservative), every run's rows/s in
    ``rows_per_s_runs`` and their spread. A cell with a failed run is reported failed."""
    import statistics

    by_cell: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_cell.setdefault(r["cell"], []).append(r)
    out = []
    for reps in by_cell.values():
        failed = [r for r in reps if r.get("error")]
        if failed:
            out.append(failed[0])
            continue
        rates = [r["rows_per_s"] for r in reps]
        mid = statistics.median_low(rates)
        row = dict(next(r for r in reps if r["rows_per_s"] == mid))
        row["rows_per_s_runs"] = "/".join(str(x) for x in rates)
        row["rows_per_s_min"], row["rows_per_s_max"] = min(rates), max(rates)
        row["spread_pct"] = round(100 * (max(rates) - min(rates)) / mid, 1)
        out.append(row)
    return out


def machine_label() -> str:
    from importlib.metadata import version

    import psutil

    mem = psutil.virtual_memory().total / 2**30
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} cores, "
            f"{mem:.0f} GiB, Python {platform.python_version()}, PySpark {version('pyspark')}, "
            f"chdb {version('chdb')}")


def main(argv: list[str] | None = None) -> int:
    root = deps.repo_root()
    ap = argparse.ArgumentParser(prog="scripts/bench.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", default=str(root / "conf" / "tuning" / "default.yaml"))
    ap.add_argument("--out", default=str(root / "bench-results"), help="parent of the run's directory")
    ap.add_argument("--rows", type=int, help="override dataset.rows")
    ap.add_argument("--keep", action="store_true", help="keep the services' data and the Iceberg warehouse")
    ap.add_argument("--rerender", metavar="RUN_DIR", help="rebuild RUN_DIR's report from its raw.jsonl")
    args = ap.parse_args(argv)
    try:
        m = matrix_mod.load(args.matrix)
    except matrix_mod.MatrixError as exc:
        print(f"bench: {exc} (exit 2)", file=sys.stderr)
        return 2
    if args.rerender:
        return 1 if rerender(Path(args.rerender), dataclasses.replace(m, rows=args.rows or m.rows)) else 0
    if args.rows:
        m = dataclasses.replace(m, rows=args.rows)
    out = Path(args.out) / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True)
    label = machine_label()
    cells_n = len(m.cells)
    say(f"{label}\nbench: matrix {m.path}: {cells_n} cells x {m.rows:,} rows in {len(m.groups())} "
        f"Spark application(s); results in {out}")
    services = Services(root, out / "services").start()
    try:
        run = Run(root, m, out, services)
        run.load_data()
        client = services.client()
        backfill = f"{DB}.bronze_trades_{BACKFILL}"
        extras: dict[str, Any] = {}
        source = [peers.source_ceiling(client, backfill, m.rows) for _ in range(2)]
        extras["source"] = min(source, key=lambda r: r["seconds"])
        run.record(extras["source"])
        say(f"source ceiling: {extras['source']['rows_per_s']:,} rows/s (best of 2: "
            f"{', '.join(str(s['seconds']) for s in source)} s), {extras['source']['bytes_per_row']} B/row")
        if m.peer:
            try:
                extras["peer"] = peers.peer_path(client, backfill, m.rows, out / "peer-warehouse")
                say(f"peer path (ClickHouse → Arrow → PyIceberg): {extras['peer']['rows_per_s']:,} rows/s")
            except Exception as exc:  # measured and reported, never fatal
                extras["peer"] = {"kind": "peer-path", "error": f"{type(exc).__name__}: {exc}"[:500]}
                say(f"peer path failed: {extras['peer']['error']}")
            run.record(extras["peer"])
            shutil.rmtree(out / "peer-warehouse", ignore_errors=True)
        runs: list[dict[str, Any]] = []
        base_config: Path | None = None
        plans = run.plan_groups()
        scale = run.scale_plan()
        for i, (session_config, tasks) in enumerate(plans):
            base_config = base_config or session_config
            runs += run.collect(run.run_group(i, session_config, tasks), extras)
        cells = aggregate(runs)
        winner = matrix_mod.combined(m.base, cells)
        if winner is not None:
            say(f"combining the knobs that beat the base: {winner.value}")
            tasks = run.cell_tasks("combined", (winner,))
            run.total += m.repeat
            runs += run.collect(run.run_group(len(plans), Path(tasks[1]["config"]), tasks), extras)
            cells = aggregate(runs)
        for j, (session_config, tasks) in enumerate(scale):
            run.collect(run.run_group(len(plans) + 1 + j, session_config, tasks), extras)
        assert base_config is not None
        extras["noop_s"] = run.noop_relaunches(base_config)
        run.record({"kind": "noop-relaunch", "seconds": extras["noop_s"]})
        failed = write_report(out, m, label, cells, extras)
        say(f"done in {(time.monotonic() - run.started) / 60:.1f} min; {failed} failed task(s)")
        return 1 if failed else 0
    finally:
        if args.keep:
            say(f"services left running; stop them with COLDTIER_DEV_DIR={out / 'services'} "
                f"COLDTIER_CH_PORT={services.ch_port} COLDTIER_PG_PORT={services.pg_port} "
                f"scripts/dev-services.sh destroy")
        else:
            services.destroy()
            shutil.rmtree(out / "warehouse", ignore_errors=True)
            shutil.rmtree(out / "sink-ceiling", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
