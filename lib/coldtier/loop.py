"""The micro-batch loop, foreachBatch style: plan → read → write → commit, per table.

Exactly once, at any crash instant:
- the plan (exact range) is in the ledger before data moves, so a replay reads the same rows;
- the sink's commit (Iceberg snapshot, Delta version) carries the batch id, so a replay that
  finds it only completes the ledger;
- the ledger commit and the watermark move in one PostgreSQL transaction.

Longer than 300 lines because ``TableRunner`` is one state machine (recover, verify, step, move,
audit); its decisions are pure functions elsewhere (``consistency``, ``planning``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coldtier.config import AppConfig, TableConfig
from coldtier.consistency import AGED_UNKNOWN, Verdict, aged_out_vs_ledger, ledger_vs_sink
from coldtier.errors import LedgerInconsistent, ShortRead, StageLost
from coldtier.faults import FaultHook
from coldtier.ledger import Ledger
from coldtier.offset import Offset, offset_fields
from coldtier.reconcile import rows_end_at
from coldtier.records import Batch, BatchMetrics
from coldtier.sinks import make_sink
from coldtier.source import (
    UTF8_MARK,
    Planner,
    SourceDataError,
    make_source,
    resolve_cursor,
    source_client,
)
from coldtier.spark import activate


@dataclass(frozen=True)
class BatchResult:
    table: str
    batch_id: int
    rows: int
    progress: dict[str, Any]


def ledger_watermark(ledger: Ledger, pipeline: str, table: str) -> tuple[int, Offset | None]:
    """(last committed batch id, end offset) when the watermark row agrees with the commit log;
    0 and None for a table never run. Checked without Spark, before every plan."""
    last = ledger.last_committed(pipeline, table)
    exists, wm_batch, wm_offset = ledger.watermark(pipeline, table)
    if last is None and not exists:
        return 0, None
    if last is None or not exists or wm_batch != last.batch_id or wm_offset != last.rng.hi:
        state = "missing" if not exists else f"batch {wm_batch}, offset {wm_offset}"
        raise LedgerInconsistent(
            f"{pipeline}/{table}: the watermark row ({state}) does not match the last committed batch "
            f"({last.batch_id if last else 'none'}, offset {last.rng.hi if last else None}); "
            f"coldtier will not guess which is right. Run recover-ledger.")
    return last.batch_id, last.rng.hi


def refused_value(exc: BaseException) -> str | None:
    """The message of a value check that failed inside a batch's read (the source's
    ``throwIf`` guards, carried through the driver and Spark), or None."""
    m = re.search(re.escape(UTF8_MARK) + r"[^'\n]*(?:to keep the bytes|does not replace them)", str(exc))
    return m.group(0).removeprefix("coldtier: ") if m else None


@dataclass
class TableRunner:
    """Runs the batches of one table inside one Spark application."""

    cfg: AppConfig
    table: TableConfig
    spark: Any
    ledger: Ledger
    hook: FaultHook
    emit: Callable[[dict[str, Any]], None]
    lock: Any = None  # AdvisoryLock held for this table; checked before every batch

    def __post_init__(self) -> None:
        self.client = source_client(self.cfg, self.table)
        self._describe()
        self.sink = make_sink(self.spark, self.table.target)
        self.pipeline = self.cfg.pipeline
        try:
            self.ttl_expr = self.planner.ttl_expression()
        except Exception:  # the TTL check is best effort; its absence is not a failure
            self.ttl_expr = None
        self._ttl: dict[str, Any] = {}
        self._ensured: Any = None  # the batch schema the target was last made to fit
        self.phase = "idle"  # the phase in flight, named in the failure metrics

    def _describe(self) -> None:
        """The source's columns, cursor and mappings (again after a schema change)."""
        self.schema_fp = self._schema_fingerprint()
        self.spec, columns = resolve_cursor(self.client, self.table)
        self.planner = Planner(self.client, self.table, self.spec)
        self.source = make_source(self.cfg.sources[self.table.connection], self.table, self.spec, columns)

    def _schema_fingerprint(self) -> str:
        """A hash of the source table's columns and types: one cheap query per batch tells a
        long-running loop that a column was added (or changed) in ClickHouse."""
        db, _, name = self.table.source_table.partition(".")
        return self.client.scalar(
            f"SELECT toString(cityHash64(groupArray(tuple(name, type)))) FROM (SELECT name, type FROM "
            f"system.columns WHERE database = '{db.strip('`')}' AND table = '{name.strip('`')}' ORDER BY "
            f"position)")

    # -- consistency -------------------------------------------------------------------
    def committed_watermark(self) -> tuple[int, Offset | None]:
        """(last committed batch id, its end offset), checked against the watermark row."""
        last_id, wm = ledger_watermark(self.ledger, self.pipeline, self.table.name)
        if last_id == 0:
            found = self.sink.identities()
            sunk = found.get((self.pipeline, self.table.name))
            if sunk is not None and ledger_vs_sink(0, None, sunk[0], None, self._planned_id()) \
                    is Verdict.CRASHED_BETWEEN_COMMITS:
                return 0, None  # the first batch crashed between the sink and the ledger commit
            if sunk is not None:
                raise LedgerInconsistent(
                    f"{self.pipeline}/{self.table.name}: the ledger has no batches but {self.sink.kind} "
                    f"table {self.sink.ident} holds batch {sunk[0]} of this pipeline; running would copy "
                    f"rows again. Run recover-ledger.")
            aged = None if sunk is not None else self.sink.aged_out_batch(self.pipeline, self.table.name)
            if aged is not None and aged != AGED_UNKNOWN:  # (an expired Iceberg history: nothing says whose)
                raise LedgerInconsistent(
                    f"{self.pipeline}/{self.table.name}: the ledger has no batches but {self.sink.kind}'s "
                    f"transaction record of {self.sink.ident} holds batch {aged} of this pipeline, whose "
                    f"commits have left the table ({self.sink.aged_out_how}); running would copy rows "
                    f"again, and recover-ledger cannot rebuild a watermark from commits that are gone. "
                    f"Restore the ledger from a backup (docs/runbooks/ledger-inconsistent.md).")
            if found:
                others = ", ".join(f"{p}/{t} (batch {b})" for (p, t), (b, _) in found.items())
                first = next(iter(found))
                raise LedgerInconsistent(
                    f"{self.pipeline}/{self.table.name}: {self.sink.kind} table {self.sink.ident} already "
                    f"holds coldtier batches of {others}; starting {self.pipeline}/{self.table.name} from "
                    f"nothing would copy every row the hot tier still has again. If the pipeline or table "
                    f"was renamed, adopt its watermark: coldtier adopt --config FILE --tables "
                    f"{self.table.name} --from {first[0]}/{first[1]}.")
        return last_id, wm

    def verify(self) -> None:
        """The ledger against the sink's own record of batches: never skip, never copy twice."""
        last_id, wm = self.committed_watermark()
        sunk = self.sink.latest_batch(self.pipeline, self.table.name)
        sunk_id, sunk_end = (sunk[0], Offset.from_json(sunk[1])) if sunk else (0, None)
        where = f"{self.pipeline}/{self.table.name}"
        aged = self.sink.aged_out_batch(self.pipeline, self.table.name) if sunk is None and last_id else None
        if aged is not None:
            check = aged_out_vs_ledger(aged, last_id, wm, lambda: rows_end_at(
                self.spark, self.sink.ident, self.spec, self.source.mappings, wm),
                self.sink.ident, self.sink.aged_out_how)
            if not check.agrees:
                raise LedgerInconsistent(
                    f"{where}: {check.gone}, and {check.evidence}: coldtier cannot tell which is right, and "
                    f"recover-ledger cannot rebuild a watermark from commits that are gone "
                    f"(docs/runbooks/ledger-inconsistent.md).")
            print(f"coldtier: {where}: {check.gone}; {check.evidence}, which confirms it: the run goes on "
                  f"from the ledger's watermark", file=sys.stderr, flush=True)
            return
        verdict = ledger_vs_sink(last_id, wm, sunk_id, sunk_end,
                                 self._planned_id() if sunk_id > last_id else None)
        if verdict is Verdict.CRASHED_BETWEEN_COMMITS:
            return  # recover() completes it
        if verdict is Verdict.LEDGER_BEHIND:
            raise LedgerInconsistent(
                f"{where}: the ledger is behind {self.sink.kind}: its last committed batch is {last_id} but "
                f"{self.sink.ident} holds batch {sunk_id}; running would copy rows again. "
                f"Run recover-ledger.")
        if verdict is Verdict.LEDGER_AHEAD:
            raise LedgerInconsistent(
                f"{where}: the ledger is ahead of {self.sink.kind}: it records batch {last_id} as committed "
                f"but the newest batch in {self.sink.ident} is {sunk_id or 'none'}; running would skip rows. "
                f"Run recover-ledger (or restore the table's snapshots).")
        if sunk is not None:
            self.sink.check_unique(self.pipeline, self.table.name, sunk_id)
        if verdict is Verdict.WATERMARK_DIFFERS:
            raise LedgerInconsistent(
                f"{where}: the watermark {wm} differs from the end cursor {sunk[1] if sunk else None} that "
                f"{self.sink.kind} recorded for batch {sunk_id}. Run recover-ledger.")

    def _planned_id(self) -> int | None:
        """The batch the ledger holds as planned (not committed), if any."""
        last = self.ledger.last_batch(self.pipeline, self.table.name)
        return last.batch_id if last is not None and last.status == "planned" else None

    @property
    def job_group(self) -> str:
        return f"coldtier/{self.pipeline}/{self.table.name}"

    def _bind(self) -> None:
        """Spark work of this table, from whichever thread runs it: the session active, its own
        FAIR pool (a big backfill shares the executors with the live tables instead of queueing
        them) and job group (named in Spark's UI, watched by the fault hook)."""
        sc = self.spark.sparkContext
        activate(self.spark)
        sc.setLocalProperty("spark.scheduler.pool", self.table.name)
        sc.setJobGroup(self.job_group, f"coldtier {self.pipeline}/{self.table.name}", False)

    # -- one batch ---------------------------------------------------------------------
    def recover(self) -> BatchResult | None:
        """Finish a batch that was planned but not committed (a crash or failure)."""
        self.phase = "recover"
        self._bind()
        self.sink.read_ahead(self.pipeline, self.table.name)
        self.verify()
        dropped = self.sink.drop_stale_stages(self.pipeline, self.table.name)
        if dropped:
            print(f"coldtier: {self.pipeline}/{self.table.name}: dropped {len(dropped)} stage branch(es) "
                  f"of {self.sink.ident} holding a batch an interrupted run never published (it is "
                  f"replayed from the ledger): {', '.join(dropped)}",
                  file=sys.stderr, flush=True)
        last = self.ledger.last_batch(self.pipeline, self.table.name)
        if last is None or last.status == "committed":
            return None
        found = self.sink.find_batch(self.pipeline, self.table.name, last.batch_id)
        t0 = time.perf_counter()
        if found is not None:
            m = BatchMetrics(found.added_rows, found.snapshot_id, 0.0, 0.0, 0.0, 0.0, 0.0, None, None)
            self.phase = "commit"
            self.ledger.commit(last, m, self._epoch())
            self.phase = "idle"
            progress = self._progress(last, m, recovered="ledger-completed")
            self.emit(progress)
            return BatchResult(self.table.name, last.batch_id, found.added_rows, progress)
        self.ledger.note_attempt(last)
        df = self._frame(last)
        return self._move(last, df, 0.0, time.perf_counter() - t0, started=t0, recovered="replayed")

    def step(self, ceiling: Offset | None = None) -> BatchResult | None:
        """Plan and run the next batch; None when there is nothing to read."""
        t0 = time.perf_counter()
        self.phase = "plan"
        self._bind()
        if self.lock is not None:
            self.lock.ensure()
        last_id, lo = self.committed_watermark()
        if self._schema_fingerprint() != self.schema_fp:
            self._describe()  # a column added in ClickHouse is copied from this batch on
        planned = self.planner.plan(lo, ceiling)
        if planned.rng is None:
            self.phase = "idle"
            return None
        self._check_ttl(lo)
        batch = Batch(self.pipeline, self.table.name, last_id + 1, "planned", planned.rng,
                      planned.partitions, planned.rows)
        plan_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.phase = "read"
        df = self._frame(batch)  # schema checked before the plan is recorded
        read_s = time.perf_counter() - t1
        self.ledger.record_plan(batch, self._epoch())
        self.hook(self.table.name, batch.batch_id, "after-plan")
        return self._move(batch, df, plan_s, read_s, started=t0, now_ms=planned.server_now_ms)

    def _check_ttl(self, lo: Offset | None) -> None:
        """Rows about to expire unread are data loss: warn every batch while the oldest unread
        row is within the configured margin of the source table's TTL. Best effort: a TTL this
        check cannot evaluate gives one warning, never a failed batch."""
        from coldtier.clickhouse_http import ClickHouseError, ClickHouseUnreachable

        self._ttl = {"ttl_margin_s": None}  # null: the source has no TTL (or it cannot be evaluated)
        if self.ttl_expr is None:
            return
        try:
            margin = self.planner.ttl_margin_s(self.ttl_expr, lo)
        except (ClickHouseError, ClickHouseUnreachable, ValueError, KeyError) as exc:
            print(f"coldtier: WARNING: {self.pipeline}/{self.table.name}: the TTL check cannot evaluate "
                  f"{self.ttl_expr!r} and is off for this run: {exc}", file=sys.stderr, flush=True)
            self.ttl_expr = None
            return
        if margin is None:
            return
        self._ttl = {"ttl_margin_s": margin}
        if margin < self.table.cursor.ttl_margin_s:
            self._ttl["ttl_warning"] = True
            print(f"coldtier: WARNING: {self.pipeline}/{self.table.name}: the oldest unread row of "
                  f"{self.table.source_table} expires by its TTL ({self.ttl_expr}) in {margin:.0f} s, "
                  f"less than the margin of {self.table.cursor.ttl_margin_s:.0f} s: rows may be lost "
                  f"unread. Catch up (bigger batches, more executors) or lengthen the TTL.",
                  file=sys.stderr, flush=True)

    def _frame(self, batch: Batch) -> Any:
        """The batch's DataFrame (lazy: only its schema is fetched), target made to fit it."""
        self.phase = "read"
        df = self.source.read(self.spark, batch)
        if df.schema != self._ensured:  # a catalog lookup and an analysis per batch otherwise
            self.sink.ensure(df.schema)
            self._ensured = df.schema
        return df

    def _move(self, batch: Batch, df: Any, plan_s: float, read_s: float, started: float,
              now_ms: int | None = None, recovered: str | None = None) -> BatchResult:
        """read_s covers the JDBC schema query and setup; the rows themselves stream from
        ClickHouse into the Iceberg writer inside one Spark job, timed as write_s."""
        t2 = time.perf_counter()
        self.phase = "write"
        try:
            with self.hook.watch_write(self.spark, self.table.name, batch.batch_id, self.job_group):
                # reads from ClickHouse and writes, in one Spark job; audited before it is visible
                info = self.sink.append(df, batch, lambda rows: self._audit(batch, rows))
        except StageLost:
            if self.lock is not None:
                self.lock.check_fence()  # another run took the table over: FencedOut names it
            raise
        except Exception as exc:
            refused = refused_value(exc)
            if refused is None:
                raise
            raise SourceDataError(
                f"{self.pipeline}/{self.table.name} batch {batch.batch_id}: {refused}. Nothing of the batch "
                f"was written; it stays planned and is replayed by the next run.") from None
        write_s = time.perf_counter() - t2
        self.hook(self.table.name, batch.batch_id, "after-sink-commit")
        t3 = time.perf_counter()
        self.phase = "commit"
        lag = None
        if batch.rng.hi.ts is not None and now_ms is not None:
            lag = round(now_ms / 1000 - self.spec.ticks_to_seconds(batch.rng.hi.ts), 3)
        # nothing that waits on the source between the sink commit and the ledger commit
        m = BatchMetrics(info.added_rows, info.snapshot_id, round(plan_s, 4), round(read_s, 4),
                         round(write_s, 4), round(time.perf_counter() - t3, 4),
                         round(time.perf_counter() - started, 4), lag, None)
        self.ledger.commit(batch, m, self._epoch())
        self.phase = "idle"
        self.hook(self.table.name, batch.batch_id, "after-ledger-commit")
        backlog = self._backlog(batch.rng.hi)
        m = dataclasses.replace(m, backlog_rows=backlog, source_lag_s=lag_behind(m.source_lag_s, backlog))
        progress = self._progress(batch, m, recovered=recovered)
        self.emit(progress)
        return BatchResult(self.table.name, batch.batch_id, m.rows, progress)

    def close(self) -> None:
        """The end of the run (its lock still held): the sink drops what it kept for a next
        batch. Best effort: what is left, the next run's recovery drops."""
        try:
            self.sink.close()
        except Exception as exc:
            print(f"coldtier: WARNING: {self.pipeline}/{self.table.name}: {self.sink.ident} not tidied at "
                  f"the end of the run ({type(exc).__name__}); the next run's recovery does it",
                  file=sys.stderr, flush=True)

    def _backlog(self, after: Offset) -> int | None:
        """Rows after the batch, for progress and metrics: best effort, after the commit."""
        from coldtier.clickhouse_http import ClickHouseError, ClickHouseUnreachable

        try:
            return self.planner.backlog(after)
        except (ClickHouseError, ClickHouseUnreachable) as exc:
            print(f"coldtier: WARNING: {self.pipeline}/{self.table.name}: backlog not measured: {exc}",
                  file=sys.stderr, flush=True)
            return None

    def _audit(self, batch: Batch, rows: int) -> None:
        """Before a batch becomes visible: it read at least the rows it planned (its range can
        only gain rows after planning), and this run still owns the table."""
        if rows < batch.planned_rows:
            what = (f"{self.pipeline}/{self.table.name} batch {batch.batch_id} read {rows} rows but planned "
                    f"{batch.planned_rows}: rows vanished from its range after planning (a replica behind "
                    f"the one planning saw, a TTL or a mutation)")
            if self.table.short_read == "warn":
                print(f"coldtier: WARNING: {what}; published anyway (short_read: warn)", file=sys.stderr,
                      flush=True)
            else:
                raise ShortRead(f"{what}. Nothing was published; the batch stays planned and the next run "
                                f"reads its range again. For engines that collapse rows (ReplacingMergeTree, "
                                f"CollapsingMergeTree) set tables[].short_read: warn.")
        if self.lock is not None:
            self.lock.check_fence()

    def _epoch(self) -> int | None:
        return self.lock.epoch if self.lock is not None else None

    def _progress(self, batch: Batch, m: BatchMetrics, recovered: str | None = None) -> dict[str, Any]:
        doc = {
            "pipeline": batch.pipeline, "table": batch.table, "batch_id": batch.batch_id,
            **offset_fields(self.spec, "start", batch.rng.lo),
            **offset_fields(self.spec, "end", batch.rng.hi),
            "rows": m.rows, "plan_s": m.plan_s, "read_s": m.read_s, "write_s": m.write_s,
            "commit_s": m.commit_s, "total_s": m.total_s, "source_lag_s": m.source_lag_s,
            "backlog_rows": m.backlog_rows, "snapshot_id": m.snapshot_id,
        }
        doc.update(self._ttl)
        if recovered:
            doc["recovered"] = recovered
        return doc


def lag_behind(watermark_age_s: float | None, backlog_rows: int | None) -> float | None:
    """How far a table is behind its source: the age of its watermark (server now − the newest
    committed cursor) while rows wait beyond it; 0 when none do (a quiet source is not a late
    copy); the age when the backlog is unknown."""
    return 0.0 if backlog_rows == 0 else watermark_age_s


def emit_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


