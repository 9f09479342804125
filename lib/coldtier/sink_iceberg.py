"""The Iceberg sink: appends a batch as one snapshot tagged with its batch id.

Like Iceberg's own streaming sink, a replayed batch is recognised by reading snapshot
summaries: every commit carries ``coldtier.pipeline``, ``coldtier.table``,
``coldtier.batch-id`` and ``coldtier.end-cursor``, and ``find_batch`` walks the table's
ancestry for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from coldtier.config import TargetConfig
from coldtier.ledger import Batch
from coldtier.sinks import (
    P_BATCH,
    P_END,
    P_PIPELINE,
    P_TABLE,
    SchemaConflict,
    SnapshotInfo,
    batch_properties,
    new_columns,
)
from coldtier.sinks import quote as _q

__all__ = ["IcebergSink", "SchemaConflict", "SnapshotInfo"]

DEFAULT_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    # Rows arrive in cursor order from ClickHouse; a shuffle before the write would cost
    # time and break that order. Override in YAML for a hash/range distribution.
    "write.distribution-mode": "none",
}


@dataclass
class IcebergSink:
    spark: Any
    target: TargetConfig

    @property
    def ident(self) -> str:
        return self.target.identifier

    def _jtable(self) -> Any:
        jvm = self.spark.sparkContext._jvm
        table = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(
            self.spark._jsparkSession, self.ident)
        table.refresh()
        return table

    def exists(self) -> bool:
        return bool(self.spark.catalog.tableExists(self.ident))

    def create(self, schema: Any) -> None:
        cols = ", ".join(f"{_q(f.name)} {f.dataType.simpleString()}" for f in schema.fields)
        ns = self.ident.rsplit(".", 1)[0]
        self.spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
        props = {**DEFAULT_PROPERTIES, **self.target.properties}
        ddl = f"CREATE TABLE IF NOT EXISTS {self.ident} ({cols}) USING iceberg"
        if self.target.partition_by:
            ddl += f" PARTITIONED BY ({', '.join(self.target.partition_by)})"
        ddl += " TBLPROPERTIES (" + ", ".join(f"'{k}' = '{v}'" for k, v in props.items()) + ")"
        self.spark.sql(ddl)
        if self.target.sort_by:
            # Setting a sort order also sets the distribution; keep the one configured.
            clause = {"none": "WRITE LOCALLY ORDERED BY", "range": "WRITE ORDERED BY",
                      "hash": "WRITE DISTRIBUTED BY PARTITION LOCALLY ORDERED BY"}.get(
                props.get("write.distribution-mode", "none"), "WRITE LOCALLY ORDERED BY")
            self.spark.sql(f"ALTER TABLE {self.ident} {clause} {', '.join(self.target.sort_by)}")

    def ensure(self, schema: Any) -> list[str]:
        """Create the table on first use; add columns new in the source. Returns added names."""
        if not self.exists():
            self.create(schema)
            return []
        added = new_columns(self.ident, self.spark.table(self.ident).schema, schema)
        if added:
            cols = ", ".join(f"{_q(f.name)} {f.dataType.simpleString()}" for f in added)
            self.spark.sql(f"ALTER TABLE {self.ident} ADD COLUMNS ({cols})")
        return [f.name for f in added]

    def table_handle(self) -> Any:
        """The table's Java handle (org.apache.iceberg.Table), refreshed: for Iceberg's actions."""
        return self._jtable()

    def newest_batch_timestamp_ms(self, pipeline: str, table: str) -> int | None:
        """When the newest snapshot carrying this pipeline/table's batch id was committed: the
        snapshot the ledger check and recover-ledger read, which expiry must keep."""
        for _, _, snapshot_id, _ in self._ours(pipeline, table):
            return int(self._jtable().snapshot(snapshot_id).timestampMillis())
        return None

    def current_commit(self) -> int | None:
        snap = self._jtable().currentSnapshot() if self.exists() else None
        return int(snap.snapshotId()) if snap is not None else None

    def _ours(self, pipeline: str, table: str) -> Any:
        """Snapshots of this pipeline/table in the current ancestry, newest first:
        (batch id, end cursor, snapshot id, added rows)."""
        if not self.exists():
            return
        t = self._jtable()
        snap = t.currentSnapshot()
        while snap is not None:
            s = snap.summary()
            if s.get(P_PIPELINE) == pipeline and s.get(P_TABLE) == table:
                yield (int(s.get(P_BATCH)), json.loads(s.get(P_END)), snap.snapshotId(),
                       int(s.get("added-records") or 0))
            parent = snap.parentId()
            snap = t.snapshot(parent) if parent is not None else None

    def find_batch(self, pipeline: str, table: str, batch_id: int) -> SnapshotInfo | None:
        """The snapshot in the current ancestry that committed this batch, if any."""
        for found, _, snapshot_id, rows in self._ours(pipeline, table):
            if found == batch_id:
                return SnapshotInfo(snapshot_id, found, rows)
            if found < batch_id:
                return None  # batch ids only grow along the ancestry
        return None

    def batch_history(self, pipeline: str, table: str) -> list[tuple[int, dict[str, Any], int, int]]:
        """Every batch of this pipeline/table in the current ancestry, oldest first: the
        evidence recover-ledger rebuilds from."""
        return list(self._ours(pipeline, table))[::-1]

    def latest_batch(self, pipeline: str, table: str) -> tuple[int, dict[str, Any]] | None:
        """(batch id, end cursor) of the newest snapshot of this pipeline/table in the ancestry."""
        for batch_id, end, _, _ in self._ours(pipeline, table):
            return batch_id, end
        return None

    def append_rows(self, df: Any, note: dict[str, str]) -> None:
        """Append rows that are not a batch (a reconcile repair), in one snapshot whose summary
        carries ``note`` and no batch identity."""
        writer = df.writeTo(self.ident)
        for k, v in note.items():
            writer = writer.option(f"snapshot-property.{k}", v)
        writer.append()

    def append(self, df: Any, batch: Batch) -> SnapshotInfo:
        writer = df.writeTo(self.ident)
        for k, v in batch_properties(batch).items():
            writer = writer.option(f"snapshot-property.{k}", v)
        writer.append()
        info = self.find_batch(batch.pipeline, batch.table, batch.batch_id)
        if info is None:
            raise RuntimeError(f"Iceberg append of batch {batch.batch_id} to {self.ident} left no "
                               f"snapshot carrying its batch id")
        return info
