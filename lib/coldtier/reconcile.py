"""Reconciliation: compare ClickHouse and the sink per time bucket, and repair buckets.

Both sides compute the same order-independent fingerprint per bucket, natively, from the
column mappings the copy itself uses (``coldtier.types``): the row count, and per column the
count of non-NULL values plus either the exact sum of an integer form (timestamps as epoch
microseconds, dates as days, integers, booleans) or the sum of CRC32s of a canonical text
(decimals at full scale, floats by their bits, strings and bytes by their bytes, containers
element by element). A one-microsecond shift, one decimal digit or one byte changes it.

Result columns are read by position and aliased with names no source column has, so no
column name can collide with them.

A repair re-copies one bucket in one commit: a MERGE on the cursor key that inserts the rows
the sink lacks and deletes the rows of that bucket the source no longer has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.offset import CursorSpec
from coldtier.types import ColumnMapping, spark_quote, unique_name


def parse_bucket(text: str) -> int:
    """'1h' / '15m' / '1d' / '30s' → seconds."""
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"bad --bucket {text!r}: use e.g. 15m, 1h, 1d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@dataclass(frozen=True)
class Measure:
    """One number per bucket: ``kind`` count (non-NULL values), sum (exact integer sum) or crc
    (sum of CRC32s) of a per-row expression, written for ClickHouse and for Spark."""

    name: str  # the column (or "rows")
    kind: str
    ch_row: str
    spark_row: str

    def ch_sql(self) -> str:
        return {"count": f"count({self.ch_row})", "sum": f"sum(toInt128({self.ch_row}))",
                "crc": f"sum(toInt128(CRC32({self.ch_row})))"}[self.kind]

    def spark_row_sql(self) -> str:
        """The per-row value the Spark aggregate sums or counts (computed below the aggregate:
        Spark refuses non-deterministic ``java_method`` inside one)."""
        return f"crc32(cast({self.spark_row} as binary))" if self.kind == "crc" else self.spark_row

    def spark_agg(self, col: str) -> str:
        return f"count({col})" if self.kind == "count" else f"sum(cast({col} as decimal(38,0)))"


def measures(mappings: list[ColumnMapping]) -> list[Measure]:
    out = [Measure("rows", "count", "1", "1")]
    for m in mappings:
        out.append(Measure(m.name, "count", m.fp_ch, spark_quote(m.name)))
        out.append(Measure(m.name, "sum" if m.fp_kind == "int" else "crc", m.fp_ch, m.fp_spark))
    return out


def _norm(v: Any) -> str:
    """Every measure is an integer (counts, exact sums): its exact decimal text."""
    return "0" if v is None else str(int(v))


def _micros(mappings: list[ColumnMapping], ts_col: str) -> ColumnMapping:
    for m in mappings:
        if m.name == ts_col.strip("`"):
            return m
    raise ValueError(f"the cursor's timestamp column {ts_col} is not copied")


def source_buckets(client: ClickHouseHTTP, source_table: str, spec: CursorSpec, mappings: list[ColumnMapping],
                   since_s: int, until_s: int | None, bucket_s: int) -> dict[int, tuple[str, ...]]:
    ms = measures(mappings)
    taken = {m.name.lower() for m in mappings}
    b, width = unique_name("ct_bucket", taken), bucket_s * 1_000_000
    micros = _micros(mappings, spec.ts_col or "").fp_ch
    where = f"{micros} >= {since_s * 1_000_000}"
    if until_s is not None:
        where += f" AND {micros} < {until_s * 1_000_000}"
    sel = ", ".join(f"{m.ch_sql()} AS {unique_name(f'ct_m{i}', taken)}" for i, m in enumerate(ms))
    out = client.query(
        f"SELECT intDiv({micros} - positiveModulo({micros}, {width}), {width}) * {bucket_s} AS {b}, {sel} "
        f"FROM {source_table} WHERE {where} GROUP BY {b} ORDER BY {b}", fmt="JSONCompactEachRow",
        settings={"output_format_json_quote_64bit_integers": "1"})
    import json

    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {int(r[0]): tuple(_norm(v) for v in r[1:]) for r in rows}


def sink_buckets(spark: Any, target: str, spec: CursorSpec, mappings: list[ColumnMapping], since_s: int,
                 until_s: int | None, bucket_s: int) -> dict[int, tuple[str, ...]]:
    ms = measures(mappings)
    taken = {m.name.lower() for m in mappings}
    width = bucket_s * 1_000_000
    micros = _micros(mappings, spec.ts_col or "").fp_spark
    where = f"{micros} >= {since_s * 1_000_000}"
    if until_s is not None:
        where += f" AND {micros} < {until_s * 1_000_000}"
    b = unique_name("ct_bucket", taken)
    cols = [unique_name(f"ct_v{i}", taken) for i in range(len(ms))]
    rows_sql = ", ".join(f"{m.spark_row_sql()} AS {c}" for m, c in zip(ms, cols, strict=True))
    aggs = ", ".join(m.spark_agg(c) for m, c in zip(ms, cols, strict=True))
    rows = spark.sql(f"SELECT {b}, {aggs} FROM (SELECT ({micros} - pmod({micros}, {width})) div {width} * "
                     f"{bucket_s} AS {b}, {rows_sql} FROM {target} WHERE {where}) GROUP BY {b}").collect()
    return {int(r[0]): tuple(_norm(v) for v in list(r)[1:]) for r in rows}


@dataclass(frozen=True)
class Mismatch:
    bucket_start: int
    source_rows: int
    sink_rows: int
    columns: tuple[str, ...]


def compare(mappings: list[ColumnMapping], src: dict[int, tuple[str, ...]],
            snk: dict[int, tuple[str, ...]]) -> list[Mismatch]:
    names = [m.name for m in measures(mappings)]
    out = []
    for b in sorted(set(src) | set(snk)):
        a, z = src.get(b), snk.get(b)
        if a == z:
            continue
        a = a or ("0",) * len(names)
        z = z or ("0",) * len(names)
        diff = tuple(dict.fromkeys(n for n, x, y in zip(names, a, z, strict=True) if x != y))
        out.append(Mismatch(b, int(a[0]), int(z[0]), diff))
    return out


def repair_bucket(spark: Any, source: Any, target: str, spec: CursorSpec, bucket_start: int,
                  bucket_s: int) -> None:
    """Make one bucket of the Iceberg table equal to the source, in one commit (idempotent):
    insert what is missing, delete what the source no longer has, keyed on the cursor."""
    ts = spec.ts_col
    where = (f"{ts} >= toDateTime({bucket_start}, 'UTC') AND "
             f"{ts} < toDateTime({bucket_start + bucket_s}, 'UTC')")
    df = source.read_where(spark, where, "coldtier_repair")
    view = f"coldtier_repair_{bucket_start}"
    df.createOrReplaceTempView(view)
    in_bucket = (f"unix_seconds(t.`{ts}`) >= {bucket_start} AND "
                 f"unix_seconds(t.`{ts}`) < {bucket_start + bucket_s}")
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in spec.key_columns())
    spark.sql(f"MERGE INTO {target} t USING {view} s ON {on} "
              f"WHEN NOT MATCHED THEN INSERT * "
              f"WHEN NOT MATCHED BY SOURCE AND {in_bucket} THEN DELETE")
    spark.catalog.dropTempView(view)
