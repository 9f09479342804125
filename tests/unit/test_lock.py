"""The fence check before a publish, against a lock session that a PostgreSQL restart ended
(no server: a stand-in session with the interface ``AdvisoryLock`` uses)."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from coldtier.errors import FencedOut
from coldtier.lock import AdvisoryLock, Fence


class RestartedSession:
    """Its session died with the server; the next ``refusals`` connections fail as a restarting
    PostgreSQL answers them; then the lock is free (``holder`` None) or another session's."""

    generation = 1

    def __init__(self, refusals: int, epoch: int, holder: str | None = None) -> None:
        self.refusals, self.epoch, self.holder = refusals, epoch, holder
        self.tries = 0

    def alive(self, gen: int | None) -> bool:
        return False

    def try_lock(self, key: str) -> int | None:
        self.tries += 1
        if self.tries <= self.refusals:
            raise psycopg2.OperationalError("FATAL:  the database system is starting up")
        return None if self.holder else 2

    def run(self, sql: str, args: tuple[Any, ...]) -> tuple[int]:
        if sql.lstrip().startswith("INSERT"):
            self.epoch += 1
        return (self.epoch,)

    def drop(self) -> None:
        """Nothing to close: the stand-in holds no connection."""


def fenced(session: RestartedSession, epoch: int) -> AdvisoryLock:
    lock = AdvisoryLock("dbname=x", "coldtier/p/t", fence=Fence("coldtier", "p", "t"), epoch=epoch,
                        session=session)
    lock.RETAKE_S = 30.0
    return lock


def test_a_restarting_server_is_waited_for_and_the_lock_retaken(monkeypatch):
    monkeypatch.setattr("coldtier.lock.time.sleep", lambda s: None)
    session = RestartedSession(refusals=3, epoch=7)
    lock = fenced(session, epoch=7)
    lock.check_fence()  # was FencedOut("cannot confirm the lock ...") at the first refusal
    assert session.tries == 4 and lock.epoch == 8  # ours again, under a new epoch


def test_a_lock_taken_meanwhile_by_another_run_still_fences_this_one_out(monkeypatch):
    monkeypatch.setattr("coldtier.lock.time.sleep", lambda s: None)
    with pytest.raises(FencedOut, match=r"lost the lock .* to another run"):
        fenced(RestartedSession(refusals=1, epoch=7, holder="other"), epoch=7).check_fence()
    with pytest.raises(FencedOut, match="another run owned"):
        fenced(RestartedSession(refusals=1, epoch=9), epoch=7).check_fence()  # epoch moved on


def test_a_server_that_never_comes_back_ends_in_a_bounded_fenced_out(monkeypatch):
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr("coldtier.lock.time.monotonic", lambda: next(clock))
    monkeypatch.setattr("coldtier.lock.time.sleep", lambda s: None)
    session = RestartedSession(refusals=10**9, epoch=7)
    with pytest.raises(FencedOut, match=r"cannot confirm the lock .* starting up"):
        fenced(session, epoch=7).check_fence()
    assert 2 <= session.tries <= 10  # 30 s of 5 s steps, then given up
