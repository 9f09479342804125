"""Planning: pure functions from offsets to ranges, predicates and SQL (Kafka Connect's
"criteria"). Nothing here does I/O, so all of it is tested without Spark or a server.

A batch reads the half-open range ``(lo, hi]`` of the cursor order. ``split`` cuts it
into disjoint sub-ranges that cover it exactly; ``predicate`` renders one range as SQL:
the tuple comparison that is exact, plus redundant bounds on the timestamp alone that
let ClickHouse prune its primary key (it does not prune on a tuple comparison).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldtier.offset import CursorSpec, Offset


@dataclass(frozen=True)
class Range:
    lo: Offset | None  # exclusive; None = from the beginning
    hi: Offset  # inclusive

    def contains(self, o: Offset) -> bool:
        """The model the SQL predicate must agree with (used by the property tests)."""
        return (self.lo is None or _key(o) > _key(self.lo)) and _key(o) <= _key(self.hi)


def _key(o: Offset) -> tuple[int, ...]:
    return tuple(v for v in (o.ts, o.inc) if v is not None)


def split(rng: Range, boundaries: list[Offset]) -> list[Range]:
    """Disjoint ranges covering ``rng`` exactly, cut after each boundary inside it."""
    cuts = sorted({b for b in boundaries
                   if (rng.lo is None or _key(b) > _key(rng.lo)) and _key(b) < _key(rng.hi)}, key=_key)
    out: list[Range] = []
    lo = rng.lo
    for b in cuts:
        out.append(Range(lo, b))
        lo = b
    out.append(Range(lo, rng.hi))
    return out


def _tuple_sql(spec: CursorSpec, o: Offset) -> tuple[str, str]:
    """(column tuple, literal tuple) for comparing a row's cursor with offset ``o``."""
    cols, lits = [], []
    if spec.ts_col is not None:
        cols.append(spec.ts_col)
        lits.append(spec.ts_literal(o.ts if o.ts is not None else 0))
    if spec.inc_col is not None:
        cols.append(spec.inc_col)
        lits.append(str(int(o.inc if o.inc is not None else 0)))
    if len(cols) == 1:
        return cols[0], lits[0]
    return f"({', '.join(cols)})", f"({', '.join(lits)})"


def predicate(spec: CursorSpec, rng: Range) -> str:
    """SQL for ``lo < cursor <= hi``, with pruning bounds on the timestamp column."""
    col, hi_lit = _tuple_sql(spec, rng.hi)
    parts = []
    if rng.lo is not None:
        _, lo_lit = _tuple_sql(spec, rng.lo)
        parts.append(f"{col} > {lo_lit}")
    parts.append(f"{col} <= {hi_lit}")
    if spec.ts_col is not None and spec.inc_col is not None:
        if rng.lo is not None:
            parts.append(f"{spec.ts_col} >= {spec.ts_literal(rng.lo.ts or 0)}")
        parts.append(f"{spec.ts_col} <= {spec.ts_literal(rng.hi.ts or 0)}")
    return " AND ".join(parts)


def after_predicate(spec: CursorSpec, lo: Offset | None) -> str:
    """SQL for ``cursor > lo`` (everything not yet read), with the pruning bound."""
    if lo is None:
        return "1"
    col, lit = _tuple_sql(spec, lo)
    sql = f"{col} > {lit}"
    if spec.ts_col is not None and spec.inc_col is not None:
        sql += f" AND {spec.ts_col} >= {spec.ts_literal(lo.ts or 0)}"
    return sql


def order_by(spec: CursorSpec) -> str:
    return ", ".join(spec.key_columns())


@dataclass(frozen=True)
class PlanQuery:
    sql: str
    parts: int


def plan_query(spec: CursorSpec, table: str, lo: Offset | None, max_rows: int, lag_s: float,
               parts: int, ceiling: Offset | None = None) -> PlanQuery:
    """One query that finds the batch's end and its partition boundaries.

    The end is the greatest cursor among the first ``max_rows`` rows after ``lo`` whose
    timestamp is at most the source server's ``now64()`` minus the lag (and at most
    ``ceiling``, the end fixed by an available-now run). In timestamp-only mode the end is
    rounded to a whole timestamp: rows sharing it cannot be told apart.
    """
    where = [after_predicate(spec, lo), visible_where(spec, lag_s)]
    if ceiling is not None:
        col, lit = _tuple_sql(spec, ceiling)
        where.append(f"{col} <= {lit}")
    keys = spec.key_sql()
    key_expr = keys[0] if len(keys) == 1 else f"tuple({', '.join(keys)})"
    inner = (f"SELECT {key_expr} AS k FROM {table} WHERE {' AND '.join(where)} "
             f"ORDER BY {order_by(spec)} LIMIT {int(max_rows)}")
    sql = (
        "SELECT length(ks) AS n, if(n = 0, NULL, ks[n]) AS last, "
        f"arrayMap(i -> ks[greatest(1, intDiv(i * n, {int(parts)}))], range(1, {int(parts)})) AS bounds, "
        "toUnixTimestamp64Milli(now64(3, 'UTC')) AS server_now_ms "
        f"FROM (SELECT arraySort(groupArray(k)) AS ks FROM ({inner}))"
    )
    return PlanQuery(sql, parts)


def visible_where(spec: CursorSpec, lag_s: float) -> str:
    """Rows old enough to read: timestamp at most the source server's now64() minus the lag."""
    if spec.ts_col is None:
        return "1"
    return (f"{spec.ts_col} <= now64({max(spec.ts_scale, 3)}, 'UTC') - "
            f"toIntervalMillisecond({round(lag_s * 1000)})")


def horizon_query(spec: CursorSpec, table: str, lag_s: float) -> str:
    """The greatest cursor visible now: where an available-now run stops."""
    keys = spec.key_sql()
    key_expr = keys[0] if len(keys) == 1 else f"tuple({', '.join(keys)})"
    desc = ", ".join(f"{c} DESC" for c in spec.key_columns())
    return (f"SELECT {key_expr} AS k FROM {table} WHERE {visible_where(spec, lag_s)} "
            f"ORDER BY {desc} LIMIT 1")


def parse_offset(spec: CursorSpec, value: Any) -> Offset:
    """An offset from the plan query's JSON: one value, or a [ts, inc] pair."""
    vals = value if isinstance(value, list) else [value]
    return spec.offset_from_values(vals)


@dataclass(frozen=True)
class PlannedRange:
    rng: Range | None  # None: nothing to read
    rows: int
    partitions: tuple[Range, ...]
    server_now_ms: int


def parse_plan_row(spec: CursorSpec, lo: Offset | None, row: dict[str, Any]) -> PlannedRange:
    """Turn the plan query's single JSON row into ranges."""
    n = int(row["n"])
    now_ms = int(row["server_now_ms"])
    if n == 0:
        return PlannedRange(None, 0, (), now_ms)
    hi = parse_offset(spec, row["last"])
    bounds = [parse_offset(spec, b) for b in row["bounds"]]
    if spec.mode == "timestamp":
        # Ties on the end timestamp are all in, so the range may hold more than n rows.
        bounds = [b for b in bounds if b.ts != hi.ts]
    rng = Range(lo, hi)
    return PlannedRange(rng, n, tuple(split(rng, bounds)), now_ms)


def range_from_json(doc: dict[str, Any]) -> Range:
    lo = Offset.from_json(doc.get("lo"))
    hi = Offset.from_json(doc["hi"])
    assert hi is not None
    return Range(lo, hi)


def range_to_json(rng: Range) -> dict[str, Any]:
    return {"lo": rng.lo.to_json() if rng.lo else None, "hi": rng.hi.to_json()}
