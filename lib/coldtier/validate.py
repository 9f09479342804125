"""``coldtier validate --config FILE``: everything a run needs, checked without Spark.

The config (loading it is the first check), its secrets, the ledger's PostgreSQL, every source
ClickHouse, every catalog that can be reached without Spark, each table's source columns and
cursor, its lock, and what the next run would do. Each check is one line; the exit code is the
first failure's (``coldtier.errors``), 0 when nothing failed.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlparse

from coldtier.config import AppConfig, mask
from coldtier.errors import EXIT_LOCK, EXIT_OK, EXIT_RUNTIME, classify


@dataclass(frozen=True)
class Check:
    level: str  # ok | warn | fail | skip (cannot be checked without Spark)
    what: str
    detail: str
    code: int = EXIT_OK  # the exit code a failure stands for


def _attempt(what: str, fn: Callable[[], str]) -> Check:
    try:
        return Check("ok", what, fn())
    except Exception as exc:
        code, lead = classify(exc)
        return Check("fail", what, f"{lead}: {' '.join(str(exc).split())}", code)


def checks(cfg: AppConfig, names: list[str] | None) -> Iterator[Check]:
    from coldtier.ledger import Ledger, where
    from coldtier.lock import AdvisoryLock, LockHeld, table_lock

    tables = cfg.select(names)
    yield Check("ok", "config", f"{cfg.path}: pipeline {cfg.pipeline}, {len(tables)} of {len(cfg.tables)} "
                                f"tables")
    for secret in cfg.weak_secrets():
        yield Check("warn", "secrets", f"a password equals {secret!r}, a name coldtier prints in its "
                                       f"messages: it cannot be masked in them. Choose another password.")
    lc = cfg.ledger
    ledger = Ledger(lc.dsn, lc.schema, min(lc.connect_timeout_s, 5.0), retries=0,
                    statement_timeout_s=lc.statement_timeout_s, tcp_timeout_s=lc.tcp_timeout_s)
    try:
        present: list[bool] = []  # asked once: the table checks read the ledger only if it exists

        def ledger_check() -> str:
            present.append(ledger.schema_present())
            state = "present" if present[0] else "absent (the first run creates it)"
            return f"PostgreSQL {where(lc.dsn)}, schema {lc.schema}: {state}"

        ledger_ok = _attempt("ledger", ledger_check)
        yield ledger_ok
        history = ledger if present and present[0] else None
        for name in dict.fromkeys(t.connection for t in tables):
            yield _attempt(f"source {name}", partial(_clickhouse, cfg, name))
        for name in dict.fromkeys(t.target.catalog for t in tables if t.target.format == "iceberg"):
            yield _catalog(name, cfg.catalogs[name])
        for t in tables:
            plan = partial(_describe_plan, cfg, history, t)
            yield _attempt(f"table {t.name}", plan)
            if ledger_ok.level != "ok":
                continue
            # the run's advisory lock, without its fence: validate bumps no owner epoch
            lock = AdvisoryLock(lc.dsn, table_lock(cfg, t).key, min(lc.connect_timeout_s, 5.0),
                                statement_timeout_s=lc.statement_timeout_s, tcp_timeout_s=lc.tcp_timeout_s)
            try:
                lock.acquire(0)
                yield Check("ok", f"lock {t.name}", "free")
            except LockHeld:
                yield Check("warn", f"lock {t.name}", "held: a run (or maintain) of this table is active "
                                                      "now; a run launched now would exit 3", EXIT_LOCK)
            except Exception as exc:
                yield Check("fail", f"lock {t.name}", " ".join(str(exc).split()), classify(exc)[0])
            finally:
                lock.release()
    finally:
        ledger.close()


def _describe_plan(cfg: AppConfig, ledger: Any, t: Any) -> str:
    from coldtier.views import plan_doc

    doc = plan_doc(cfg, ledger, t)
    cursor = " + ".join(c for c in (t.cursor.timestamp_column, t.cursor.incrementing_column) if c)
    where = f"{t.source_table} ({t.cursor.mode}: {cursor}) → {t.target.identifier}"
    if doc["kind"] == "caught-up":
        return f"{where}; next run: nothing to do (caught up at {doc['start_text'] or 'the start'})"
    verb = "replays planned batch" if doc["kind"] == "replay" else "plans batch"
    return (f"{where}; next run {verb} {doc['batch_id']}: {doc['planned_rows']:,} rows up to "
            f"{doc['end_text']} in {doc['partitions']} partitions")


def _clickhouse(cfg: AppConfig, name: str) -> str:
    from coldtier.clickhouse_http import ClickHouseHTTP

    src = cfg.sources[name]
    client = ClickHouseHTTP.from_jdbc_url(src.url, src.user, src.password, min(src.connect_timeout_s, 5.0),
                                          min(src.read_timeout_s, 10.0))
    version = client.scalar("SELECT version()")
    return f"ClickHouse {version} at {client.endpoint} as {src.user}"


def _catalog(name: str, props: Mapping[str, str]) -> Check:
    """What can be checked of an Iceberg catalog without Spark: a JDBC catalog's database, a
    REST catalog's /v1/config, a local warehouse directory."""
    what = f"catalog {name}"
    kind = props.get("type", props.get("catalog-impl", "?"))
    uri = props.get("uri", "")
    if kind == "jdbc" and uri.startswith("jdbc:postgresql:"):
        def pg() -> str:
            from coldtier import pg as pg_mod

            u = urlparse(uri.removeprefix("jdbc:"))
            dsn = (f"host={u.hostname} port={u.port or 5432} dbname={u.path.lstrip('/')} "
                   f"user={props.get('jdbc.user', '')} password={props.get('jdbc.password', '')}")
            conn = pg_mod.connect(dsn, "coldtier-validate", 5.0, 10.0, 10.0)
            conn.close()
            return f"jdbc: PostgreSQL {u.hostname}:{u.port or 5432}{u.path} reachable; warehouse " \
                   f"{props.get('warehouse', '?')}"
        return _masked(_attempt(what, pg), props)
    if kind == "rest" and uri:
        def rest() -> str:
            req = urllib.request.Request(uri.rstrip("/") + "/v1/config")
            if props.get("token"):
                req.add_header("Authorization", f"Bearer {props['token']}")
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return f"rest: {uri} answered {resp.status}"
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403) and not props.get("token"):
                    return f"rest: {uri} reachable (answered {exc.code}; it authenticates with credential)"
                raise RuntimeError(f"{uri}/v1/config answered HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise ConnectionError(f"{uri} unreachable: {getattr(exc, 'reason', exc)}") from None
        check = _masked(_attempt(what, rest), props)
        return Check("fail", what, check.detail, EXIT_RUNTIME) if check.level == "fail" else check
    warehouse = props.get("warehouse", "")
    if kind == "hadoop" and warehouse and "://" not in warehouse.removeprefix("file://"):
        path = warehouse.removeprefix("file://").removeprefix("file:")
        probe = path
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe.rstrip("/")) or "/"
            if probe == "/":
                break
        if os.access(probe or ".", os.W_OK):
            return Check("ok", what, f"hadoop: warehouse {path} "
                                     f"{'exists' if probe == path else 'can be created'} and is writable")
        return Check("fail", what, f"hadoop: warehouse {path} is not writable (nearest existing: {probe})",
                     EXIT_RUNTIME)
    return Check("skip", what, f"{kind}: checked by the first run (needs Spark to reach it)")


def _masked(check: Check, props: Mapping[str, str]) -> Check:
    secrets = tuple(v for k, v in props.items() if any(s in k.lower() for s in ("password", "token",
                                                                                 "credential", "secret")))
    return Check(check.level, check.what, mask(check.detail, secrets), check.code)


def report(results: list[Check], secrets: tuple[str, ...], out: Callable[[str], None] = print) -> int:
    """Prints one line per check; returns the first failure's exit code (0: none failed)."""
    width = max(len(c.what) for c in results)
    for c in results:
        out(f"{c.level:<5} {c.what:<{width}}  {mask(c.detail, secrets)}")
    failed = [c for c in results if c.level == "fail"]
    out(f"{len(results)} checks: " + ", ".join(f"{sum(c.level == lv for c in results)} {lv}"
                                               for lv in ("ok", "warn", "fail", "skip")
                                               if any(c.level == lv for c in results)))
    return failed[0].code if failed else EXIT_OK
