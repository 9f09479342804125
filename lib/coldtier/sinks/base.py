"""What every sink shares: the interface, the batch identity it writes and finds again.

A sink makes a batch durable as one atomic commit that carries the batch's identity
(pipeline, table, batch id, end cursor) and can find that commit again: the ledger check and
the recovery of a crashed batch read it back, so a replayed batch is never written twice.
Iceberg keeps it in snapshot summaries; Delta in commit ``userMetadata`` plus its own
idempotent-write transaction (``txnAppId``/``txnVersion``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from coldtier.consistency import AGED_UNKNOWN  # noqa: F401  (also importable from here)
from coldtier.errors import SchemaConflict, ShortRead  # noqa: F401  (also importable from here)
from coldtier.records import Batch, SnapshotInfo

P_PIPELINE = "coldtier.pipeline"
P_TABLE = "coldtier.table"
P_BATCH = "coldtier.batch-id"
P_END = "coldtier.end-cursor"


class Sink(Protocol):
    ident: str
    kind: ClassVar[str]  # the table format, for messages: "Iceberg", "Delta"
    aged_out_how: ClassVar[str]  # how batch commits leave this format's lineage by age

    def exists(self) -> bool: ...
    def ensure(self, schema: Any) -> list[str]: ...
    def append(self, df: Any, batch: Batch, audit: Callable[[int], None] | None = None) -> SnapshotInfo:
        """Write the batch as one commit carrying its identity. ``audit`` sees the batch's row
        count before anything is visible on the table and raises to stop it."""
        ...
    def append_rows(self, df: Any, note: dict[str, str]) -> None: ...
    def find_batch(self, pipeline: str, table: str, batch_id: int) -> SnapshotInfo | None: ...
    def drop_stale_stages(self, pipeline: str, table: str) -> list[str]:
        """Remove what earlier runs of this pipeline/table staged and left; the names of those
        that held a batch never published."""
        ...
    def close(self) -> None:
        """The end of a run: remove what the sink kept staged for a next batch."""
        ...
    def read_ahead(self, pipeline: str, table: str) -> None:
        """The start of a run, before the recovery check: begin reading, in the background,
        what the run's first write of this pipeline/table will need."""
        ...
    def check_unique(self, pipeline: str, table: str, batch_id: int) -> None:
        """Raise LedgerInconsistent if the batch was ever committed twice."""
        ...
    def latest_batch(self, pipeline: str, table: str) -> tuple[int, dict[str, Any]] | None: ...
    def aged_out_batch(self, pipeline: str, table: str) -> int | None: ...
    def batch_history(self, pipeline: str, table: str) -> list[tuple[int, dict[str, Any], int, int]]: ...
    def current_commit(self) -> int | None: ...
    def identities(self) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]: ...
    def adopt(self, pipeline: str, table: str, batch_id: int, end: dict[str, Any],
              note: dict[str, str]) -> int: ...


def batch_properties(batch: Batch) -> dict[str, str]:
    import json

    return {P_PIPELINE: batch.pipeline, P_TABLE: batch.table, P_BATCH: str(batch.batch_id),
            P_END: json.dumps(batch.rng.hi.to_json())}


def of_identity(batches: Any, pipeline: str, table: str) -> Any:
    """From a sink's batch commits, newest first, those of one pipeline/table, without the
    identity: (batch id, end cursor, commit id, rows)."""
    for p, t, *rest in batches:
        if p == pipeline and t == table:
            yield tuple(rest)


def newest_per_identity(batches: Any) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    """From a sink's batch commits, newest first ((pipeline, table, batch id, end cursor, …)):
    every (pipeline, table) and its newest (batch id, end cursor)."""
    out: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for p, t, batch_id, end, *_ in batches:
        out.setdefault((p, t), (batch_id, end))
    return out


def new_columns(ident: str, current: Any, source: Any) -> list[Any]:
    """Source fields the target lacks. Raises SchemaConflict for a column the source dropped
    or retyped: coldtier adds columns, never drops or converts them."""
    cur = {f.name.lower(): f for f in current.fields}
    src = {f.name.lower(): f for f in source.fields}
    missing = [cur[n].name for n in cur if n not in src]
    if missing:
        raise SchemaConflict(
            f"target {ident} has column(s) {', '.join(missing)} that the source no longer "
            f"has; coldtier does not drop columns. Restore the source column(s) or migrate "
            f"the target table deliberately.")
    changed = [f"{cur[n].name}: target {cur[n].dataType.simpleString()}, source "
               f"{f.dataType.simpleString()}" for n, f in src.items()
               if n in cur and cur[n].dataType != f.dataType]
    if changed:
        raise SchemaConflict(f"column types of the source differ from target {ident}: {'; '.join(changed)}.")
    return [f for n, f in src.items() if n not in cur]


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class BatchIdentity(ABC):
    """The batch-identity reads every sink shares, over its own ``_batches()`` (the commits of
    its lineage, newest first, each with the identity its properties carry)."""

    @abstractmethod
    def _batches(self) -> Any: ...

    def _ours(self, pipeline: str, table: str) -> Any:
        """Commits of this pipeline/table in the lineage, newest first: (batch id, end cursor,
        snapshot id or version, rows)."""
        return of_identity(self._batches(), pipeline, table)

    def identities(self) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
        """Every (pipeline, table) with batches in the lineage: its newest (batch id, end cursor)."""
        return newest_per_identity(self._batches())

    def find_batch(self, pipeline: str, table: str, batch_id: int) -> SnapshotInfo | None:
        """The commit in the lineage that holds this batch, if any."""
        for found, _, commit_id, rows in self._ours(pipeline, table):
            if found == batch_id:
                return SnapshotInfo(commit_id, found, rows)
            if found < batch_id:
                return None  # batch ids only grow along the lineage
        return None

    def batch_history(self, pipeline: str, table: str) -> list[tuple[int, dict[str, Any], int, int]]:
        """Every batch of this pipeline/table in the lineage, oldest first: the evidence
        recover-ledger rebuilds from."""
        return list(self._ours(pipeline, table))[::-1]

    def latest_batch(self, pipeline: str, table: str) -> tuple[int, dict[str, Any]] | None:
        """(batch id, end cursor) of the newest commit of this pipeline/table in the lineage."""
        for batch_id, end, _, _ in self._ours(pipeline, table):
            return batch_id, end
        return None

    def aged_out_batch(self, pipeline: str, table: str) -> int | None:
        """Asked when the lineage holds no batch of this pipeline/table: whether their commits
        left it by age. The newest batch the table's own record still vouches for (Delta's
        transaction record), ``AGED_UNKNOWN`` when they may have left but nothing says which
        (Iceberg snapshots expired by another process: the ancestry ends at a deleted
        snapshot), None when the lineage is whole."""
        return None
