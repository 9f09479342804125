"""The benchmark's no-Spark measurements, taken in the same run as coldtier's cells.

- ``source_ceiling``: ClickHouse exporting the table (``SELECT *``, RowBinaryWithNamesAndTypes
  over HTTP, read and discarded): no consumer can read faster than this;
- ``peer_path``: ClickHouse → Arrow → PyIceberg append into a fresh Iceberg table (SQLite
  catalog, local warehouse): a single-process path without Spark, the alternative a
  reviewer would propose.

Both turn ClickHouse's query condition cache off: it would flatter repeated identical
range queries.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP

NO_CACHE = {"use_query_condition_cache": "0"}
CHUNK = 1 << 20


def source_ceiling(client: ClickHouseHTTP, table: str, rows: int) -> dict[str, Any]:
    """Seconds to export every row, and RowBinary bytes per row (for MB/s figures)."""
    started = time.perf_counter()
    size = 0
    with client.stream(f"SELECT * FROM {table}", "RowBinaryWithNamesAndTypes", NO_CACHE) as body:
        while chunk := body.read(CHUNK):
            size += len(chunk)
    seconds = time.perf_counter() - started
    return {"kind": "source-ceiling", "rows": rows, "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds), "bytes": size, "bytes_per_row": round(size / rows, 1)}


def _iceberg_compatible(table: Any) -> Any:
    """Arrow types Iceberg has: dictionaries decoded, unsigned ints widened to signed,
    timestamps in microseconds."""
    import pyarrow as pa

    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_unsigned_integer(t):
            t = pa.int64()
        if pa.types.is_timestamp(t):
            t = pa.timestamp("us", tz=t.tz)
        if pa.types.is_large_string(t) or pa.types.is_binary(t):
            t = pa.string()
        fields.append(pa.field(f.name, t, nullable=f.nullable))
    return table.cast(pa.schema(fields))


def peer_path(client: ClickHouseHTTP, table: str, rows: int, warehouse: Path) -> dict[str, Any]:
    """ClickHouse → Arrow (ArrowStream over HTTP) → PyIceberg append (zstd Parquet)."""
    import pyarrow.ipc as ipc
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog("peer", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
    catalog.create_namespace_if_not_exists("peer")
    started = time.perf_counter()
    with client.stream(f"SELECT * FROM {table}", "ArrowStream",
                       {**NO_CACHE, "output_format_arrow_string_as_string": "1"}) as body:
        data = _iceberg_compatible(ipc.open_stream(body).read_all())
    read_s = time.perf_counter() - started
    target = catalog.create_table(f"peer.t{int(time.time() * 1000)}", schema=data.schema,
                                  properties={"write.parquet.compression-codec": "zstd"})
    target.append(data)
    seconds = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    written = sum(p.stat().st_size for p in warehouse.rglob("*.parquet"))
    return {"kind": "peer-path", "rows": data.num_rows, "seconds": round(seconds, 3),
            "rows_per_s": round(data.num_rows / seconds), "read_s": round(read_s, 3),
            "write_s": round(seconds - read_s, 3), "bytes_written": written,
            "peak_rss_mb": round(peak_rss_mb)}
