"""The PostgreSQL batch ledger: Structured Streaming's offset log and commit log.

``batches`` holds one row per (pipeline, table, batch_id): written as *planned* (the
offset log: the exact range, before any data moves) and turned *committed* (the commit
log: Iceberg snapshot id, rows, timings) in one transaction that also advances the
``watermarks`` row. The ledger is the source of truth for planning; Iceberg snapshot
summaries are the evidence used to finish or rebuild it.

Longer than 300 lines: the schema and every statement of the offset and commit logs, each fenced
and retried the same way, in one place.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from coldtier import pg
from coldtier.errors import LedgerError, LedgerInconsistent
from coldtier.offset import Offset
from coldtier.planning import Range, range_from_json, range_to_json
from coldtier.records import Batch, BatchMetrics

if TYPE_CHECKING:
    from coldtier.config import AppConfig

T = TypeVar("T")

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.batches (
    pipeline      text        NOT NULL,
    table_name    text        NOT NULL,
    batch_id      bigint      NOT NULL,
    status        text        NOT NULL CHECK (status IN ('planned', 'committed')),
    range_json    jsonb       NOT NULL,
    parts_json    jsonb       NOT NULL,
    planned_rows  bigint      NOT NULL,
    planned_at    timestamptz NOT NULL DEFAULT now(),
    committed_at  timestamptz,
    snapshot_id   bigint,
    rows          bigint,
    plan_s        double precision,
    read_s        double precision,
    write_s       double precision,
    commit_s      double precision,
    total_s       double precision,
    source_lag_s  double precision,
    backlog_rows  bigint,
    attempts      integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (pipeline, table_name, batch_id)
);
CREATE TABLE IF NOT EXISTS {s}.repairs (
    pipeline          text        NOT NULL,
    table_name        text        NOT NULL,
    bucket_start      timestamptz NOT NULL,
    bucket_s          integer     NOT NULL,
    source_rows       bigint      NOT NULL,
    sink_rows_before  bigint      NOT NULL,
    snapshot_id       bigint,
    repaired_at       timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.maintenance (
    pipeline      text        NOT NULL,
    table_name    text        NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    result        jsonb       NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.owners (
    pipeline     text        NOT NULL,
    table_name   text        NOT NULL,
    epoch        bigint      NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, table_name)
);
CREATE TABLE IF NOT EXISTS {s}.watermarks (
    pipeline    text        NOT NULL,
    table_name  text        NOT NULL,
    batch_id    bigint      NOT NULL,
    end_offset  jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, table_name)
);
"""


@dataclass
class Ledger:
    dsn: str = field(repr=False)
    schema: str = "coldtier"
    connect_timeout_s: float = 10.0
    retries: int = 5
    backoff_s: float = 0.5
    statement_timeout_s: float = 60.0
    tcp_timeout_s: float = 30.0
    # one connection per thread (tables of one run progress concurrently); all closed by close()
    _conns: dict[int, Any] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- connection with bounded retries --------------------------------------------------
    @property
    def _conn(self) -> Any:
        return self._conns.get(threading.get_ident())

    def _connect(self) -> Any:
        conn = pg.connect(self.dsn, "coldtier", self.connect_timeout_s, self.statement_timeout_s,
                          self.tcp_timeout_s)
        conn.autocommit = False
        return conn

    def _with_retry(self, fn: Callable[[Any], T]) -> T:
        delay = self.backoff_s
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._connect()
                    with self._guard:
                        self._conns[threading.get_ident()] = conn
                with pg.deadline(conn, self.statement_timeout_s + self.tcp_timeout_s):
                    result = fn(conn)
                    conn.commit()
                return result
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                last = exc
                self._discard()
                if "authentication failed" in str(exc):
                    break  # a wrong password does not heal with retries
                if attempt < self.retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 8.0)
            except Exception:
                conn = self._conn
                if conn is not None and not conn.closed:
                    with suppress(psycopg2.Error):
                        conn.rollback()
                raise
        raise LedgerError(f"PostgreSQL ledger ({where(self.dsn)}) failed: {_first_line(last)}") from None

    def _discard(self) -> None:
        """Drop this thread's connection (broken, or its state unknown)."""
        with self._guard:
            conn = self._conns.pop(threading.get_ident(), None)
        if conn is not None:
            with suppress(psycopg2.Error):  # discarding the connection: its state does not matter
                conn.close()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._guard:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with suppress(psycopg2.Error):
                conn.close()

    @contextmanager
    def _cursor(self, conn: Any) -> Iterator[Any]:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            yield cur

    # -- schema ----------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        def run(conn: Any) -> None:
            with self._cursor(conn) as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('coldtier-ledger-ddl'))")
                cur.execute(SCHEMA_SQL.format(s=self.schema))
        self._with_retry(run)

    def schema_present(self) -> bool:
        """Whether the ledger's tables exist (``validate`` creates nothing)."""
        def run(conn: Any) -> bool:
            with self._cursor(conn) as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f"{self.schema}.batches",))
                return bool(cur.fetchone()["present"])
        return self._with_retry(run)

    # -- reads -------------------------------------------------------------------------------
    def _newest(self, pipeline: str, table: str, committed_only: bool) -> Batch | None:
        status = "AND status = 'committed' " if committed_only else ""

        def run(conn: Any) -> Batch | None:
            with self._cursor(conn) as cur:
                cur.execute(f"SELECT * FROM {self.schema}.batches WHERE pipeline = %s AND table_name = %s "
                            f"{status}ORDER BY batch_id DESC LIMIT 1", (pipeline, table))
                row = cur.fetchone()
            return _batch(row) if row else None
        return self._with_retry(run)

    def last_batch(self, pipeline: str, table: str) -> Batch | None:
        return self._newest(pipeline, table, committed_only=False)

    def last_committed(self, pipeline: str, table: str) -> Batch | None:
        return self._newest(pipeline, table, committed_only=True)

    def watermark(self, pipeline: str, table: str) -> tuple[bool, int | None, Offset | None]:
        """(row exists, batch id, end offset) of the committed watermark."""
        def run(conn: Any) -> tuple[bool, int | None, Offset | None]:
            with self._cursor(conn) as cur:
                cur.execute(f"SELECT batch_id, end_offset FROM {self.schema}.watermarks "
                            f"WHERE pipeline = %s AND table_name = %s", (pipeline, table))
                row = cur.fetchone()
            if row is None:
                return False, None, None
            return True, row["batch_id"], Offset.from_json(row["end_offset"])
        return self._with_retry(run)

    def recent(self, pipeline: str, table: str, limit: int = 5) -> list[dict[str, Any]]:
        def run(conn: Any) -> list[dict[str, Any]]:
            with self._cursor(conn) as cur:
                cur.execute(f"SELECT batch_id, status, planned_rows, rows, snapshot_id, total_s, "
                            f"committed_at FROM {self.schema}.batches WHERE pipeline = %s AND "
                            f"table_name = %s ORDER BY batch_id DESC LIMIT %s", (pipeline, table, limit))
                return [dict(r) for r in cur.fetchall()]
        return self._with_retry(run)

    # -- writes ------------------------------------------------------------------------------
    def _fenced(self, cur: Any, batch: Batch, epoch: int | None) -> None:
        """Inside a write's transaction: the table's owner epoch is still ``epoch`` (locked until
        the transaction ends), so a run that lost its lock never writes the ledger."""
        if epoch is None:
            return
        cur.execute(f"SELECT epoch FROM {self.schema}.owners WHERE pipeline = %s AND table_name = %s "
                    f"FOR UPDATE", (batch.pipeline, batch.table))
        row = cur.fetchone()
        current = row["epoch"] if row else None
        if current != epoch:
            from coldtier.lock import FencedOut

            raise FencedOut(f"{batch.pipeline}/{batch.table}: another run owns the table now (owner epoch "
                            f"{current}, ours {epoch}); batch {batch.batch_id} is not recorded")

    def record_plan(self, batch: Batch, epoch: int | None = None) -> None:
        """The offset log entry: written before any data moves."""
        def run(conn: Any) -> None:
            with self._cursor(conn) as cur:
                self._fenced(cur, batch, epoch)
                cur.execute(
                    f"INSERT INTO {self.schema}.batches (pipeline, table_name, batch_id, status, "
                    f"range_json, parts_json, planned_rows) VALUES (%s, %s, %s, 'planned', %s, %s, %s)",
                    (batch.pipeline, batch.table, batch.batch_id, json.dumps(range_to_json(batch.rng)),
                     json.dumps([range_to_json(p) for p in batch.parts]), batch.planned_rows))
        self._with_retry(run)

    def note_attempt(self, batch: Batch) -> None:
        def run(conn: Any) -> None:
            with self._cursor(conn) as cur:
                cur.execute(f"UPDATE {self.schema}.batches SET attempts = attempts + 1 WHERE pipeline = %s "
                            f"AND table_name = %s AND batch_id = %s AND status = 'planned'",
                            (batch.pipeline, batch.table, batch.batch_id))
        self._with_retry(run)

    def commit(self, batch: Batch, m: BatchMetrics, epoch: int | None = None) -> None:
        """The commit log entry and the watermark, in one transaction, by the table's owner. A
        retry after a COMMIT that reached the server but whose answer was lost finds the batch
        committed with the same snapshot: that is success, not an inconsistency."""
        def run(conn: Any) -> None:
            with self._cursor(conn) as cur:
                self._fenced(cur, batch, epoch)
                cur.execute(
                    f"UPDATE {self.schema}.batches SET status = 'committed', committed_at = now(), "
                    f"snapshot_id = %s, rows = %s, plan_s = %s, read_s = %s, write_s = %s, commit_s = %s, "
                    f"total_s = %s, source_lag_s = %s, backlog_rows = %s WHERE pipeline = %s AND "
                    f"table_name = %s AND batch_id = %s AND status = 'planned'",
                    (m.snapshot_id, m.rows, m.plan_s, m.read_s, m.write_s, m.commit_s, m.total_s,
                     m.source_lag_s, m.backlog_rows, batch.pipeline, batch.table, batch.batch_id))
                if cur.rowcount != 1:
                    cur.execute(f"SELECT status, snapshot_id FROM {self.schema}.batches WHERE pipeline = %s "
                                f"AND table_name = %s AND batch_id = %s",
                                (batch.pipeline, batch.table, batch.batch_id))
                    row = cur.fetchone()
                    if row and row["status"] == "committed" and row["snapshot_id"] == m.snapshot_id:
                        return  # our own commit, whose answer was lost: done
                    raise LedgerInconsistent(
                        f"batch {batch.batch_id} of {batch.pipeline}/{batch.table} was not in state "
                        f"'planned' when committing it")
                cur.execute(
                    f"INSERT INTO {self.schema}.watermarks (pipeline, table_name, batch_id, end_offset) "
                    f"VALUES (%s, %s, %s, %s) ON CONFLICT (pipeline, table_name) DO UPDATE SET "
                    f"batch_id = EXCLUDED.batch_id, end_offset = EXCLUDED.end_offset, updated_at = now()",
                    (batch.pipeline, batch.table, batch.batch_id, json.dumps(batch.rng.hi.to_json())))
        self._with_retry(run)

    def record_repair(self, pipeline: str, table: str, bucket_start: int, bucket_s: int,
                      source_rows: int, sink_rows_before: int, snapshot_id: int | None) -> None:
        def run(conn: Any) -> None:
            with self._cursor(conn) as cur:
                cur.execute(f"INSERT INTO {self.schema}.repairs (pipeline, table_name, bucket_start, "
                            f"bucket_s, source_rows, sink_rows_before, snapshot_id) VALUES "
                            f"(%s, %s, to_timestamp(%s), %s, %s, %s, %s)",
                            (pipeline, table, bucket_start, bucket_s, source_rows, sink_rows_before,
                             snapshot_id))
        self._with_retry(run)

    def record_maintenance(self, pipeline: str, table: str, result: dict[str, Any]) -> None:
        def run(conn: Any) -> None:
            with self._cursor(conn) as cur:
                cur.execute(f"INSERT INTO {self.schema}.maintenance (pipeline, table_name, result) "
                            f"VALUES (%s, %s, %s)", (pipeline, table, json.dumps(result)))
        self._with_retry(run)

    def rebuild(self, pipeline: str, table: str, history: list[tuple[int, Offset, int, int]]) -> None:
        """Replace this table's ledger rows by ``history`` (batch id, end offset, snapshot id,
        rows; oldest first) read from Iceberg, in one transaction (recover-ledger)."""
        def run(conn: Any) -> None:
            with self._cursor(conn) as cur:
                cur.execute(f"DELETE FROM {self.schema}.batches WHERE pipeline = %s AND table_name = %s",
                            (pipeline, table))
                cur.execute(f"DELETE FROM {self.schema}.watermarks WHERE pipeline = %s AND table_name = %s",
                            (pipeline, table))
                lo: Offset | None = None
                for batch_id, end, snapshot_id, rows in history:
                    rng = Range(lo, end)
                    cur.execute(
                        f"INSERT INTO {self.schema}.batches (pipeline, table_name, batch_id, status, "
                        f"range_json, parts_json, planned_rows, committed_at, snapshot_id, rows) VALUES "
                        f"(%s, %s, %s, 'committed', %s, %s, %s, now(), %s, %s)",
                        (pipeline, table, batch_id, json.dumps(range_to_json(rng)),
                         json.dumps([range_to_json(rng)]), rows, snapshot_id, rows))
                    lo = end
                if history:
                    cur.execute(
                        f"INSERT INTO {self.schema}.watermarks (pipeline, table_name, batch_id, end_offset) "
                        f"VALUES (%s, %s, %s, %s)",
                        (pipeline, table, history[-1][0], json.dumps(history[-1][1].to_json())))
        self._with_retry(run)


def _batch(row: dict[str, Any]) -> Batch:
    return Batch(row["pipeline"], row["table_name"], row["batch_id"], row["status"],
                 range_from_json(row["range_json"]),
                 tuple(range_from_json(p) for p in row["parts_json"]), row["planned_rows"],
                 row["snapshot_id"], row["rows"], row["attempts"])


def where(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages (never the password)."""
    parts = dict(p.split("=", 1) for p in dsn.split() if "=" in p)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc else "unknown error"


def open_ledger(cfg: AppConfig) -> Ledger:
    """The ledger a config names, with its timeouts (connected on first use)."""
    lc = cfg.ledger
    return Ledger(lc.dsn, lc.schema, lc.connect_timeout_s, statement_timeout_s=lc.statement_timeout_s,
                  tcp_timeout_s=lc.tcp_timeout_s)
