"""The quick path to the cold tier, without a JVM: PyIceberg reading the job's own catalogs.

``coldtier head``, ``count`` and ``check-duplicates`` answer small questions in about a second:
the catalog, credentials and table come from the job's YAML, never typed again. PyIceberg's SQL
catalog reads the Iceberg JDBC catalog's tables (``iceberg_tables``: V0 and V1 schemas); REST
catalogs and Hadoop (file-system) tables are read directly. Nothing here writes: the SQL
catalog is opened with ``init_catalog_tables: false`` so that a wrong URL cannot create
catalog tables. Timestamps print in the job's session time zone (``spark.sql.session.timeZone``,
UTC unless the YAML says otherwise), the zone ``coldtier sql`` shows them in.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coldtier.config import AppConfig, TableConfig
from coldtier.errors import SchemaProblem, UsageError

QUICK_CATALOGS = ("jdbc", "rest", "hadoop")


def session_zone(cfg: AppConfig) -> zoneinfo.ZoneInfo:
    name = cfg.spark.conf.get("spark.sql.session.timeZone", "UTC")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"{cfg.path}: spark.conf.spark.sql.session.timeZone {name!r} is not a time zone "
            f"the quick path knows (an IANA name such as Europe/Berlin)"
        ) from None


def sqlalchemy_url(jdbc_uri: str, user: str | None, password: str | None) -> str:
    """The SQLAlchemy URL of an Iceberg JDBC catalog's ``uri`` (PostgreSQL or SQLite)."""
    if jdbc_uri.startswith("jdbc:sqlite:"):
        return "sqlite:///" + jdbc_uri.removeprefix("jdbc:sqlite:").removeprefix("file:")
    if not jdbc_uri.startswith("jdbc:postgresql://"):
        raise UsageError(
            f"the quick path reads JDBC catalogs on PostgreSQL or SQLite; {jdbc_uri.split('?')[0]!r} "
            f"is neither: use coldtier sql"
        )
    rest = urllib.parse.urlsplit(jdbc_uri.removeprefix("jdbc:"))
    query = dict(urllib.parse.parse_qsl(rest.query))
    user = user or query.pop("user", None) or rest.username
    password = password or query.pop("password", None) or rest.password
    auth = ""
    if user:
        auth = urllib.parse.quote(user, safe="")
        if password:
            auth += ":" + urllib.parse.quote(password, safe="")
        auth += "@"
    netloc = auth + (rest.hostname or "localhost") + (f":{rest.port}" if rest.port else "")
    tail = ("?" + urllib.parse.urlencode(query)) if query else ""
    return f"postgresql+psycopg2://{netloc}{rest.path}{tail}"


def _catalog(name: str, props: Mapping[str, str]) -> Any:
    ctype = props.get("type")
    if ctype == "jdbc":
        from pyiceberg.catalog.sql import SqlCatalog

        url = sqlalchemy_url(props["uri"], props.get("jdbc.user"), props.get("jdbc.password"))
        return SqlCatalog(name, uri=url, warehouse=props.get("warehouse", ""), init_catalog_tables="false")
    if ctype == "rest":
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(name, **{k: v for k, v in props.items() if k != "type"})
    raise UsageError(
        f"catalogs.{name}: the quick path reads {', '.join(QUICK_CATALOGS)} catalogs, not "
        f"{ctype or props.get('catalog-impl')!r}: use coldtier sql"
    )


def load_table(cfg: AppConfig, t: TableConfig) -> Any:
    """The PyIceberg table of ``t``'s target, through the job's catalog."""
    if t.target.format != "iceberg":
        raise UsageError(
            f"table {t.name}: its target is {t.target.format}; the quick path reads Iceberg "
            f"tables: use coldtier sql"
        )
    props = cfg.catalogs[t.target.catalog]
    if props.get("type") == "hadoop":
        from pyiceberg.table import StaticTable

        location = os.path.join(props["warehouse"], *t.target.table.split("."))
        if not os.path.exists(os.path.join(location, "metadata", "version-hint.text")):
            raise SchemaProblem(
                f"table {t.name}: {t.target.identifier} does not exist yet (no "
                f"{location}/metadata/version-hint.text): nothing has been committed"
            )
        return StaticTable.from_metadata(location)
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return _catalog(t.target.catalog, props).load_table(t.target.table)
    except NoSuchTableError:
        raise SchemaProblem(
            f"table {t.name}: {t.target.identifier} does not exist yet in catalog "
            f"{t.target.catalog}: nothing has been committed"
        ) from None


def key_columns(t: TableConfig) -> tuple[str, ...]:
    """A row's identity for duplicate checks: ``key`` from the YAML, else the cursor when it
    identifies a row (an incrementing column is unique by contract)."""
    if t.key:
        return t.key
    if t.cursor.mode == "timestamp":
        raise UsageError(
            f"table {t.name}: a timestamp-only cursor does not identify a row: set tables[].key "
            f"(the columns that do) to check duplicates"
        )
    cols = (t.cursor.timestamp_column, t.cursor.incrementing_column)
    return tuple(c for c in cols if c)


def _row_filter(t: TableConfig, since_s: int | None, until_s: int | None) -> Any:
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan

    col = t.cursor.timestamp_column
    if (since_s is not None or until_s is not None) and not col:
        raise UsageError(f"table {t.name}: --since/--until need a timestamp cursor column")
    expr: Any = AlwaysTrue()
    iso = lambda s: dt.datetime.fromtimestamp(s, dt.UTC).isoformat()  # noqa: E731
    ge: Any = GreaterThanOrEqual  # pydantic models: positional (term, literal) at run time
    lt: Any = LessThan
    if since_s is not None:
        expr = And(expr, ge(col, iso(since_s)))
    if until_s is not None:
        expr = And(expr, lt(col, iso(until_s)))
    return expr


@dataclass(frozen=True)
class TableFacts:
    snapshot_id: int | None
    committed: str | None  # the current snapshot's time, in the session zone
    rows: int
    files: int


def facts(table: Any, zone: dt.tzinfo) -> TableFacts:
    snap = table.current_snapshot()
    if snap is None:
        return TableFacts(None, None, 0, 0)
    summary = snap.summary.additional_properties if snap.summary else {}
    when = dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, dt.UTC).astimezone(zone)
    return TableFacts(
        snap.snapshot_id,
        when.isoformat(timespec="seconds"),
        int(summary.get("total-records", 0)),
        int(summary.get("total-data-files", 0)),
    )


def count(table: Any, t: TableConfig, since_s: int | None = None, until_s: int | None = None) -> int:
    if since_s is None and until_s is None:
        return facts(table, dt.UTC).rows
    return int(table.scan(row_filter=_row_filter(t, since_s, until_s)).count())


def head(table: Any, t: TableConfig, rows: int, since_s: int | None = None) -> Any:
    """Up to ``rows`` rows (file order: what PyIceberg reads first), an Arrow table."""
    return table.scan(row_filter=_row_filter(t, since_s, None), limit=rows).to_arrow()


@dataclass(frozen=True)
class Duplicates:
    keys: tuple[str, ...]
    rows: int  # rows read
    duplicate_keys: int  # keys held by more than one row
    extra_rows: int  # rows beyond the first of each key
    examples: tuple[tuple[tuple[Any, ...], int], ...]  # (key values, copies), most copies first


def duplicates(
    table: Any,
    t: TableConfig,
    keys: Sequence[str],
    since_s: int | None = None,
    until_s: int | None = None,
    examples: int = 10,
) -> Duplicates:
    """Keys held by more than one row: only the key columns are read."""
    import pyarrow.compute as pc

    missing = [k for k in keys if table.schema().find_field(k, case_sensitive=False) is None]
    if missing:
        raise UsageError(
            f"table {t.name}: key column(s) {', '.join(missing)} are not in {t.target.identifier}"
        )
    data = table.scan(row_filter=_row_filter(t, since_s, until_s), selected_fields=tuple(keys)).to_arrow()
    grouped = data.group_by(list(keys)).aggregate([([], "count_all")])
    dup = grouped.filter(pc.greater(grouped["count_all"], 1))
    copies = dup["count_all"].to_pylist()
    top = dup.sort_by([("count_all", "descending")]).slice(0, examples).to_pylist()
    sample = tuple((tuple(r[k] for k in keys), int(r["count_all"])) for r in top)
    return Duplicates(tuple(keys), data.num_rows, len(copies), sum(c - 1 for c in copies), sample)


def show(value: Any, zone: dt.tzinfo) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(zone).isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def text_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], zone: dt.tzinfo) -> str:
    """Rows as an aligned text table, timestamps in ``zone``."""
    cells = [[show(v, zone) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])
