"""Querying the cold tier with the job's own config: the PyIceberg quick path (head, count,
check-duplicates) on Hadoop and JDBC catalogs, and ``coldtier sql`` (read-only by default) with
the job's catalogs and session time zone."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest

from coldtier import cli
from jobkit import JobEnv, run_inprocess


def _offloaded(job: JobEnv, capsys, name: str, rows: int = 6000, **extra):
    trades = job.trades()
    trades.bulk(rows, step_ms=7)
    cfg = job.write_config([job.table_entry(name, trades.table)], **extra)
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    return trades, cfg


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("catalog", ["hadoop_cat", "jdbc_cat"])
def test_count_and_head_read_the_jobs_catalog_without_a_jvm(job, capsys, catalog):
    job = JobEnv(job.chembed, job.postgres, job.warehouse, job.tmp, catalog=catalog)
    trades, cfg = _offloaded(job, capsys, "q", spark={"conf": {"spark.sql.session.timeZone": "Asia/Kolkata"}})
    code, out, err = _cli(capsys, "count", "--config", str(cfg), "q")
    assert code == 0, err
    assert out.splitlines()[-1] == "6,000 rows"
    # --since: the same rows ClickHouse counts from a whole second in the middle of the range
    mid = int(job.client.scalar(f"SELECT toUnixTimestamp(exchange_timestamp) FROM {trades.fqn} "
                                f"ORDER BY sequence_number LIMIT 1 OFFSET 3000"))
    want = int(job.client.scalar(f"SELECT count() FROM {trades.fqn} WHERE exchange_timestamp >= "
                                 f"toDateTime64({mid}, 3, 'UTC')"))
    since = dt.datetime.fromtimestamp(mid, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    code, out, err = _cli(capsys, "count", "--config", str(cfg), "q", "--since", since)
    assert code == 0, err
    assert out.splitlines()[-1].startswith(f"{want:,} rows with exchange_timestamp >= ")
    assert "+05:30" in out.splitlines()[-1]  # the bound shown in the job's session zone
    # head: the instants ClickHouse holds, shown in the job's zone (Asia/Kolkata), not this host's
    code, out, err = _cli(capsys, "head", "--config", str(cfg), "q", "--rows", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("q: ") and "6,000 rows in" in lines[0]
    assert len(lines) == 1 + 2 + 3
    shown = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+05:30", lines[3])
    assert shown, lines[3]
    seq = int(lines[3].split()[lines[1].split().index("sequence_number")])
    ch = job.client.scalar(f"SELECT toUnixTimestamp64Micro(exchange_timestamp) FROM {trades.fqn} "
                           f"WHERE sequence_number = {seq}")
    assert dt.datetime.fromisoformat(shown[0]).timestamp() * 1e6 == pytest.approx(int(ch), abs=1)


def test_check_duplicates_finds_doubled_keys_with_the_configured_key(job, spark, capsys):
    _, cfg = _offloaded(job, capsys, "dup")
    code, out, err = _cli(capsys, "check-duplicates", "--config", str(cfg), "dup")
    assert code == 0, err
    assert "key (exchange_timestamp, sequence_number): 0 keys held by more than one row" in out
    # a foreign writer doubles five rows: found, exit 7, the keys listed
    target = job.target("dup")
    spark.sql(f"INSERT INTO {target} SELECT * FROM {target} ORDER BY sequence_number LIMIT 5")
    code, out, err = _cli(capsys, "check-duplicates", "--config", str(cfg), "dup")
    assert code == cli.EXIT_MISMATCH, err
    assert "6,005 rows read; key (exchange_timestamp, sequence_number): 5 keys held by more than one row, " \
           "5 rows too many" in out
    assert len([line for line in out.splitlines() if re.search(r"\s2$", line)]) == 5
    # the key comes from the config: by trade_id alone the same five
    keyed = job.write_config([job.table_entry("dup", "unused", key=["exchange", "trade_id"])])
    code, out, _ = _cli(capsys, "check-duplicates", "--config", str(keyed), "dup")
    assert code == cli.EXIT_MISMATCH and "key (exchange, trade_id): 5 keys" in out


def test_check_duplicates_needs_a_key_for_a_timestamp_only_cursor(job, capsys):
    cfg = job.write_config([job.table_entry("ts", "unused", cursor={"mode": "timestamp",
                                                                     "incrementing_column": None})])
    code, _, err = _cli(capsys, "check-duplicates", "--config", str(cfg), "ts")
    assert code == cli.EXIT_CONFIG
    assert "a timestamp-only cursor does not identify a row: set tables[].key" in err


def test_quick_path_on_a_table_not_yet_created_says_so(job, capsys):
    cfg = job.write_config([job.table_entry("none", "unused")])
    code, _, err = _cli(capsys, "count", "--config", str(cfg), "none")
    assert code == cli.EXIT_SCHEMA and "does not exist yet" in err and err.count("\n") == 1


def test_sql_uses_the_jobs_catalogs_and_zone_and_is_read_only(job, spark, capsys):
    trades, cfg = _offloaded(job, capsys, "s", spark={"conf": {"spark.sql.session.timeZone": "Asia/Kolkata"}})
    target = job.target("s")
    try:
        code, out, err = _cli(capsys, "sql", "--config", str(cfg),
                              f"SELECT count(*) AS n, min(exchange_timestamp) AS first FROM {target}")
        assert code == 0, err
        n, first = out.splitlines()[2].split(maxsplit=1)
        assert n == "6000"
        ch = job.client.scalar(f"SELECT toUnixTimestamp64Micro(min(exchange_timestamp)) FROM {trades.fqn}")
        assert first.endswith("+05:30")
        assert dt.datetime.fromisoformat(first).timestamp() * 1e6 == pytest.approx(int(ch), abs=1)
        for statement in (f"DELETE FROM {target} WHERE true", f"INSERT INTO {target} SELECT * FROM {target}",
                          f"DROP TABLE {target}", f"CALL {job.catalog}.system.expire_snapshots('{target}')",
                          f"ALTER TABLE {target} ADD COLUMN x int", "SET spark.sql.ansi.enabled=false",
                          f"CREATE TABLE {target}_copy AS SELECT * FROM {target}"):
            code, _, err = _cli(capsys, "sql", "--config", str(cfg), statement)
            assert code == cli.EXIT_CONFIG, statement
            assert "coldtier sql is read-only" in err and "--allow-writes" in err
        assert spark.table(target).count() == 6000  # nothing was changed
        for statement in (f"SELECT * FROM {target}.snapshots", "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
                          f"SHOW TABLES IN {job.catalog}.{job.pipeline}", f"DESCRIBE TABLE {target}",
                          "VALUES (1), (2)"):
            code, _, err = _cli(capsys, "sql", "--config", str(cfg), statement, "--rows", "1")
            assert code == 0, (statement, err)
        code, out, err = _cli(capsys, "sql", "--config", str(cfg), "--json", "--allow-writes",
                              f"CREATE TABLE {target}_copy AS SELECT * FROM {target} LIMIT 3")
        assert code == 0, err
        assert spark.table(f"{target}_copy").count() == 3
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")  # the shared test session


def test_shell_binds_the_session_and_a_read_only_sql(job, spark, capsys, monkeypatch):
    _, cfg = _offloaded(job, capsys, "sh", rows=100)
    target = job.target("sh")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"sql('SELECT count(*) AS n FROM {target}')\n"
                                                 f"sql('DELETE FROM {target}')\n"))
    code, out, err = _cli(capsys, "shell", "--config", str(cfg))
    assert code == 0
    assert "coldtier shell — pipeline" in err  # code.interact's banner
    assert re.search(r"^100$", out, re.M)
    assert "coldtier sql is read-only" in err
    assert spark.table(target).count() == 100


def test_bad_arguments_are_usage_errors(job, capsys):
    cfg = job.write_config([job.table_entry("b", "unused")])
    for args, says in ((["head", "b", "--rows", "0"], "--rows 0: give a positive number of rows"),
                       (["sql", "   "], "the statement is empty"),
                       (["count", "b", "--since", "yesterday"], "bad time 'yesterday'"),
                       (["count", "nope"], "no table named 'nope'")):
        code, _, err = _cli(capsys, args[0], "--config", str(cfg), *args[1:])
        assert code == cli.EXIT_CONFIG and says in err, (args, err)
        assert err.count("\n") == 1  # one paragraph
