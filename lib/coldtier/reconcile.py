"""Reconciliation: compare ClickHouse and Iceberg per time bucket, and repair buckets.

Both sides compute the same order-independent fingerprint per bucket, natively:
count, and per column a sum that does not depend on row order (CRC32 of strings, exact
decimal sums of numbers, epoch microseconds of timestamps, counts of non-NULL values).
Float columns are compared by their non-NULL count only (float sums depend on order).

A repair re-copies one bucket in one Iceberg commit: a MERGE on the cursor key that inserts
the rows Iceberg lacks and deletes the rows of that bucket the source no longer has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.config import TableConfig
from coldtier.offset import CursorSpec
from coldtier.source import SourceColumn, projection, quote, unwrap

_STRINGY = re.compile(r"^(String|FixedString\(\d+\)|UUID|IPv4|IPv6|Enum8\(.*\)|Enum16\(.*\))$", re.S)
_NUMERIC = re.compile(r"^(U?Int(8|16|32|64|128|256)|Decimal(32|64|128|256)?\(.*\))$")
_TIME = re.compile(r"^DateTime64?(\(.*\))?$")


def parse_bucket(text: str) -> int:
    """'1h' / '15m' / '1d' / '30s' → seconds."""
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"bad --bucket {text!r}: use e.g. 15m, 1h, 1d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@dataclass(frozen=True)
class Measure:
    name: str
    ch_sql: str
    kind: str  # crc | num | time | count | bool
    scale: int = 0


def measures(columns: list[SourceColumn]) -> list[Measure]:
    out = [Measure("rows", "count()", "count")]
    for c in columns:
        base, q = unwrap(c.ch_type), quote(c.name)
        if _STRINGY.match(base):
            out.append(Measure(c.name, f"sum(toInt128(CRC32(toString({q}))))", "crc"))
        elif _NUMERIC.match(base):
            out.append(Measure(c.name, f"toString(sum(toDecimal256({q}, {_scale(base)})))", "num",
                               _scale(base)))
        elif _TIME.match(base):
            micros = f"toUnixTimestamp64Micro(toDateTime64({q}, 6))"
            out.append(Measure(c.name, f"sum(toInt128({micros}))", "time"))
        elif base == "Bool":
            out.append(Measure(c.name, f"countIf({q})", "bool"))
        else:  # floats (order-dependent sums), dates and others: non-NULL count
            out.append(Measure(c.name, f"count({q})", "count"))
    return out


def _scale(base: str) -> int:
    m = re.match(r"^Decimal(?:32|64|128|256)?\((?:\d+\s*,\s*)?(\d+)\)$", base)
    if base.startswith("Decimal") and m:
        return int(m.group(1))
    return 0


def _norm(v: Any) -> str:
    if v is None:
        return "0"
    d = Decimal(str(v))
    return format(d.normalize(), "f") if d != 0 else "0"


def source_buckets(client: ClickHouseHTTP, t: TableConfig, spec: CursorSpec, cols: list[SourceColumn],
                   since_s: int, until_s: int | None, bucket_s: int) -> dict[int, tuple[str, ...]]:
    ms = measures(cols)
    ts = spec.ts_col
    where = f"{ts} >= toDateTime({since_s}, 'UTC')"
    if until_s is not None:
        where += f" AND {ts} < toDateTime({until_s}, 'UTC')"
    sel = ", ".join(f"{m.ch_sql} AS m{i}" for i, m in enumerate(ms))
    rows = client.rows(f"SELECT intDiv(toUnixTimestamp({ts}), {bucket_s}) * {bucket_s} AS b, {sel} "
                       f"FROM {t.source_table} WHERE {where} GROUP BY b ORDER BY b",
                       settings={"output_format_json_quote_64bit_integers": "1"})
    return {int(r["b"]): tuple(_norm(r[f"m{i}"]) for i in range(len(ms))) for r in rows}


def sink_buckets(spark: Any, target: str, spec: CursorSpec, cols: list[SourceColumn], since_s: int,
                 until_s: int | None, bucket_s: int) -> dict[int, tuple[str, ...]]:
    from pyspark.sql import functions as F

    ms = measures(cols)
    ts = F.col(spec.ts_col)
    df = spark.table(target).where(F.unix_seconds(ts) >= since_s)
    if until_s is not None:
        df = df.where(F.unix_seconds(ts) < until_s)
    aggs = []
    for i, m in enumerate(ms):
        c = F.col(f"`{m.name}`") if m.name != "rows" else None
        if m.kind == "count" and c is None:
            e = F.count(F.lit(1))
        elif m.kind == "count":
            e = F.count(c)
        elif m.kind == "crc":
            e = F.sum(F.crc32(c.cast("string")).cast("decimal(38,0)"))
        elif m.kind == "num":
            e = F.sum(c.cast(f"decimal(38,{m.scale})"))
        elif m.kind == "time":
            e = F.sum(F.unix_micros(c).cast("decimal(38,0)"))
        else:
            e = F.count(F.when(c, 1))
        aggs.append(e.alias(f"m{i}"))
    bucket = (F.floor(F.unix_seconds(ts) / bucket_s) * bucket_s).cast("long").alias("b")
    rows = df.groupBy(bucket).agg(*aggs).collect()
    return {int(r["b"]): tuple(_norm(r[f"m{i}"]) for i in range(len(ms))) for r in rows}


@dataclass(frozen=True)
class Mismatch:
    bucket_start: int
    source_rows: int
    sink_rows: int
    columns: tuple[str, ...]


def compare(cols: list[SourceColumn], src: dict[int, tuple[str, ...]],
            snk: dict[int, tuple[str, ...]]) -> list[Mismatch]:
    names = [m.name for m in measures(cols)]
    out = []
    for b in sorted(set(src) | set(snk)):
        a, z = src.get(b), snk.get(b)
        if a == z:
            continue
        a = a or ("0",) * len(names)
        z = z or ("0",) * len(names)
        diff = tuple(n for n, x, y in zip(names, a, z, strict=True) if x != y)
        out.append(Mismatch(b, int(a[0]), int(z[0]), diff))
    return out


def repair_bucket(spark: Any, source: Any, target: str, spec: CursorSpec, bucket_start: int,
                  bucket_s: int) -> None:
    """Make one bucket of the Iceberg table equal to the source, in one commit (idempotent):
    insert what is missing, delete what the source no longer has, keyed on the cursor."""
    ts = spec.ts_col
    cols = ", ".join(projection(source.columns, source.table.keep_nanos))
    where = (f"{ts} >= toDateTime({bucket_start}, 'UTC') AND "
             f"{ts} < toDateTime({bucket_start + bucket_s}, 'UTC')")
    props = source.jdbc_properties_base()
    df = spark.read.jdbc(source.source.url,
                         f"(SELECT {cols} FROM {source.table.source_table} WHERE {where}) AS coldtier_repair",
                         properties=props)
    view = f"coldtier_repair_{bucket_start}"
    df.createOrReplaceTempView(view)
    in_bucket = (f"unix_seconds(t.`{ts}`) >= {bucket_start} AND "
                 f"unix_seconds(t.`{ts}`) < {bucket_start + bucket_s}")
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in spec.key_columns())
    spark.sql(f"MERGE INTO {target} t USING {view} s ON {on} "
              f"WHEN NOT MATCHED THEN INSERT * "
              f"WHEN NOT MATCHED BY SOURCE AND {in_bucket} THEN DELETE")
    spark.catalog.dropTempView(view)
