"""The micro-batch driver: the trigger (Spark's ``Trigger``), the stop flag a signal sets, and
the loop that steps each table's runner until the trigger is satisfied."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coldtier.errors import UsageError

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
