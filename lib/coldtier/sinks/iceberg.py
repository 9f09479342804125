"""The Iceberg sink: appends a batch as one snapshot tagged with its batch id.

Like Iceberg's own streaming sink, a replayed batch is recognised by reading snapshot
summaries: every commit carries ``coldtier.pipeline``, ``coldtier.table``,
``coldtier.batch-id`` and ``coldtier.end-cursor``, and ``find_batch`` walks the table's
ancestry for them.

Write-audit-publish: a batch is first written to a stage branch (``coldtier_stage_…``, at
main's head, this run's alone), so it is not on the table's main history. Its row count is
audited against the plan and the writer's ownership is checked; only then is it published:
main is fast-forwarded to it in one compare-and-swap of the metadata, or, if another writer
committed meanwhile, its data files are appended on top with the batch's identity. A short read
or a writer that lost its lock leaves main untouched. A batch id appears at most once in the
ancestry; if it ever does not (a publish raced a takeover), coldtier refuses to go on (exit 5)
naming both snapshots.

After a fast-forward the stage branch and main point at the same snapshot: the branch is the
next batch's stage as it is, so a batch costs two commits (stage, publish), not three (create a
branch, stage, publish). ``close`` drops it at the end of a run; a run that died leaves it to
the next run's recovery (``drop_stale_stages``), which drops every stage of its pipeline/table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coldtier.config import TargetConfig
from coldtier.errors import LedgerInconsistent, StageLost
from coldtier.jvm import jclass
from coldtier.records import Batch
from coldtier.sinks.base import (
    AGED_UNKNOWN,
    P_BATCH,
    P_END,
    P_PIPELINE,
    P_TABLE,
    BatchIdentity,
    SchemaConflict,
    SnapshotInfo,
    batch_properties,
    new_columns,
    of_identity,
)
from coldtier.sinks.base import quote as _q

__all__ = ["IcebergSink", "SchemaConflict", "SnapshotInfo"]

DEFAULT_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    # Rows arrive in cursor order from ClickHouse; a shuffle before the write would cost
    # time and break that order. Override in YAML for a hash/range distribution.
    "write.distribution-mode": "none",
}


def stage_prefix(pipeline: str, table: str) -> str:
    """The name every stage branch of one pipeline/table starts with (a hash of both): a
    recovery finds the branches its own interrupted batches left, never another writer's."""
    digest = hashlib.sha256(f"{pipeline}/{table}".encode()).hexdigest()[:10]
    return f"coldtier_stage_{digest}_"


@dataclass
class IcebergSink(BatchIdentity):
    kind: ClassVar[str] = "Iceberg"
    aged_out_how: ClassVar[str] = ("its history ends at a snapshot that was expired: another "
                                   "process's expire_snapshots, after rewrites of its own, while "
                                   "the table got no batch")
    spark: Any
    target: TargetConfig
    _seen: bool = field(default=False, repr=False)
    _stage: str | None = field(default=None, repr=False)  # a stage branch at main's head, kept

    @property
    def ident(self) -> str:
        return self.target.identifier

    def _jtable(self) -> Any:
        table = jclass(self.spark, "org.apache.iceberg.spark.Spark3Util").loadIcebergTable(
            self.spark._jsparkSession, self.ident)
        table.refresh()
        return table

    def exists(self) -> bool:
        """Whether the table exists; once seen, not asked again (a table dropped under a run
        fails its next load loudly)."""
        if not self._seen:
            self._seen = bool(self.spark.catalog.tableExists(self.ident))
        return self._seen

    def create(self, schema: Any) -> None:
        cols = ", ".join(f"{_q(f.name)} {f.dataType.simpleString()}" for f in schema.fields)
        ns = self.ident.rsplit(".", 1)[0]
        try:
            self.spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
        except Exception:
            # tables of one run sharing a new namespace create it at once, and a catalog's
            # check-then-insert (the JDBC catalog's) fails all but one of them: it exists now
            if not self.spark.catalog.databaseExists(ns):
                raise
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

    def _batches(self, t: Any = None) -> Any:
        """Every coldtier batch snapshot in the current ancestry, newest first: (pipeline, table,
        batch id, end cursor, snapshot id, added rows). ``t``: a table handle already fresh."""
        if t is None:
            if not self.exists():
                return
            t = self._jtable()
        snap = t.currentSnapshot()
        while snap is not None:
            s = snap.summary()
            if s.get(P_PIPELINE) is not None and s.get(P_BATCH) is not None:
                yield (s.get(P_PIPELINE), s.get(P_TABLE), int(s.get(P_BATCH)), json.loads(s.get(P_END)),
                       snap.snapshotId(), int(s.get("added-records") or 0))
            parent = snap.parentId()
            snap = t.snapshot(parent) if parent is not None else None

    def aged_out_batch(self, pipeline: str, table: str) -> int | None:
        """``AGED_UNKNOWN`` when the current snapshot's ancestry holds no batch of this
        pipeline/table and ends at a snapshot that expiry deleted (``maintain`` never expires the
        newest batch's snapshot; another process's ``expire_snapshots`` may, after its own
        rewrites, while a table got no batch for longer than its retention); None when the
        ancestry is whole (back to the table's first snapshot) or holds one."""
        if not self.exists():
            return None
        t = self._jtable()
        snap = t.currentSnapshot()
        while snap is not None:
            s = snap.summary()
            if s.get(P_PIPELINE) == pipeline and s.get(P_TABLE) == table and s.get(P_BATCH) is not None:
                return None
            parent = snap.parentId()
            if parent is None:
                return None
            snap = t.snapshot(parent)
            if snap is None:
                return AGED_UNKNOWN
        return None

    def adopt(self, pipeline: str, table: str, batch_id: int, end: dict[str, Any],
              note: dict[str, str]) -> int:
        """An empty commit carrying a batch identity (``adopt``): the new identity's watermark."""
        t = self._jtable()
        commit = t.newAppend()
        for k, v in {P_PIPELINE: pipeline, P_TABLE: table, P_BATCH: str(batch_id), P_END: json.dumps(end),
                     **note}.items():
            commit = commit.set(k, v)
        commit.commit()
        return int(self._jtable().currentSnapshot().snapshotId())

    def append_rows(self, df: Any, note: dict[str, str]) -> None:
        """Append rows that are not a batch (a reconcile repair), in one snapshot whose summary
        carries ``note`` and no batch identity."""
        writer = df.writeTo(self.ident)
        for k, v in note.items():
            writer = writer.option(f"snapshot-property.{k}", v)
        writer.append()

    def batch_snapshots(self, pipeline: str, table: str, batch_id: int, t: Any = None) -> list[int]:
        """Every snapshot in the ancestry carrying this batch id (exactly one when all is well)."""
        out = []
        for found, _, snapshot_id, _ in of_identity(self._batches(t), pipeline, table):
            if found == batch_id:
                out.append(int(snapshot_id))
            elif found < batch_id:
                break
        return out

    def check_unique(self, pipeline: str, table: str, batch_id: int, t: Any = None) -> None:
        snaps = self.batch_snapshots(pipeline, table, batch_id, t)
        if len(snaps) > 1:
            raise LedgerInconsistent(
                f"{pipeline}/{table}: batch {batch_id} was published twice to {self.ident}, in snapshots "
                f"{' and '.join(map(str, snaps))} (a publish raced a takeover of the lock); its rows are "
                f"doubled. coldtier will not go on: roll the table back to the snapshot before the "
                f"second one (CALL system.rollback_to_snapshot), then run recover-ledger.")

    def append(self, df: Any, batch: Batch, audit: Callable[[int], None] | None = None) -> SnapshotInfo:
        """Stage the batch on a stage branch (a snapshot off main carrying the batch's identity),
        let ``audit`` see its row count (it raises to stop the batch), then publish it on main.
        The branch is an option of this write alone: nothing else in the Spark session (another
        table's batch, another writer) is staged with it. One table handle serves the whole
        batch, refreshed where another commit may have happened (a small batch is mostly fixed
        costs: each load is a catalog lookup and a metadata read)."""
        t = self._jtable()
        branch = self._take_stage(t, stage_prefix(batch.pipeline, batch.table))
        try:
            try:
                self._write_stage(df, batch, branch)
            except Exception as exc:
                if self._has_branch(branch) is False:
                    raise self._lost(batch, branch) from exc
                raise
            t.refresh()
            staged = t.snapshot(branch)
            if staged is None:
                raise self._lost(batch, branch)
            added = int(staged.summary().get("added-records") or 0)
            if audit is not None:
                audit(added)
            published = int(staged.snapshotId()) if self._fast_forward(t, staged) else None
            if published is None:
                self._append_files(staged, branch)
            else:
                self._stage = branch  # at main's head now: the next batch's stage as it is
        except BaseException:
            with contextlib.suppress(Exception):  # an unpublished stage is only clutter
                self._remove_branches(self._jtable(), [branch])
            raise
        t.refresh()
        if published is None:  # appended after another writer's commit: find it by its identity
            info = self.find_batch(batch.pipeline, batch.table, batch.batch_id)
            if info is None:
                raise RuntimeError(f"Iceberg append of batch {batch.batch_id} to {self.ident} left no "
                                   f"snapshot carrying its batch id")
        else:
            info = SnapshotInfo(published, batch.batch_id, added)
        self.check_unique(batch.pipeline, batch.table, batch.batch_id, t)
        return info

    def _write_stage(self, df: Any, batch: Batch, branch: str) -> None:
        """The batch's rows as one snapshot on the stage branch, carrying its identity: one Spark
        job reads them from the source and writes them; main is untouched."""
        writer = df.writeTo(f"{self.ident}.branch_{branch}")
        for k, v in batch_properties(batch).items():
            writer = writer.option(f"snapshot-property.{k}", v)
        writer.append()

    def _take_stage(self, t: Any, prefix: str) -> str:
        """The branch this batch stages on: the one the last batch published, if it still is at
        main's head (no commit); otherwise a new one at main's head, in one commit that also drops
        a kept one main has moved past (another writer's or a maintenance commit since)."""
        kept, self._stage = self._stage, None
        ref = t.refs().get(kept) if kept is not None else None
        head = t.currentSnapshot()
        if ref is not None and head is not None and ref.snapshotId() == head.snapshotId():
            return str(kept)
        name = prefix + uuid.uuid4().hex[:12]
        update = t.manageSnapshots()
        if ref is not None:
            update = update.removeBranch(kept)
        update.createBranch(name).commit()  # at main's head
        return name

    def _has_branch(self, branch: str) -> bool | None:
        """Whether the table has the branch now; None when that cannot be told."""
        try:
            return bool(self._jtable().refs().containsKey(branch))
        except Exception:
            return None

    def _lost(self, batch: Batch, branch: str) -> StageLost:
        return StageLost(
            f"{batch.pipeline}/{batch.table} batch {batch.batch_id}: its stage branch {branch} of "
            f"{self.ident} was removed before the batch was published (a run recovering the table "
            f"drops the stage branches it finds: another run took the table over?). Nothing of the "
            f"batch was published; it stays planned and the next run replays it.")

    def close(self) -> None:
        """The end of a run: drop the stage branch kept for a next batch. If this fails (or the
        run dies first), the next run's recovery drops it."""
        kept, self._stage = self._stage, None
        if kept is not None:
            self._remove_branches(self._jtable(), [kept])

    def read_ahead(self, pipeline: str, table: str) -> None:
        """Nothing to read ahead: a batch's first write loads the table's metadata, a file read."""

    def drop_stale_stages(self, pipeline: str, table: str) -> list[str]:
        """Drop every stage branch of this pipeline/table (what a run that died left: called when
        a run recovers the table, with its lock held, so none is in use); a branch left behind
        would keep its snapshot, and the data files of a batch never published, from expiring.
        Returns the names of those that held such a snapshot (a crash between staging and
        publishing), not those still at main's head (an empty stage, a kept one)."""
        self._stage = None
        if not self.exists():
            return []
        t = self._jtable()
        prefix = stage_prefix(pipeline, table)
        refs = t.refs()
        names = sorted(str(n) for n in refs.keySet() if str(n).startswith(prefix))
        head = t.currentSnapshot()
        head_id = head.snapshotId() if head is not None else None
        staged = [n for n in names if refs.get(n).snapshotId() != head_id]
        self._remove_branches(t, names)
        return staged

    @staticmethod
    def _remove_branches(t: Any, names: list[str]) -> None:
        """Remove those of these branches the table still has, in one commit."""
        refs = t.refs()
        present = [n for n in names if refs.containsKey(n)]
        if present:
            update = t.manageSnapshots()
            for name in present:
                update = update.removeBranch(name)
            update.commit()

    def _fast_forward(self, t: Any, staged: Any) -> bool:
        """Publish the staged snapshot itself, if main is still its parent: one compare-and-swap
        of the table's metadata (it fails if anything committed meanwhile). ``t``: the table
        handle, refreshed since the stage was written."""
        ops = t.operations()
        base = ops.current()
        current = base.currentSnapshot()
        if (current.snapshotId() if current is not None else None) != staged.parentId():
            return False
        updated = (jclass(self.spark, "org.apache.iceberg.TableMetadata").buildFrom(base)
                   .setBranchSnapshot(staged.snapshotId(), "main").build())
        try:
            ops.commit(base, updated)
        except Exception as exc:  # CommitFailedException: main moved; publish as a new append
            if "CommitFailed" not in str(exc):
                raise
            return False
        return True

    def _append_files(self, staged: Any, branch: str) -> None:
        """Publish the staged data files as a new append on main (another writer committed after
        the batch was staged), with the staged snapshot's identity; then drop the branch."""
        t = self._jtable()
        publish = t.newAppend()
        files = staged.addedDataFiles(t.io()).iterator()
        while files.hasNext():
            publish = publish.appendFile(files.next())
        summary = staged.summary()
        for k in (P_PIPELINE, P_TABLE, P_BATCH, P_END):
            publish = publish.set(k, summary.get(k))
        publish.commit()
        t.refresh()
        self._remove_branches(t, [branch])
        # the staged snapshot, and the empty one a branch of an empty table starts from, are on no
        # branch now: drop them from the metadata (their data files are the published snapshot's)
        t.refresh()
        ids = [staged.snapshotId()]
        parent = staged.parentId()
        if parent is not None and not jclass(self.spark, "org.apache.iceberg.util.SnapshotUtil").isAncestorOf(
                t, t.currentSnapshot().snapshotId(), parent):
            ids.append(parent)
        expire = t.expireSnapshots()
        for snapshot_id in ids:
            expire = expire.expireSnapshotId(snapshot_id)
        expire.cleanExpiredFiles(False).commit()
