"""Every value exact, end to end through the real driver, whatever the time zones.

The conformance table (docs/config.md "Types") has a column of every type coldtier accepts,
with values at the type's extremes, in column zones that are not UTC (around a DST fall-back
and before 1970). It is copied by the job in this process (whose JVM runs in the suite's own
zone) and by child processes whose whole environment is in America/New_York and in
Asia/Kolkata; each copy is compared with ClickHouse value for value, through canonical forms
that this test computes itself (not through coldtier's own mapping).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from decimal import Decimal

import pytest

from coldtier import cli
from coldtier import config as config_mod
from coldtier.ledger import Ledger
from jobkit import progress_lines, run_inprocess, table_runner

pytestmark = pytest.mark.spark

# One column of every accepted type. Columns named like reconcile's internal aliases (`b`,
# `ct_bucket`, `ct_m1`) prove no user name can collide with them.
DDL = """
CREATE TABLE {db}.types (
    id UInt64,
    ts DateTime64(6, 'America/New_York'),
    dt DateTime('America/New_York'),
    dt_utc DateTime('UTC'),
    dt3 DateTime64(3, 'Asia/Kolkata'),
    dt9 DateTime64(9, 'Europe/London'),
    dt0 DateTime64(0, 'Australia/Lord_Howe'),
    nts Nullable(DateTime64(6, 'America/New_York')),
    dtz DateTime64(6),
    d Date, d32 Nullable(Date32),
    i8 Int8, u8 UInt8, i16 Int16, u16 UInt16, i32 Int32, u32 UInt32, i64 Int64, u64 UInt64,
    i128 Int128, u256 UInt256,
    f32 Float32, f64 Nullable(Float64),
    d9 Decimal(9, 9), d18 Decimal(18, 4), d38 Decimal(38, 10), d76 Decimal(76, 40),
    b Bool,
    s String, fs FixedString(4), lc LowCardinality(Nullable(String)), raw String,
    uid UUID, ip4 IPv4, ip6 IPv6, e8 Enum8('buy' = 1, 'sell' = -1), e16 Enum16('a' = 1000),
    ai Array(Nullable(Int64)), ast Array(String), af Array(Float64), ad Array(Decimal(38, 10)),
    m Map(String, Float64), mu Map(UInt64, Nullable(Decimal(9, 2))),
    ct_bucket Int32, ct_m1 String
) ENGINE = MergeTree ORDER BY (ts, id)
"""

# 2026-11-01 01:30 happens twice in New York (EDT, then EST): 05:30 and 06:30 UTC.
FALL_BACK_EDT = 1793511000
FALL_BACK_EST = FALL_BACK_EDT + 3600

ROWS = f"""
INSERT INTO {{db}}.types
SELECT 1, toDateTime64({FALL_BACK_EDT}.000001, 6, 'America/New_York'),
       toDateTime({FALL_BACK_EDT}, 'America/New_York'), toDateTime(0, 'UTC'),
       toDateTime64('1969-12-31 23:59:59.999', 3, 'Asia/Kolkata'),
       toDateTime64('1900-01-01 00:00:00.000000001', 9, 'Europe/London'),
       toDateTime64('2026-04-05 01:45:00', 0, 'Australia/Lord_Howe'),
       toDateTime64('1950-06-01 12:00:00.5', 6, 'America/New_York'),
       toDateTime64({FALL_BACK_EDT}.25, 6),
       toDate('1970-01-01'), toDate32('1900-01-01'),
       -128, 255, -32768, 65535, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
       toInt128('-170141183460469231731687303715884105728'),
       toUInt256('115792089237316195423570985008687907853269984665640564039457584007913129639935'),
       toFloat32('nan'), 5e-324,
       toDecimal32('-0.999999999', 9), toDecimal64('-99999999999999.9999', 4),
       toDecimal128('-9999999999999999999999999999.9999999999', 10),
       toDecimal256('-999999999999999999999999999999999999.9999999999999999999999999999999999999999', 40),
       true,
       'ünï 🚀 "q" \\\\ / ,;', 'ab', NULL, unhex('ff00c328'),
       toUUID('00000000-0000-0000-0000-000000000000'), toIPv4('0.0.0.0'), toIPv6('::'), 'sell', 'a',
       [1, NULL, -9223372036854775808], ['a,b', '', '"x"', 'c/d', 'é'], [nan, inf, -inf, -0.],
       [toDecimal128('0.0000000001', 10)], map('nan', nan, 'inf', inf, '', -0.),
       map(18446744073709551615, toDecimal32(-9999999.99, 2), 0, NULL), -1, 'collide'
UNION ALL
SELECT 2, toDateTime64({FALL_BACK_EST}.000001, 6, 'America/New_York'),
       toDateTime({FALL_BACK_EST}, 'America/New_York'), toDateTime(4294967295, 'UTC'),
       toDateTime64('2299-12-31 23:59:59.999', 3, 'Asia/Kolkata'),
       toDateTime64('2262-04-11 23:47:16.854775807', 9, 'UTC'),
       toDateTime64('2026-04-05 01:45:00', 0, 'Australia/Lord_Howe') + 1800,
       NULL,
       toDateTime64(-1.5, 6),
       toDate('2149-06-06'), toDate32('2299-12-31'),
       127, 0, 32767, 0, 2147483647, 0, 9223372036854775807, 0,
       toInt128('170141183460469231731687303715884105727'), toUInt256('0'),
       toFloat32(3.4028235e38), -1.7976931348623157e308,
       toDecimal32('0.999999999', 9), toDecimal64('99999999999999.9999', 4),
       toDecimal128('9999999999999999999999999999.9999999999', 10),
       toDecimal256('0.0000000000000000000000000000000000000001', 40),
       false,
       '', unhex('00000000'), 'lc', unhex(''),
       toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff'), toIPv4('255.255.255.255'),
       toIPv6('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 'buy', 'a',
       [], [], [1.4e-45, 1e22], [], map(), map(), 0, ''
UNION ALL
SELECT 3, toDateTime64({FALL_BACK_EST}.000001, 6, 'America/New_York'),
       toDateTime('2026-03-08 03:00:00', 'America/New_York'), toDateTime(1, 'UTC'),
       toDateTime64('2026-11-01 01:30:00.001', 3, 'Asia/Kolkata'),
       toDateTime64('1969-12-31 23:59:59.9999995', 9, 'UTC'),
       toDateTime64('1900-01-01 00:00:00', 0, 'UTC'),
       toDateTime64('2026-11-01 01:30:00', 6, 'America/New_York'),
       toDateTime64(0, 6),
       toDate('2000-02-29'), NULL,
       0, 1, 0, 1, 0, 1, 0, 1, toInt128(0), toUInt256(1),
       toFloat32(-0.), NULL,
       toDecimal32(0, 9), toDecimal64(0, 4), toDecimal128('-0.0000000001', 10),
       toDecimal256('1.5', 40),
       true,
       'a\\0b', 'abcd', '', 'plain',
       toUUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8'), toIPv4('10.1.2.3'), toIPv6('2001:db8::1'), 'buy', 'a',
       [NULL], ['🚀'], [0.1, 3.141592653589793], [toDecimal128('-1', 10)], map('x', 0.1),
       map(1, toDecimal32(0.01, 2)), 2147483647, 'ct'
"""

COLUMNS = {"raw": "binary", "d76": "string"}


def ch_canonical(client, table: str) -> dict[int, dict]:
    """Each row as canonical Python values, from ClickHouse's own text of every value."""
    rows = client.rows(f"""
        SELECT toString(id) AS x_id,
               formatDateTime(toTimeZone(ts, 'UTC'), '%Y-%m-%d %H:%i:%S.%f') AS x_ts,
               toUnixTimestamp(dt) AS x_dt, toUnixTimestamp(dt_utc) AS x_dt_utc,
               formatDateTime(toTimeZone(dt3, 'UTC'), '%Y-%m-%d %H:%i:%S.%f') AS x_dt3,
               formatDateTime(toTimeZone(dt9, 'UTC'), '%Y-%m-%d %H:%i:%S.%f') AS x_dt9,
               toString(toUnixTimestamp64Nano(dt9)) AS x_dt9_nanos,
               formatDateTime(toTimeZone(dt0, 'UTC'), '%Y-%m-%d %H:%i:%S') AS x_dt0,
               formatDateTime(toTimeZone(nts, 'UTC'), '%Y-%m-%d %H:%i:%S.%f') AS x_nts,
               formatDateTime(toTimeZone(dtz, 'UTC'), '%Y-%m-%d %H:%i:%S.%f') AS x_dtz,
               toString(d) AS x_d, toString(d32) AS x_d32,
               toString(i8) AS x_i8, toString(u8) AS x_u8, toString(i16) AS x_i16, toString(u16) AS x_u16,
               toString(i32) AS x_i32, toString(u32) AS x_u32, toString(i64) AS x_i64, toString(u64) AS x_u64,
               toString(i128) AS x_i128, toString(u256) AS x_u256,
               toString(f32) AS x_f32, toString(f64) AS x_f64,
               toString(d9) AS x_d9, toString(d18) AS x_d18, toString(d38) AS x_d38, toString(d76) AS x_d76,
               toString(b) AS x_b, hex(s) AS x_s, hex(fs) AS x_fs, hex(lc) AS x_lc, hex(raw) AS x_raw,
               toString(uid) AS x_uid, toString(ip4) AS x_ip4, toString(ip6) AS x_ip6, toString(e8) AS x_e8,
               toString(e16) AS x_e16,
               arrayMap(x -> toString(x), ai) AS x_ai, arrayMap(x -> hex(x), ast) AS x_ast,
               arrayMap(x -> toString(x), af) AS x_af, arrayMap(x -> toString(x), ad) AS x_ad,
               arrayMap((k, v) -> (hex(k), toString(v)), mapKeys(m), mapValues(m)) AS x_m,
               arrayMap((k, v) -> (toString(k), toString(v)), mapKeys(mu), mapValues(mu)) AS x_mu,
               toString(ct_bucket) AS x_ct_bucket, hex(ct_m1) AS x_ct_m1
        FROM {table} ORDER BY x_id""")
    out = {}
    for x in rows:
        r = {k[2:]: v for k, v in x.items()}  # aliases differ from columns: no shadowing
        out[int(r["id"])] = {
            "ts": _utc_micros(r["ts"]), "dt": int(r["dt"]) * 10**6, "dt_utc": int(r["dt_utc"]) * 10**6,
            "dt3": _utc_micros(r["dt3"]), "dt9": _utc_micros(r["dt9"]), "dt9_nanos": int(r["dt9_nanos"]),
            "dt0": _utc_micros(r["dt0"]), "nts": _utc_micros(r["nts"]), "dtz": _utc_micros(r["dtz"]), "d": r["d"], "d32": r["d32"],
            **{k: int(r[k]) for k in ("i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64")},
            "i128": r["i128"], "u256": r["u256"],
            "f32": _bits32(r["f32"]), "f64": _bits64(r["f64"]),
            "d9": Decimal(r["d9"]), "d18": Decimal(r["d18"]), "d38": Decimal(r["d38"]), "d76": Decimal(r["d76"]),
            "b": r["b"] == "true", "s": r["s"], "fs": r["fs"], "lc": r["lc"], "raw": r["raw"],
            "uid": r["uid"], "ip4": r["ip4"], "ip6": r["ip6"], "e8": r["e8"], "e16": r["e16"],
            "ai": [None if v is None else int(v) for v in r["ai"]], "ast": r["ast"],
            "af": [_bits64(v) for v in r["af"]], "ad": [Decimal(v) for v in r["ad"]],
            "m": [(k, _bits64(v)) for k, v in r["m"]],
            "mu": [(int(k), None if v is None else Decimal(v)) for k, v in r["mu"]],
            "ct_bucket": int(r["ct_bucket"]), "ct_m1": r["ct_m1"],
        }
    return out


def sink_canonical(spark, target: str) -> dict[int, dict]:
    """The same canonical values, read from the sink by Spark (no Python time zone involved)."""
    df = spark.sql(f"""
        SELECT cast(id as string) AS id, unix_micros(ts) AS ts, unix_micros(dt) AS dt,
               unix_micros(dt_utc) AS dt_utc, unix_micros(dt3) AS dt3, unix_micros(dt9) AS dt9, dt9_nanos,
               unix_micros(dt0) AS dt0, unix_micros(nts) AS nts, unix_micros(dtz) AS dtz, cast(d as string) AS d,
               cast(d32 as string) AS d32, i8, u8, i16, u16, i32, u32, i64, cast(u64 as string) AS u64,
               i128, u256, f32, f64, d9, d18, d38, d76, b, hex(s) AS s, hex(fs) AS fs, hex(lc) AS lc,
               hex(raw) AS raw, uid, ip4, ip6, e8, e16, ai, transform(ast, x -> hex(x)) AS ast, af, ad,
               transform(map_entries(m), e -> struct(hex(e.key), e.value)) AS m,
               map_entries(mu) AS mu, ct_bucket, hex(ct_m1) AS ct_m1
        FROM {target}""")
    types = dict(df.dtypes)
    assert types["f32"] == "float" and types["raw"] == "string" and types["d76"] == "string"
    out = {}
    for r in df.collect():
        v = r.asDict()
        v["u64"] = int(v["u64"])
        v["f32"] = _bits32(v["f32"])
        v["f64"] = _bits64(v["f64"])
        v["d76"] = Decimal(v["d76"])
        v["af"] = [_bits64(x) for x in v["af"]]
        v["m"] = [(k, _bits64(x)) for k, x in v["m"]]
        v["mu"] = [(int(k), x) for k, x in v["mu"]]
        out[int(v.pop("id"))] = v
    return out


def _utc_micros(text: str | None) -> int | None:
    if text is None:
        return None
    when = dt.datetime.fromisoformat(text[:26]).replace(tzinfo=dt.UTC)
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _bits64(v) -> str | None:
    if v is None:
        return None
    f = float(v) if not isinstance(v, str) else float(v.replace("inf", "Infinity"))
    return "nan" if math.isnan(f) else struct.pack(">d", f).hex()


def _bits32(v) -> str | None:
    if v is None:
        return None
    f = float(v) if not isinstance(v, str) else float(v.replace("inf", "Infinity"))
    return "nan" if math.isnan(f) else struct.pack(">f", f).hex()


def _config(job, name: str, **kw):
    return job.table_entry(name, "types", keep_nanos=True, columns=dict(COLUMNS),
                           cursor={"timestamp_column": "ts", "incrementing_column": "id"}, **kw)


@pytest.fixture()
def types_table(job):
    job.client.execute(DDL.format(db=job.database))
    job.client.execute(ROWS.format(db=job.database))
    return f"{job.database}.types"


def assert_exact(job, spark, table: str, target: str) -> None:
    want = ch_canonical(job.client, table)
    got = sink_canonical(spark, target)
    assert set(got) == set(want) == {1, 2, 3}
    for key, row in want.items():
        for col, value in row.items():
            if col in ("dt9",):
                # Spark holds microseconds: the instant floored (pre-1970 too); nanos kept beside it
                value = row["dt9_nanos"] // 1000
            assert got[key][col] == value, f"row {key}, column {col}: sink {got[key][col]!r}, source {value!r}"


def test_every_type_is_copied_exactly_in_this_process(job, spark, capsys, types_table):
    cfg = job.write_config([_config(job, "types", batch={"max_rows": 2})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["rows"] for p in progress] == [2, 1]  # the cursor splits the repeated hour exactly
    assert_exact(job, spark, types_table, job.target("types"))
    described = {r.col_name: r.data_type for r in spark.sql(f"DESCRIBE {job.target('types')}").collect()}
    assert described["ts"] == described["dt"] == described["dt0"] == "timestamp"
    assert described["u32"] == "bigint" and described["u8"] == "int" and described["u64"] == "decimal(20,0)"
    assert described["raw"] == "binary" and described["d76"] == "string" and described["d"] == "date"
    assert described["ai"] == "array<bigint>" and described["mu"] == "map<decimal(20,0),decimal(9,2)>"

    # reconcile sees every column exactly: equal now, and each one-value change is reported
    since = ["--since", "1899-01-01T00:00:00", "--bucket", "1d"]
    assert cli.main(["reconcile", "--config", str(cfg), *since]) == 0
    target = job.target("types")
    changes = [
        ("ts", f"ts = timestamp_micros({FALL_BACK_EST * 10**6 + 2})",
         f"ts = timestamp_micros({FALL_BACK_EST * 10**6 + 1})", 3),  # one microsecond
        ("d38", "d38 = CAST('-9999999999999999999999999999.9999999998' AS decimal(38,10))",
         "d38 = CAST('-9999999999999999999999999999.9999999999' AS decimal(38,10))", 1),  # the 38th digit
        ("s", "s = 'a\\u0000c'", "s = 'a\\u0000b'", 3),  # one byte
        ("dt", "dt = dt + INTERVAL 1 SECOND", "dt = dt - INTERVAL 1 SECOND", 1),  # plain DateTime
        ("f64", "f64 = 4.9e-324 * 2", "f64 = 4.9e-324", 1),  # the next double
        ("b", "b = false", "b = true", 1),
    ]
    for col, change, undo, row_id in changes:
        spark.sql(f"UPDATE {target} SET {change} WHERE id = {row_id}")
        capsys.readouterr()
        assert cli.main(["reconcile", "--config", str(cfg), *since]) == cli.EXIT_MISMATCH, col
        reported = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"differs"' in line]
        assert len(reported) == 1 and col in reported[0]["differs"], (col, reported)
        spark.sql(f"UPDATE {target} SET {undo} WHERE id = {row_id}")
    assert cli.main(["reconcile", "--config", str(cfg), *since]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_every_type_is_copied_exactly_by_a_job_in_another_zone(job, spark, types_table, zone):
    """A job whose launcher, driver JVM and executors all run in ``zone`` (TZ)."""
    cfg = job.write_config([_config(job, "types")])
    done = job.run_process(cfg, "run", "--trigger", "available-now", extra_env={"TZ": zone})
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p["rows"] for p in progress_lines(done.stdout)] == [3]
    assert_exact(job, spark, types_table, job.target("types"))
    assert job.run_process(cfg, "reconcile", "--since", "1899-01-01T00:00:00", "--bucket", "1d",
                           extra_env={"TZ": zone}).returncode == 0


@pytest.mark.parametrize(("ddl", "column", "options"), [
    ("price Decimal(76, 10)", "price", "columns.price: string"),
    ("price Decimal256(40)", "price", "columns.price: string"),
    ("legs Tuple(a Int32, b String)", "legs", "columns.legs: exclude"),
    ("nested Array(Array(Int32))", "nested", "element type Array(Int32)"),
])
def test_unsupported_types_are_refused_before_any_batch(job, spark, capsys, ddl, column, options):
    job.client.execute(f"CREATE TABLE {job.database}.wide (ts DateTime64(6), id UInt64, {ddl}) "
                       f"ENGINE = MergeTree ORDER BY (ts, id)")
    job.client.execute(f"INSERT INTO {job.database}.wide (ts, id) VALUES ('2026-01-01 00:00:00', 1)")
    cfg = job.write_config([job.table_entry("wide", "wide", cursor={"timestamp_column": "ts",
                                                                    "incrementing_column": "id"})])
    for command in ("plan", "run"):
        code = cli.main([command, "--config", str(cfg)])
        err = capsys.readouterr().err
        assert code == cli.EXIT_SCHEMA, err
        assert f"column {column} " in err and options in err and err.count("\n") == 1
    assert not spark.catalog.tableExists(job.target("wide"))
    ledger = Ledger(config_mod.load(cfg, job.env()).ledger.dsn)
    try:
        assert ledger.last_batch(job.pipeline, "wide") is None  # nothing planned
    finally:
        ledger.close()


@pytest.mark.parametrize("reader", ["jdbc", "native"])
def test_bytes_that_are_not_utf8_fail_the_batch_loudly(job, spark, capsys, reader):
    job.client.execute(f"CREATE TABLE {job.database}.bytes (ts DateTime64(6), id UInt64, note String) "
                       f"ENGINE = MergeTree ORDER BY (ts, id)")
    job.client.execute(f"INSERT INTO {job.database}.bytes VALUES ('2026-01-01 00:00:00', 1, 'fine')")
    cfg = job.write_config([job.table_entry("bytes", "bytes", cursor={"timestamp_column": "ts",
                                                                      "incrementing_column": "id"},
                                            batch={"reader": reader})])
    code, _, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    job.client.execute(f"INSERT INTO {job.database}.bytes VALUES ('2026-01-01 00:00:01', 2, unhex('61ff62'))")
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == cli.EXIT_SCHEMA and progress == []
    assert "column note of" in err and "batch 2" in err and "columns.note: binary" in err, err
    assert err.count("\n") == 1
    assert spark.table(job.target("bytes")).count() == 1  # nothing of batch 2 is visible
    ledger = Ledger(config_mod.load(cfg, job.env()).ledger.dsn)
    try:
        last = ledger.last_batch(job.pipeline, "bytes")
        assert last is not None and last.batch_id == 2 and last.status == "planned"
    finally:
        ledger.close()


def test_every_type_is_copied_exactly_by_the_native_reader(job, spark, capsys, types_table):
    """``batch.reader: native``: the same batches, every value the same as ClickHouse's, and the
    same DataFrame as the JDBC reader makes of each batch (chispa: schema, nullability, values)."""
    from chispa import assert_df_equality
    from chispa.schema_comparer import assert_schema_equality

    from coldtier.source import JdbcSource, NativeSource

    cfg = job.write_config([_config(job, "types", batch={"max_rows": 2, "reader": "native"})])
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [p["rows"] for p in progress] == [2, 1]
    assert_exact(job, spark, types_table, job.target("types"))

    runner = table_runner(spark, cfg)
    try:
        assert isinstance(runner.source, NativeSource)
        jdbc = JdbcSource(runner.source.source, runner.table, runner.spec, runner.source.columns)
        native_df, jdbc_df = (s.read_where(spark, "1 = 1").orderBy("id") for s in (runner.source, jdbc))
        assert native_df.count() == 3
        # JDBC's reader tags some columns with its own metadata ("scale"); the native one adds none
        assert all(not f.metadata for f in native_df.schema.fields)
        assert_schema_equality(native_df.schema, jdbc_df.schema, ignore_metadata=True)
        # rows as Spark's own JSON of each: NaN (inside arrays and maps too) equal to itself
        assert_df_equality(*(df.selectExpr("to_json(struct(*)) AS row") for df in (native_df, jdbc_df)))
    finally:
        runner.ledger.close()
