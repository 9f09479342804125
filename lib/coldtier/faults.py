"""Fault injection for the crash tests: the phases of a batch made observable, and a process
that kills itself at one of them. Unset in production: nothing happens, nothing is watched."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


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
    def watch_write(self, spark: Any, table: str, batch_id: int, group: str | None = None) -> Iterator[None]:
        """Reports during-read/during-write once the batch's Spark job (of job ``group``, when
        tables run concurrently) is active while tasks run.

        Tasks running are asked of the task scheduler, as they are now. Spark's status store
        (``statusTracker``) is not enough: it rewrites a stage's running-task count at most every
        ``spark.ui.liveUpdate.period`` (100 ms), so a short job whose tasks all start within that
        window never shows one running, and a watcher reading only the store waited through
        hundreds of batches for a phase it could not see. The store still says which active
        jobs are the batch's (a job's start is written at once)."""
        if not self.active:
            yield
            return
        done = threading.Event()
        tracker = spark.sparkContext.statusTracker()
        scheduler = spark.sparkContext._jsc.sc().taskScheduler()

        def tasks_running() -> bool:
            counts = scheduler.runningTasksByExecutors().valuesIterator()  # executor → tasks now
            while counts.hasNext():
                if counts.next() > 0:
                    return True
            return False

        def running() -> bool:
            if not tasks_running():
                return False
            ours = set(tracker.getJobIdsForGroup(group)) if group is not None else None
            return any(ours is None or job_id in ours for job_id in tracker.getActiveJobsIds())

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
