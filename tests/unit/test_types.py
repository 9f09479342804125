"""The type mapping (coldtier.types): pure, no server. End-to-end values: test_types_e2e."""

import pytest

from coldtier.types import UnsupportedColumn, map_column, map_columns, split_args, unwrap, wire_names


def one(ch_type, choice=None, name="c", keep_nanos=False):
    out = map_column(name, ch_type, "db.t", choice, keep_nanos)
    assert len(out) == 1
    return out[0]


@pytest.mark.parametrize(("ch_type", "spark_type"), [
    ("Int8", "int"), ("UInt8", "int"), ("Int16", "int"), ("UInt16", "int"), ("Int32", "int"),
    ("UInt32", "bigint"), ("Int64", "bigint"), ("UInt64", "decimal(20,0)"), ("Int128", "string"),
    ("UInt256", "string"), ("Float32", "float"), ("Float64", "double"), ("Bool", "boolean"),
    ("Decimal(9, 2)", "decimal(9,2)"), ("Decimal(38, 38)", "decimal(38,38)"), ("Decimal(18, 4)", "decimal(18,4)"), ("Decimal64(4)", "decimal(18,4)"),
    ("String", "string"), ("FixedString(16)", "string"), ("LowCardinality(Nullable(String))", "string"),
    ("UUID", "string"), ("IPv4", "string"), ("IPv6", "string"), ("Enum8('a' = 1, 'b,c' = 2)", "string"),
    ("Date", "date"), ("Date32", "date"), ("DateTime", "timestamp"), ("DateTime('America/New_York')", "timestamp"),
    ("DateTime64(3)", "timestamp"), ("DateTime64(9, 'Asia/Kolkata')", "timestamp"),
    ("Nullable(DateTime64(6, 'UTC'))", "timestamp"),
    ("Array(String)", "array<string>"), ("Array(Nullable(Int64))", "array<bigint>"),
    ("Array(Decimal(20, 4))", "array<decimal(20,4)>"), ("Map(String, Float64)", "map<string,double>"),
    ("Map(LowCardinality(String), UInt64)", "map<string,decimal(20,0)>"),
])
def test_every_supported_type_has_one_target_type(ch_type, spark_type):
    assert one(ch_type).spark_type == spark_type


@pytest.mark.parametrize("ch_type", ["DateTime", "DateTime('Europe/London')", "DateTime64(3, 'Asia/Kolkata')",
                                     "DateTime64(9)", "Date", "Date32"])
def test_time_never_crosses_jdbc_as_a_timestamp(ch_type):
    m = one(ch_type)
    assert m.fp_kind == "int"
    assert m.wire_sql.startswith(("toInt", "reinterpretAsInt64", "(reinterpretAsInt64", "intDiv"))
    assert m.spark_sql.startswith(("timestamp_micros(", "date_from_unix_date("))


def test_sub_microsecond_precision_floors_like_spark():
    m = one("DateTime64(9)")
    assert "positiveModulo" in m.wire_sql and m.wire_sql == m.fp_ch


def test_keep_nanos_adds_a_nanos_column_for_datetime64_9_only():
    assert [m.name for m in map_column("t", "DateTime64(9)", "db.t", None, True)] == ["t", "t_nanos"]
    assert [m.name for m in map_column("t", "DateTime64(6)", "db.t", None, True)] == ["t"]


@pytest.mark.parametrize("ch_type", ["Decimal(76, 10)", "Decimal(76, 40)", "Decimal(39, 0)", "Decimal256(20)"])
def test_wide_decimals_are_refused_naming_the_column_and_the_options(ch_type):
    with pytest.raises(UnsupportedColumn, match=r"column price .* 38 digits.*never truncates.*"
                                                 r"columns.price: string.*exclude"):
        map_column("price", ch_type, "db.t")


def test_wide_decimals_can_be_copied_exactly_as_text():
    m = one("Decimal(76, 40)", "string")
    assert m.spark_type == "string" and m.wire_sql == "toDecimalString(`c`, 40)"


def test_strings_are_checked_for_utf8_unless_kept_as_bytes():
    m = one("String")
    assert m.utf8_checked and "isValidUTF8" in m.wire_sql and "columns.c: binary" in m.wire_sql
    b = one("FixedString(4)", "binary")
    assert b.spark_type == "binary" and b.wire_sql == "hex(`c`)" and b.spark_sql == "unhex(`c`)"
    assert one("Array(String)").utf8_checked and one("Map(String, Int32)").utf8_checked


@pytest.mark.parametrize(("ch_type", "choice", "match"), [
    ("Tuple(a Int32, b String)", None, "not supported"),
    ("Nested(a Int32)", None, "not supported"),
    ("JSON", None, "not supported"),
    ("Array(Array(Int32))", None, "inside an array or map"),
    ("Array(DateTime)", None, "inside an array or map"),
    ("Map(Float64, Int32)", None, "map keys"),
    ("Int32", "binary", "String and FixedString columns only"),
    ("String", "string", "Decimal columns only"),
])
def test_unsupported_types_and_choices_are_refused(ch_type, choice, match):
    with pytest.raises(UnsupportedColumn, match=match):
        map_column("c", ch_type, "db.t", choice)


def test_exclude_drops_the_column_and_unknown_choices_are_refused():
    assert map_columns([("a", "Int32"), ("x", "Tuple(Int8)")], "db.t", {"x": "exclude"})[0].name == "a"
    assert len(map_columns([("a", "Int32"), ("x", "Tuple(Int8)")], "db.t", {"x": "exclude"})) == 1
    with pytest.raises(UnsupportedColumn, match=r"names nope, not a column of db\.t"):
        map_columns([("a", "Int32")], "db.t", {"nope": "exclude"})


def test_identifiers_are_quoted_on_both_sides():
    m = one("Int32", name="we`ird b")
    assert m.wire_sql == "toInt32(`we``ird b`)" and m.spark_sql == "cast(`we``ird b` as int)"


def test_type_parsing_helpers():
    assert unwrap("LowCardinality(Nullable(String))") == ("String", True)
    assert unwrap("Array(Nullable(Int8))") == ("Array(Nullable(Int8))", False)
    assert split_args("String, Map(String, Array(Int8)), Enum8('a,b' = 1)") == [
        "String", "Map(String, Array(Int8))", "Enum8('a,b' = 1)"]


def test_rebuild_expressions_read_the_wire_columns_in_one_projection():
    """A batch is rebuilt in one projection over the wire aliases (py4j calls and analyses per
    batch): every expression reads its own wire column and names its target column, also when
    one column's name is part of another's or a container is parsed from JSON."""
    from coldtier.source import rebuild_exprs

    cols = [("ts", "DateTime64(3, 'Asia/Kolkata')"), ("ts_2", "Date"), ("tags", "Array(String)"),
            ("qty", "UInt64"), ("name", "String")]
    mappings = map_columns(cols, "db.t")
    names = wire_names(mappings, [c for c, _ in cols])
    exprs = rebuild_exprs(mappings, names)
    assert len(exprs) == len(mappings)
    for m, wire, expr in zip(mappings, names, exprs, strict=True):
        body, alias = expr.rsplit(" AS ", 1)
        assert alias == f"`{m.name}`"
        assert f"`{wire}`" in body and f"`{m.name}`" not in body
