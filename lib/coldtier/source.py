"""The JDBC micro-batch source (Kafka Connect's "querier"): reads one planned range.

Each column crosses JDBC in a form the driver cannot get wrong and is rebuilt in Spark
(``coldtier.types``): instants as integer epoch microseconds, dates as days, containers as
JSON text, strings checked to be UTF-8. Every read carries the range predicate inside the
subquery and one disjoint partition predicate per Spark partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.config import SourceConfig, TableConfig
from coldtier.errors import SourceDataError, SourceSchemaError  # noqa: F401  (also importable from here)
from coldtier.offset import CursorSpec
from coldtier.planning import predicate
from coldtier.records import Batch
from coldtier.types import ColumnMapping, UnsupportedColumn, map_columns, quote, spark_quote, wire_names

CH_DRIVER = "com.clickhouse.jdbc.ClickHouseDriver"
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


def rebuild(df: Any, mappings: list[ColumnMapping], names: list[str]) -> Any:
    """The wire columns turned back into their target types (timestamps, dates, containers),
    under the source's column names."""
    wire = df.select(*[df[spark_quote(n)] for n in names]).toDF(*[m.name for m in mappings])
    return wire.selectExpr(*[f"{m.spark_sql} AS {spark_quote(m.name)}" for m in mappings])


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
        props = {
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
        return props

    def jdbc_properties(self, batch: Batch) -> dict[str, str]:
        props = self.jdbc_properties_base()
        props["clickhouse_setting_log_comment"] = query_tag(batch.pipeline, batch.table, batch.batch_id)
        return props

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
