"""The driver's scheduling of many tables: concurrency bound, failure isolation, budget, ticks.
Fake runners (no Spark): the driver only calls recover(), step(ceiling) and planner.horizon()."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldtier.driver import StopFlag, Trigger, TriggerRecord, run_tables


@dataclass
class Gauge:
    """How many units run at once, at most."""

    now: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *_: Any) -> None:
        with self.lock:
            self.now -= 1


@dataclass
class FakeRunner:
    name: str
    batches: int  # rows waiting, in batches
    gauge: Gauge
    work_s: float = 0.05
    fail_at: int | None = None  # raise on this step (1-based)
    error: Any = RuntimeError  # what it raises there
    steps: list[float] = field(default_factory=list)
    phase: str = "idle"
    recovers: int = 0

    def __post_init__(self) -> None:
        self.table = SimpleNamespace(name=self.name)
        self.planner = SimpleNamespace(horizon=lambda: "h" if self.batches else None)

    def recover(self) -> None:
        self.recovers += 1
        return None

    def step(self, ceiling: Any = None) -> Any:
        with self.gauge:
            self.steps.append(time.monotonic())
            self.phase = "write"
            time.sleep(self.work_s)
            if self.fail_at is not None and len(self.steps) == self.fail_at:
                raise self.error(f"{self.name} broke")
            self.phase = "idle"
            if self.batches == 0:
                return None
            self.batches -= 1
            return SimpleNamespace(rows=10)


def test_tables_progress_concurrently_within_the_bound():
    gauge = Gauge()
    runners = [FakeRunner(f"t{i}", 3, gauge, work_s=0.1) for i in range(6)]
    out = run_tables(runners, Trigger("available-now"), None, StopFlag(), concurrency=3)
    assert out.batches == 18 and not out.failures
    assert gauge.peak == 3  # concurrent, never above the bound
    assert all(r.batches == 0 for r in runners)


def test_one_at_a_time_keeps_the_tables_order():
    gauge = Gauge()
    runners = [FakeRunner(f"t{i}", 1, gauge, work_s=0.01) for i in range(3)]
    run_tables(runners, Trigger("once"), None, StopFlag(), concurrency=1)
    assert gauge.peak == 1
    assert [r.steps[0] for r in runners] == sorted(r.steps[0] for r in runners)


def test_a_failing_table_does_not_stop_the_others():
    gauge = Gauge()
    bad = FakeRunner("bad", 5, gauge, fail_at=2)
    good = [FakeRunner(f"ok{i}", 4, gauge) for i in range(3)]
    seen: list[tuple[str, str, bool]] = []
    out = run_tables([bad, *good], Trigger("available-now"), None, StopFlag(), concurrency=2,
                     on_failure=lambda f, others, retry: seen.append((f.table, f.phase, others)))
    assert all(r.batches == 0 for r in good)  # every other table moved all its rows
    assert [f.table for f in out.failures] == ["bad"] and str(out.failures[0].error) == "bad broke"
    assert seen == [("bad", "write", True)] and bad.phase == "idle"
    assert bad.batches == 4 and len(bad.steps) == 2  # stopped at its failure: no further batch
    assert out.batches == 13


def _loop_until(runners: list[FakeRunner], done: Any, **kw: Any) -> Any:
    """A processing-time=50ms loop over ``runners`` until ``done()`` (or 20 s), then a stop."""
    stop = StopFlag()

    def watch() -> None:
        deadline = time.monotonic() + 20
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.event.set()

    threading.Thread(target=watch, daemon=True).start()
    return run_tables(runners, Trigger("processing-time", 0.05), None, stop, concurrency=2, **kw)


def test_a_loop_retries_a_table_whose_failure_is_transient():
    """A service restarting (exit 4) does not stop a table for the life of a processing-time
    loop: it is retried from recover after a backoff, and the run does not end failed."""
    from coldtier.errors import LedgerError

    gauge = Gauge()
    flaky = FakeRunner("flaky", 6, gauge, work_s=0.0, fail_at=2, error=LedgerError)
    other = FakeRunner("other", 6, gauge, work_s=0.0)
    seen: list[tuple[str, float | None]] = []
    out = _loop_until([flaky, other], lambda: flaky.batches == 0 and other.batches == 0,
                      on_failure=lambda f, others, retry: seen.append((f.table, retry)))
    assert flaky.batches == 0 and other.batches == 0  # every batch moved, the flaky table's too
    assert flaky.recovers == 2  # the retry starts from the ledger, like a relaunch
    assert seen == [("flaky", 0.05)] and out.retried == 1
    assert out.failures == []


def test_a_loop_stops_a_table_whose_failure_is_not_transient():
    gauge = Gauge()
    broken = FakeRunner("broken", 6, gauge, work_s=0.0, fail_at=2)  # RuntimeError: internal, exit 1
    other = FakeRunner("other", 6, gauge, work_s=0.0)
    out = _loop_until([broken, other], lambda: other.batches == 0)
    assert broken.batches == 5 and broken.recovers == 1 and len(broken.steps) == 2
    assert [f.table for f in out.failures] == ["broken"] and out.retried == 0


def test_a_table_still_failing_when_the_loop_stops_fails_the_run():
    from coldtier.errors import ClickHouseUnreachable

    class Down(FakeRunner):
        def step(self, ceiling: Any = None) -> Any:
            self.steps.append(time.monotonic())
            raise ClickHouseUnreachable("clickhouse down")

    down = Down("down", 3, Gauge())
    retries: list[float | None] = []
    # stop once the loop has scheduled three retries (not at the third step: a stop racing the
    # third failure would make it the last, not a retried one)
    out = _loop_until([down], lambda: len(retries) >= 3,
                      on_failure=lambda f, others, retry: retries.append(retry) if retry is not None else None)
    assert [f.table for f in out.failures] == ["down"] and out.retried >= 3


def test_retry_delay_backs_off_to_a_cap():
    from coldtier.driver import RETRY_CAP_S, retry_delay

    assert [retry_delay(15, n) for n in (1, 2, 3, 4, 5, 6)] == [15, 30, 60, 120, 240, RETRY_CAP_S]
    assert retry_delay(600, 3) == 600  # an interval longer than the cap: once per interval


@settings(max_examples=25, deadline=None)
@given(tables=st.integers(1, 5), per_table=st.integers(0, 4), limit=st.integers(0, 12),
       concurrency=st.integers(1, 4))
def test_max_batches_is_never_exceeded(tables, per_table, limit, concurrency):
    gauge = Gauge()
    runners = [FakeRunner(f"t{i}", per_table, gauge, work_s=0.0) for i in range(tables)]
    out = run_tables(runners, Trigger("available-now"), limit, StopFlag(), concurrency=concurrency)
    assert out.batches == min(limit, tables * per_table)
    assert sum(per_table - r.batches for r in runners) == out.batches


@dataclass
class BlockedRunner(FakeRunner):
    """Its first step lasts until ``release`` is set (a long backfill batch)."""

    release: threading.Event = field(default_factory=threading.Event)

    def step(self, ceiling: Any = None) -> Any:
        if not self.steps:
            self.release.wait(60)
        return super().step(ceiling)


def test_a_slow_table_does_not_hold_back_the_fast_ones():
    """processing-time: each table is triggered on the interval's ticks; while one table's batch
    overruns many intervals, the others keep being triggered."""
    gauge = Gauge()
    slow = BlockedRunner("slow", 100, gauge, work_s=0.0)
    fast = [FakeRunner(f"f{i}", 100, gauge, work_s=0.0) for i in range(2)]
    stop = StopFlag()
    records: list[TriggerRecord] = []

    def watch() -> None:  # once every fast table ran 4 batches behind the slow one's back: go on
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(len(r.steps) for r in fast) < 4:
            time.sleep(0.01)
        slow.release.set()
        time.sleep(0.2)
        stop.event.set()

    threading.Thread(target=watch, daemon=True).start()
    out = run_tables([slow, *fast], Trigger("processing-time", 0.05), None, stop, concurrency=3,
                     on_trigger=records.append)
    assert not out.failures
    assert all(len(r.steps) >= 4 for r in fast)
    assert slow.steps and slow.steps[0] >= max(r.steps[3] for r in fast)  # they ran while it was busy
    for r in fast:  # and each on a tick of its own: never two triggers for one tick
        due = [x.due for x in records if x.table == r.name and x.kind == "step"]
        assert due == sorted(set(due)) and all(x.started >= x.due for x in records if x.table == r.name)


def test_no_unit_starts_after_a_stop():
    gauge = Gauge()
    runners = [FakeRunner(f"t{i}", 50, gauge, work_s=0.05) for i in range(4)]
    stop = StopFlag()
    stopped_at: list[float] = []

    def signal() -> None:
        stopped_at.append(time.monotonic())
        stop.event.set()

    threading.Timer(0.3, signal).start()
    run_tables(runners, Trigger("processing-time", 0.05), None, stop, concurrency=2)
    starts = [s for r in runners for s in r.steps]
    late = [s for s in starts if s >= stopped_at[0]]
    assert starts and len(late) <= 2  # at most the units being handed to the 2 workers at that instant
    assert gauge.now == 0 and all(s < stopped_at[0] + 5 for s in late)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_once_runs_each_table_one_batch(concurrency):
    gauge = Gauge()
    runners = [FakeRunner(f"t{i}", 3, gauge, work_s=0.01) for i in range(4)]
    out = run_tables(runners, Trigger("once"), None, StopFlag(), concurrency=concurrency)
    assert out.batches == 4 and [r.batches for r in runners] == [2, 2, 2, 2]


def test_due_tables_waiting_for_a_slot_do_not_spin_the_scheduler(monkeypatch):
    """More tables due than slots: the scheduler sleeps until a unit finishes. It used to poll
    the due tables with a zero timeout, spinning on the GIL the units' py4j calls need."""
    import coldtier.driver as driver_mod

    calls = []
    real_wait = driver_mod.wait

    def counting_wait(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("timeout"))
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(driver_mod, "wait", counting_wait)
    gauge = Gauge()
    runners = [FakeRunner(f"t{i}", 1, gauge, work_s=0.3) for i in range(4)]
    out = run_tables(runners, Trigger("once"), None, StopFlag(), concurrency=1)
    assert out.batches == 4 and gauge.peak == 1
    # 4 recovers and 4 steps, 1.2 s of work: a handful of waits, each for a unit to finish
    assert len(calls) <= 20, f"{len(calls)} waits, {sum(1 for t in calls if t == 0)} with no timeout"
    assert all(t is None or t > 0 for t in calls)
