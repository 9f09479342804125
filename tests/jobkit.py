"""Helpers for the job tests: configs pointing at the test services, and source==sink checks."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.synth import TradeTable
from helpers import CH_PASSWORD, ROOT, ChembedProcess

TRADE_COLUMNS = ["exchange", "symbol", "trade_id", "price", "quantity", "side",
                 "exchange_timestamp", "sequence_number", "ingested_at"]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@dataclass
class JobEnv:
    """One isolated pipeline: its own ClickHouse database, ledger schema and target tables."""

    chembed: ChembedProcess
    postgres: Any
    warehouse: Path
    tmp: Path
    catalog: str = "hadoop_cat"
    pipeline: str = ""
    database: str = ""
    sink: str = "iceberg"  # or "delta"

    def __post_init__(self) -> None:
        self.pipeline = self.pipeline or unique("p")
        self.database = self.database or unique("src")
        self.client.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")

    @property
    def client(self) -> ClickHouseHTTP:
        return self.chembed.client()

    def trades(self, exchange: str = "binance") -> TradeTable:
        t = TradeTable(self.client, exchange, self.database)
        t.create()
        return t

    def catalog_props(self) -> dict[str, str]:
        if self.catalog == "hadoop_cat":
            return {"type": "hadoop", "warehouse": str(self.warehouse / "hadoop")}
        pg = self.postgres
        return {"type": "jdbc", "uri": pg.jdbc_url, "jdbc.user": pg.user, "jdbc.password": pg.password,
                "warehouse": str(self.warehouse / "jdbc"), "jdbc.schema-version": "V1"}

    def delta_path(self, name: str) -> Path:
        return self.warehouse / "delta" / self.pipeline / name

    def target(self, name: str) -> str:
        if self.sink == "delta":
            return f"delta.`{self.delta_path(name)}`"
        return f"{self.catalog}.{self.pipeline}.{name}"

    def table_entry(self, name: str, source_table: str, **kw: Any) -> dict[str, Any]:
        where = ({"format": "delta", "path": str(self.delta_path(name))} if self.sink == "delta"
                 else {"catalog": self.catalog, "table": f"{self.pipeline}.{name}"})
        entry = {
            "name": name,
            "source": {"connection": "ch", "table": f"{self.database}.{source_table}"},
            "cursor": {"lag_s": 0, **kw.pop("cursor", {})},
            "batch": {"max_rows": 100_000, "num_partitions": 2, **kw.pop("batch", {})},
            "target": {**where, **kw.pop("target", {})},
        }
        entry.update(kw)
        return entry

    def write_config(self, tables: list[dict[str, Any]], **extra: Any) -> Path:
        pg = self.postgres
        doc = {
            "pipeline": self.pipeline,
            "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2",
                                                      "spark.ui.enabled": "false",
                                                      "spark.driver.host": "127.0.0.1"}},
            "sources": {"ch": {"url": self.chembed.jdbc_url, "user": "default",
                               "password": "${TEST_CH_PASSWORD}"}},
            "ledger": {"dsn": f"host={pg.host} port={pg.port} dbname={pg.dbname} user={pg.user} "
                              f"password=${{TEST_PG_PASSWORD}}"},
            "catalogs": {self.catalog: self.catalog_props()},
            "tables": tables,
        }
        doc.update(extra)
        path = self.tmp / f"{self.pipeline}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def env(self) -> dict[str, str]:
        return {**os.environ, "TEST_CH_PASSWORD": CH_PASSWORD, "TEST_PG_PASSWORD": self.postgres.password,
                "PYTHONPATH": f"{ROOT / 'lib'}", "COLDTIER_SPARK_LOG_LEVEL": "ERROR",
                "SPARK_SUBMIT_OPTS": c1_only(os.environ.get("SPARK_SUBMIT_OPTS", ""))}

    def run_process(self, config: Path, *args: str, extra_env: dict[str, str] | None = None,
                    timeout: float = 600) -> subprocess.CompletedProcess:
        """``python -m coldtier ...`` in a child process (its own JVM), for crash tests."""
        return subprocess.run([sys.executable, "-m", "coldtier", *args, "--config", str(config)],
                              env={**self.env(), **(extra_env or {})}, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)


SINKS = ["iceberg", "delta"]


def c1_only(opts: str) -> str:
    """The JVM options of a driver a test launches (``python -m coldtier``, spark-submit): C1
    only. Those drivers live seconds on small data, and C2's compilations cost more than they
    return there (a Delta kill test 84 -> 62 s). The shared session keeps the tiered default: it
    lives the whole run and replays batches of a million rows and more, where C1 alone is ~2x
    slower. Production, the demo and the bench keep the default too."""
    return opts if "TieredStopAtLevel" in opts else f"{opts} -XX:TieredStopAtLevel=1".strip()


def committed_batches(spark: Any, job: JobEnv, name: str) -> list[int | None]:
    """The batch id of every data commit of a target, oldest first (None: not coldtier's):
    Iceberg snapshots, or Delta WRITE commits."""
    import json

    target = job.target(name)
    if job.sink == "delta":
        rows = spark.sql(f"DESCRIBE HISTORY {target}").where("operation = 'WRITE'").orderBy("version").collect()
        docs = [json.loads(r.userMetadata) if r.userMetadata else {} for r in rows]
        return [int(d["coldtier.batch-id"]) if "coldtier.batch-id" in d else None for d in docs]
    # the table's history (main): a staged write that was never published is not a commit
    rows = spark.sql(f"SELECT s.summary FROM {target}.snapshots s JOIN {target}.history h ON s.snapshot_id = "
                     f"h.snapshot_id WHERE h.is_current_ancestor ORDER BY s.committed_at").collect()
    return [int(r.summary["coldtier.batch-id"]) if "coldtier.batch-id" in r.summary else None for r in rows]


def ch_fingerprint(client: ClickHouseHTTP, table: str) -> dict[str, str]:
    """Order-independent checksum of every trade column, computed by ClickHouse."""
    row = client.rows(f"""
        SELECT count() AS x_n, uniqExact(exchange, trade_id) AS x_keys,
               sum(toInt128(CRC32(exchange))) AS x_exchange, sum(toInt128(CRC32(symbol))) AS x_symbol,
               sum(toDecimal128(trade_id, 0)) AS x_trade_id, sum(toDecimal128(price, 8)) AS x_price,
               sum(toDecimal128(quantity, 8)) AS x_quantity, sum(toInt128(CRC32(side))) AS x_side,
               sum(toInt128(toUnixTimestamp64Micro(exchange_timestamp))) AS x_exchange_timestamp,
               sum(toDecimal128(sequence_number, 0)) AS x_sequence_number,
               sum(toInt128(toUnixTimestamp64Micro(ingested_at))) AS x_ingested_at
        FROM {table}""", settings={"output_format_json_quote_decimals": "1"})[0]
    return {k[2:]: _norm(v) for k, v in row.items()}


def spark_fingerprint(df: Any) -> dict[str, str]:
    """The same checksum computed by Spark over the Iceberg table."""
    from pyspark.sql import functions as F

    row = df.agg(
        F.count("*").alias("n"), F.countDistinct("exchange", "trade_id").alias("keys"),
        F.sum(F.crc32("exchange").cast("decimal(38,0)")).alias("exchange"), F.sum(F.crc32("symbol").cast("decimal(38,0)")).alias("symbol"),
        F.sum(F.col("trade_id").cast("decimal(38,0)")).alias("trade_id"),
        F.sum(F.col("price").cast("decimal(38,8)")).alias("price"),
        F.sum(F.col("quantity").cast("decimal(38,8)")).alias("quantity"),
        F.sum(F.crc32("side").cast("decimal(38,0)")).alias("side"),
        F.sum(F.unix_micros("exchange_timestamp").cast("decimal(38,0)")).alias("exchange_timestamp"),
        F.sum(F.col("sequence_number").cast("decimal(38,0)")).alias("sequence_number"),
        F.sum(F.unix_micros("ingested_at").cast("decimal(38,0)")).alias("ingested_at"),
    ).collect()[0].asDict()
    return {k: _norm(v) for k, v in row.items()}


def _norm(v: Any) -> str:
    from decimal import Decimal

    if v is None:
        return "0"
    d = Decimal(str(v))
    return format(d.normalize(), "f") if d != 0 else "0"


def progress_lines(stdout: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def run_inprocess(capsys: Any, config: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """``coldtier run`` inside the test process (sharing its SparkSession): exit code,
    progress lines, stderr."""
    from coldtier import cli

    code = cli.main(["run", "--config", str(config), *args])
    out = capsys.readouterr()
    return code, progress_lines(out.out), out.err


def assert_source_equals_sink(job: JobEnv, spark: Any, source_table: str, target: str) -> None:
    """Counts and order-independent checksums equal on both sides; no duplicate key."""
    want = ch_fingerprint(job.client, f"{job.database}.{source_table}")
    got = spark_fingerprint(spark.table(target))
    assert got == want
    assert got["keys"] == got["n"]


def offloaded(job: JobEnv, capsys: Any, name: str, rows: int, *args: str,
              **entry: Any) -> tuple[TradeTable, Path, list[dict[str, Any]]]:
    """``rows`` historical trades and a config whose table ``name`` copies them (``entry``: its
    YAML entry's other keys), after one run of it with ``args``: (trades, config, progress)."""
    trades = job.trades()
    trades.bulk(rows)
    cfg = job.write_config([job.table_entry(name, trades.table, **entry)])
    code, progress, err = run_inprocess(capsys, cfg, *args)
    assert code == 0, err
    return trades, cfg, progress


def three_batches(job: JobEnv, capsys: Any, name: str) -> tuple[TradeTable, Path]:
    """9000 trades offloaded in three committed 3000-row batches: the starting point of the
    ledger-corruption and lost-ledger tests."""
    trades, cfg, progress = offloaded(job, capsys, name, 9000, "--trigger", "available-now",
                                      batch={"max_rows": 3000})
    assert len(progress) == 3
    return trades, cfg


def table_runner(spark: Any, config: Path, ledger: Any = None) -> Any:
    """The ``TableRunner`` of a config's first table, in the test process: no fault, progress
    dropped; its own ledger connection unless one is given."""
    from coldtier import config as config_mod
    from coldtier.faults import FaultHook
    from coldtier.ledger import Ledger
    from coldtier.loop import TableRunner

    conf = config_mod.load(config)
    return TableRunner(conf, conf.tables[0], spark, ledger or Ledger(conf.ledger.dsn), FaultHook({}),
                       lambda _: None)


def live_feed(job: JobEnv, seconds: int, rate: int = 200) -> subprocess.Popen:
    """The synthetic production feed (``coldtier.synth live``) into the job's binance table."""
    return subprocess.Popen(
        [sys.executable, "-m", "coldtier.synth", "--url", job.chembed.http_url, "--password-env",
         "TEST_CH_PASSWORD", "--database", job.database, "--exchange", "binance", "live", "--rate", str(rate),
         "--interval", "0.5", "--duration", str(seconds)], env=job.env(), stdout=subprocess.DEVNULL)


def sql(job: JobEnv, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
    """One statement on the test PostgreSQL (the ledger's database), autocommit."""
    import psycopg2

    conn = psycopg2.connect(job.postgres.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def restart_postgres(job: JobEnv) -> None:
    """``pg_ctl restart -m fast`` of the test PostgreSQL (every connection is cut: SQLSTATE 57P01).
    The restarted postmaster would keep a captured pipe open: its output goes to its log."""
    log = str(job.postgres.datadir) + "/../postgres.log"
    done = subprocess.run([str(ROOT / "scripts" / "pg_ctl"), "restart", "-w", "-m", "fast", "-D",
                           job.postgres.datadir, "-l", log], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0


def batch_gate(job: JobEnv, table: str, batch_id: int) -> Path:
    """The chembed gate path for one batch's reads (see chembed.server.Gates)."""
    from chembed.server import Gates
    from coldtier.source import query_tag

    return job.chembed.gate_dir / Gates.name(query_tag(job.pipeline, table, batch_id))


def while_held(gate: Path, action: Any, what: str) -> Any:
    """Hold a batch's reads at the source, run ``action`` once they arrive, then let them go; in
    a thread (the run under test needs the main thread for its signal handlers)."""
    import threading

    from helpers import wait_until

    gate.with_suffix(".hold").touch()

    def run() -> None:
        try:
            wait_until(lambda: gate.with_suffix(".arrived").exists(), 120, what)
            action()
        finally:
            gate.with_suffix(".hold").unlink()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
