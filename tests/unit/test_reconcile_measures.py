"""Reconcile's pure parts: measures from the column mappings, bucket parsing, comparison."""

import pytest

from coldtier.reconcile import compare, measures, parse_bucket
from coldtier.types import map_columns, unique_name, wire_names

COLS = [("ts", "DateTime('America/New_York')"), ("b", "Bool"), ("d", "Decimal(38, 10)"), ("s", "String"),
        ("f", "Float64")]


def test_every_column_enters_the_fingerprint_exactly():
    ms = measures(map_columns(COLS, "db.t"))
    kinds = {(m.name, m.kind) for m in ms}
    assert ("rows", "count") in kinds
    assert {("ts", "sum"), ("b", "sum"), ("d", "crc"), ("s", "crc"), ("f", "crc")} <= kinds
    assert all((n, "count") in kinds for n, _ in COLS)  # NULL is never the same as 0
    d = next(m for m in ms if m.name == "d" and m.kind == "crc")
    assert d.ch_row == "toDecimalString(`d`, 10)" and d.spark_row == "cast(`d` as string)"
    ts = next(m for m in ms if m.name == "ts" and m.kind == "sum")
    assert "toUnixTimestamp(`ts`)" in ts.ch_row and ts.spark_row == "unix_micros(`ts`)"


def test_java_method_is_kept_below_the_spark_aggregate():
    f = next(m for m in measures(map_columns(COLS, "db.t")) if m.name == "f" and m.kind == "crc")
    assert "java_method" in f.spark_row_sql() and "java_method" not in f.spark_agg("v")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800)])
def test_parse_bucket(text, seconds):
    assert parse_bucket(text) == seconds


@pytest.mark.parametrize("text", ["0h", "1w", "h", "1.5h", ""])
def test_parse_bucket_refuses_the_rest(text):
    with pytest.raises(ValueError, match="bad --bucket"):
        parse_bucket(text)


def test_compare_names_the_columns_that_differ_and_missing_buckets():
    ms = map_columns(COLS[:2], "db.t")
    assert [m.name for m in measures(ms)] == ["rows", "ts", "ts", "b", "b"]
    same = ("5", "5", "8800000000", "5", "3")
    shifted = ("5", "5", "8800000000", "5", "4")  # one boolean flipped
    out = compare(ms, {0: same, 60: same}, {0: shifted})
    assert [(m.bucket_start, m.columns) for m in out] == [(0, ("b",)), (60, ("rows", "ts", "b"))]
    assert (out[1].source_rows, out[1].sink_rows) == (5, 0)


def test_internal_aliases_never_equal_a_column_name():
    assert unique_name("ct_bucket", {"ct_bucket", "_ct_bucket"}) == "__ct_bucket"
    names = wire_names(map_columns([("coldtier_w0", "Int32"), ("x", "Int32")], "db.t"), ["coldtier_w0", "x"])
    assert names[0] != "coldtier_w0" and len(set(names)) == 2


@pytest.mark.parametrize(("spec", "wm", "beyond", "at", "prune"), [
    (("timestamp+incrementing", "`ts`", "`n`", 3), (1_700_000_000_123, 42),
     "(unix_micros(`ts`) > 1700000000123000 OR (unix_micros(`ts`) = 1700000000123000 AND `n` > 42))",
     "unix_micros(`ts`) = 1700000000123000 AND `n` = 42",
     "`ts` >= timestamp_micros(1700000000123000)"),
    (("timestamp", "`ts`", None, 3), (1_700_000_000_123, None),
     "(unix_micros(`ts`) > 1700000000123000)", "unix_micros(`ts`) = 1700000000123000",
     "`ts` >= timestamp_micros(1700000000123000)"),
    (("incrementing", None, "`n`", 0), (None, 42),
     "(`n` > 42)", "`n` = 42", "true"),
])
def test_the_rows_end_check_is_exact_at_a_watermark_with_ties(spec, wm, beyond, at, prune):
    """Where a table's own record of its batches is gone (expired snapshots), its rows confirm
    the ledger's watermark: none past it (a row on the same timestamp with a greater sequence
    number is past it), one at it; the prune filter lets file statistics skip older files."""
    from coldtier.offset import CursorSpec, Offset
    from coldtier.reconcile import end_checks

    mappings = map_columns([("ts", "DateTime64(3, 'Asia/Tokyo')"), ("n", "UInt64")], "db.t")
    assert end_checks(CursorSpec(*spec), mappings, Offset(*wm)) == (beyond, at, prune)
