"""``scripts/soak.sh`` (``make soak DURATION=…``): the whole job, for as long as you like, under faults.

1. starts its own services (embedded ClickHouse + PostgreSQL, scripts/dev-services.sh) on free
   ports under the run's directory; the Iceberg catalog is a JDBC catalog on that PostgreSQL,
   like production's;
2. feeds N tables (``coldtier.synth`` trade tables) at RATE rows/s each, stamped with the
   server's clock — 10× the production feed by default;
3. runs the job through scripts/spark-submit.sh with a processing-time trigger under a
   supervisor that relaunches it whenever it exits (systemd's ``Restart=always``);
4. every FAULT_EVERY seconds (±30 %) injects a fault drawn at random (each kind once per round):
   SIGKILL of the driver's process group, ClickHouse or PostgreSQL restarted, ClickHouse or
   PostgreSQL frozen with SIGSTOP, a maintenance run (``coldtier maintain``) in between two runs;
   and measures each one's recovery: until every table has committed a batch after it;
5. samples the job's process-tree RSS every 5 s and the tables' snapshots and files every minute
   (more often in a short soak);
6. at the end stops the feed, drains (``run --trigger available-now``), reconciles the whole soak
   (``reconcile``), counts rows in and out and duplicate keys (``coldtier.query``);
7. writes ``soak-results/<UTC timestamp>/``: soak.md, soak.png, batches.csv, samples.json,
   faults.json; exits 0 only when nothing was lost or doubled and every fault recovered.

Longer than 300 lines: the soak's whole protocol (services, feed, supervisor, faults, samples,
final checks) in the order it runs, each part a small class.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import yaml

from coldtier import config as config_mod
from coldtier import pg, query
from coldtier.bench.harness import Services
from coldtier.soak.report import BATCH_FIELDS
from coldtier.synth import TradeTable, venues

FAULTS = (
    "kill-driver",
    "restart-clickhouse",
    "restart-postgres",
    "freeze-clickhouse",
    "freeze-postgres",
    "maintain",
)
DB = "soak"


def say(text: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')}: {text}", flush=True)


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h``, ``24h``, or seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise SystemExit(f"soak: bad duration {text!r}: use 90s, 10m, 1h or 24h") from None


@dataclasses.dataclass(frozen=True)
class Plan:
    duration_s: float
    tables: int = 2
    rate: float = 250.0  # rows per second per table (production: 2–3K per 15 s, ~170/s)
    trigger: str = "15s"
    lag_s: float = 5.0
    fault_every_s: float = 300.0
    faults: tuple[str, ...] = FAULTS
    freeze_s: float = 8.0
    recovery_timeout_s: float = 600.0
    seed: int = 0


def job_config(services: Services, home: Path, plan: Plan) -> dict[str, Any]:
    pg = f"127.0.0.1:{services.pg_port}"
    return {
        "pipeline": "soak",
        "spark": {
            "master": "local[2]",
            "conf": {
                "spark.driver.memory": "1g",
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": "2",
                "spark.driver.host": "127.0.0.1",
            },
        },
        "sources": {
            "ch": {
                "url": f"jdbc:clickhouse://127.0.0.1:{services.ch_port}/default",
                "user": "default",
                "password": "${BENCH_CH_PASSWORD}",
                "connect_timeout_s": 5,
                "read_timeout_s": 60,
            }
        },
        "ledger": {
            "dsn": f"host=127.0.0.1 port={services.pg_port} dbname=coldtier user=coldtier "
            "password=${BENCH_PG_PASSWORD}",
            "statement_timeout_s": 30,
            "tcp_timeout_s": 15,
        },
        "catalogs": {
            "cold": {
                "type": "jdbc",
                "uri": f"jdbc:postgresql://{pg}/coldtier",
                "jdbc.user": "coldtier",
                "jdbc.password": "${BENCH_PG_PASSWORD}",
                "warehouse": str(home / "warehouse"),
                "jdbc.schema-version": "V1",
            }
        },
        "maintenance": {"snapshot_retention_h": 1, "retain_last": 20},
        "tables": [
            {
                "name": v,
                "source": {"connection": "ch", "table": f"{DB}.bronze_trades_{v}"},
                "cursor": {"lag_s": plan.lag_s},
                "batch": {"max_rows": 100_000, "num_partitions": 1},
                "target": {
                    "catalog": "cold",
                    "table": f"soak.{v}",
                    "partition_by": ["hours(exchange_timestamp)"],
                },
            }
            for v in venues(plan.tables)
        ],
    }


def iceberg_sample(name: str, table: Any) -> dict[str, Any]:
    """A table's snapshots, data files and rows now (PyIceberg)."""
    f = query.facts(table, dt.UTC)
    return {"at": time.time(), "table": name, "snapshots": len(table.snapshots()), "files": f.files,
            "rows": f.rows}


def job_command(root: Path, config: Path, *args: str) -> list[str]:
    """A coldtier command through the launcher, as a supervisor runs it."""
    return [str(root / "scripts" / "spark-submit.sh"), "jobs/offload.py", *args, "--config", str(config)]


class Feeder(threading.Thread):
    """Inserts RATE rows per second into each table; a failed insert (ClickHouse down or frozen) is
    counted and the next one starts from the table's real next sequence number."""

    def __init__(self, tables: list[TradeTable], rate: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.tables, self.rate = tables, rate
        self.stop = threading.Event()
        self.failed = 0

    def run(self) -> None:
        seqs: dict[str, int | None] = {t.fqn: None for t in self.tables}
        began, ticks = time.monotonic(), 0
        while not self.stop.is_set():
            for t in self.tables:
                try:
                    start = seqs[t.fqn]
                    seqs[t.fqn] = t.live_tick(
                        max(1, round(self.rate)), t.next_sequence() if start is None else start
                    )
                except Exception:  # a fault: counted, and resynchronised at the next tick
                    self.failed += 1
                    seqs[t.fqn] = None
            ticks += 1
            self.stop.wait(max(0.0, began + ticks - time.monotonic()))


class Supervisor(threading.Thread):
    """Relaunches the job whenever it exits, like ``Restart=always`` with ``RestartSec=3``."""

    def __init__(self, root: Path, config: Path, trigger: str, env: dict[str, str], log: Path) -> None:
        super().__init__(name="supervisor", daemon=True)
        self.cmd = job_command(root, config, "run", "--trigger", f"processing-time={trigger}")
        self.root, self.env, self.log = root, env, log
        self.stop, self.hold = threading.Event(), threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[dict[str, Any]] = []
        self.launches = 0
        self._idle = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.hold.is_set():
                self._idle.set()
                time.sleep(0.2)
                continue
            self._idle.clear()
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    self.cmd, cwd=self.root, env=self.env, stdout=out, stderr=out, start_new_session=True
                )
            self.launches += 1
            started = time.time()
            rc = self.proc.wait()
            self.exits.append({"at": time.time(), "rc": rc, "ran_s": round(time.time() - started, 1)})
            if not self.stop.is_set() and not self.hold.is_set():
                self.stop.wait(3)
        self._idle.set()

    def signal(self, sig: int) -> bool:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def pause(self, timeout_s: float = 180.0) -> None:
        """Stop the job gracefully (SIGTERM: the batch in flight finishes) and relaunch nothing."""
        self.hold.set()
        self.signal(signal.SIGTERM)
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                proc.wait()
        self._idle.wait(10)

    def resume(self) -> None:
        self.hold.clear()

    def tree_rss_mb(self) -> float | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None
        try:
            root = psutil.Process(proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
                total += p.memory_info().rss
        return total / 2**20


class Ledger:
    """Read-only looks at the job's ledger; every call its own short connection (PostgreSQL
    restarts and freezes are among the faults)."""

    def __init__(self, services: Services) -> None:
        self.dsn = (f"host=127.0.0.1 port={services.pg_port} dbname=coldtier user=coldtier "
                    f"password={services.pg_password}")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = pg.connect(self.dsn, "coldtier-soak", connect_timeout_s=3, statement_timeout_s=5,
                          tcp_timeout_s=10)
        try:
            with pg.deadline(conn, 10), conn.cursor() as cur:  # a frozen server: fail, poll again
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def last_commits(self) -> dict[str, float]:
        try:
            rows = self.rows(
                "SELECT table_name, extract(epoch FROM max(committed_at)) FROM coldtier.batches "
                "WHERE pipeline = 'soak' AND status = 'committed' GROUP BY table_name"
            )
        except psycopg2.Error:
            return {}
        return {str(t): float(s) for t, s in rows if s is not None}

    def batches(self) -> list[dict[str, Any]]:
        rows = self.rows(
            "SELECT table_name, batch_id, extract(epoch FROM committed_at), rows, total_s, "
            "source_lag_s, backlog_rows, attempts FROM coldtier.batches WHERE pipeline = 'soak' "
            "AND status = 'committed' ORDER BY committed_at"
        )
        keys = BATCH_FIELDS
        return [dict(zip(keys, (r[0], int(r[1]), float(r[2]), *r[3:]), strict=True)) for r in rows]


class Faults(threading.Thread):
    """One fault at a time, each kind once per round in a random order; the next comes
    FAULT_EVERY (±30 %) after the previous one recovered."""

    def __init__(self, soak: Soak) -> None:
        super().__init__(name="faults", daemon=True)
        self.soak, self.plan = soak, soak.plan
        self.rng = random.Random(self.plan.seed)
        self.stop = threading.Event()
        self.done: list[dict[str, Any]] = []

    def run(self) -> None:
        order: list[str] = []
        while not self.stop.wait(self.plan.fault_every_s * self.rng.uniform(0.7, 1.3)):
            if not order:
                order = list(self.plan.faults)
                self.rng.shuffle(order)
            self.done.append(self.inject(order.pop(0)))

    def inject(self, kind: str) -> dict[str, Any]:
        soak, started = self.soak, time.time()
        say(f"fault: {kind}")
        note = ""
        if kind == "kill-driver":
            note = "killed" if soak.supervisor.signal(signal.SIGKILL) else "no job running"
        elif kind in ("restart-clickhouse", "restart-postgres"):
            soak.services_script("restart-ch" if kind == "restart-clickhouse" else "restart-pg")
        elif kind in ("freeze-clickhouse", "freeze-postgres"):
            procs = soak.service_procs("clickhouse" if kind == "freeze-clickhouse" else "postgres")
            for p in procs:
                p.suspend()
            time.sleep(self.plan.freeze_s)
            for p in procs:
                p.resume()
            note = f"{len(procs)} processes frozen {self.plan.freeze_s:g}s"
        elif kind == "maintain":
            soak.supervisor.pause()
            rc = soak.coldtier("maintain", timeout_s=900)
            soak.supervisor.resume()
            note = f"maintain exit {rc}"
        ended = time.time()
        recovered = soak.wait_for_commits(after=ended, timeout_s=self.plan.recovery_timeout_s)
        record = {
            "kind": kind,
            "at": started,
            "fault_s": round(ended - started, 1),
            "note": note,
            "recovered": recovered is not None,
            "recovery_s": None if recovered is None else round(recovered - started, 1),
        }
        say(f"fault {kind}: " + (f"recovered in {record['recovery_s']}s" if recovered else "NOT recovered"))
        return record


class Soak:
    def __init__(self, root: Path, out: Path, plan: Plan) -> None:
        self.root, self.out, self.plan = root, out, plan
        self.services = Services(root, out / "services")
        self.samples: list[dict[str, Any]] = []
        self.iceberg: list[dict[str, Any]] = []
        self.stop_sampling = threading.Event()

    # services ---------------------------------------------------------------------------
    def services_script(self, action: str) -> str:
        done = subprocess.run(
            [str(self.root / "scripts" / "dev-services.sh"), action],
            env=self.services.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return done.stdout

    def service_procs(self, which: str) -> list[psutil.Process]:
        pids = dict(line.split() for line in self.services_script("pids").splitlines() if line.strip())
        root = psutil.Process(int(pids[which]))
        return [root, *root.children(recursive=True)]

    def coldtier(self, *args: str, timeout_s: float) -> int:
        cmd = job_command(self.root, self.config, *args)
        with (self.out / "job.log").open("ab") as log:
            try:
                return subprocess.run(
                    cmd, cwd=self.root, env=self.env, stdout=log, stderr=log, timeout=timeout_s
                ).returncode
            except subprocess.TimeoutExpired:
                return -1

    def wait_for_commits(self, after: float, timeout_s: float) -> float | None:
        """When every table had committed a batch after ``after`` (None: not within the timeout)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            last = self.ledger.last_commits()
            if len(last) == self.plan.tables and min(last.values()) > after:
                return time.time()
            time.sleep(1)
        return None

    # sampling ---------------------------------------------------------------------------
    def sample(self) -> None:
        cfg = config_mod.load(self.config, self.env)
        every = min(60.0, max(10.0, self.plan.duration_s / 30))
        next_iceberg = time.time() + every
        while not self.stop_sampling.wait(5):
            rss = self.supervisor.tree_rss_mb()
            if rss is not None:
                self.samples.append({"at": time.time(), "rss_mb": round(rss, 1)})
            if time.time() >= next_iceberg:
                next_iceberg = time.time() + every
                for t in cfg.tables:
                    try:
                        table = query.load_table(cfg, t)
                    except Exception:  # not created yet, or PostgreSQL down: the next minute
                        continue
                    self.iceberg.append(iceberg_sample(t.name, table))

    # the protocol -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        plan, out = self.plan, self.out
        say(f"services under {out}")
        self.services.start()
        self.env = {**self.services.env(), "COLDTIER_SPARK_LOG_LEVEL": "ERROR"}
        self.config = out / "soak.yaml"
        self.config.write_text(yaml.safe_dump(job_config(self.services, out, plan), sort_keys=False))
        self.ledger = Ledger(self.services)
        client = self.services.client()
        # a frozen server: the feeder's insert fails within 10 s, and resynchronises
        client = dataclasses.replace(client, read_timeout_s=10)
        tables = [TradeTable(client, v, DB) for v in venues(plan.tables)]
        for feed in tables:
            feed.create()
        began = time.time()
        feeder = Feeder(tables, plan.rate)
        self.supervisor = Supervisor(self.root, self.config, plan.trigger, self.env, out / "job.log")
        faults = Faults(self)
        sampler = threading.Thread(target=self.sample, name="sampler", daemon=True)
        say(
            f"{plan.tables} tables at {plan.rate:g} rows/s each, trigger {plan.trigger}, faults every "
            f"~{plan.fault_every_s:g}s ({', '.join(plan.faults) or 'none'}), for {plan.duration_s:g}s"
        )
        feeder.start()
        self.supervisor.start()
        sampler.start()
        if plan.faults:
            faults.start()
        time.sleep(max(0.0, began + plan.duration_s - time.time()))
        say("the end: faults stop, then the feed; drain and reconcile")
        faults.stop.set()
        faults.join()
        feeder.stop.set()
        feeder.join()
        fed_until = time.time()
        time.sleep(plan.lag_s + 2)  # every row now older than lag_s: the drain sees them all
        self.supervisor.pause()
        self.stop_sampling.set()
        sampler.join()
        drain_started = time.time()
        drain_rc = self.coldtier("run", "--trigger", "available-now", timeout_s=1800)
        drain_s = time.time() - drain_started
        since = dt.datetime.fromtimestamp(began - 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        reconcile_rc = self.coldtier("reconcile", "--since", since, "--bucket", "15m", timeout_s=1800)
        self.supervisor.stop.set()
        cfg = config_mod.load(self.config, self.env)
        per_table = []
        for t, src in zip(cfg.tables, tables, strict=True):
            table = query.load_table(cfg, t)
            dups = query.duplicates(table, t, query.key_columns(t))
            f = query.facts(table, dt.UTC)
            self.iceberg.append(iceberg_sample(t.name, table))
            per_table.append(
                {
                    "table": t.name,
                    "rows_in": src.count(),
                    "rows_out": f.rows,
                    "duplicate_keys": dups.duplicate_keys,
                    "snapshots": len(table.snapshots()),
                    "files": f.files,
                }
            )
        result = {
            "plan": dataclasses.asdict(plan),
            "began": began,
            "fed_until": fed_until,
            "ended": time.time(),
            "tables": per_table,
            "faults": faults.done,
            "exits": self.supervisor.exits,
            "launches": self.supervisor.launches,
            "feed_failures": feeder.failed,
            "drain_rc": drain_rc,
            "drain_s": round(drain_s, 1),
            "reconcile_rc": reconcile_rc,
            "batches": self.ledger.batches(),
            "samples": self.samples,
            "iceberg": self.iceberg,
        }
        return result


def main(argv: list[str] | None = None) -> int:
    from coldtier.soak import report

    ap = argparse.ArgumentParser(
        prog="scripts/soak.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--duration", default="10m", help="how long the feed runs: 90s, 10m, 1h, 24h (default 10m)"
    )
    ap.add_argument("--tables", type=int, default=2)
    ap.add_argument("--rate", type=float, default=250.0, help="rows per second per table (default 250)")
    ap.add_argument("--trigger", default="15s", help="the job's processing-time interval (default 15s)")
    ap.add_argument("--fault-every", default="5m", help="mean time between faults (default 5m)")
    ap.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated kinds, or 'none' (default: all of {', '.join(FAULTS)})",
    )
    ap.add_argument(
        "--freeze", type=float, default=8.0, help="seconds a frozen service stays frozen (default 8)"
    )
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--out", help="result directory (default soak-results/<UTC timestamp>)")
    ap.add_argument("--keep-services", action="store_true", help="leave the services and their data behind")
    args = ap.parse_args(argv)
    kinds = () if args.faults == "none" else tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        print(
            f"soak: unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}", file=sys.stderr
        )
        return 2
    root = Path(__file__).resolve().parents[3]
    out = (
        Path(args.out) if args.out else root / "soak-results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    )
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        parse_duration(args.duration),
        args.tables,
        args.rate,
        args.trigger,
        fault_every_s=parse_duration(args.fault_every),
        faults=kinds,
        freeze_s=args.freeze,
        seed=args.seed,
    )
    soak = Soak(root, out.resolve(), plan)
    try:
        result = soak.run()
    finally:
        if soak.__dict__.get("supervisor"):
            soak.supervisor.stop.set()
            soak.supervisor.signal(signal.SIGKILL)
        if not args.keep_services:
            soak.services.destroy()
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    verdict = report.write(out, result)
    print(report.summary(result))
    print(f"soak: report in {out / 'soak.md'}")
    return 0 if verdict else 1
