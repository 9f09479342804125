#!/usr/bin/env python3
"""How fast the embedded ClickHouse serves the real JDBC driver (issue: foundation).

Needs the dev services (scripts/dev-services.sh start). Fills k2.bench_trades with N synthetic
trades once, then reads `SELECT *` through Spark's JDBC reader with the driver's defaults
(compressed framing) into Spark's no-op sink, and prints rows/s. A plain HTTP read of the
same result (compressed RowBinaryWithNamesAndTypes, no decoding) is printed beside it.

    .venv/bin/python scripts/bench-chembed.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from coldtier import deps  # noqa: E402
from coldtier.clickhouse_http import ClickHouseHTTP  # noqa: E402
from coldtier.spark import build_session  # noqa: E402
from coldtier.synth import TradeTable  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    args = ap.parse_args()
    port = os.environ.get("COLDTIER_CH_PORT", "18123")
    password = os.environ.get("COLDTIER_CH_PASSWORD", "dev-ch-Q7v2p")
    ch = ClickHouseHTTP(f"http://127.0.0.1:{port}", "default", password)
    table = TradeTable(ch, "bench", "k2")
    table.create()
    if table.count() != args.rows:
        ch.execute(f"TRUNCATE TABLE {table.fqn}")
        table.bulk(args.rows)

    t = time.perf_counter()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/?default_format=RowBinaryWithNamesAndTypes&compress=1"
        "&use_query_condition_cache=0", data=f"SELECT * FROM {table.fqn}".encode(),
        headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": password})
    n = 0
    with urllib.request.urlopen(req) as r:
        while chunk := r.read(1 << 20):
            n += len(chunk)
    http_s = time.perf_counter() - t
    print(f"HTTP, compressed, no client decoding: {args.rows / http_s:,.0f} rows/s "
          f"({n / http_s / 1e6:,.0f} MB/s on the wire)")

    spark = build_session("bench-chembed", {
        "spark.jars.packages": deps.load().packages_arg, "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false", "spark.driver.memory": "2g"}, master="local[2]")
    spark.sparkContext.setLogLevel("ERROR")
    props = {"driver": "com.clickhouse.jdbc.ClickHouseDriver", "user": "default", "password": password,
             "clickhouse_setting_use_query_condition_cache": "0"}
    url = f"jdbc:clickhouse://127.0.0.1:{port}/default"
    for parts in (1, 2):
        preds = [f"sequence_number % {parts} = {i}" for i in range(parts)]
        df = spark.read.jdbc(url, table.fqn, predicates=preds, properties=props)
        t = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        s = time.perf_counter() - t
        print(f"Spark JDBC (real driver, defaults), {parts} partition(s): "
              f"{args.rows / s:,.0f} rows/s ({s:.1f} s)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
