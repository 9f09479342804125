"""Pure helpers that had no unit test: the JDBC URL → HTTP endpoint, the reconcile time
arguments, the schema evolution rule, the wire projection."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from coldtier.cli import _when
from coldtier.clickhouse_http import ClickHouseHTTP
from coldtier.errors import SchemaConflict, UsageError
from coldtier.sinks.base import new_columns
from coldtier.source import projection, query_tag
from coldtier.types import map_columns, wire_names


@pytest.mark.parametrize(("url", "endpoint", "database"), [
    ("jdbc:clickhouse://ch:8123/k2", "http://ch:8123", "k2"),
    ("jdbc:clickhouse://ch/k2", "http://ch:8123", "k2"),
    ("jdbc:ch://ch:9000", "http://ch:9000", "default"),
    ("jdbc:clickhouse://ch/k2?ssl=true", "https://ch:8443", "k2"),
    ("jdbc:clickhouse:https://ch:9443/db", "https://ch:9443", "db"),
    ("jdbc:clickhouse:http://127.0.0.1:18123/default?compress=0", "http://127.0.0.1:18123", "default"),
])
def test_jdbc_url_to_http_endpoint(url, endpoint, database):
    client = ClickHouseHTTP.from_jdbc_url(url, "u", "p")
    assert (client.endpoint, client.database) == (endpoint, database)


def test_reconcile_times():
    now = 1_800_000_000.0
    assert _when(None, now) is None
    assert _when("6h", now) == int(now) - 6 * 3600 and _when("2d", now) == int(now) - 2 * 86400
    assert _when("90 m", now) == int(now) - 5400
    # a time without a zone is UTC, whatever the process's zone
    assert _when("2026-11-27T10:00:00", now) == int(dt.datetime(2026, 11, 27, 10, tzinfo=dt.UTC).timestamp())
    assert _when("2026-11-27T10:00:00+01:00", now) == _when("2026-11-27T09:00:00Z", now)
    with pytest.raises(UsageError, match="bad time"):
        _when("yesterday", now)


class _T:
    def __init__(self, name: str) -> None:
        self.name = name

    def simpleString(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _T) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def schema(**cols: str) -> SimpleNamespace:
    return SimpleNamespace(fields=[SimpleNamespace(name=n, dataType=_T(t)) for n, t in cols.items()])


def test_new_columns_adds_never_drops_or_retypes():
    assert [f.name for f in new_columns("t", schema(a="int"), schema(a="int", B="string"))] == ["B"]
    assert new_columns("t", schema(a="int"), schema(A="int")) == []  # names compare case-insensitively
    with pytest.raises(SchemaConflict, match="no longer"):
        new_columns("t", schema(a="int", b="int"), schema(a="int"))
    with pytest.raises(SchemaConflict, match="a: target int, source bigint"):
        new_columns("t", schema(a="int"), schema(a="bigint"))


def test_projection_selects_each_wire_form_under_an_alias_no_column_has():
    from coldtier.source import SourceColumn

    columns = [SourceColumn("ts", "DateTime64(3)"), SourceColumn("ct_w0", "String")]
    mappings = map_columns([(c.name, c.ch_type) for c in columns], "db.t")
    names = wire_names(mappings, [c.name for c in columns])
    assert not set(names) & {"ts", "ct_w0"} and len(set(names)) == 2
    sql = projection(mappings, names)
    assert len(sql) == 2 and all(f" AS `{n}`" in s for s, n in zip(sql, names, strict=True))
    assert query_tag("p", "t", 7) == "coldtier:p/t/batch-7"


def test_a_jdbc_catalog_on_postgresql_reconnects_after_a_restart():
    """Iceberg's JDBC catalog retries only 08000/08003/08006/08007/40001 by default; a restarted
    PostgreSQL answers a pooled connection with 57P01 (admin shutdown)."""
    from coldtier.spark import PG_RECONNECT_STATES, iceberg_catalog_conf

    pg = iceberg_catalog_conf("cold", {"type": "jdbc", "uri": "jdbc:postgresql://pg:5432/cat"})
    assert pg["spark.sql.catalog.cold.retryable_status_codes"] == PG_RECONNECT_STATES
    assert "57P01" in PG_RECONNECT_STATES.split(",")
    own = iceberg_catalog_conf("cold", {"type": "jdbc", "uri": "jdbc:postgresql://pg/cat",
                                        "retryable_status_codes": "57P01"})
    assert own["spark.sql.catalog.cold.retryable_status_codes"] == "57P01"  # the user's setting wins
    for other in ({"type": "jdbc", "uri": "jdbc:sqlite:/tmp/c.db"}, {"type": "hadoop", "warehouse": "/w"}):
        assert not any(k.endswith("retryable_status_codes") for k in iceberg_catalog_conf("c", other))


@pytest.mark.parametrize(("uri", "user", "password", "url"), [
    ("jdbc:postgresql://pg:5432/cat", "u", "p@ss:w/rd", "postgresql+psycopg2://u:p%40ss%3Aw%2Frd@pg:5432/cat"),
    ("jdbc:postgresql://pg/cat?user=a&password=b&ssl=true", None, None, "postgresql+psycopg2://a:b@pg/cat?ssl=true"),
    ("jdbc:sqlite:/tmp/catalog.db", None, None, "sqlite:////tmp/catalog.db"),
])
def test_the_quick_path_opens_the_jdbc_catalogs_database(uri, user, password, url):
    from coldtier.query import sqlalchemy_url

    assert sqlalchemy_url(uri, user, password) == url


def test_the_quick_path_refuses_other_jdbc_databases_clearly():
    from coldtier.errors import UsageError
    from coldtier.query import sqlalchemy_url

    with pytest.raises(UsageError, match=r"PostgreSQL or SQLite.*use coldtier sql"):
        sqlalchemy_url("jdbc:mysql://db/cat", "u", "p")


def test_stage_branches_are_named_for_their_pipeline_and_table():
    from coldtier.sinks.iceberg import stage_prefix

    p = stage_prefix("prod", "binance")
    assert p == stage_prefix("prod", "binance") and p.startswith("coldtier_stage_") and p.endswith("_")
    # a recovery drops only its own table's stages: no other pipeline/table shares the prefix
    others = {stage_prefix("prod", "kraken"), stage_prefix("staging", "binance"), stage_prefix("prod/b", "inance")}
    assert p not in others and not any(o.startswith(p) or p.startswith(o) for o in others)


def test_delta_rebuilds_its_state_as_wide_as_the_session_shuffles():
    from coldtier.spark import base_conf, delta_conf

    key, crc = "spark.databricks.delta.snapshotPartitions", "spark.databricks.delta.allFilesInCrc.enabled"
    assert delta_conf({"spark.sql.shuffle.partitions": "2"}) == {key: "2"}
    assert delta_conf({"spark.sql.shuffle.partitions": "2", key: "16"}) == {}  # the YAML's own wins
    assert delta_conf({}) == {}  # Delta's default width
    assert base_conf()[crc] == "false"  # every session, unless the YAML sets it


def test_every_session_gets_the_delta_settings(monkeypatch):
    """build_session (the jobs', the tests' shared session, the archive's training run) applies
    delta_conf, and what the caller sets wins."""
    import pyspark.sql

    from coldtier import spark as spark_mod

    seen: dict[str, str] = {}

    class Builder:
        def appName(self, _name):
            return self

        def master(self, _m):
            return self

        def config(self, k, v):
            seen[k] = v
            return self

        def getOrCreate(self):
            return "session"

    monkeypatch.setattr(pyspark.sql.SparkSession, "builder", Builder())
    assert spark_mod.build_session("t", {"spark.sql.shuffle.partitions": "3",
                                         "spark.databricks.delta.allFilesInCrc.enabled": "true"}) == "session"
    assert seen["spark.databricks.delta.snapshotPartitions"] == "3"
    assert seen["spark.databricks.delta.allFilesInCrc.enabled"] == "true"


@pytest.mark.parametrize(("txns", "batch", "latest", "app_id"), [
    ({}, 1, None, "B"),  # a new table
    ({"B": 7}, 8, "unread", "B"),  # the next batch: Delta writes it; the lineage is not read
    ({"B": 7}, 7, 7, "B"),  # a replay of a batch in the lineage: Delta skips it
    ({"B": 9}, 4, 3, "B/restore-1"),  # a RESTORE took batches 4-9 out: re-copies must not be skipped
    ({"B": 9}, 1, None, "B/restore-1"),  # restored to before the first batch
    ({"B": 9, "B/restore-1": 4}, 5, "unread", "B/restore-1"),  # after the re-copy, whatever the history kept
    ({"B": 9, "B/restore-1": 4}, 3, 2, "B/restore-2"),  # a second RESTORE
    ({"B": 2, "B/restore-3": 5}, 6, "unread", "B/restore-3"),  # generations the old RESTORE count skipped
    ({"B": 9, "B/restore-x": 99, "Bx": 99, "other": 99}, 9, 9, "B"),  # other writers' ids are not ours
])
def test_a_delta_app_id_changes_only_when_a_restore_took_batches_out(txns, batch, latest, app_id):
    from coldtier.sinks.delta import restore_app_id

    def lineage():
        assert latest != "unread", "the lineage was read for a batch Delta would write anyway"
        return latest

    assert restore_app_id("B", txns, batch, lineage) == app_id


@pytest.mark.parametrize(("txns", "recorded"), [
    ({}, None),
    ({"other": 7}, None),  # another writer's app id
    ({"B": 9}, 9),
    ({"B": 9, "B/restore-1": 4}, 4),  # the newest generation, not the highest version
    ({"B": 9, "B/restore-1": 4, "B/restore-2": 6, "B/restore-x": 99}, 6),
])
def test_the_recorded_batch_is_the_newest_generations_version(txns, recorded):
    from coldtier.sinks.delta import recorded_batch

    assert recorded_batch("B", txns) == recorded


OURS, THEIRS = ("p", "t"), ("p", "other")


@pytest.mark.parametrize(("commits", "recorded", "expected"), [
    ([(0, "CREATE TABLE", None, None), (1, "WRITE", None, OURS)], 1, None),  # the log is whole
    ([(5, "OPTIMIZE", None, None), (6, "SET TBLPROPERTIES", None, None)], 4, 4),  # aged out
    ([(5, "OPTIMIZE", None, None)], None, None),  # never a batch of ours
    ([(5, "WRITE", None, THEIRS)], 4, 4),  # another table's batches are no evidence for ours
    ([(5, "RESTORE", "5", None), (6, "WRITE", None, None)], 4, 4),  # back to a version left: ours before it
    ([(5, "WRITE", None, None), (7, "RESTORE", "3", None)], 4, "a RESTORE went back to version 3"),
    ([(5, "WRITE", None, OURS), (6, "RESTORE", "5", None)], 4, "outside the lineage"),
])
def test_batches_aged_out_of_the_delta_log_are_told_from_batches_taken_out(commits, recorded, expected):
    from coldtier.sinks.delta import aged_out

    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            aged_out(commits, OURS, recorded)
    else:
        assert aged_out(commits, OURS, recorded) == expected


def test_the_native_reader_sends_the_jdbc_readers_queries_and_only_server_settings():
    """``batch.reader: native``: per partition the query Spark's JDBC reader would send; the
    endpoint and database from the JDBC URL; ClickHouse settings from the driver properties (the
    JDBC-only ones stay behind); the batch's query tag; timeouts in milliseconds."""
    from coldtier.config import BatchConfig, CursorConfig, SourceConfig, TableConfig, TargetConfig
    from coldtier.offset import CursorSpec
    from coldtier.source import JdbcSource, NativeSource, SourceColumn, make_source

    src = SourceConfig("ch", "jdbc:clickhouse://ch.example:8123/k2?ssl=true", "reader", "pw",
                       {"compress": "false", "clickhouse_setting_max_threads": "4"}, 7.0, 90.0)
    cols = [SourceColumn("ts", "DateTime64(3)"), SourceColumn("id", "UInt64"), SourceColumn("s", "String")]
    spec = CursorSpec.resolve(CursorConfig(), {"exchange_timestamp": "DateTime64(3)",
                                              "sequence_number": "UInt64"}, "k2.t")

    def table(reader: str) -> TableConfig:
        return TableConfig("t", "ch", "k2.t", CursorConfig(),
                           BatchConfig(options={"clickhouse_setting_max_block_size": "8192"}, reader=reader),
                           TargetConfig("cold", "db.t"))

    assert type(make_source(src, table("jdbc"), spec, cols)) is JdbcSource
    native = make_source(src, table("native"), spec, cols)
    assert isinstance(native, NativeSource)
    queries = native.partition_queries("SELECT 1 AS x FROM k2.t WHERE r", ["p0", "p1"])
    wire = ", ".join(f"`{n}`" for n in native.wire)
    assert queries == [f"SELECT {wire} FROM (SELECT 1 AS x FROM k2.t WHERE r) AS coldtier_src WHERE p{i}"
                       for i in range(2)]
    opts = native.native_options(queries, "coldtier:p/t/batch-3")
    assert opts["endpoint"] == "https://ch.example:8123" and opts["database"] == "k2"
    assert (opts["user"], opts["password"]) == ("reader", "pw")
    assert (opts["connectTimeoutMs"], opts["socketTimeoutMs"]) == ("7000", "90000")
    assert {k: v for k, v in opts.items() if k.startswith("setting.")} == {
        "setting.max_threads": "4", "setting.max_block_size": "8192", "setting.log_comment": "coldtier:p/t/batch-3"}
    assert (opts["partitions"], opts["query.0"], opts["query.1"], opts["schemaQuery"]) == \
        ("2", queries[0], queries[1], queries[0])
