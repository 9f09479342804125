"""The micro-batch driver: the trigger (Spark's ``Trigger``), the stop flag a signal sets, and
the loop that steps each table's runner until the trigger is satisfied."""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coldtier.errors import EXIT_RUNTIME, UsageError, classify

if TYPE_CHECKING:
    from coldtier.loop import TableRunner


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
class TriggerRecord:
    """One trigger of one table: when it was due, when its unit of work ran, what it moved."""

    table: str
    due: float  # time.monotonic() of the trigger tick
    started: float
    finished: float
    rows: int | None  # None: nothing to read, or the unit failed
    kind: str  # recover | step


@dataclass(frozen=True)
class TableFailure:
    table: str
    phase: str  # the runner's phase when it failed (plan, read, write, commit, recover...)
    error: BaseException


@dataclass
class RunOutcome:
    batches: int = 0
    failures: list[TableFailure] = field(default_factory=list)  # tables that ended failed
    retried: int = 0  # transient failures a processing-time loop retried


RETRY_CAP_S = 300.0  # the longest wait before a failed table's next attempt


def transient(exc: BaseException) -> bool:
    """A failure worth retrying in a running loop: a source, sink or ledger unreachable or
    failing (exit 4, "retry later"); not a config, schema, lock or ledger-consistency problem."""
    return classify(exc)[0] == EXIT_RUNTIME


def retry_delay(interval_s: float, attempt: int) -> float:
    """Exponential backoff from the trigger interval: 1, 2, 4 … intervals, at most RETRY_CAP_S
    (or one interval, if that is longer)."""
    return min(interval_s * 2.0 ** (attempt - 1), max(interval_s, RETRY_CAP_S))


class _Budget:
    """``--max-batches`` shared by the tables: a slot is reserved before a unit of work starts
    and given back if the unit moves nothing, so concurrent tables never exceed it."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.used, self._lock = limit, 0, threading.Lock()

    def reserve(self) -> bool:
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                return False
            self.used += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.used -= 1

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self.limit is not None and self.used >= self.limit


@dataclass
class _Slot:
    """The scheduling state of one table."""

    runner: TableRunner
    due: float
    recovered: bool = False
    ceiling: Any = None
    busy: bool = False
    done: bool = False
    attempts: int = 0  # consecutive failures
    failure: TableFailure | None = None  # the last one, while it is being retried


def run_tables(runners: list[TableRunner], trigger: Trigger, max_batches: int | None, stop: StopFlag,
               concurrency: int = 1,
               on_failure: Callable[[TableFailure, bool, float | None], None] | None = None,
               on_trigger: Callable[[TriggerRecord], None] | None = None,
               retryable: Callable[[BaseException], bool] = transient) -> RunOutcome:
    """Drive the tables' runners under ``trigger``, up to ``concurrency`` tables at a time.

    Each table's unit of work (recover its planned batch, or one ``step``) runs in a worker
    thread; the units of one table never overlap, so per-table exactly-once is the runner's as
    before. A trigger tick is due at ``t0 + k × interval`` (Spark's ProcessingTimeExecutor: a
    batch that overruns its interval is followed at once by the next). ``available-now`` moves
    each table up to the horizon it had at its start, one batch per unit, tables taking turns.
    A table that fails stops; the others go on (``on_failure(failure, others_go_on, None)``) and
    the outcome lists every failure. Under processing-time, a ``retryable`` failure (exit 4: a
    service restarting, a frozen socket timing out) does not stop the table for the life of the
    process: it is retried from "recover" — what a relaunch would do — after ``retry_delay``
    (``on_failure(failure, True, delay)``), and ends the run failed only if never overcome.
    No unit starts after a stop signal or once ``max_batches`` is spent; units in flight finish."""
    budget = _Budget(max_batches)
    outcome = RunOutcome()
    t0 = time.monotonic()
    slots = [_Slot(r, t0) for r in runners]
    interval = trigger.interval_s

    def unit(slot: _Slot) -> TriggerRecord:
        r, started = slot.runner, time.monotonic()
        if not slot.recovered:
            kind, result = "recover", r.recover()
            if trigger.kind == "available-now":
                slot.ceiling = r.planner.horizon()  # what "now" means for this table's run
        else:
            kind, result = "step", r.step(slot.ceiling)
        return TriggerRecord(r.table.name, slot.due, started, time.monotonic(),
                             None if result is None else result.rows, kind)

    def settle(slot: _Slot, rec: TriggerRecord) -> None:
        slot.attempts, slot.failure = 0, None
        if rec.rows is None:
            budget.give_back()
        else:
            outcome.batches += 1
        if rec.kind == "recover":
            slot.recovered = True
            slot.done = trigger.kind == "available-now" and slot.ceiling is None
            return
        if trigger.kind == "once" or (trigger.kind == "available-now" and rec.rows is None):
            slot.done = True
        elif trigger.kind == "processing-time":
            slot.due = t0 + (math.floor((rec.started - t0) / interval) + 1) * interval

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="coldtier-table") as pool:
        running: dict[Future[TriggerRecord], _Slot] = {}
        turn = 0
        while True:
            now = time.monotonic()
            accepting = not stop.stopped and not budget.exhausted
            if accepting:
                # round robin from where the last pass stopped: no table waits behind the same others
                order = slots[turn:] + slots[:turn]
                for i, slot in enumerate(order):
                    if len(running) >= concurrency:
                        break
                    if slot.busy or slot.done or slot.due > now:
                        continue
                    if not budget.reserve():
                        break
                    slot.busy = True
                    running[pool.submit(unit, slot)] = slot
                    turn = (turn + i + 1) % len(slots)
            live = [s for s in slots if not s.done]
            if not running and (not live or not accepting):
                break
            # a due table waits for a free slot, not for the clock: with every slot taken (or the
            # budget spent) sleep until a unit finishes; polling the due tables then would spin,
            # holding the GIL that the units' py4j and HTTP calls need
            can_start = accepting and len(running) < concurrency
            wake = min((s.due for s in live if not s.busy), default=now + 0.5) if can_start else now + 0.5
            timeout = min(0.5, max(0.0, wake - time.monotonic()))
            finished: set[Future[TriggerRecord]] = set()
            if running:
                finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            else:
                stop.sleep(timeout)
            for fut in finished:
                slot = running.pop(fut)
                slot.busy = False
                try:
                    rec = fut.result()
                except Exception as exc:
                    budget.give_back()
                    if stop.cancelled:
                        slot.done = True
                        continue  # cancelled by the stop grace: reported by the caller, not a failure
                    failure = TableFailure(slot.runner.table.name, slot.runner.phase, exc)
                    slot.runner.phase = "idle"
                    if trigger.kind == "processing-time" and not stop.stopped and retryable(exc):
                        slot.attempts += 1
                        slot.failure, slot.recovered = failure, False
                        delay = retry_delay(interval, slot.attempts)
                        slot.due = time.monotonic() + delay
                        outcome.retried += 1
                        if on_failure is not None:
                            on_failure(failure, True, delay)
                        continue
                    slot.done = True
                    outcome.failures.append(failure)
                    if on_failure is not None:
                        on_failure(failure, any(not s.done for s in slots), None)
                    continue
                settle(slot, rec)
                if on_trigger is not None:
                    on_trigger(rec)
    # a table still failing when the loop ends (a stop signal while it waited to retry)
    outcome.failures += [s.failure for s in slots if s.failure is not None]
    return outcome
