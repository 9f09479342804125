"""The Delta Lake sink: appends a batch as one Delta commit, idempotent by Delta itself.

Every append is written with ``txnAppId = coldtier/<pipeline>/<table>`` and ``txnVersion =
batch id``: Delta skips a write whose version it has already committed for that app id, so a
replayed batch cannot land twice even without the ledger. The commit's ``userMetadata``
carries the same identity as Iceberg's snapshot summaries (pipeline, table, batch id, end
cursor), which ``find_batch`` reads back from the table history. The PostgreSQL ledger stays
the source of truth for planning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coldtier.config import TargetConfig
from coldtier.errors import LedgerInconsistent
from coldtier.records import Batch
from coldtier.sinks.base import (
    P_BATCH,
    P_END,
    P_PIPELINE,
    P_TABLE,
    BatchIdentity,
    SnapshotInfo,
    batch_properties,
    new_columns,
    quote,
)
from coldtier.spark import ReadAhead

RECENT = 32  # commits read first when looking for a batch
RESTORED = "/restore-"


def app_id_base(pipeline: str, table: str) -> str:
    """The ``txnAppId`` of this pipeline/table's first generation."""
    return f"coldtier/{pipeline}/{table}"


def generations(base: str, txns: dict[str, int]) -> dict[int, int]:
    """This pipeline/table's app ids in Delta's record: generation (0 for ``base``, N for
    ``base/restore-N``) -> the newest transaction version (batch id) Delta committed under it."""
    gens: dict[int, int] = {}
    for app, version in txns.items():
        suffix = app.removeprefix(base + RESTORED)
        if app == base:
            gens[0] = version
        elif suffix != app and suffix.isdigit():
            gens[int(suffix)] = version
    return gens


def recorded_batch(base: str, txns: dict[str, int]) -> int | None:
    """The newest batch id Delta's record holds for this pipeline/table: the version of its
    newest generation (a RESTORE's re-copy starts a generation), None when it has none."""
    gens = generations(base, txns)
    return gens[max(gens)] if gens else None


def aged_out(commits: list[tuple[int, str, Any, tuple[str, str] | None]], identity: tuple[str, str],
             recorded: int | None) -> int | None:
    """The newest batch of ``identity`` the table holds although none of its commits is left in
    the log: ``commits`` are what the log has left (version, operation, a RESTORE's target
    version, the batch identity a commit carries), ``recorded`` the newest batch in Delta's
    transaction record. None when the record has none, or the log is whole (it has version 0).
    ValueError when what is left cannot say: some of the identity's commits are left (a RESTORE
    took the newer ones out), or a RESTORE went back to a version the cleanup deleted."""
    oldest = min((c[0] for c in commits), default=0)
    if oldest == 0 or recorded is None:
        return None
    for _, operation, target, found in commits:
        if found == identity:
            raise ValueError(f"batch commits of {'/'.join(identity)} are left, outside the lineage")
        if operation == "RESTORE" and (target is None or int(target) < oldest):
            raise ValueError(f"a RESTORE went back to version {target}, which the cleanup deleted")
    return recorded


def restore_app_id(base: str, txns: dict[str, int], batch_id: int,
                   lineage_latest: Callable[[], int | None]) -> str:
    """The ``txnAppId`` for this pipeline/table's batches from ``batch_id`` on.

    ``txns`` is the table's record of transaction versions (app id -> newest version), and
    ``lineage_latest`` gives the newest batch id of this pipeline/table still in the table's
    lineage (read only when needed). The newest generation in use (``base``, then
    ``base/restore-1``, ``-2`` …) stays while Delta would not skip ``batch_id`` under it, or while
    its recorded version is within the lineage: a replayed batch then carries the same app id and
    Delta skips it. When the record is ahead of the lineage, a RESTORE took batches out: the next
    generation, so that the re-copied batches are written, not skipped as duplicates."""
    gens = generations(base, txns)
    if not gens:
        return base
    gen = max(gens)
    if gens[gen] >= batch_id:  # Delta would skip this batch under this app id: is it in the lineage?
        latest = lineage_latest()
        if latest is None or gens[gen] > latest:
            gen += 1
    return base if gen == 0 else f"{base}{RESTORED}{gen}"


@dataclass
class DeltaSink(BatchIdentity):
    kind: ClassVar[str] = "Delta"
    aged_out_how: ClassVar[str] = "Delta's log cleanup deleted them, older than delta.logRetentionDuration"
    spark: Any
    target: TargetConfig
    _app_id: str | None = field(default=None, repr=False)
    _ahead: ReadAhead[dict[str, int] | None] | None = field(default=None, repr=False)

    @property
    def ident(self) -> str:
        return self.target.identifier

    @property
    def path(self) -> str:
        assert self.target.path is not None
        return self.target.path

    def _table(self) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.path)

    def exists(self) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.path))

    def drop_stale_stages(self, pipeline: str, table: str) -> list[str]:
        """Nothing to drop: a Delta batch is audited from Spark's cache before its one commit,
        never staged on the table."""
        return []

    def close(self) -> None:
        """Nothing kept between batches."""

    def create(self, schema: Any) -> None:
        from delta.tables import DeltaTable

        builder = DeltaTable.createIfNotExists(self.spark).location(self.path).addColumns(schema)
        if self.target.partition_by:
            builder = builder.partitionedBy(*self.target.partition_by)
        for k, v in self.target.properties.items():
            builder = builder.property(k, v)
        builder.execute()

    def ensure(self, schema: Any) -> list[str]:
        """Create the table on first use; add columns new in the source. Returns added names."""
        if not self.exists():
            self.create(schema)
            return []
        added = new_columns(self.ident, self._table().toDF().schema, schema)
        if added:
            cols = ", ".join(f"{quote(f.name)} {f.dataType.simpleString()}" for f in added)
            self.spark.sql(f"ALTER TABLE {self.ident} ADD COLUMNS ({cols})")
        return [f.name for f in added]

    def app_id(self, pipeline: str, table: str, batch_id: int) -> str:
        """``coldtier/<pipeline>/<table>``, or ``…/restore-N`` once a RESTORE took batches out.

        A RESTORE takes commits out of the table but not Delta's record of the transaction
        versions they used: reusing the app id after recover-ledger would make Delta skip the
        re-copied batches as duplicates. The app id is chosen once per run from that record
        (the table's ``SetTransaction`` actions, kept in its checkpoints) and, when the record
        is at or past the batch, the batches still in the lineage (``restore_app_id``): never by
        counting RESTOREs in the commit history, whose old entries Delta's log cleanup deletes."""
        if self._app_id is None:
            def lineage_latest() -> int | None:
                latest = self.latest_batch(pipeline, table)
                return latest[0] if latest else None

            self._app_id = restore_app_id(app_id_base(pipeline, table), self._transactions(), batch_id,
                                          lineage_latest)
        return self._app_id

    def read_ahead(self, pipeline: str, table: str) -> None:
        """Start reading the table's transaction record (``_transactions``: a rebuild of the
        table's state from its log, which the run's first write needs for its ``txnAppId``
        anyway) in the background, while the recovery check reads the commit history: the two
        cold reads of a relaunch side by side instead of one after the other (a relaunch to its
        first batch 19.0 -> 17.1 s here, docs/tuning.md). Its Spark job runs in the caller's
        pool, in a job group of its own (``<group>/delta-record``): it is not the batch's read.
        A table that does not exist yet has no record to read (the first write creates it)."""
        if self._app_id is None and self._ahead is None:
            self._ahead = ReadAhead.start(
                self.spark, lambda: self._read_transactions() if self.exists() else None, "delta-record")

    def _transactions(self) -> dict[str, int]:
        """The table's idempotent-write record: app id -> the newest transaction version (the
        table exists: ``app_id`` is asked only by a write to it). Taken from ``read_ahead``
        when that read found it, else read now."""
        ahead, self._ahead = self._ahead, None
        found = ahead.result() if ahead is not None else None
        return found if found is not None else self._read_transactions()

    def _read_transactions(self) -> dict[str, int]:
        """The record as the table's current snapshot holds it."""
        jvm = self.spark._jvm
        snapshot = jvm.org.apache.spark.sql.delta.DeltaLog.forTableWithSnapshot(
            self.spark._jsparkSession, self.path)._2()
        txns = snapshot.setTransactions()
        return {t.appId(): int(t.version()) for t in (txns.apply(i) for i in range(txns.length()))}

    def aged_out_batch(self, pipeline: str, table: str) -> int | None:
        """The newest batch of this pipeline/table in Delta's transaction record, when the table's
        log no longer has any of their commits; None while the log is whole or Delta never
        committed one of their batches.

        Delta's log cleanup deletes the commits older than ``delta.logRetentionDuration`` (30
        days by default) whenever a later commit checkpoints the table: a table that got no
        batch for that long while other commits (``coldtier maintain``, another writer) went on
        loses every batch commit, the identities the recovery check reads. The record of
        transaction versions (``SetTransaction``, what Delta's own streaming sink relies on) is
        kept in the checkpoints. Raises LedgerInconsistent when what is left cannot say which
        batches the table holds: a RESTORE to a version the cleanup deleted, or some of their
        commits left and none in the lineage (a RESTORE took the newer ones out)."""
        if not self.exists():
            return None
        history = self._history(None)
        if min((int(r["version"]) for r in history), default=0) == 0:
            return None  # the log is whole: the lineage says everything (read no record)
        commits = [(int(r["version"]), r["operation"],
                    (r["operationParameters"] or {}).get("version") if r["operation"] == "RESTORE" else None,
                    (found[0], found[1]) if (found := self._identity(r)) is not None else None)
                   for r in history]
        try:
            return aged_out(commits, (pipeline, table),
                            recorded_batch(app_id_base(pipeline, table), self._transactions()))
        except ValueError as exc:
            raise LedgerInconsistent(
                f"{pipeline}/{table}: Delta's log cleanup deleted the commits of {self.ident} before version "
                f"{min(c[0] for c in commits)} (older than delta.logRetentionDuration), and {exc}: what is "
                f"left cannot say which of this pipeline's batches the table holds; coldtier will not "
                f"guess. See docs/runbooks/ledger-inconsistent.md.") from None

    def append_rows(self, df: Any, note: dict[str, str]) -> None:
        """Append rows that are not a batch (a reconcile repair), in one commit whose
        ``userMetadata`` carries ``note`` and no batch identity."""
        (df.write.format("delta").mode("append")
         .option("userMetadata", json.dumps(note, sort_keys=True))
         .option("compression", self.target.properties.get("compression", "zstd"))
         .save(self.path))

    def append(self, df: Any, batch: Batch, audit: Callable[[int], None] | None = None) -> SnapshotInfo:
        """Delta has no staged commits: the batch is read once into Spark's cache (memory, then
        local disk), counted and audited, and only then written from the cache; a stopped batch
        leaves the table untouched."""
        if audit is not None:
            from pyspark import StorageLevel

            df = df.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                audit(df.count())
                return self._append(df, batch)
            finally:
                df.unpersist()
        return self._append(df, batch)

    def _append(self, df: Any, batch: Batch) -> SnapshotInfo:
        (df.write.format("delta").mode("append")
         .option("txnAppId", self.app_id(batch.pipeline, batch.table, batch.batch_id))
         .option("txnVersion", str(batch.batch_id))
         .option("userMetadata", json.dumps(batch_properties(batch), sort_keys=True))
         .option("compression", self.target.properties.get("compression", "zstd"))
         .save(self.path))
        info = self.find_batch(batch.pipeline, batch.table, batch.batch_id)
        if info is None:
            raise RuntimeError(f"Delta append of batch {batch.batch_id} to {self.ident} left no commit "
                               f"carrying its batch id")
        return info

    def check_unique(self, pipeline: str, table: str, batch_id: int) -> None:
        """Delta itself never commits a (txnAppId, txnVersion) twice: nothing to check."""

    def current_commit(self) -> int | None:
        if not self.exists():
            return None
        return int(self._table().history(1).collect()[0]["version"])

    def _batches(self) -> Any:
        """Every coldtier batch commit still in the table's lineage, newest first: (pipeline,
        table, batch id, end cursor, version, rows). A RESTORE to version v drops the commits
        after v from the lineage (their files are gone from the table) even though the history
        keeps listing them."""
        if not self.exists():
            return
        cutoff: int | None = None
        seen: int | None = None  # the oldest version looked at so far
        for limit in (RECENT, None):  # the newest commits first: a batch is nearly always there
            for r in self._history(limit):
                if seen is not None and r["version"] >= seen:
                    continue
                seen = r["version"]
                if cutoff is not None and r["version"] > cutoff:
                    continue
                if r["operation"] == "RESTORE":
                    target = (r["operationParameters"] or {}).get("version")
                    cutoff = int(target) if target is not None else cutoff
                    continue
                found = self._identity(r)
                if found is not None:
                    yield found
            if seen is None or seen == 0:
                return

    def adopt(self, pipeline: str, table: str, batch_id: int, end: dict[str, Any],
              note: dict[str, str]) -> int:
        """An empty commit carrying a batch identity (``adopt``): the new identity's watermark."""
        doc = {P_PIPELINE: pipeline, P_TABLE: table, P_BATCH: str(batch_id), P_END: json.dumps(end), **note}
        empty = self.spark.createDataFrame([], self._table().toDF().schema)
        (empty.write.format("delta").mode("append")
         .option("txnAppId", self.app_id(pipeline, table, batch_id)).option("txnVersion", str(batch_id))
         .option("userMetadata", json.dumps(doc, sort_keys=True)).save(self.path))
        found = self.find_batch(pipeline, table, batch_id)
        if found is None:
            raise RuntimeError(f"the adoption commit to {self.ident} left no commit of batch {batch_id}")
        return found.snapshot_id

    def _history(self, limit: int | None) -> list[Any]:
        table = self._table()
        df = table.history(limit) if limit else table.history()
        rows = df.select("version", "operation", "operationParameters", "operationMetrics",
                         "userMetadata").collect()
        return sorted(rows, key=lambda r: r["version"], reverse=True)

    @staticmethod
    def _identity(r: Any) -> tuple[str, str, int, dict[str, Any], int, int] | None:
        meta = r["userMetadata"]
        if not meta:
            return None
        try:
            doc = json.loads(meta)
        except ValueError:
            return None
        if doc.get(P_PIPELINE) is None or doc.get(P_BATCH) is None:
            return None
        written = int((r["operationMetrics"] or {}).get("numOutputRows") or 0)
        return (doc[P_PIPELINE], doc.get(P_TABLE), int(doc[P_BATCH]), json.loads(doc[P_END]),
                int(r["version"]), written)
