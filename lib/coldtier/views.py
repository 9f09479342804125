"""What ``plan``, ``status`` and ``validate`` show of a pipeline: built from the ledger and
ClickHouse without Spark, written nowhere."""

from __future__ import annotations

import datetime as dt
from typing import Any

from coldtier.config import AppConfig, TableConfig
from coldtier.ledger import Ledger
from coldtier.loop import lag_behind
from coldtier.offset import offset_fields
from coldtier.source import Planner, resolve_cursor, source_client


def plan_doc(cfg: AppConfig, ledger: Ledger | None, t: TableConfig) -> dict[str, Any]:
    """What the next run would do for one table (``plan``, ``validate``): replay the batch left
    planned, plan the next one, or nothing (caught up). ``ledger`` None: a ledger not created yet
    (``validate`` creates nothing), so no batch before this one."""
    client = source_client(cfg, t)
    spec, _ = resolve_cursor(client, t)
    last = ledger.last_batch(cfg.pipeline, t.name) if ledger is not None else None
    if last is not None and last.status == "planned":
        rng, rows, parts, bid, kind = last.rng, last.planned_rows, last.parts, last.batch_id, "replay"
    else:
        lo = last.rng.hi if last else None
        planned = Planner(client, t, spec).plan(lo)
        bid, kind = (last.batch_id if last else 0) + 1, "next"
        if planned.rng is None:
            return {"pipeline": cfg.pipeline, "table": t.name, "batch_id": None, "kind": "caught-up",
                    **offset_fields(spec, "start", lo), **offset_fields(spec, "end", None),
                    "planned_rows": 0, "partitions": 0}
        rng, rows, parts = planned.rng, planned.rows, planned.partitions
    return {"pipeline": cfg.pipeline, "table": t.name, "batch_id": bid, "kind": kind,
            **offset_fields(spec, "start", rng.lo), **offset_fields(spec, "end", rng.hi),
            "planned_rows": rows, "partitions": len(parts)}


def _ago(when: Any) -> str:
    if not isinstance(when, dt.datetime):
        return ""
    secs = max(0, int((dt.datetime.now(dt.UTC) - when.astimezone(dt.UTC)).total_seconds()))
    return f", {secs // 3600} h {secs % 3600 // 60} min ago" if secs >= 3600 else \
        f", {secs // 60} min ago" if secs >= 60 else f", {secs} s ago"


def last_batch_text(batches: list[dict[str, Any]]) -> str:
    """The newest batch for people: ``batch 7 committed 2,500 rows, 4 min ago``."""
    if not batches:
        return "-"
    b = batches[0]
    if b["status"] == "committed":
        return f"batch {b['batch_id']} committed {b['rows']:,} rows{_ago(b.get('committed_at'))}"
    return f"batch {b['batch_id']} {b['status']} ({b['planned_rows']:,} rows planned)"


def status_doc(cfg: AppConfig, ledger: Ledger, t: TableConfig) -> dict[str, Any]:
    """Where one table stands: its watermark, how far behind the source it is, what waits."""
    client = source_client(cfg, t)
    spec, _ = resolve_cursor(client, t)
    _, wm_batch, wm = ledger.watermark(cfg.pipeline, t.name)
    backlog = Planner(client, t, spec).backlog(wm)
    now_ms = int(client.scalar("SELECT toUnixTimestamp64Milli(now64(3, 'UTC'))"))
    age = round(now_ms / 1000 - spec.ticks_to_seconds(wm.ts), 1) if wm and wm.ts is not None else None
    recent = ledger.recent(cfg.pipeline, t.name, 5)
    return {
        "pipeline": cfg.pipeline, "table": t.name, "watermark_batch": wm_batch,
        **offset_fields(spec, "watermark", wm), "source_lag_s": lag_behind(age, backlog),
        "backlog_rows": backlog, "last_batch_text": last_batch_text(recent),
        "last_batches": [{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in b.items()}
                         for b in recent],
    }
