"""Reconciliation: compare ClickHouse and the sink per time bucket, and repair buckets.

Both sides compute the same order-independent fingerprint per bucket, natively, from the
column mappings the copy itself uses (``coldtier.types``): the row count, and per column the
count of non-NULL values plus either the exact sum of an integer form (timestamps as epoch
microseconds, dates as days, integers, booleans) or the sum of CRC32s of a canonical text
(decimals at full scale, floats by their bits, strings and bytes by their bytes, containers
element by element). A one-microsecond shift, one decimal digit or one byte changes it.

Result columns are read by position and aliased with names no source column has, so no
column name can collide with them.

Both sides only ever look at rows at or below the committed watermark (the exact cursor
tuple): rows above it belong to the loop, which will copy them. A mismatched bucket that
starts before the oldest row the source still holds (TTL, dropped partitions) is reported as
``source_expired`` and never repaired: the cold tier is the system of record there.

A repair inserts, in one commit per bucket, the multiset difference source − sink of whole
rows (``exceptAll``): rows the sink lacks, duplicates included, whatever the cursor key. It
never deletes or rewrites a row, so rows another writer put in the target and rows the hot
tier has aged out survive; rows the sink has beyond the source are reported for an operator.
Running it again inserts nothing.

Just over 300 lines: the measures (pure) and their orchestration; the measures could become
their own module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.errors import UsageError
from coldtier.offset import CursorSpec, Offset
from coldtier.types import ColumnMapping, spark_quote, unique_name


def parse_bucket(text: str) -> int:
    """'1h' / '15m' / '1d' / '30s' → seconds."""
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"bad --bucket {text!r}: use e.g. 15m, 1h, 1d")
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
    raise UsageError(f"the cursor's timestamp column {ts_col} is not copied")


def source_buckets(client: ClickHouseHTTP, source_table: str, spec: CursorSpec, mappings: list[ColumnMapping],
                   since_s: int, until_s: int | None, bucket_s: int,
                   clip: str = "1") -> dict[int, tuple[str, ...]]:
    ms = measures(mappings)
    taken = {m.name.lower() for m in mappings}
    b, width = unique_name("ct_bucket", taken), bucket_s * 1_000_000
    micros = _micros(mappings, spec.ts_col or "").fp_ch
    where = f"{micros} >= {since_s * 1_000_000} AND ({clip})"
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
                 until_s: int | None, bucket_s: int, clip: str = "true") -> dict[int, tuple[str, ...]]:
    ms = measures(mappings)
    taken = {m.name.lower() for m in mappings}
    width = bucket_s * 1_000_000
    micros = _micros(mappings, spec.ts_col or "").fp_spark
    where = f"{micros} >= {since_s * 1_000_000} AND ({clip})"
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


@dataclass(frozen=True)
class Clip:
    """``cursor <= watermark`` on both sides, in the forms both can compute exactly: the
    timestamp as epoch microseconds and the incrementing column as an integer. A
    ``DateTime64(7..9)`` watermark cannot be told apart inside its microsecond at the sink, so
    that last microsecond is left for the next reconcile (never compared half-copied)."""

    ch: str
    spark: str


def clip_to_watermark(spec: CursorSpec, mappings: list[ColumnMapping], wm: Offset | None) -> Clip:
    if wm is None or wm.ts is None:
        return Clip("0", "false")  # nothing committed yet: nothing to compare
    by_name = {m.name: m for m in mappings}
    ts = by_name[(spec.ts_col or "").strip("`")]
    inc = by_name[spec.inc_col.strip("`")] if spec.inc_col is not None else None
    exact = spec.ts_scale <= 6
    w = wm.ts * 10 ** (6 - spec.ts_scale) if exact else wm.ts // 10 ** (spec.ts_scale - 6)

    def cond(t: str, i: str | None) -> str:
        if not exact:
            return f"{t} < {w}"
        if i is None:
            return f"{t} <= {w}"
        return f"{t} < {w} OR ({t} = {w} AND {i} <= {int(wm.inc or 0)})"

    return Clip(cond(ts.fp_ch, inc.fp_ch if inc else None), cond(ts.fp_spark, inc.fp_spark if inc else None))


def end_checks(spec: CursorSpec, mappings: list[ColumnMapping], wm: Offset) -> tuple[str, str, str]:
    """Spark SQL over the target: (rows past ``wm``, the row at ``wm``, a filter that lets the
    table's file statistics skip the rest): whether the cold rows end exactly at a watermark."""
    by_name = {m.name: m for m in mappings}
    beyond, at, prune = [], [], "true"
    if spec.ts_col is not None and wm.ts is not None:
        ts = by_name[spec.ts_col.strip("`")]
        w = wm.ts * 10 ** (6 - spec.ts_scale) if spec.ts_scale <= 6 else wm.ts // 10 ** (spec.ts_scale - 6)
        beyond.append(f"{ts.fp_spark} > {w}")
        at.append(f"{ts.fp_spark} = {w}")
        if ts.spark_type == "timestamp":
            prune = f"{spark_quote(ts.name)} >= timestamp_micros({w})"
    if spec.inc_col is not None and wm.inc is not None:
        inc = by_name[spec.inc_col.strip("`")]
        past = f"{inc.fp_spark} > {int(wm.inc)}"
        beyond = [f"{beyond[0]} OR ({at[0]} AND {past})"] if beyond else [past]
        at.append(f"{inc.fp_spark} = {int(wm.inc)}")
    return f"({beyond[0]})", " AND ".join(at), prune


def rows_end_at(spark: Any, target: str, spec: CursorSpec, mappings: list[ColumnMapping],
                wm: Offset | None) -> bool:
    """The cold table holds the row at ``wm`` (the end of the ledger's last batch) and none past
    it: the table's rows confirm the ledger's watermark where the table's own record of the
    batches is gone (expired snapshots)."""
    names = {m.name for m in mappings}
    if wm is None or (wm.ts is None and wm.inc is None) or \
            any(c is not None and c.strip("`") not in names for c in (spec.ts_col, spec.inc_col)):
        return False  # nothing to compare (a cursor column not copied: tables[].columns exclude)
    beyond, at, prune = end_checks(spec, mappings, wm)
    row = spark.sql(f"SELECT count_if({beyond}) AS beyond, count_if({at}) AS at FROM {target} "
                    f"WHERE {prune}").collect()[0]
    return int(row["beyond"]) == 0 and int(row["at"]) > 0


@dataclass(frozen=True)
class BucketReport:
    mismatch: Mismatch
    expired: bool  # starts before the oldest row the source still holds: never repaired

    def to_json(self, table: str) -> dict[str, Any]:
        import datetime as dt

        m = self.mismatch
        return {"table": table, "bucket": dt.datetime.fromtimestamp(m.bucket_start, dt.UTC).isoformat(),
                "source_rows": m.source_rows, "sink_rows": m.sink_rows, "differs": list(m.columns),
                "state": "source_expired" if self.expired else "mismatch"}


def classify(mismatches: list[Mismatch], expired: set[int]) -> list[BucketReport]:
    return [BucketReport(m, m.bucket_start in expired) for m in mismatches]


def oldest_source_micros(client: ClickHouseHTTP, source_table: str, mappings: list[ColumnMapping],
                         ts_col: str) -> int | None:
    micros = _micros(mappings, ts_col).fp_ch
    value = client.scalar(f"SELECT if(count() = 0, NULL, min({micros})) FROM {source_table}")
    return None if value in ("", "\\N", "NULL") else int(value)


def expired_buckets(spark: Any, target: str, mappings: list[ColumnMapping], ts_col: str, bucket_s: int,
                    oldest_micros: int | None, candidates: list[int]) -> set[int]:
    """Buckets in which the sink holds rows older than the oldest row the source still has (all
    its rows, when the source is empty): the source no longer fully holds them (TTL, dropped
    partitions), so they are ``source_expired``, reported and never repaired."""
    if not candidates:
        return set()
    micros = _micros(mappings, ts_col).fp_spark
    width = bucket_s * 1_000_000
    older = "true" if oldest_micros is None else f"{micros} < {oldest_micros}"
    rows = spark.sql(f"SELECT DISTINCT ({micros} - pmod({micros}, {width})) div {width} * {bucket_s} AS b "
                     f"FROM {target} WHERE {older}").collect()
    return {int(r[0]) for r in rows} & set(candidates)


def missing_rows(spark: Any, source_rows: Any, sink_rows: Any, mappings: list[ColumnMapping]) -> Any:
    """The multiset difference source − sink of whole rows (maps compared as entry lists)."""
    from pyspark.sql import functions as F

    names = [m.name for m in mappings]
    maps = [m.name for m in mappings if m.spark_type.startswith("map<")]

    def comparable(df: Any) -> Any:
        df = df.select(*[F.col(spark_quote(n)) for n in names])
        for n in maps:
            df = df.withColumn(n, F.map_entries(F.col(spark_quote(n))))
        return df

    out = comparable(source_rows).exceptAll(comparable(sink_rows))
    for n in maps:
        out = out.withColumn(n, F.map_from_entries(F.col(spark_quote(n))))
    return out


def repair_bucket(spark: Any, source: Any, sink: Any, spec: CursorSpec, clip: Clip, bucket_start: int,
                  bucket_s: int, note: dict[str, str]) -> int:
    """Insert the rows of one bucket (at or below the watermark) that the sink lacks, in one
    commit; returns how many. Never deletes or rewrites a row."""
    mappings = source.mappings
    micros_ch = _micros(mappings, spec.ts_col or "").fp_ch
    micros_spark = _micros(mappings, spec.ts_col or "").fp_spark
    lo, hi = bucket_start * 1_000_000, (bucket_start + bucket_s) * 1_000_000
    where = f"{micros_ch} >= {lo} AND {micros_ch} < {hi} AND ({clip.ch})"
    if bucket_start > 0:  # a bound on the column itself, for ClickHouse's primary-key pruning
        where += (f" AND {spec.ts_col} >= toDateTime({bucket_start - 1}, 'UTC') AND "
                  f"{spec.ts_col} < toDateTime({bucket_start + bucket_s + 1}, 'UTC')")
    src = source.read_where(spark, where, "coldtier_repair")
    snk = spark.table(sink.ident).where(
        f"{micros_spark} >= {lo} AND {micros_spark} < {hi} AND ({clip.spark})")
    missing = missing_rows(spark, src, snk, mappings).cache()
    try:
        n = missing.count()
        if n:
            sink.append_rows(missing, note)
        return n
    finally:
        missing.unpersist()


def reconcile_table(spark: Any, client: ClickHouseHTTP, source: Any, sink: Any, wm: Offset | None,
                    since_s: int, until_s: int | None, bucket_s: int, repair: bool,
                    record: Any, emit: Any) -> bool:
    """Compare (and with ``repair`` mend) one table; emits one line per differing bucket and a
    summary. Returns True when buckets the loop is responsible for still differ (exit 7);
    ``source_expired`` buckets are reported but do not count."""
    t, spec, mappings = source.table, source.spec, source.mappings
    if spec.ts_col is None:
        raise UsageError(f"table {t.name!r}: reconcile buckets by the timestamp column; "
                         f"this table's cursor has none")
    clip = clip_to_watermark(spec, mappings, wm)

    def diff() -> list[BucketReport]:
        window = (since_s, until_s, bucket_s)
        found = compare(mappings, source_buckets(client, t.source_table, spec, mappings, *window, clip.ch),
                        sink_buckets(spark, sink.ident, spec, mappings, *window, clip.spark))
        if not found:
            return []
        oldest = oldest_source_micros(client, t.source_table, mappings, spec.ts_col or "")
        candidates = [m.bucket_start for m in found if oldest is None or m.bucket_start * 1_000_000 < oldest]
        ts = spec.ts_col or ""
        return classify(found, expired_buckets(spark, sink.ident, mappings, ts, bucket_s, oldest, candidates))

    reports = diff()
    for r in reports:
        emit(r.to_json(t.name))
    live = [r for r in reports if not r.expired]
    if live and repair:
        inserted = 0
        for r in live:
            m = r.mismatch
            note = {"coldtier.repair-of": f"{t.name}@{m.bucket_start}+{bucket_s}s"}
            n = repair_bucket(spark, source, sink, spec, clip, m.bucket_start, bucket_s, note)
            inserted += n
            record(m, sink.current_commit() if n else None)
        reports = diff()
        live = [r for r in reports if not r.expired]
        emit({"table": t.name, "repaired_buckets": len(live) == 0, "inserted_rows": inserted})
    emit({"table": t.name, "mismatched_buckets": len(live),
          "source_expired_buckets": len(reports) - len(live)})
    return bool(live)
