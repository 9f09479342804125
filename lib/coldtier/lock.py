"""Single-instance safety: a PostgreSQL advisory lock per pipeline/table.

The lock lives as long as its session: a killed process releases it with its connection.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg2


class LockHeld(RuntimeError):
    """Another run holds the lock."""


@dataclass
class AdvisoryLock:
    dsn: str = field(repr=False)
    key: str = ""
    connect_timeout_s: float = 10.0
    _conn: Any = field(default=None, repr=False)

    def acquire(self, wait_s: float | None = None) -> None:
        """Take the lock now, or within ``wait_s`` seconds (None: do not wait)."""
        if self._conn is None:
            self._conn = psycopg2.connect(self.dsn, connect_timeout=max(1, int(self.connect_timeout_s)),
                                          application_name=f"coldtier-lock {self.key}")
            self._conn.autocommit = True
        deadline = time.monotonic() + (wait_s or 0)
        while True:
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self.key,))
                if cur.fetchone()[0]:
                    return
            if wait_s is None or time.monotonic() >= deadline:
                raise LockHeld(f"another coldtier run holds the lock for {self.key}")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def ensure(self) -> None:
        """Check the lock is still ours before a batch: a PostgreSQL restart ends the session
        and with it the lock. Re-take it at once, or stop if another run took it meanwhile."""
        alive = False
        if self._conn is not None and not self._conn.closed:
            try:
                with self._conn.cursor() as cur:
                    cur.execute("SELECT 1")
                alive = True
            except psycopg2.Error:
                alive = False
        if alive:
            return
        self._drop()
        deadline = time.monotonic() + 60
        while True:
            try:
                self.acquire(None)
                return
            except psycopg2.OperationalError:
                self._drop()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1)

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            # Unlock explicitly; if the session is already gone, so is the lock.
            with suppress(psycopg2.Error), self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self.key,))
            self._drop()
