"""The JDBC micro-batch source (Kafka Connect's "querier"): reads one planned range.

The projection casts ClickHouse types the driver cannot hand to Spark into well-defined
ones, in SQL, so no custom JVM dialect is needed; every read carries the range predicate
inside the subquery and one disjoint partition predicate per Spark partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.config import SourceConfig, TableConfig
from coldtier.ledger import Batch
from coldtier.offset import CursorSpec
from coldtier.planning import predicate

CH_DRIVER = "com.clickhouse.jdbc.ClickHouseDriver"
_AS_STRING = re.compile(r"^(UUID|IPv4|IPv6|Enum8\(.*\)|Enum16\(.*\)|U?Int(128|256))$", re.S)
_DT64_9 = re.compile(r"^DateTime64\(9(\s*,.*)?\)$")


@dataclass(frozen=True)
class SourceColumn:
    name: str
    ch_type: str


class SourceSchemaError(RuntimeError):
    """The source table is missing or cannot be read as configured."""


def unwrap(ch_type: str) -> str:
    """The type inside Nullable(...) / LowCardinality(...)."""
    t = ch_type.strip()
    while True:
        m = re.match(r"^(Nullable|LowCardinality)\((.*)\)$", t, re.S)
        if not m:
            return t
        t = m.group(2).strip()


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def projection(columns: list[SourceColumn], keep_nanos: bool = False) -> list[str]:
    """SELECT expressions giving each column a well-defined Spark type."""
    out = []
    for c in columns:
        base = unwrap(c.ch_type)
        q = quote(c.name)
        if _AS_STRING.match(base):
            out.append(f"toString({q}) AS {q}")
        else:
            out.append(q)
        if keep_nanos and _DT64_9.match(base):
            out.append(f"toUnixTimestamp64Nano({q}) AS {quote(c.name + '_nanos')}")
    return out


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

    def select_sql(self, batch: Batch) -> str:
        cols = ", ".join(projection(self.columns, self.table.keep_nanos))
        return f"SELECT {cols} FROM {self.table.source_table} WHERE {predicate(self.spec, batch.rng)}"

    def partition_predicates(self, batch: Batch) -> list[str]:
        return [predicate(self.spec, p) for p in batch.parts]

    def jdbc_properties_base(self) -> dict[str, str]:
        props = {
            "driver": CH_DRIVER,
            "user": self.source.user,
            "password": self.source.password,
            "fetchsize": str(self.table.batch.fetchsize),
            "connection_timeout": str(int(self.source.connect_timeout_s * 1000)),
        }
        props.update(self.source.properties)
        props.update(self.table.batch.options)
        return props

    def jdbc_properties(self, batch: Batch) -> dict[str, str]:
        props = self.jdbc_properties_base()
        props["clickhouse_setting_log_comment"] = query_tag(batch.pipeline, batch.table, batch.batch_id)
        return props

    def read(self, spark: Any, batch: Batch) -> Any:
        return spark.read.jdbc(
            self.source.url,
            f"({self.select_sql(batch)}) AS coldtier_src",
            predicates=self.partition_predicates(batch),
            properties=self.jdbc_properties(batch),
        )
