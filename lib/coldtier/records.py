"""The records that travel between the parts: a batch as the ledger plans it, its figures when
committed, and the commit a sink made. Pure values (Kafka Connect's offset value objects): the
ledger, the source and the sinks all speak them; none of them owns them."""

from __future__ import annotations

from dataclasses import dataclass

from coldtier.planning import Range


@dataclass(frozen=True)
class Batch:
    pipeline: str
    table: str
    batch_id: int
    status: str
    rng: Range
    parts: tuple[Range, ...]
    planned_rows: int
    snapshot_id: int | None = None
    rows: int | None = None
    attempts: int = 1


@dataclass(frozen=True)
class BatchMetrics:
    rows: int
    snapshot_id: int | None
    plan_s: float
    read_s: float
    write_s: float
    commit_s: float
    total_s: float
    source_lag_s: float | None
    backlog_rows: int | None


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: int  # Iceberg snapshot id / Delta table version
    batch_id: int
    added_rows: int
