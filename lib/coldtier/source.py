"""The ClickHouse micro-batch source (Kafka Connect's "querier"; PySpark's
``DataSourceStreamReader``): describe the table and resolve its cursor, plan the next range and
its partitions over HTTP (``Planner``: latest offset, backlog, TTL), and read one planned range
through JDBC (``JdbcSource``, the default) or columnar in ClickHouse's Native format
(``NativeSource``, ``batch.reader: native``: same queries, same rebuild).

Each column crosses JDBC in a form the driver cannot get wrong and is rebuilt in Spark
(``coldtier.types``): instants as integer epoch microseconds, dates as days, containers as
JSON text, strings checked to be UTF-8. Every read carries the range predicate inside the
subquery and one disjoint partition predicate per Spark partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.config import AppConfig, SourceConfig, TableConfig
from coldtier.errors import SourceDataError, SourceSchemaError  # noqa: F401  (also importable from here)
from coldtier.offset import CursorSpec, Offset
from coldtier.planning import (
    PlannedRange,
    after_predicate,
    horizon_query,
    parse_offset,
    parse_plan_row,
    plan_query,
    predicate,
)
from coldtier.records import Batch
from coldtier.types import ColumnMapping, UnsupportedColumn, map_columns, quote, spark_quote, wire_names

CH_DRIVER = "com.clickhouse.jdbc.ClickHouseDriver"
NATIVE_FORMAT = "coldtier.clickhouse.NativeSource"  # lib/java: build/jars/coldtier-native.jar
SETTING_PREFIX = "clickhouse_setting_"  # a driver property that is a ClickHouse setting
UTF8_MARK = "coldtier: invalid UTF-8"


@dataclass(frozen=True)
class SourceColumn:
    name: str
    ch_type: str


def column_mappings(columns: list[SourceColumn], table: TableConfig) -> list[ColumnMapping]:
    """The target columns of a source table; SourceSchemaError (exit 6) for a column that cannot
    be copied exactly, before any batch is planned."""
    try:
        return map_columns([(c.name, c.ch_type) for c in columns], table.source_table,
                           dict(table.columns), table.keep_nanos)
    except UnsupportedColumn as exc:
        raise SourceSchemaError(f"table {table.name!r}: {exc}.") from None


def projection(mappings: list[ColumnMapping], names: list[str]) -> list[str]:
    """SELECT expressions: each column in its wire form, under an alias no column has."""
    return [f"{m.wire_sql} AS {quote(n)}" for m, n in zip(mappings, names, strict=True)]


def rebuild_exprs(mappings: list[ColumnMapping], names: list[str]) -> list[str]:
    """One Spark SQL expression per target column, over its wire column."""
    return [f"{m.spark_over(n)} AS {spark_quote(m.name)}" for m, n in zip(mappings, names, strict=True)]


def rebuild(df: Any, mappings: list[ColumnMapping], names: list[str]) -> Any:
    """The wire columns turned back into their target types (timestamps, dates, containers),
    under the source's column names: one projection, passed to the JVM in a few py4j calls (a
    small batch is mostly fixed costs, and this runs for every batch)."""
    from pyspark.sql import DataFrame

    from coldtier.jvm import jseq_of_strings

    spark = df.sparkSession
    return DataFrame(df._jdf.selectExpr(jseq_of_strings(spark, rebuild_exprs(mappings, names))), spark)


def describe(client: ClickHouseHTTP, table: str) -> list[SourceColumn]:
    rows = client.rows(f"DESCRIBE TABLE {table}")
    return [SourceColumn(r["name"], r["type"]) for r in rows
            if r.get("default_type", "") in ("", "DEFAULT")]


def query_tag(pipeline: str, table: str, batch_id: int) -> str:
    """Tag for system.query_log (log_comment) of every query of a batch."""
    return f"coldtier:{pipeline}/{table}/batch-{batch_id}"


@dataclass
class JdbcSource:
    source: SourceConfig
    table: TableConfig
    spec: CursorSpec
    columns: list[SourceColumn]
    mappings: list[ColumnMapping] = field(init=False)

    wire: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.mappings = column_mappings(self.columns, self.table)
        self.wire = wire_names(self.mappings, [c.name for c in self.columns])

    def select_sql(self, batch: Batch) -> str:
        return self.select_where(predicate(self.spec, batch.rng))

    def select_where(self, where: str) -> str:
        """The wire columns, plus the cursor columns as they are: Spark applies each partition's
        predicate to this subquery's output, and never transfers the cursor columns."""
        cols = ", ".join(projection(self.mappings, self.wire) + self.spec.key_columns())
        return f"SELECT {cols} FROM {self.table.source_table} WHERE {where}"

    def partition_predicates(self, batch: Batch) -> list[str]:
        return [predicate(self.spec, p) for p in batch.parts]

    def jdbc_properties_base(self) -> dict[str, str]:
        props: dict[str, str] = {
            "driver": CH_DRIVER,
            "user": self.source.user,
            "password": self.source.password,
            "fetchsize": str(self.table.batch.fetchsize),
            "connection_timeout": str(int(self.source.connect_timeout_s * 1000)),
            # client-v2's default is 0 (wait forever): a half-open connection would hang the task
            "socket_timeout": str(int(self.source.read_timeout_s * 1000)),
        }
        props.update(self.source.properties)
        props.update(self.table.batch.options)
        schema = self.custom_schema()
        if schema:
            props["customSchema"] = schema
        return props

    def jdbc_properties(self, batch: Batch) -> dict[str, str]:
        props = self.jdbc_properties_base()
        props["clickhouse_setting_log_comment"] = query_tag(batch.pipeline, batch.table, batch.batch_id)
        return props

    def custom_schema(self) -> str | None:
        """Spark's JDBC ``customSchema``: the wire columns read as bytes (``wire_binary``)."""
        cols = [f"{spark_quote(n)} BINARY" for m, n in zip(self.mappings, self.wire, strict=True)
                if m.wire_binary]
        return ", ".join(cols) or None

    def read(self, spark: Any, batch: Batch) -> Any:
        df = spark.read.jdbc(
            self.source.url,
            f"({self.select_sql(batch)}) AS coldtier_src",
            predicates=self.partition_predicates(batch),
            properties=self.jdbc_properties(batch),
        )
        return rebuild(df, self.mappings, self.wire)

    def read_where(self, spark: Any, where: str, alias: str = "coldtier_src") -> Any:
        """Rows matching a ClickHouse condition, rebuilt like a batch (reconcile's repair)."""
        df = spark.read.jdbc(self.source.url, f"({self.select_where(where)}) AS {alias}",
                             properties=self.jdbc_properties_base())
        return rebuild(df, self.mappings, self.wire)


@dataclass
class NativeSource(JdbcSource):
    """The same batch as ``JdbcSource`` (projection, range and partition predicates, rebuild),
    read by coldtier's columnar reader (``lib/java/coldtier/clickhouse``): each partition's query
    is POSTed with ``FORMAT Native`` and its blocks decoded straight into Spark column vectors,
    without clickhouse-jdbc's row parsing or Spark's per-value JDBC getters."""

    def native_options(self, queries: list[str], tag: str | None) -> dict[str, str]:
        http = ClickHouseHTTP.from_jdbc_url(self.source.url, self.source.user, self.source.password)
        opts = {
            "endpoint": http.url, "database": http.database,
            "user": self.source.user, "password": self.source.password,
            "connectTimeoutMs": str(int(self.source.connect_timeout_s * 1000)),
            "socketTimeoutMs": str(int(self.source.read_timeout_s * 1000)),
            "schemaQuery": queries[0], "partitions": str(len(queries)),
        }
        for props in (self.source.properties, self.table.batch.options):
            opts.update({f"setting.{k.removeprefix(SETTING_PREFIX)}": v for k, v in props.items()
                         if k.startswith(SETTING_PREFIX)})
        if tag:
            opts["setting.log_comment"] = tag
        opts.update({f"query.{i}": q for i, q in enumerate(queries)})
        return opts

    def partition_queries(self, subquery: str, predicates: list[str]) -> list[str]:
        """What Spark's JDBC reader sends for each partition: the wire columns of the subquery,
        under the partition's predicate."""
        cols = ", ".join(quote(n) for n in self.wire)
        return [f"SELECT {cols} FROM ({subquery}) AS coldtier_src WHERE {p}" for p in predicates]

    def _load(self, spark: Any, queries: list[str], tag: str | None) -> Any:
        df = spark.read.format(NATIVE_FORMAT).options(**self.native_options(queries, tag)).load()
        return rebuild(df, self.mappings, self.wire)

    def read(self, spark: Any, batch: Batch) -> Any:
        queries = self.partition_queries(self.select_sql(batch), self.partition_predicates(batch))
        return self._load(spark, queries, query_tag(batch.pipeline, batch.table, batch.batch_id))

    def read_where(self, spark: Any, where: str, alias: str = "coldtier_src") -> Any:
        return self._load(spark, self.partition_queries(self.select_where(where), ["1"]), None)


def make_source(source: SourceConfig, table: TableConfig, spec: CursorSpec,
                columns: list[SourceColumn]) -> JdbcSource:
    """The reader the table's ``batch.reader`` names."""
    cls = NativeSource if table.batch.reader == "native" else JdbcSource
    return cls(source, table, spec, columns)


_TTL_RULE_TAIL = re.compile(r"\s+(DELETE|WHERE|TO\s+DISK|TO\s+VOLUME|RECOMPRESS|GROUP\s+BY)\b.*$",
                            re.S | re.I)
_TTL_NOT_DELETE = re.compile(r"\s(TO\s+DISK|TO\s+VOLUME|RECOMPRESS|GROUP\s+BY)\b", re.I)


def ttl_delete_expression(engine_full: str) -> str | None:
    """The time expression of the first row-deleting rule of a table TTL (``… DELETE WHERE …``
    included: it may delete unread rows), from ``system.tables.engine_full``; None if none.
    Rules that move or recompress (``TO DISK``, ``TO VOLUME``, ``RECOMPRESS``, ``GROUP BY``) keep
    rows and are skipped; commas inside functions do not split rules."""
    from coldtier.types import split_args

    m = re.search(r"\bTTL\s+(.+?)(?:\s+SETTINGS\b|$)", engine_full, re.S)
    if not m:
        return None
    for rule in split_args(m.group(1)):
        if not _TTL_NOT_DELETE.search(" " + rule):
            return _TTL_RULE_TAIL.sub("", rule).strip()
    return None


def source_client(cfg: AppConfig, t: TableConfig) -> ClickHouseHTTP:
    src = cfg.sources[t.connection]
    return ClickHouseHTTP.from_jdbc_url(src.url, src.user, src.password, src.connect_timeout_s,
                                        src.read_timeout_s)


def resolve_cursor(client: ClickHouseHTTP, t: TableConfig) -> tuple[CursorSpec, list[Any]]:
    from coldtier.clickhouse_http import ClickHouseError

    try:
        columns = describe(client, t.source_table)
    except ClickHouseError as exc:
        if exc.code in (60, 81):
            raise SourceSchemaError(f"source table {t.source_table} of table {t.name!r} does not exist "
                                    f"on {client.endpoint} (ClickHouse error {exc.code}).") from None
        raise
    types = {c.name: c.ch_type for c in columns}
    from coldtier.offset import CursorTypeError

    try:
        spec = CursorSpec.resolve(t.cursor, types, t.source_table)
    except CursorTypeError as exc:
        raise SourceSchemaError(f"table {t.name!r}: {exc}") from None
    column_mappings(columns, t)  # every column copyable exactly, or exit 6 before any plan
    return spec, columns


@dataclass
class Planner:
    """Decides the next batch of one table; needs ClickHouse's HTTP interface only."""

    client: ClickHouseHTTP
    table: TableConfig
    spec: CursorSpec

    def plan(self, lo: Offset | None, ceiling: Offset | None = None) -> PlannedRange:
        b = self.table.batch
        q = plan_query(self.spec, self.table.source_table, lo, b.max_rows, self.table.cursor.lag_s,
                       b.num_partitions, ceiling)
        rows = self.client.rows(q.sql, settings={"max_threads": "2"})
        return parse_plan_row(self.spec, lo, rows[0])

    def horizon(self) -> Offset | None:
        """The greatest cursor visible now (after the lag): the end of an available-now run."""
        rows = self.client.rows(horizon_query(self.spec, self.table.source_table,
                                              self.table.cursor.lag_s))
        return parse_offset(self.spec, rows[0]["k"]) if rows else None

    def ttl_expression(self) -> str | None:
        """The source table's row-deletion TTL expression (from its definition), if it has one."""
        db, _, name = self.table.source_table.partition(".")
        rows = self.client.rows(f"SELECT engine_full FROM system.tables WHERE database = '{db.strip('`')}' "
                                f"AND name = '{name.strip('`')}'")
        return ttl_delete_expression(rows[0]["engine_full"]) if rows else None

    def ttl_margin_s(self, ttl_expr: str, lo: Offset | None) -> float | None:
        """Seconds until the oldest unread row expires (the TTL evaluated by ClickHouse)."""
        if self.spec.ts_col is None:
            return None
        if lo is not None and lo.ts is not None:
            ts = self.spec.ts_literal(lo.ts)
        else:
            ts = f"(SELECT min({self.spec.ts_col}) FROM {self.table.source_table})"
        rows = self.client.rows(
            f"SELECT toUnixTimestamp64Milli(toDateTime64({ttl_expr}, 3)) - "
            f"toUnixTimestamp64Milli(now64(3)) AS ms FROM (SELECT {ts} AS {self.spec.ts_col})")
        return round(int(rows[0]["ms"]) / 1000, 1) if rows else None

    def backlog(self, lo: Offset | None) -> int:
        return int(self.client.scalar(
            f"SELECT count() FROM {self.table.source_table} WHERE {after_predicate(self.spec, lo)}"))
