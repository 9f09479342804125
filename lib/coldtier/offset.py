"""Offsets: positions in a source table's cursor order (Kafka Connect's "offset value").

An offset is the cursor of one row: the timestamp as integer ticks at the column's own
precision (exact, no floats) and/or the incrementing column. Offsets of one table are
totally ordered; a batch covers the half-open range ``(start, end]``.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coldtier.errors import CursorTypeError

if TYPE_CHECKING:
    from coldtier.config import CursorConfig

_DT64 = re.compile(r"^DateTime64\((\d)(?:\s*,\s*'[^']*')?\)$")
_DT = re.compile(r"^DateTime(?:\('[^']*'\))?$")
_INT = re.compile(r"^U?Int(8|16|32|64)$")


@dataclass(frozen=True, order=True)
class Offset:
    ts: int | None = None
    inc: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "inc": self.inc}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> Offset | None:
        if doc is None:
            return None
        return cls(doc.get("ts"), doc.get("inc"))


@dataclass(frozen=True)
class CursorSpec:
    """A cursor configuration bound to the source columns' actual types."""

    mode: str
    ts_col: str | None
    inc_col: str | None
    ts_scale: int = 0  # 0 for DateTime, n for DateTime64(n)

    @classmethod
    def resolve(cls, cfg: CursorConfig, column_types: dict[str, str], table: str) -> CursorSpec:
        scale = 0
        if cfg.timestamp_column is not None:
            t = column_types.get(_bare(cfg.timestamp_column))
            if t is None:
                raise CursorTypeError(f"cursor column {cfg.timestamp_column!r} does not exist in {table} "
                                      f"(columns: {', '.join(column_types)}).")
            m = _DT64.match(t)
            if m:
                scale = int(m.group(1))
            elif not _DT.match(t):
                raise CursorTypeError(
                    f"cursor timestamp column {cfg.timestamp_column!r} of {table} has type {t}; it must "
                    f"be a non-Nullable DateTime or DateTime64 to order rows.")
        if cfg.incrementing_column is not None:
            t = column_types.get(_bare(cfg.incrementing_column))
            if t is None:
                raise CursorTypeError(f"cursor column {cfg.incrementing_column!r} does not exist in "
                                      f"{table} (columns: {', '.join(column_types)}).")
            if not _INT.match(t):
                raise CursorTypeError(
                    f"cursor incrementing column {cfg.incrementing_column!r} of {table} has type {t}; it "
                    f"must be a non-Nullable integer (Int8..Int64, UInt8..UInt64).")
        return cls(cfg.mode, cfg.timestamp_column, cfg.incrementing_column, scale)

    # -- SQL pieces --------------------------------------------------------------------
    def ts_ticks_sql(self) -> str:
        """The timestamp column as integer ticks at its precision."""
        c = self.ts_col
        return {0: f"toUnixTimestamp({c})", 3: f"toUnixTimestamp64Milli({c})",
                6: f"toUnixTimestamp64Micro({c})", 9: f"toUnixTimestamp64Nano({c})"}.get(
            self.ts_scale, f"intDiv(toUnixTimestamp64Nano({c}), {10 ** (9 - self.ts_scale)})")

    def ts_literal(self, ticks: int) -> str:
        """An exact timestamp constant for ``ticks``, comparable with the column and foldable
        by ClickHouse's index analysis."""
        if self.ts_scale == 0:
            return f"toDateTime({int(ticks)}, 'UTC')"
        fn = {3: "Milli", 6: "Micro", 9: "Nano"}.get(self.ts_scale)
        if fn:
            return f"fromUnixTimestamp64{fn}(toInt64({int(ticks)}), 'UTC')"
        return f"fromUnixTimestamp64Nano(toInt64({int(ticks) * 10 ** (9 - self.ts_scale)}), 'UTC')"

    def key_columns(self) -> list[str]:
        return [c for c in (self.ts_col, self.inc_col) if c is not None]

    def key_sql(self) -> list[str]:
        """Expressions producing an offset from a row, in offset field order."""
        out = []
        if self.ts_col is not None:
            out.append(self.ts_ticks_sql())
        if self.inc_col is not None:
            out.append(self.inc_col)
        return out

    def offset_from_values(self, values: list[Any]) -> Offset:
        vals = [int(v) for v in values]
        if self.mode == "timestamp+incrementing":
            return Offset(vals[0], vals[1])
        if self.mode == "timestamp":
            return Offset(vals[0], None)
        return Offset(None, vals[0])

    def ticks_to_seconds(self, ticks: int) -> float:
        return ticks / float(10**self.ts_scale)


def _bare(ident: str) -> str:
    return ident.strip("`")


def offset_text(spec: CursorSpec, o: Offset | None) -> str | None:
    """An offset for people: the timestamp in UTC at the column's precision, then ``#inc``."""
    if o is None:
        return None
    parts = []
    if o.ts is not None:
        secs = spec.ticks_to_seconds(o.ts)
        when = _dt.datetime.fromtimestamp(secs, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        parts.append(when[: 20 + spec.ts_scale].rstrip(".") if spec.ts_scale else when[:19])
    if o.inc is not None:
        parts.append(f"#{o.inc}")
    return " ".join(parts)


def offset_fields(spec: CursorSpec, key: str, o: Offset | None) -> dict[str, Any]:
    """One offset in every JSON line the same way: ``key`` the machine form (``{"ts": ticks,
    "inc": n}``, what the ledger stores), ``key_text`` the human form beside it."""
    return {key: o.to_json() if o is not None else None, f"{key}_text": offset_text(spec, o)}
