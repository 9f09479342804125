"""Command line: ``run``, ``plan``, ``status``, ``validate``, ``maintain``, ``reconcile``,
``recover-ledger``, ``adopt``; and to look at the cold tier with the job's config, ``head``,
``count``, ``check-duplicates`` (PyIceberg, no JVM), ``sql`` and ``shell`` (``coldtier --help``).

``plan``, ``status`` and ``validate`` need no Spark; ``run`` starts Spark only when some table
has rows to move, so a scheduled relaunch that finds nothing exits in about a second. Exit
codes: ``coldtier.errors``.

Longer than 300 lines: one ``cmd_*`` per command, each a thin orchestration under ``held``
(ledger and locks); documents come from ``views``, checks from ``validate``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from coldtier import __version__
from coldtier import config as config_mod
from coldtier.config import AppConfig, TableConfig, mask
from coldtier.consistency import AGED_UNKNOWN, aged_out_vs_ledger
from coldtier.driver import StopFlag, TableFailure, Trigger, TriggerRecord, run_tables
from coldtier.errors import (  # noqa: F401  (EXIT_* re-exported: cli.EXIT_SCHEMA)
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_LEDGER,
    EXIT_LOCK,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_SCHEMA,
    NeedsSpark,
    UsageError,
    classify,
)
from coldtier.faults import FaultHook
from coldtier.handoff import attach_stderr, write_pidfile
from coldtier.ledger import Ledger, LedgerInconsistent, open_ledger
from coldtier.lock import AdvisoryLock, lock_session, table_lock
from coldtier.loop import TableRunner, emit_json, ledger_watermark
from coldtier.metrics import RunMetrics
from coldtier.offset import Offset
from coldtier.sinks import make_sink
from coldtier.source import Planner, resolve_cursor, source_client
from coldtier.spark import session_for, shield_jvm_from_stop_signals
from coldtier.views import plan_doc, status_doc


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="coldtier", description="ClickHouse → Iceberg, exactly once.")
    ap.add_argument("--version", action="version", version=f"coldtier {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, help="YAML config file")
        p.add_argument("--tables", help="comma-separated table names (default: all)")

    r = sub.add_parser("run", help="move data: plan, read, write, commit")
    common(r)
    r.add_argument("--trigger", default="available-now",
                   help="once (one batch per table) | available-now (every batch visible now; the default) | "
                        "processing-time=INTERVAL (a loop: 500ms, 15s, 2m, 1h or '15 seconds')")
    r.add_argument("--max-batches", type=int, help="stop after N batches in all")
    r.add_argument("--stop-grace", type=float, default=30.0, metavar="SECONDS",
                   help="after SIGTERM/SIGINT, cancel a batch still in flight after this long (default 30)")
    r.add_argument("--wait-for-lock", nargs="?", const="inf", metavar="SECONDS",
                   help="wait for the lock instead of exiting with code 3")
    p = sub.add_parser("plan", help="print the next batch's plan per table; moves no data")
    common(p)
    v = sub.add_parser("validate", help="check the config, the services, the tables and what a run would "
                                        "do, without Spark")
    common(v)
    rl = sub.add_parser("recover-ledger",
                        help="rebuild the ledger of the given tables from Iceberg snapshot summaries")
    common(rl)
    rc = sub.add_parser("reconcile", help="compare ClickHouse and Iceberg per time bucket")
    common(rc)
    rc.add_argument("--since", required=True, help="UTC start: 2026-11-27T10:00:00, or 6h / 2d ago")
    rc.add_argument("--until", help="UTC end (exclusive), same forms; default: no end")
    rc.add_argument("--bucket", default="1h", help="bucket width: 15m, 1h, 1d (default 1h)")
    rc.add_argument("--repair", action="store_true",
                    help="re-copy each mismatched bucket in one Iceberg commit, recorded in the ledger")
    ad = sub.add_parser("adopt", help="continue a renamed pipeline/table from its old identity's watermark")
    common(ad)
    ad.add_argument("--from", dest="from_identity", required=True, metavar="PIPELINE/TABLE",
                    help="the identity whose batches the target holds (named by the refusing run)")
    mt = sub.add_parser("maintain", help="compact files, expire snapshots, remove orphans (same lock as run)")
    common(mt)
    mt.add_argument("--wait-for-lock", nargs="?", const="inf", default=None, metavar="SECONDS",
                    help="wait for the table's lock (a run in progress) instead of exiting with code 3")
    s = sub.add_parser("status", help="watermark, last batches, lag and backlog per table")
    common(s)
    s.add_argument("--json", action="store_true", help="one JSON object per table")
    q = sub.add_parser("sql", help="Spark SQL on the cold tier with the job's catalogs (read-only by "
                                   "default)")
    q.add_argument("--config", required=True, help="YAML config file")
    q.add_argument("statement", help="one SQL statement, e.g. "
                                     "\"SELECT count(*) FROM cold.cold.trades_binance\"")
    q.add_argument("--rows", type=int, default=100, help="print at most this many rows (default 100)")
    q.add_argument("--json", action="store_true", help="one JSON object per row")
    q.add_argument("--allow-writes", action="store_true",
                   help="let INSERT/MERGE/DELETE/DDL/CALL through: the cold tier is the system of record")
    sh = sub.add_parser("shell", help="a Python shell with `spark` (the job's session) and a read-only sql()")
    sh.add_argument("--config", required=True, help="YAML config file")

    def one_table(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, help="YAML config file")
        p.add_argument("table", help="a table name from the config (tables[].name)")
        p.add_argument("--since", help="rows with timestamp ≥ this: 2026-11-27T10:00:00 (UTC) or 1h / 2d ago")

    hd = sub.add_parser("head", help="a few rows of a table's cold copy (PyIceberg: no JVM, about a second)")
    one_table(hd)
    hd.add_argument("--rows", type=int, default=10, help="how many rows (default 10)")
    ct = sub.add_parser("count", help="rows in a table's cold copy, optionally since a time (PyIceberg)")
    one_table(ct)
    ct.add_argument("--until", help="rows with timestamp < this (same forms as --since)")
    cd = sub.add_parser("check-duplicates",
                        help="keys held by more than one row in a table's cold copy (key: tables[].key, "
                             "default the cursor); exit 7 when there are any (PyIceberg)")
    one_table(cd)
    cd.add_argument("--until", help="rows with timestamp < this (same forms as --since)")
    return ap


def _tables(cfg: AppConfig, arg: str | None) -> list[str] | None:
    return [t.strip() for t in arg.split(",") if t.strip()] if arg else None


@contextmanager
def held(cfg: AppConfig, tables: tuple[Any, ...], wait_for_lock: float | None = None
         ) -> Iterator[tuple[Ledger, list[AdvisoryLock]]]:
    """The ledger, with the lock of every table held: what every command that writes works
    under. Locks are released and the ledger closed in reverse order on the way out, whatever
    happens. ``wait_for_lock``: None fails at once with LockHeld (exit 3)."""
    ledger = open_ledger(cfg)
    session = lock_session(cfg)
    locks = [table_lock(cfg, t, session) for t in tables]
    try:
        ledger.ensure_schema()
        for lock in locks:
            lock.acquire(wait_for_lock)
        yield ledger, locks
    finally:
        for lock in reversed(locks):
            lock.release()
        session.drop()
        ledger.close()


def cmd_plan(cfg: AppConfig, names: list[str] | None) -> int:
    ledger = open_ledger(cfg)
    try:
        ledger.ensure_schema()
        for t in cfg.select(names):
            print(json.dumps(plan_doc(cfg, ledger, t)), flush=True)
    finally:
        ledger.close()
    return EXIT_OK


def cmd_status(cfg: AppConfig, names: list[str] | None, as_json: bool) -> int:
    ledger = open_ledger(cfg)
    try:
        ledger.ensure_schema()
        docs = [status_doc(cfg, ledger, t) for t in cfg.select(names)]
    finally:
        ledger.close()
    if as_json:
        for d in docs:
            print(json.dumps(d))
        return EXIT_OK
    print(f"pipeline {cfg.pipeline}")
    print(f"{'table':<16} {'batch':>6}  {'watermark (UTC #incrementing)':<34} {'lag_s':>8} {'backlog':>9}  "
          f"last batch")
    for d in docs:
        batch = d["watermark_batch"] if d["watermark_batch"] is not None else "-"
        lag = d["source_lag_s"] if d["source_lag_s"] is not None else "-"
        print(f"{d['table']:<16} {batch:>6}  {d['watermark_text'] or '-':<34} {lag:>8} "
              f"{d['backlog_rows']:>9,}  {d['last_batch_text']}")
    return EXIT_OK


def cmd_maintain(cfg: AppConfig, names: list[str] | None, wait_for_lock: float | None) -> int:
    """Table maintenance under the run lock, so it never overlaps a batch of the same table."""
    from coldtier.maintenance import maintain

    tables = cfg.select(names)
    metrics = RunMetrics(cfg.metrics, cfg.pipeline)
    if cfg.maintenance.unsafe_short_retention:
        print(f"coldtier: WARNING: maintenance.unsafe_short_retention is set (retention "
              f"{cfg.maintenance.snapshot_retention_h:g} h, orphans {cfg.maintenance.orphan_age_h:g} h): "
              f"files of a commit still in flight may be deleted", file=sys.stderr, flush=True)
    with held(cfg, tables, wait_for_lock) as (ledger, _):
        spark = session_for(cfg)
        for t in tables:
            if not make_sink(spark, t.target).exists():
                continue
            result = maintain(spark, t.target, cfg.maintenance, cfg.pipeline, t.name)
            ledger.record_maintenance(cfg.pipeline, t.name, result)
            metrics.maintained(result)
            emit_json(result)
        metrics.write_textfile()
    return EXIT_OK


def cmd_recover_ledger(cfg: AppConfig, names: list[str] | None) -> int:
    with held(cfg, cfg.select(names)) as (ledger, _):
        spark = session_for(cfg)
        for t in cfg.select(names):
            sink = make_sink(spark, t.target)
            history = sink.batch_history(cfg.pipeline, t.name)
            aged = sink.aged_out_batch(cfg.pipeline, t.name) if not history else None
            # an expired Iceberg history with an empty ledger: a new pipeline on an old table
            if aged is not None and (aged != AGED_UNKNOWN or ledger.last_batch(cfg.pipeline, t.name)):
                _keep_aged_out_ledger(cfg, t, ledger, sink, aged, spark)
                continue
            entries = [(bid, Offset.from_json(end), sid, rows) for bid, end, sid, rows in history]
            ledger.rebuild(cfg.pipeline, t.name, entries)  # type: ignore[arg-type]
            print(json.dumps({"pipeline": cfg.pipeline, "table": t.name, "batches": len(entries),
                              "watermark_batch": entries[-1][0] if entries else None,
                              "watermark": entries[-1][1].to_json() if entries and entries[-1][1] else None}))
    return EXIT_OK


def _keep_aged_out_ledger(cfg: AppConfig, t: TableConfig, ledger: Ledger, sink: Any, aged: int,
                          spark: Any) -> None:
    """The sink's batch commits are gone by age and the lineage holds none: the ledger is the only
    record of the watermark left. Kept when what the sink still has confirms it (the run's own
    check, ``aged_out_vs_ledger``); never emptied (the next run would copy every row again);
    refused otherwise."""
    from coldtier.reconcile import rows_end_at
    from coldtier.source import JdbcSource

    last_id, wm = ledger_watermark(ledger, cfg.pipeline, t.name)

    def rows_agree() -> bool:
        spec, cols = resolve_cursor(source_client(cfg, t), t)
        mappings = JdbcSource(cfg.sources[t.connection], t, spec, cols).mappings
        return rows_end_at(spark, sink.ident, spec, mappings, wm)

    check = aged_out_vs_ledger(aged, last_id, wm, rows_agree, sink.ident, sink.aged_out_how)
    if not check.agrees:
        raise LedgerInconsistent(
            f"{cfg.pipeline}/{t.name}: {check.gone}, and {check.evidence}: there is no commit left to "
            f"rebuild the ledger from, and it was left as it is (docs/runbooks/ledger-inconsistent.md).")
    print(json.dumps({"pipeline": cfg.pipeline, "table": t.name, "batches": None, "watermark_batch": last_id,
                      "watermark": wm.to_json() if wm else None,
                      "kept": f"the ledger, as it is: {check.gone}, and {check.evidence}"}))


def cmd_adopt(cfg: AppConfig, names: list[str] | None, from_identity: str) -> int:
    """After a rename: record, in the sink and the ledger, that this pipeline/table continues
    from the newest batch of ``from_identity`` (an empty commit carrying the new identity and the
    old watermark), so the next run goes on from there instead of copying everything again."""
    tables = cfg.select(names)
    if len(tables) != 1 or "/" not in from_identity:
        raise UsageError("adopt takes one table (--tables NAME) and --from PIPELINE/TABLE")
    t = tables[0]
    old = tuple(from_identity.split("/", 1))
    with held(cfg, (t,)) as (ledger, _):
        if ledger.last_batch(cfg.pipeline, t.name) is not None:
            raise LedgerInconsistent(f"{cfg.pipeline}/{t.name} already has batches in the ledger; adopt is "
                                     f"for a renamed table whose new name has none")
        sink = make_sink(session_for(cfg), t.target)
        found = sink.identities()
        if old not in found:
            have = ", ".join(f"{p}/{n}" for p, n in found) or "none"
            raise LedgerInconsistent(f"{sink.ident} holds no batches of {from_identity} (it holds: {have})")
        batch_id, end = found[old]
        snapshot = sink.adopt(cfg.pipeline, t.name, batch_id, end, {"coldtier.adopted-from": from_identity})
        ledger.rebuild(cfg.pipeline, t.name, [(batch_id, Offset.from_json(end), snapshot, 0)])  # type: ignore[list-item]
        print(json.dumps({"pipeline": cfg.pipeline, "table": t.name, "adopted_from": from_identity,
                          "watermark_batch": batch_id, "watermark": end, "snapshot_id": snapshot}))
    return EXIT_OK


def _when(text: str | None, now: float) -> int | None:
    import re

    if text is None:
        return None
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m:
        return int(now) - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"bad time {text!r}: use 2026-11-27T10:00:00 (UTC) or 6h / 2d ago") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def cmd_reconcile(cfg: AppConfig, names: list[str] | None, since: str, until: str | None, bucket: str,
                  repair: bool) -> int:
    import time as _time

    from coldtier.reconcile import parse_bucket, reconcile_table
    from coldtier.source import make_source

    bucket_s = parse_bucket(bucket)
    since_s = _when(since, _time.time())
    until_s = _when(until, _time.time())
    assert since_s is not None
    tables = cfg.select(names)
    worst = EXIT_OK
    with held(cfg, tables) as (ledger, _):
        spark = session_for(cfg)
        for t in tables:
            client = source_client(cfg, t)
            spec, cols = resolve_cursor(client, t)
            source = make_source(cfg.sources[t.connection], t, spec, cols)
            _, wm = ledger_watermark(ledger, cfg.pipeline, t.name)

            def record(m: Any, snapshot: int | None, name: str = t.name) -> None:
                ledger.record_repair(cfg.pipeline, name, m.bucket_start, bucket_s, m.source_rows,
                                     m.sink_rows, snapshot)

            sink = make_sink(spark, t.target)
            if reconcile_table(spark, client, source, sink, wm, since_s, until_s, bucket_s, repair, record,
                               lambda doc: print(json.dumps(doc))):
                worst = EXIT_MISMATCH
    return worst


def _needs_spark(cfg: AppConfig, names: list[str] | None, ledger: Ledger) -> bool:
    """True when some table has a batch to finish or rows to read (checked without Spark)."""
    for t in cfg.select(names):
        _, wm = ledger_watermark(ledger, cfg.pipeline, t.name)
        last = ledger.last_batch(cfg.pipeline, t.name)
        if last is not None and last.status == "planned":
            return True
        client = source_client(cfg, t)
        spec, _ = resolve_cursor(client, t)
        if Planner(client, t, spec).plan(wm).rng is not None:
            return True
    return False


def cmd_run(cfg: AppConfig, names: list[str] | None, trigger: Trigger, max_batches: int | None,
            wait_for_lock: float | None, emit: Callable[[dict[str, Any]], None] = emit_json,
            stop_grace_s: float = 30.0, spark_factory: Callable[[AppConfig], Any] | None = None,
            on_trigger: Callable[[TriggerRecord], None] | None = None) -> int:
    tables = cfg.select(names)
    stop = StopFlag(grace_s=stop_grace_s)
    stop.install()
    write_pidfile()  # under the launcher, stop signals come here
    metrics = RunMetrics(cfg.metrics, cfg.pipeline)
    runners: list[TableRunner] = []
    report: bool = False  # a run that never got its locks reports nothing: the holder does
    counted = False
    ok = False

    emitting = threading.Lock()  # tables progress concurrently: one document at a time

    def out(doc: dict[str, Any]) -> None:
        with emitting:
            emit(doc)
            try:
                metrics.observe(doc)
            except Exception as exc:  # metrics never change the run's outcome
                print(f"coldtier: WARNING: could not write metrics: {mask(str(exc), cfg.secrets())}",
                      file=sys.stderr, flush=True)

    def table_failed(failure: TableFailure, others_go_on: bool, retry_in: float | None) -> None:
        with emitting:
            metrics.failed(failure.table, failure.phase)
        code, what = classify(failure.error)
        head = f"coldtier: {cfg.pipeline}/{failure.table}"
        if retry_in is not None:
            print(f"{head} failed ({what}, exit {code}): {error_text(failure.error, cfg.secrets())}; "
                  f"retrying in {retry_in:g}s from its ledger, the other tables go on", file=sys.stderr,
                  flush=True)
        elif others_go_on:  # the run's last line reports it again, with the exit code
            print(f"{head} stopped ({what}, exit {code}): {error_text(failure.error, cfg.secrets())}; the "
                  f"other tables go on", file=sys.stderr, flush=True)

    try:
        with held(cfg, tables, wait_for_lock) as (ledger, locks):
            report = True
            for t in tables:
                recent = ledger.recent(cfg.pipeline, t.name, 2)
                last = next((b for b in recent if b["status"] == "committed"), None)
                if last is not None and last["committed_at"] is not None:
                    metrics.seed(t.name, last["batch_id"], last["committed_at"].timestamp())
            metrics.serve()
            # checks the sources (tables, cursor columns, types) before any JVM, in every trigger
            work = _needs_spark(cfg, names, ledger)
            if trigger.kind != "processing-time" and not work:
                for t in tables:
                    out({"pipeline": cfg.pipeline, "table": t.name, "rows": 0, "caught_up": True})
                ok = True
                return EXIT_OK
            if stop.stopped:  # a stop signal before any work began: nothing to finish
                print(json.dumps({"pipeline": cfg.pipeline, "batches": 0, "stopped_by_signal": True,
                                  "cancelled": False}), file=sys.stderr)
                ok = True
                return EXIT_OK
            spark = (spark_factory or session_for)(cfg)
            shield_jvm_from_stop_signals(spark)
            for t, lock in zip(tables, locks, strict=True):
                runners.append(TableRunner(cfg, t, spark, ledger, FaultHook(), out, lock))
            stop.arm(spark.sparkContext.cancelAllJobs)
            try:
                outcome = run_tables(runners, trigger, max_batches, stop, cfg.run.max_concurrent_tables,
                                     table_failed, on_trigger)
            finally:
                stop.disarm()
                for r in runners:  # with the locks still held
                    r.close()
            if stop.cancelled:
                where = ", ".join(f"{cfg.pipeline}/{r.table.name}" for r in runners if r.phase != "idle")
                print(f"coldtier: stopped: the batch in flight of {where or cfg.pipeline} did not finish "
                      f"within the {stop.grace_s:g} s grace after the stop signal and was cancelled; it "
                      f"stays planned and the next run replays it (exit 0)", file=sys.stderr, flush=True)
            if not outcome.failures or len(runners) > 1:  # one table's failure: its error is the summary
                print(json.dumps({"pipeline": cfg.pipeline, "batches": outcome.batches,
                                  "stopped_by_signal": stop.stopped, "cancelled": stop.cancelled,
                                  **({"retried_failures": outcome.retried} if outcome.retried else {}),
                                  **({"failed_tables": [f.table for f in outcome.failures]}
                                     if outcome.failures else {})}), file=sys.stderr)
            if outcome.failures:
                counted = True  # each failure is in the metrics already
                raise outcome.failures[0].error
            ok = not stop.cancelled
            return EXIT_OK
    except NeedsSpark:  # the launcher's run ahead ends here: the driver reports this run
        report = False
        metrics.close()
        raise
    except BaseException:
        if report and not counted:
            active = next((r for r in runners if r.phase != "idle"), None)
            metrics.failed(active.table.name if active else "*", active.phase if active else "setup")
        raise
    finally:  # after the locks are released: a slow Pushgateway never holds them
        if report:
            try:
                metrics.finish(ok)
            except Exception as exc:  # metrics never change the run's outcome
                print(f"coldtier: WARNING: could not deliver metrics: {mask(str(exc), cfg.secrets())}",
                      file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    attach_stderr()  # under scripts/spark-submit.sh: messages to its stderr, not among the JSON
    args = parser().parse_args(argv)
    secrets: tuple[str, ...] = ()
    try:
        cfg = config_mod.load(args.config)
        secrets = cfg.secrets()
        return dispatch(cfg, args, None)
    except Exception as exc:
        code, what = classify(exc)
        return fail(code, what, exc, secrets)


def dispatch(cfg: AppConfig, args: argparse.Namespace,
              spark_factory: Callable[[AppConfig], Any] | None) -> int:
    if args.command in ("head", "count", "check-duplicates"):
        return cmd_quick(cfg, args)
    if args.command in ("sql", "shell"):
        return cmd_sql(cfg, args, spark_factory or session_for)
    names = _tables(cfg, args.tables)
    cfg.select(names)
    if args.command == "plan":
        return cmd_plan(cfg, names)
    if args.command == "validate":
        from coldtier import validate

        return validate.report(list(validate.checks(cfg, names)), cfg.secrets())
    if args.command == "status":
        return cmd_status(cfg, names, args.json)
    if args.command == "maintain":
        wait = None if args.wait_for_lock is None else float(args.wait_for_lock)
        return cmd_maintain(cfg, names, wait)
    if args.command == "recover-ledger":
        return cmd_recover_ledger(cfg, names)
    if args.command == "adopt":
        return cmd_adopt(cfg, names, args.from_identity)
    if args.command == "reconcile":
        return cmd_reconcile(cfg, names, args.since, args.until, args.bucket, args.repair)
    trigger = Trigger.parse(args.trigger)
    wait = None
    if args.wait_for_lock is not None:
        wait = float("inf") if args.wait_for_lock == "inf" else float(args.wait_for_lock)
    return cmd_run(cfg, names, trigger, args.max_batches, wait, stop_grace_s=args.stop_grace,
                   spark_factory=spark_factory)


def cmd_quick(cfg: AppConfig, args: argparse.Namespace) -> int:
    """``head``, ``count``, ``check-duplicates``: PyIceberg on the job's catalog, no JVM."""
    import time as _time

    from coldtier import query

    t = cfg.table(args.table)
    if args.command == "head" and args.rows < 1:
        raise UsageError(f"coldtier head: --rows {args.rows}: give a positive number of rows")
    zone = query.session_zone(cfg)
    now = _time.time()
    since, until = _when(args.since, now), _when(getattr(args, "until", None), now)
    keys = query.key_columns(t) if args.command == "check-duplicates" else ()
    table = query.load_table(cfg, t)
    facts = query.facts(table, zone)
    bounds = []
    if since is not None:
        bounds.append(f"{t.cursor.timestamp_column} >= {_iso(since, zone)}")
    if until is not None:
        bounds.append(f"{t.cursor.timestamp_column} < {_iso(until, zone)}")
    where = " with " + " and ".join(bounds) if bounds else ""
    print(f"{t.name}: {t.target.identifier}, snapshot {facts.snapshot_id} of {facts.committed}, "
          f"{facts.rows:,} rows in {facts.files:,} data files")
    if args.command == "count":
        print(f"{query.count(table, t, since, until):,} rows{where}")
        return EXIT_OK
    if args.command == "head":
        rows = query.head(table, t, args.rows, since)
        print(query.text_table(rows.column_names, [list(r.values()) for r in rows.to_pylist()], zone))
        return EXIT_OK
    found = query.duplicates(table, t, keys, since, until)
    print(f"{found.rows:,} rows{where} read; key ({', '.join(keys)}): {found.duplicate_keys:,} keys held by "
          f"more than one row, {found.extra_rows:,} rows too many")
    if found.examples:
        print(query.text_table([*keys, "copies"], [[*k, n] for k, n in found.examples], zone))
    return EXIT_MISMATCH if found.duplicate_keys else EXIT_OK


def _iso(epoch_s: int, zone: Any) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).astimezone(zone).isoformat()


def cmd_sql(cfg: AppConfig, args: argparse.Namespace, spark_factory: Callable[[AppConfig], Any]) -> int:
    """``sql`` and ``shell``: the job's SparkSession (catalogs, credentials, time zone)."""
    from coldtier import coldsql, query

    zone = query.session_zone(cfg)
    if args.command == "sql" and not args.statement.strip():
        raise UsageError("coldtier sql: the statement is empty")
    if args.command == "sql" and args.rows < 1:
        raise UsageError(f"coldtier sql: --rows {args.rows}: give a positive number of rows to print")
    spark = spark_factory(cfg)
    if args.command == "shell":
        return coldsql.shell(cfg, spark, zone)
    df = coldsql.run_sql(spark, args.statement, args.allow_writes)
    text, more = coldsql.render(df, args.rows, zone, args.json)
    if text:
        print(text)
    if more:
        print(f"coldtier sql: more than {args.rows} rows; showing the first {args.rows} (--rows N)",
              file=sys.stderr)
    return EXIT_OK


# a frame of a Java stack trace as py4j carries it ("\tat org.x.Y.m(Y.java:90)", "\t... 22 more"), and
# Spark's marker of where a lazily thrown error was first raised: nothing a user can act on
_JAVA_FRAME = re.compile(r"\s*(at [\w$.<>/-]+\(.*\)|\.\.\. \d+ more|Suppressed: "
                         r"org\.apache\.spark\.util\.Utils\$OriginalTryStackTraceException: .*)\s*")
_PY4J_LEAD = re.compile(r"An error occurred while calling [\w$.]+\.\s*:?\s*")


def error_text(exc: BaseException, secrets: tuple[str, ...]) -> str:
    """An exception's message on one line, at most 2,000 characters, secrets masked. A JVM error
    keeps each exception of its chain ("Caused by: …": the root cause, such as PostgreSQL
    refusing a password, comes last) and drops the stack frames between them."""
    kept = (line for line in str(exc).splitlines() if not _JAVA_FRAME.fullmatch(line))
    text = _PY4J_LEAD.sub("", " ".join(" ".join(kept).split()), count=1)
    if len(text) > 2000:
        text = text[:2000] + " …"
    return mask(text, secrets)


def fail(code: int, what: str, exc: BaseException, secrets: tuple[str, ...]) -> int:
    print(f"coldtier: {what}: {error_text(exc, secrets)} (exit {code})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
