"""The micro-batch loop, foreachBatch style: plan → read → write → commit, per table.

Exactly once, at any crash instant:
- the plan (exact range) is in the ledger before data moves, so a replay reads the same rows;
- the sink's commit (Iceberg snapshot, Delta version) carries the batch id, so a replay that
  finds it only completes the ledger;
- the ledger commit and the watermark move in one PostgreSQL transaction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.config import AppConfig, TableConfig
from coldtier.errors import LedgerInconsistent, ShortRead, UsageError
from coldtier.ledger import Ledger
from coldtier.offset import CursorSpec, Offset, offset_fields
from coldtier.planning import (
    PlannedRange,
    after_predicate,
    horizon_query,
    parse_offset,
    parse_plan_row,
    plan_query,
)
from coldtier.records import Batch, BatchMetrics
from coldtier.sinks import make_sink
from coldtier.source import (
    UTF8_MARK,
    JdbcSource,
    SourceDataError,
    SourceSchemaError,
    column_mappings,
    describe,
)


class FaultHook:
    """Makes the phases of a batch observable, for fault-injection tests. The phases:
    after-plan, during-read, during-write, after-sink-commit, after-ledger-commit.

    ``COLDTIER_FAULT=phase[:batch_id]`` kills this process (SIGKILL) when it reaches that
    phase; ``COLDTIER_PHASE_FILE=path`` appends ``table batch_id phase`` lines as phases
    are reached. Unset in production: then this does nothing and watches nothing.

    ``during-read`` and ``during-write`` are reached when the Spark job that streams the
    batch from ClickHouse into Iceberg data files has running tasks: rows are being read
    and files written, nothing is committed. (Reading and writing are one Spark job, so the
    two name the same instant.)
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        spec = env.get("COLDTIER_FAULT", "")
        self.phase, _, bid = spec.partition(":")
        self.batch_id = int(bid) if bid else None
        self.phase_file = env.get("COLDTIER_PHASE_FILE")

    @property
    def active(self) -> bool:
        return bool(self.phase or self.phase_file)

    def __call__(self, table: str, batch_id: int, phase: str) -> None:
        if self.phase_file:
            with open(self.phase_file, "a") as fh:
                fh.write(f"{table} {batch_id} {phase}\n")
        if phase == self.phase and (self.batch_id is None or self.batch_id == batch_id):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    @contextmanager
    def watch_write(self, spark: Any, table: str, batch_id: int) -> Iterator[None]:
        """Reports during-read/during-write once the batch's Spark job has running tasks."""
        if not self.active:
            yield
            return
        done = threading.Event()
        tracker = spark.sparkContext.statusTracker()

        def running() -> bool:
            for job_id in tracker.getActiveJobsIds():
                info = tracker.getJobInfo(job_id)
                for stage_id in info.stageIds if info else ():
                    stage = tracker.getStageInfo(stage_id)
                    if stage is not None and stage.numActiveTasks > 0:
                        return True
            return False

        def watch() -> None:
            while not done.is_set():
                try:
                    seen = running()
                except Exception:  # a status query racing the job's end: look again
                    seen = False
                if seen:
                    self(table, batch_id, "during-read")
                    self(table, batch_id, "during-write")
                    return
                done.wait(0.01)

        watcher = threading.Thread(target=watch, name="coldtier-phase-watch", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join(2)


@dataclass
class StopFlag:
    """Set by SIGTERM/SIGINT: finish the batch in flight, then stop. If the batch in flight does
    not finish within ``grace_s`` (a read that hangs), ``on_grace`` cancels it (the run's Spark
    jobs): the batch stays planned, the next run replays it, and the run still ends in bounded
    time and releases its lock."""

    event: threading.Event = field(default_factory=threading.Event)
    grace_s: float = 30.0
    cancelled: bool = False
    _on_grace: Callable[[], None] | None = None
    _timer: threading.Timer | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._signalled())

    def _signalled(self) -> None:
        self.event.set()
        self._start_timer()

    def arm(self, on_grace: Callable[[], None]) -> None:
        """What to do when the grace period ends (set once Spark is up)."""
        self._on_grace = on_grace
        if self.stopped:
            self._start_timer()

    def _start_timer(self) -> None:
        if self._timer is None and self._on_grace is not None:
            self._timer = threading.Timer(self.grace_s, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self.cancelled = True
        if self._on_grace is not None:
            self._on_grace()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        self.event.wait(seconds)


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


_TTL_RULE_TAIL = re.compile(r"\s+(DELETE|WHERE|TO\s+DISK|TO\s+VOLUME|RECOMPRESS|GROUP\s+BY)\b.*$",
                            re.S | re.I)
_TTL_NOT_DELETE = re.compile(r"\s(TO\s+DISK|TO\s+VOLUME|RECOMPRESS|GROUP\s+BY)\b", re.I)


def ttl_delete_expression(engine_full: str) -> str | None:
    """The time expression of the first row-deleting rule of a table TTL (``… DELETE WHERE …``
    included: it may delete unread rows), from ``system.tables.engine_full``; None if none.
    Rules that move or recompress (``TO DISK``, ``TO VOLUME``, ``RECOMPRESS``, ``GROUP BY``) keep
    rows and are skipped; commas inside functions do not split rules."""
    from coldtier.types import split_args

    m = re.search(r"\bTTL\s+(.+?)(?:\s+SETTINGS\b|$)", engine_full, re.S)
    if not m:
        return None
    for rule in split_args(m.group(1)):
        if not _TTL_NOT_DELETE.search(" " + rule):
            return _TTL_RULE_TAIL.sub("", rule).strip()
    return None


def source_client(cfg: AppConfig, t: TableConfig) -> ClickHouseHTTP:
    src = cfg.sources[t.connection]
    return ClickHouseHTTP.from_jdbc_url(src.url, src.user, src.password, src.connect_timeout_s,
                                        src.read_timeout_s)


def resolve_cursor(client: ClickHouseHTTP, t: TableConfig) -> tuple[CursorSpec, list[Any]]:
    from coldtier.clickhouse_http import ClickHouseError

    try:
        columns = describe(client, t.source_table)
    except ClickHouseError as exc:
        if exc.code in (60, 81):
            raise SourceSchemaError(f"source table {t.source_table} of table {t.name!r} does not exist "
                                    f"on {client.endpoint} (ClickHouse error {exc.code}).") from None
        raise
    types = {c.name: c.ch_type for c in columns}
    from coldtier.offset import CursorTypeError

    try:
        spec = CursorSpec.resolve(t.cursor, types, t.source_table)
    except CursorTypeError as exc:
        raise SourceSchemaError(f"table {t.name!r}: {exc}") from None
    column_mappings(columns, t)  # every column copyable exactly, or exit 6 before any plan
    return spec, columns


@dataclass
class Planner:
    """Decides the next batch of one table; needs ClickHouse's HTTP interface only."""

    client: ClickHouseHTTP
    table: TableConfig
    spec: CursorSpec

    def plan(self, lo: Offset | None, ceiling: Offset | None = None) -> PlannedRange:
        b = self.table.batch
        q = plan_query(self.spec, self.table.source_table, lo, b.max_rows, self.table.cursor.lag_s,
                       b.num_partitions, ceiling)
        rows = self.client.rows(q.sql, settings={"max_threads": "2"})
        return parse_plan_row(self.spec, lo, rows[0])

    def horizon(self) -> Offset | None:
        """The greatest cursor visible now (after the lag): the end of an available-now run."""
        rows = self.client.rows(horizon_query(self.spec, self.table.source_table,
                                              self.table.cursor.lag_s))
        return parse_offset(self.spec, rows[0]["k"]) if rows else None

    def ttl_expression(self) -> str | None:
        """The source table's row-deletion TTL expression (from its definition), if it has one."""
        db, _, name = self.table.source_table.partition(".")
        rows = self.client.rows(f"SELECT engine_full FROM system.tables WHERE database = '{db.strip('`')}' "
                                f"AND name = '{name.strip('`')}'")
        return ttl_delete_expression(rows[0]["engine_full"]) if rows else None

    def ttl_margin_s(self, ttl_expr: str, lo: Offset | None) -> float | None:
        """Seconds until the oldest unread row expires (the TTL evaluated by ClickHouse)."""
        if self.spec.ts_col is None:
            return None
        if lo is not None and lo.ts is not None:
            ts = self.spec.ts_literal(lo.ts)
        else:
            ts = f"(SELECT min({self.spec.ts_col}) FROM {self.table.source_table})"
        rows = self.client.rows(
            f"SELECT toUnixTimestamp64Milli(toDateTime64({ttl_expr}, 3)) - "
            f"toUnixTimestamp64Milli(now64(3)) AS ms FROM (SELECT {ts} AS {self.spec.ts_col})")
        return round(int(rows[0]["ms"]) / 1000, 1) if rows else None

    def backlog(self, lo: Offset | None) -> int:
        return int(self.client.scalar(
            f"SELECT count() FROM {self.table.source_table} WHERE {after_predicate(self.spec, lo)}"))


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
        self.kind = "Delta" if self.table.target.format == "delta" else "Iceberg"
        self.pipeline = self.cfg.pipeline
        try:
            self.ttl_expr = self.planner.ttl_expression()
        except Exception:  # the TTL check is best effort; its absence is not a failure
            self.ttl_expr = None
        self._ttl: dict[str, Any] = {}
        self.phase = "idle"  # the phase in flight, named in the failure metrics

    def _describe(self) -> None:
        """The source's columns, cursor and mappings (again after a schema change)."""
        self.schema_fp = self._schema_fingerprint()
        self.spec, columns = resolve_cursor(self.client, self.table)
        self.planner = Planner(self.client, self.table, self.spec)
        self.source = JdbcSource(self.cfg.sources[self.table.connection], self.table, self.spec, columns)

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
            pending = self.ledger.last_batch(self.pipeline, self.table.name) if sunk is not None else None
            if sunk is not None and pending is not None and pending.status == "planned" \
                    and pending.batch_id == sunk[0] == 1:
                return 0, None  # the first batch crashed between the sink and the ledger commit
            if sunk is not None:
                raise LedgerInconsistent(
                    f"{self.pipeline}/{self.table.name}: the ledger has no batches but {self.kind} table "
                    f"{self.sink.ident} holds batch {sunk[0]} of this pipeline; running would copy rows "
                    f"again. Run recover-ledger.")
            if found:
                others = ", ".join(f"{p}/{t} (batch {b})" for (p, t), (b, _) in found.items())
                first = next(iter(found))
                raise LedgerInconsistent(
                    f"{self.pipeline}/{self.table.name}: {self.kind} table {self.sink.ident} already holds "
                    f"coldtier batches of {others}; starting {self.pipeline}/{self.table.name} from nothing "
                    f"would copy every row the hot tier still has again. If the pipeline or table was "
                    f"renamed, adopt its watermark: coldtier adopt --config FILE --tables {self.table.name} "
                    f"--from {first[0]}/{first[1]}.")
        return last_id, wm

    def verify(self) -> None:
        """The ledger against the sink's own record of batches: never skip, never copy twice."""
        last_id, wm = self.committed_watermark()
        sunk = self.sink.latest_batch(self.pipeline, self.table.name)
        sunk_id = sunk[0] if sunk else 0
        where = f"{self.pipeline}/{self.table.name}"
        if sunk_id > last_id:
            pending = self.ledger.last_batch(self.pipeline, self.table.name)
            if pending is not None and pending.status == "planned" and pending.batch_id == sunk_id \
                    and sunk_id == last_id + 1:
                return  # a crash between the Iceberg and the ledger commit: recover() completes it
            raise LedgerInconsistent(
                f"{where}: the ledger is behind {self.kind}: its last committed batch is {last_id} but "
                f"{self.sink.ident} holds batch {sunk_id}; running would copy rows again. "
                f"Run recover-ledger.")
        if sunk_id < last_id:
            raise LedgerInconsistent(
                f"{where}: the ledger is ahead of {self.kind}: it records batch {last_id} as committed but "
                f"the newest batch in {self.sink.ident} is {sunk_id or 'none'}; running would skip rows. "
                f"Run recover-ledger (or restore the table's snapshots).")
        if sunk is not None:
            self.sink.check_unique(self.pipeline, self.table.name, sunk[0])
        if sunk is not None and Offset.from_json(sunk[1]) != wm:
            raise LedgerInconsistent(
                f"{where}: the watermark {wm} differs from the end cursor {sunk[1]} that {self.kind} "
                f"recorded for batch {sunk_id}. Run recover-ledger.")

    # -- one batch ---------------------------------------------------------------------
    def recover(self) -> BatchResult | None:
        """Finish a batch that was planned but not committed (a crash or failure)."""
        self.phase = "recover"
        self.verify()
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
        self.sink.ensure(df.schema)
        return df

    def _move(self, batch: Batch, df: Any, plan_s: float, read_s: float, started: float,
              now_ms: int | None = None, recovered: str | None = None) -> BatchResult:
        """read_s covers the JDBC schema query and setup; the rows themselves stream from
        ClickHouse into the Iceberg writer inside one Spark job, timed as write_s."""
        t2 = time.perf_counter()
        self.phase = "write"
        try:
            with self.hook.watch_write(self.spark, self.table.name, batch.batch_id):
                # reads from ClickHouse and writes, in one Spark job; audited before it is visible
                info = self.sink.append(df, batch, lambda rows: self._audit(batch, rows))
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


_UNITS = {"ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0,
          "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0,
          "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")$",
                       re.IGNORECASE)


@dataclass(frozen=True)
class Trigger:
    """``once``, ``available-now`` or ``processing-time=<interval>``; the interval is a number and
    a unit: ``ms``/``s``/``m``/``h`` or Spark's words (``500 milliseconds``, ``15 seconds``,
    ``1 minute``, ``2 hours``)."""

    kind: str  # once | available-now | processing-time
    interval_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Trigger:
        if text in ("once", "available-now"):
            return cls(text)
        if text.startswith("processing-time="):
            raw = text.split("=", 1)[1].strip()
            m = _INTERVAL.match(raw)
            if m is None:
                raise UsageError(f"bad trigger interval {raw!r}: a number and a unit, ms, s, m or h (e.g. "
                                 f"processing-time=15s, processing-time=500ms) or Spark's spelling "
                                 f"(processing-time='15 seconds')")
            secs = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if secs <= 0:
                raise UsageError(f"bad trigger interval {raw!r}: the interval must be positive")
            return cls("processing-time", secs)
        raise UsageError(f"unknown trigger {text!r}: use once, available-now or processing-time=15s")


def run_tables(runners: list[TableRunner], trigger: Trigger, max_batches: int | None,
               stop: StopFlag) -> int:
    """Drive the runners sequentially per trigger; returns the number of batches committed."""
    done = 0

    def budget_left() -> bool:
        return max_batches is None or done < max_batches

    for r in runners:
        if not budget_left():
            break
        if r.recover() is not None:
            done += 1
    if trigger.kind == "once":
        for r in runners:
            if stop.stopped or not budget_left():
                break
            if r.step() is not None:
                done += 1
        return done
    if trigger.kind == "available-now":
        ceilings = {r.table.name: r.planner.horizon() for r in runners}
        active = [r for r in runners if ceilings[r.table.name] is not None]
        while active and not stop.stopped and budget_left():
            for r in list(active):
                if stop.stopped or not budget_left():
                    break
                if r.step(ceilings[r.table.name]) is None:
                    active.remove(r)
                else:
                    done += 1
        return done
    while not stop.stopped and budget_left():
        began = time.monotonic()
        for r in runners:
            if stop.stopped or not budget_left():
                break
            if r.step() is not None:
                done += 1
        stop.sleep(max(0.0, trigger.interval_s - (time.monotonic() - began)))
    return done
