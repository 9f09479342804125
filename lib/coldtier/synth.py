"""Synthetic market trades shaped like the production bronze tables.

``python -m coldtier.synth bulk --rows 1000000`` fills a table; ``live`` inserts at a
rate until stopped. The rows are generated inside ClickHouse (``INSERT ... SELECT FROM
numbers()``), so ten million rows take seconds, and the same code works against a real
ClickHouse server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass

from coldtier.clickhouse_http import ClickHouseHTTP

EXCHANGES = ("binance", "kraken")
N_SYMBOLS = 50

DDL = """
CREATE TABLE IF NOT EXISTS {db}.{table}
(
    exchange LowCardinality(String),
    symbol LowCardinality(String),
    trade_id UInt64,
    price Decimal(18, 8),
    quantity Decimal(18, 8),
    side LowCardinality(String),
    exchange_timestamp DateTime64(3, 'UTC'),
    sequence_number UInt64,
    ingested_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (exchange_timestamp, sequence_number)
TTL toDateTime(exchange_timestamp) + {ttl}
"""

# Columns computed from `number` (the row's sequence number); {ts} is the timestamp expression.
_SELECT = """
SELECT
    '{exchange}' AS exchange,
    concat('SYM', leftPad(toString(cityHash64(number, 1) % {n_symbols}), 2, '0'), '-USDT') AS symbol,
    number AS trade_id,
    toDecimal64(100 + (cityHash64(number, 2) % 10000000) / 1000, 8) AS price,
    toDecimal64((cityHash64(number, 3) % 100000000) / 100000000 + 0.00000001, 8) AS quantity,
    if(cityHash64(number, 4) % 2 = 0, 'buy', 'sell') AS side,
    {ts} AS exchange_timestamp,
    number AS sequence_number,
    now64(6, 'UTC') AS ingested_at
FROM numbers({start}, {rows})
"""


@dataclass(frozen=True)
class TradeTable:
    client: ClickHouseHTTP
    exchange: str
    database: str = "k2"
    ttl: str = "INTERVAL 30 DAY"

    @property
    def table(self) -> str:
        return f"bronze_trades_{self.exchange}"

    @property
    def fqn(self) -> str:
        return f"{self.database}.{self.table}"

    def create(self) -> None:
        self.client.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self.client.execute(
            DDL.format(db=self.database, table=self.table, ttl=self.ttl)
        )

    def next_sequence(self) -> int:
        return int(self.client.scalar(
            f"SELECT if(count() = 0, 0, max(sequence_number) + 1) FROM {self.fqn}"))

    def count(self) -> int:
        return int(self.client.scalar(f"SELECT count() FROM {self.fqn}"))

    def insert(self, rows: int, ts_expr: str, start: int | None = None) -> int:
        """Insert ``rows`` rows with sequence numbers from ``start``; returns the next one."""
        first = self.next_sequence() if start is None else start
        cols = "exchange, symbol, trade_id, price, quantity, side, exchange_timestamp, sequence_number, " \
               "ingested_at"
        sql = f"INSERT INTO {self.fqn} ({cols}) " + _SELECT.format(
            exchange=self.exchange, n_symbols=N_SYMBOLS, ts=ts_expr, start=first, rows=rows
        )
        self.client.execute(sql)
        return first + rows

    def bulk(self, rows: int, end_ms_ago: int = 600_000, step_ms: int = 1,
             equal_timestamps: int = 1, late_fraction: float = 0.0) -> int:
        """Historical rows, ``step_ms`` apart, ``equal_timestamps`` rows per timestamp,
        the newest ``end_ms_ago`` ms before the server's now; ``late_fraction`` of them are
        moved up to an hour into the past (inserted late, behind the rest)."""
        first = self.next_sequence()
        span = (rows // max(equal_timestamps, 1)) * step_ms
        base = f"(now64(3, 'UTC') - toIntervalMillisecond({end_ms_ago + span}))"
        per_ts = max(equal_timestamps, 1)
        ts = f"{base} + toIntervalMillisecond(intDiv(number - {first}, {per_ts}) * {step_ms})"
        if late_fraction > 0:
            cut = int(late_fraction * 1_000_000)
            ts = (f"if(cityHash64(number, 5) % 1000000 < {cut}, "
                  f"{ts} - toIntervalMillisecond(cityHash64(number, 6) % 3600000), {ts})")
        return self.insert(rows, ts, first)

    def live_tick(self, rows: int, start: int) -> int:
        """Rows stamped with the server's current time (a live feed)."""
        return self.insert(rows, "now64(3, 'UTC')", start)


def venues(n: int) -> list[str]:
    """The exchange names of ``n`` synthetic venues: v000, v001, …"""
    return [f"v{i:03d}" for i in range(n)]


# scripts/dev-services.sh's defaults, for a fresh shell next to the dev services
DEV_PORT = "18123"
DEV_PASSWORD = "dev-ch-Q7v2p"


def _client(args: argparse.Namespace) -> ClickHouseHTTP:
    password = os.environ.get(args.password_env)
    if password is None:
        print(f"coldtier.synth: ${args.password_env} is not set: using the dev services' default password "
              f"(scripts/dev-services.sh)", file=sys.stderr)
        password = DEV_PASSWORD
    return ClickHouseHTTP(args.url, args.user, password, "default")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coldtier.synth", description=__doc__)
    ap.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('COLDTIER_CH_PORT', DEV_PORT)}",
                    help="ClickHouse HTTP URL (default: the dev services', port $COLDTIER_CH_PORT or 18123)")
    ap.add_argument("--user", default="default")
    ap.add_argument("--password-env", default="COLDTIER_CH_PASSWORD")
    ap.add_argument("--database", default="k2")
    ap.add_argument("--exchange", action="append", choices=EXCHANGES,
                    help="repeatable; default: both")
    ap.add_argument("--venues", type=int, default=0, metavar="N",
                    help="instead of the exchanges: N venues, tables bronze_trades_v000 … (many-table runs)")
    sub = ap.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("bulk", help="insert N historical rows per exchange")
    b.add_argument("--rows", type=int, required=True)
    b.add_argument("--step-ms", type=int, default=1)
    b.add_argument("--equal-timestamps", type=int, default=1, help="rows sharing each timestamp")
    b.add_argument("--late-fraction", type=float, default=0.0)
    b.add_argument("--end-ms-ago", type=int, default=600_000)
    lv = sub.add_parser("live", help="insert at a rate until stopped (SIGTERM/SIGINT)")
    lv.add_argument("--rate", type=float, default=200.0, help="rows per second per exchange")
    lv.add_argument("--interval", type=float, default=1.0, help="seconds between inserts")
    lv.add_argument("--duration", type=float, default=0.0, help="stop after N seconds (0 = never)")
    args = ap.parse_args(argv)

    client = _client(args)
    names = venues(args.venues) or args.exchange or EXCHANGES
    tables = [TradeTable(client, ex, args.database) for ex in names]
    for t in tables:
        t.create()
    if args.mode == "bulk":
        for t in tables:
            started = time.perf_counter()
            t.bulk(args.rows, args.end_ms_ago, args.step_ms, args.equal_timestamps,
                   args.late_fraction)
            print(f"{t.fqn}: +{args.rows} rows in {time.perf_counter() - started:.2f}s, "
                  f"{t.count()} in all", flush=True)
        return 0

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    seqs = {t.fqn: t.next_sequence() for t in tables}
    per_tick = max(1, round(args.rate * args.interval))
    began = time.monotonic()
    ticks = 0
    while not stop and (args.duration <= 0 or time.monotonic() - began < args.duration):
        for t in tables:
            seqs[t.fqn] = t.live_tick(per_tick, seqs[t.fqn])
        ticks += 1
        delay = began + ticks * args.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(f"live: {ticks} ticks x {per_tick} rows per exchange", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
