"""Single-instance safety: a PostgreSQL advisory lock per pipeline/table, with fencing.

The lock lives as long as its session: a killed process releases it with its connection.
A session can also die under a live process (PostgreSQL restarts or fails over, a NAT drops
the connection): another instance may then take the lock while the first still has a batch in
flight. So every acquire bumps an **owner epoch** in the ledger (``owners``); the holder
checks its epoch right before it publishes a batch (``check_fence``) and the ledger commit
checks it in the same transaction. A writer that lost its lock never publishes or commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg2

from coldtier import pg
from coldtier.errors import FencedOut, LockHeld

T = TypeVar("T")

if TYPE_CHECKING:
    from coldtier.config import AppConfig, TableConfig


@dataclass(frozen=True)
class Fence:
    """Where the owner epoch of one pipeline/table lives (the ledger's schema)."""

    schema: str
    pipeline: str
    table: str

    def bump_sql(self) -> str:
        return (f"INSERT INTO {self.schema}.owners (pipeline, table_name, epoch) VALUES (%s, %s, 1) "
                f"ON CONFLICT (pipeline, table_name) DO UPDATE SET epoch = {self.schema}.owners.epoch + 1, "
                f"acquired_at = now() RETURNING epoch")

    def read_sql(self) -> str:
        return f"SELECT epoch FROM {self.schema}.owners WHERE pipeline = %s AND table_name = %s"

    @property
    def args(self) -> tuple[str, str]:
        return self.pipeline, self.table


@dataclass
class LockSession:
    """The PostgreSQL session advisory locks live in. One run's tables share one (a hundred
    tables hold a hundred locks on one connection, not a hundred connections); statements on
    it take turns. ``generation`` counts its connections: a lock taken on an earlier one died
    with it."""

    dsn: str = field(repr=False)
    name: str = "coldtier-lock"
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 60.0
    tcp_timeout_s: float = 30.0
    generation: int = 0
    _conn: Any = field(default=None, repr=False)
    _mutex: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def run(self, sql: str, args: tuple[Any, ...]) -> Any:
        """One statement, bounded on both sides (pg.deadline); a broken connection is dropped."""
        with self._mutex:
            if self._conn is None:
                self._conn = pg.connect(self.dsn, self.name, self.connect_timeout_s,
                                        self.statement_timeout_s, self.tcp_timeout_s)
                self._conn.autocommit = True
                self.generation += 1
            conn = self._conn
            try:
                with pg.deadline(conn, self.statement_timeout_s + self.tcp_timeout_s), conn.cursor() as cur:
                    cur.execute(sql, args)
                    return cur.fetchone() if cur.description else None
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self.drop()
                raise

    def try_lock(self, key: str) -> int | None:
        """Take the advisory lock of ``key`` on this session: the generation it was taken on, or
        None if another session holds it."""
        with self._mutex:  # the generation read belongs to the connection the lock was taken on
            got = self.run("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))[0]
            return self.generation if got else None

    def alive(self, generation: int | None) -> bool:
        """Whether the connection of ``generation`` is still up (and answers)."""
        with self._mutex:
            if generation is None or self._conn is None or self._conn.closed or generation != self.generation:
                return False
            try:
                self.run("SELECT 1", ())
                return True
            except psycopg2.Error:
                return False

    def drop(self) -> None:
        with self._mutex:
            if self._conn is not None:
                with suppress(psycopg2.Error):
                    self._conn.close()
                self._conn = None


@dataclass
class AdvisoryLock:
    dsn: str = field(repr=False)
    key: str = ""
    connect_timeout_s: float = 10.0
    fence: Fence | None = None
    epoch: int | None = None  # this holder's owner epoch (with a fence)
    statement_timeout_s: float = 60.0
    tcp_timeout_s: float = 30.0
    session: LockSession | None = None  # shared with the run's other locks; None: a session of its own
    _own: bool = field(default=False, repr=False)
    _gen: int | None = field(default=None, repr=False)  # the session generation the lock was taken on

    def __post_init__(self) -> None:
        if self.session is None:
            self.session = LockSession(self.dsn, f"coldtier-lock {self.key}", self.connect_timeout_s,
                                       self.statement_timeout_s, self.tcp_timeout_s)
            self._own = True

    def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        assert self.session is not None
        return self.session.run(sql, args)

    def _try_lock(self) -> bool:
        assert self.session is not None
        gen = self.session.try_lock(self.key)
        if gen is not None:
            self._gen = gen
        return gen is not None

    def _epoch(self, bump: bool) -> int | None:
        if self.fence is None:
            return None
        row = self._run(self.fence.bump_sql() if bump else self.fence.read_sql(), self.fence.args)
        return int(row[0]) if row else None

    def acquire(self, wait_s: float | None = None) -> None:
        """Take the lock now, or within ``wait_s`` seconds (None: do not wait); a new owner epoch."""
        deadline = time.monotonic() + (wait_s or 0)
        while True:
            if self._try_lock():
                self.epoch = self._epoch(bump=True)
                return
            if wait_s is None or time.monotonic() >= deadline:
                raise LockHeld(f"another coldtier run holds the lock for {self.key}")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def _alive(self) -> bool:
        assert self.session is not None
        return self.session.alive(self._gen)

    def ensure(self) -> None:
        """Check the lock is still ours before a batch: a PostgreSQL restart ends the session
        and with it the lock. Re-take it at once, or stop if another run took it meanwhile."""
        if self._alive():
            return
        self._drop()
        self._through_restart(lambda: self.acquire(None))

    RETAKE_S = 60.0  # how long a lock whose session died waits for a restarting server

    def _through_restart(self, take: Callable[[], T]) -> T:
        """``take`` (re-taking the lock after its session died), tried again while the server is
        still restarting (connection refused, "the database system is starting up"), 1 s apart,
        up to RETAKE_S: the one wait both ``ensure`` and ``check_fence`` use."""
        deadline = time.monotonic() + self.RETAKE_S
        while True:
            try:
                return take()
            except psycopg2.OperationalError:
                self._drop()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1)

    def check_fence(self) -> None:
        """Right before a batch is published: this run still owns the table. If the lock's session
        died (the server restarted), the lock is re-taken, once the server answers again, only if
        nobody owned the table in between (the epoch is still ours); otherwise FencedOut, and
        nothing is published."""
        if self.fence is None:
            return
        try:
            if not self._alive():
                self._drop()
                if not self._through_restart(self._try_lock):
                    raise FencedOut(f"lost the lock for {self.key} to another run while a batch was in "
                                    f"flight; the batch is not published")
                if self._epoch(bump=False) != self.epoch:
                    self.release()
                    raise FencedOut(f"another run owned {self.key} while this one had lost its lock; "
                                    f"the batch in flight is not published")
                self.epoch = self._epoch(bump=True)  # nobody owned it in between: ours again
                return
            current = self._epoch(bump=False)
        except psycopg2.Error as exc:
            raise FencedOut(f"cannot confirm the lock for {self.key}: {str(exc).strip()}") from None
        if current != self.epoch:
            raise FencedOut(f"another run took {self.key} over (owner epoch {current}, ours {self.epoch}); "
                            f"the batch in flight is not published")

    def _drop(self) -> None:
        """Forget a lock whose session is gone (a session of its own is closed)."""
        self._gen = None
        if self._own and self.session is not None:
            self.session.drop()

    def release(self) -> None:
        assert self.session is not None
        if self._gen is not None and self._gen == self.session.generation:
            # Unlock explicitly; if the session is already gone, so is the lock.
            with suppress(psycopg2.Error):
                self._run("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self.key,))
        self._gen = None
        if self._own:
            self.session.drop()


def lock_session(cfg: AppConfig) -> LockSession:
    """The one session a run's table locks share."""
    lc = cfg.ledger
    return LockSession(lc.dsn, f"coldtier-lock {cfg.pipeline}", lc.connect_timeout_s, lc.statement_timeout_s,
                       lc.tcp_timeout_s)


def table_lock(cfg: AppConfig, t: TableConfig, session: LockSession | None = None) -> AdvisoryLock:
    """The advisory lock of one pipeline/table, fenced by its owner epoch in the ledger."""
    lc = cfg.ledger
    return AdvisoryLock(lc.dsn, f"coldtier/{cfg.pipeline}/{t.name}", lc.connect_timeout_s,
                        Fence(lc.schema, cfg.pipeline, t.name), None, lc.statement_timeout_s,
                        lc.tcp_timeout_s, session)
