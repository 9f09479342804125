"""Prometheus metrics of a run (prometheus-client), fed by the progress lines.

One registry per run (no global state). Where they go is configured in YAML ``metrics:``:
a node_exporter textfile (rewritten after every batch and at the end, atomically), a
Pushgateway (pushed at the end of the run, grouped by pipeline), and/or ``/metrics`` served
on a port while the run lasts (for processing-time loops). Counters count this run's work
(a new process starts them at 0; use ``increase()``): the ledger holds the totals.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    start_http_server,
    write_to_textfile,
)

from coldtier.config import MetricsConfig

PHASES = ("plan", "read", "write", "commit", "total")
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
T = ("pipeline", "table")


class RunMetrics:
    def __init__(self, cfg: MetricsConfig, pipeline: str) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        r = self.registry = CollectorRegistry()
        self.rows = Counter("coldtier_rows_committed", "Rows committed to the target in this run", T,
                            registry=r)
        self.batches = Counter("coldtier_batches_committed", "Batches committed in this run", T, registry=r)
        self.phase_seconds = Histogram("coldtier_batch_phase_seconds", "Seconds per batch phase (total = end "
                                       "to end)", (*T, "phase"), buckets=BUCKETS, registry=r)
        self.lag = Gauge("coldtier_source_lag_seconds", "Server now minus the newest committed cursor while "
                         "rows wait beyond it; 0 when the backlog is 0", T, registry=r)
        self.backlog = Gauge("coldtier_backlog_rows", "Rows visible at the source beyond the watermark", T,
                             registry=r)
        self.ttl_margin = Gauge("coldtier_ttl_margin_seconds", "Seconds until the oldest unread source row "
                                "expires by the table's TTL", T, registry=r)
        self.ttl_warning = Gauge("coldtier_ttl_warning", "1 while the TTL margin is below the configured "
                                 "cursor.ttl_margin_s", T, registry=r)
        self.failures = Counter("coldtier_failures", "Failed runs, by the phase that failed", (*T, "phase"),
                                registry=r)
        self.last_commit = Gauge("coldtier_last_commit_timestamp_seconds", "Unix time of the last batch "
                                 "committed", T, registry=r)
        self.last_batch = Gauge("coldtier_last_batch_id", "Id of the last batch committed", T, registry=r)
        self.last_run = Gauge("coldtier_last_run_timestamp_seconds", "Unix time the last run ended",
                              ("pipeline",), registry=r)
        self.last_success = Gauge("coldtier_last_run_success", "1 if the last run ended without error",
                                  ("pipeline",), registry=r)
        self.maint_files = Gauge("coldtier_maintenance_data_files", "Data files after the last maintenance",
                                 T, registry=r)
        self.maint_time = Gauge("coldtier_maintenance_timestamp_seconds", "When maintenance last finished", T,
                                registry=r)
        self._server: Any = None

    # -- feeding ---------------------------------------------------------------------------
    def seed(self, table: str, batch_id: int, committed_at: float) -> None:
        """The last commit known to the ledger, so a run that commits nothing still reports it
        (an alert on "no commit for N minutes" must not see the series vanish)."""
        self.last_commit.labels(self.pipeline, table).set(committed_at)
        self.last_batch.labels(self.pipeline, table).set(batch_id)

    def observe(self, progress: dict[str, Any]) -> None:
        """One progress line (a committed batch, or a caught-up table)."""
        labels = (self.pipeline, progress["table"])
        if "batch_id" in progress:
            self.rows.labels(*labels).inc(progress["rows"])
            self.batches.labels(*labels).inc()
            for phase in PHASES:
                value = progress.get(f"{phase}_s")
                if value is not None:
                    self.phase_seconds.labels(*labels, phase).observe(value)
            self.last_commit.labels(*labels).set(time.time())
            self.last_batch.labels(*labels).set(progress["batch_id"])
            if progress.get("source_lag_s") is not None:
                self.lag.labels(*labels).set(progress["source_lag_s"])
            if progress.get("backlog_rows") is not None:
                self.backlog.labels(*labels).set(progress["backlog_rows"])
        elif progress.get("caught_up"):
            self.backlog.labels(*labels).set(0)
            self.lag.labels(*labels).set(0)  # nothing waits: not behind (loop.lag_behind)
            self.rows.labels(*labels).inc(0)
        if progress.get("ttl_margin_s") is not None:
            self.ttl_margin.labels(*labels).set(progress["ttl_margin_s"])
            self.ttl_warning.labels(*labels).set(1 if progress.get("ttl_warning") else 0)
        self.write_textfile()

    def maintained(self, result: dict[str, Any]) -> None:
        labels = (self.pipeline, result["table"])
        self.maint_files.labels(*labels).set(result["files_after"])
        self.maint_time.labels(*labels).set(time.time())

    def failed(self, table: str, phase: str) -> None:
        """A table failed; in a run of many tables the others go on, so it is written at once."""
        self.failures.labels(self.pipeline, table, phase).inc()
        self.write_textfile()

    # -- output ----------------------------------------------------------------------------
    def serve(self) -> None:
        if self.cfg.port:
            self._server, _ = start_http_server(self.cfg.port, registry=self.registry)

    def write_textfile(self) -> None:
        if self.cfg.textfile:
            write_to_textfile(self.cfg.textfile, self.registry)  # a temp file renamed into place

    def close(self) -> None:
        """Stop serving ``/metrics`` without reporting (the run continues in another process)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # the port is free for the driver at once
            self._server = None

    def finish(self, ok: bool) -> None:
        """At the end of a run: final values to every configured destination."""
        self.last_run.labels(self.pipeline).set(time.time())
        self.last_success.labels(self.pipeline).set(1 if ok else 0)
        self.write_textfile()
        if self.cfg.pushgateway:
            push_to_gateway(self.cfg.pushgateway, job=self.cfg.job, registry=self.registry,
                            grouping_key={"pipeline": self.pipeline}, timeout=10)
        self.close()
