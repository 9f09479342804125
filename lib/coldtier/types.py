"""Type mapping: how each ClickHouse column crosses JDBC and what it becomes in Spark.

Pure functions, no I/O. Every supported column gets three things, decided once:

- a **wire** expression (ClickHouse SQL) whose JDBC value the driver cannot get wrong. Time
  never crosses JDBC as a timestamp: clickhouse-jdbc 0.10's ``getTimestamp`` keeps only the
  local date-time and re-reads it in the JVM's default zone (clickhouse-java #2787), so a
  ``DateTime('America/New_York')`` column, or any column read by a JVM whose zone is not UTC,
  would shift. Instants travel as integer epoch microseconds and dates as integer days;
  containers as JSON text of their elements' exact text; strings are checked to be UTF-8.
- a **Spark** expression rebuilding the value from the wire column, with its final type:
  ``timestamp_micros``, ``date_from_unix_date``, casts, ``from_json`` in FAILFAST mode.
- a **fingerprint** for ``reconcile``: per row either an exact integer (summed) or a
  canonical text (its CRC32 summed), computed the same way by ClickHouse on the source and by
  Spark on the sink, so a one-microsecond shift, one decimal digit or one byte shows.

A type the JDBC path cannot carry faithfully is refused before any batch is planned
(:class:`UnsupportedColumn`, exit 6), naming the column and the options.

Longer than 300 lines: one table of ClickHouse types, each with its wire form, rebuild and
fingerprint; splitting it would scatter a type's three forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coldtier.errors import UnsupportedColumn

# Per-column choices in YAML (tables[].columns.<name>).
COLUMN_CHOICES = ("string", "binary", "exclude")

_WRAPPER = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$", re.S)
_DECIMAL = re.compile(r"^Decimal\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")
_DECIMAL_N = re.compile(r"^Decimal(32|64|128|256)\(\s*(\d+)\s*\)$")
_DECIMAL_N_PRECISION = {"32": 9, "64": 18, "128": 38, "256": 76}
_DT = re.compile(r"^DateTime(?:\(\s*'[^']*'\s*\))?$")
_DT64 = re.compile(r"^DateTime64\(\s*(\d)\s*(?:,\s*'[^']*'\s*)?\)$")
_AS_TEXT = re.compile(r"^(UUID|IPv4|IPv6|Enum8\(.*\)|Enum16\(.*\)|U?Int(128|256))$", re.S)
_SMALL_INT = ("Int8", "Int16", "Int32", "UInt8", "UInt16")
_BIG_INT = ("Int64", "UInt32")

# Java's canonical NaN bit patterns (Float.floatToIntBits / Double.doubleToLongBits).
_NAN32 = 2143289344
_NAN64 = 9221120237041090560


def quote(name: str) -> str:
    """A ClickHouse identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def spark_quote(name: str) -> str:
    """A Spark SQL identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, prefixed with underscores until it differs from every name in ``taken``
    (lower-cased): an alias that can never shadow or collide with a source column."""
    name = base
    while name.lower() in taken:
        name = "_" + name
    return name


def wire_names(mappings: list[ColumnMapping], columns: list[str]) -> list[str]:
    """Aliases for the wire columns, none equal to a source column: ClickHouse resolves a
    bare name to a SELECT alias before a column, so ``expr AS ts`` would change what ``ts``
    means in the WHERE clause."""
    taken = {c.lower() for c in columns} | {m.name.lower() for m in mappings}
    return [unique_name(f"coldtier_w{i}", taken) for i in range(len(mappings))]


def unwrap(ch_type: str) -> tuple[str, bool]:
    """(the type inside Nullable(...)/LowCardinality(...), whether it is Nullable)."""
    t, nullable = ch_type.strip(), False
    while True:
        m = _WRAPPER.match(t)
        if not m:
            return t, nullable
        nullable = nullable or m.group(1) == "Nullable"
        t = m.group(2).strip()


def split_args(inner: str) -> list[str]:
    """Top-level comma-separated arguments of a type: ``String, Array(Int8)`` → two."""
    out, depth, cur, quoted = [], 0, "", False
    for ch in inner:
        if ch == "'" and not cur.endswith("\\"):
            quoted = not quoted
        if not quoted:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "," and depth == 0:
                out.append(cur.strip())
                cur = ""
                continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


@dataclass(frozen=True)
class Scalar:
    """How one scalar value (a column, or an element of an array or map) is carried.

    ``text_ch``/``text_spark`` render a value as canonical text (the same bytes on both
    sides): ``{}`` stands for the value's expression."""

    spark_type: str
    text_ch: str
    text_spark: str


def _decimal(base: str) -> tuple[int, int] | None:
    m = _DECIMAL.match(base)
    if m:
        return int(m.group(1)), int(m.group(2) or 0)
    n = _DECIMAL_N.match(base)  # Decimal64(4) is Decimal(18, 4)
    return (_DECIMAL_N_PRECISION[n.group(1)], int(n.group(2))) if n else None


def scalar(base: str, where: str) -> Scalar:
    """The element mapping of a scalar type (inside an array or a map)."""
    if base in _SMALL_INT or base in _BIG_INT or base in ("Int64", "UInt64"):
        spark_type = "int" if base in _SMALL_INT else "bigint" if base in _BIG_INT else "decimal(20,0)"
        return Scalar(spark_type, "toString({})", "cast({} as string)")
    dec = _decimal(base)
    if dec is not None and dec[0] <= 38:
        return Scalar(f"decimal({dec[0]},{dec[1]})", f"toDecimalString({{}}, {dec[1]})", "cast({} as string)")
    if base == "Float32":
        return Scalar("float", f"toString(if(isNaN({{}}), {_NAN32}, reinterpretAsInt32({{}})))",
                      "java_method('java.lang.Float', 'floatToIntBits', {})")
    if base == "Float64":
        return Scalar("double", f"toString(if(isNaN({{}}), {_NAN64}, reinterpretAsInt64({{}})))",
                      "java_method('java.lang.Double', 'doubleToLongBits', {})")
    if base == "Bool":
        return Scalar("boolean", "toString({})", "cast({} as string)")
    if base == "String" or base.startswith("FixedString("):
        return Scalar("string", "{}", "{}")
    if _AS_TEXT.match(base):
        return Scalar("string", "toString({})", "{}")
    raise UnsupportedColumn(f"{where}: element type {base} is not supported inside an array or map "
                            f"(integers, decimals up to 38 digits, floats, Bool, strings, UUID, "
                            f"IPv4/6 and enums are)")


def _element_wire(base: str, x: str) -> str:
    """An element as JSON-safe text in ClickHouse: the exact text Spark casts back."""
    if base == "String" or base.startswith("FixedString("):
        return x
    dec = _decimal(base)
    if dec is not None:
        return f"toDecimalString({x}, {dec[1]})"
    return f"toString({x})"


def _fill(template: str, expr: str) -> str:
    return template.replace("{}", expr)


def _tagged_ch(text: str, nullable_expr: str) -> str:
    """Length-prefixed text (unambiguous when concatenated); ``~`` for NULL."""
    return f"if(isNull({nullable_expr}), '~', concat(toString(length({text})), ':', {text}))"


def _tagged_spark(text: str, nullable_expr: str) -> str:
    return f"if({nullable_expr} is null, '~', concat(cast(octet_length({text}) as string), ':', {text}))"


@dataclass(frozen=True)
class ColumnMapping:
    """One target column: how it is read, rebuilt and fingerprinted."""

    name: str
    ch_type: str
    spark_type: str  # Spark SQL type of the target column
    wire_sql: str  # ClickHouse expression selected as the column
    spark_sql: str  # Spark SQL expression over the wire column, of spark_type
    fp_kind: str  # "int": exact integer summed; "text": CRC32 of the text summed
    fp_ch: str  # ClickHouse expression per row (integer or text)
    fp_spark: str  # Spark SQL expression per row (integer or text), over the target column
    utf8_checked: bool = False  # the wire expression fails the read on invalid UTF-8
    # read as bytes (JDBC getBytes) and cast to string in Spark: the driver's getString copies
    # every value once more (profiled: docs/tuning.md); exact, because the bytes are checked UTF-8
    wire_binary: bool = False

    def spark_over(self, column: str) -> str:
        """``spark_sql`` over another column (the batch's wire alias): every mapping here writes
        its column as ``spark_quote(name)`` and no other text holds that backticked name."""
        return self.spark_sql.replace(spark_quote(self.name), spark_quote(column))


def _utf8_guard(q: str, name: str, table: str, nullable: bool, array: bool = False) -> str:
    msg = (f"coldtier: invalid UTF-8: column {name} of {table} holds bytes that are not valid UTF-8; "
           f"coldtier does not replace them. Set tables[].columns.{name}: binary to keep the bytes")
    msg = msg.replace("\\", "\\\\").replace("'", "\\'")
    check = f"arrayAll(x -> ifNull(isValidUTF8(x), 1), {q})" if array else \
        (f"ifNull(isValidUTF8({q}), 1)" if nullable else f"isValidUTF8({q})")
    return f"throwIf(NOT {check}, '{msg}') = 0"


def map_column(name: str, ch_type: str, table: str, choice: str | None = None,
               keep_nanos: bool = False) -> list[ColumnMapping]:
    """The target column(s) of one source column: none (excluded), one, or two (a
    ``DateTime64(9)`` column with ``keep_nanos`` also gets ``<name>_nanos``)."""
    if choice == "exclude":
        return []
    where = f"column {name} ({ch_type}) of {table}"
    base, nullable = unwrap(ch_type)
    q, c = quote(name), spark_quote(name)
    dec = _decimal(base)

    def one(spark_type: str, wire: str, spark: str, fp_kind: str, fp_ch: str, fp_spark: str,
            utf8: bool = False) -> list[ColumnMapping]:
        return [ColumnMapping(name, ch_type, spark_type, wire, spark, fp_kind, fp_ch, fp_spark, utf8)]

    if choice == "string" and dec is None:
        raise UnsupportedColumn(f"{where}: 'string' applies to Decimal columns only")
    if choice == "binary" and not (base == "String" or base.startswith("FixedString(")):
        raise UnsupportedColumn(f"{where}: 'binary' applies to String and FixedString columns only")

    if base in _SMALL_INT or base in _BIG_INT:
        st = "int" if base in _SMALL_INT else "bigint"
        return one(st, f"to{'Int32' if st == 'int' else 'Int64'}({q})", f"cast({c} as {st})",
                   "int", q, c)
    if base == "UInt64":
        return one("decimal(20,0)", q, f"cast({c} as decimal(20,0))", "int", q, c)
    if dec is not None:
        p, s = dec
        if choice == "string":
            text = f"toDecimalString({q}, {s})"
            return one("string", text, c, "text", text, c)
        if p > 38:
            raise UnsupportedColumn(
                f"{where}: Spark decimals hold at most 38 digits, and coldtier never truncates. "
                f"Options: set tables[].columns.{name}: string (copied exactly as text with {s} "
                f"decimals), or exclude (not copied), or read a ClickHouse view that casts it to "
                f"Decimal(38, s) where you know the values fit")
        st = f"decimal({p},{s})"
        return one(st, q, f"cast({c} as {st})", "text", f"toDecimalString({q}, {s})", f"cast({c} as string)")
    if base in ("Float32", "Float64"):
        st = "float" if base == "Float32" else "double"
        el = scalar(base, where)
        return one(st, q, f"cast({c} as {st})", "text", _fill(el.text_ch, q),
                   f"if({c} is null, null, {_fill(el.text_spark, c)})")
    if base == "Bool":
        return one("boolean", q, f"cast({c} as boolean)", "int", f"toUInt8({q})", f"cast({c} as int)")
    if base == "String" or base.startswith("FixedString("):
        if choice == "binary":
            return one("binary", f"hex({q})", f"unhex({c})", "text", q, c)
        guard = _utf8_guard(q, name, table, nullable)
        return [ColumnMapping(name, ch_type, "string", f"if({guard}, {q}, '')", f"cast({c} as string)",
                              "text", q, c, True, True)]
    if _AS_TEXT.match(base):
        return one("string", f"toString({q})", c, "text", f"toString({q})", c)
    if base in ("Date", "Date32"):
        return one("date", f"toInt32({q})", f"date_from_unix_date({c})", "int", f"toInt32({q})",
                   f"unix_date({c})")
    if _DT.match(base):
        micros = f"toInt64(toUnixTimestamp({q})) * 1000000"
        return one("timestamp", micros, f"timestamp_micros({c})", "int", micros, f"unix_micros({c})")
    m = _DT64.match(base)
    if m:
        scale = int(m.group(1))
        ticks = f"reinterpretAsInt64({q})"
        if scale <= 6:
            micros = f"({ticks} * {10 ** (6 - scale)})"
        else:
            unit = 10 ** (scale - 6)  # floor division: pre-1970 instants round down, like Spark
            micros = f"intDiv({ticks} - positiveModulo({ticks}, {unit}), {unit})"
        out = one("timestamp", micros, f"timestamp_micros({c})", "int", micros, f"unix_micros({c})")
        if keep_nanos and scale == 9:
            nn = name + "_nanos"
            out.append(ColumnMapping(nn, "Int64", "bigint", ticks, f"cast({spark_quote(nn)} as bigint)",
                                     "int", ticks, spark_quote(nn)))
        return out
    if base.startswith("Array("):
        return [_array(name, ch_type, base, table, where)]
    if base.startswith("Map("):
        return [_map(name, ch_type, base, table, where)]
    raise UnsupportedColumn(
        f"{where}: this type is not supported (coldtier copies integers, decimals, floats, Bool, "
        f"strings, UUID, IPv4/6, enums, Date/Date32, DateTime/DateTime64 in any zone, and arrays and "
        f"maps of scalars). Options: set tables[].columns.{name}: exclude (not copied), or read a "
        f"ClickHouse view that converts the column")


def _inner(base: str, kind: str) -> str:
    return base[len(kind) + 1:-1]


def _array(name: str, ch_type: str, base: str, table: str, where: str) -> ColumnMapping:
    el_base, _ = unwrap(_inner(base, "Array"))
    el = scalar(el_base, where)
    q, c = quote(name), spark_quote(name)
    wire = f"toJSONString(arrayMap(x -> {_element_wire(el_base, 'x')}, {q}))"
    utf8 = el.spark_type == "string" and (el_base == "String" or el_base.startswith("FixedString("))
    if utf8:
        wire = f"if({_utf8_guard(q, name, table, False, array=True)}, {wire}, '')"
    spark = (f"cast(from_json({c}, 'array<string>', map('mode', 'FAILFAST')) "
             f"as array<{el.spark_type}>)")
    fp_ch = (f"concat(toString(length({q})), '[', arrayStringConcat(arrayMap(x -> "
             f"{_tagged_ch(_fill(el.text_ch, 'x'), 'x')}, {q}), ''), ']')")
    fp_spark = (f"concat(cast(size({c}) as string), '[', array_join(transform({c}, x -> "
                f"{_tagged_spark(_null_safe(el.text_spark, 'x'), 'x')}), ''), ']')")
    return ColumnMapping(name, ch_type, f"array<{el.spark_type}>", wire, spark, "text", fp_ch, fp_spark, utf8)


def _null_safe(template: str, x: str) -> str:
    return f"if({x} is null, null, {_fill(template, x)})" if "java_method" in template else _fill(template, x)


def _map(name: str, ch_type: str, base: str, table: str, where: str) -> ColumnMapping:
    args = split_args(_inner(base, "Map"))
    if len(args) != 2:
        raise UnsupportedColumn(f"{where}: cannot parse the map type")
    k_base, _ = unwrap(args[0])
    v_base, _ = unwrap(args[1])
    k, v = scalar(k_base, where), scalar(v_base, where)
    if k.spark_type in ("float", "double"):
        raise UnsupportedColumn(f"{where}: map keys of type {k_base} are not supported")
    q, c = quote(name), spark_quote(name)
    wire = (f"toJSONString(mapApply((k, v) -> ({_element_wire(k_base, 'k')}, "
            f"{_element_wire(v_base, 'v')}), {q}))")
    utf8 = any(b == "String" or b.startswith("FixedString(") for b in (k_base, v_base))
    if utf8:
        checks = [f"arrayAll(x -> ifNull(isValidUTF8(x), 1), {f}({q}))"
                  for b, f in ((k_base, "mapKeys"), (v_base, "mapValues"))
                  if b == "String" or b.startswith("FixedString(")]
        msg = (f"coldtier: invalid UTF-8: column {name} of {table} holds bytes that are not valid "
               f"UTF-8; coldtier does not replace them").replace("'", "\\'")
        wire = f"if(throwIf(NOT ({' AND '.join(checks)}), '{msg}') = 0, {wire}, '')"
    st = f"map<{k.spark_type},{v.spark_type}>"
    spark = f"cast(from_json({c}, 'map<string,string>', map('mode', 'FAILFAST')) as {st})"
    fp_ch = (f"concat(toString(length({q})), '{{', arrayStringConcat(arrayMap((k, v) -> concat("
             f"{_tagged_ch(_fill(k.text_ch, 'k'), 'k')}, {_tagged_ch(_fill(v.text_ch, 'v'), 'v')}), "
             f"mapKeys({q}), mapValues({q})), ''), '}}')")
    fp_spark = (f"concat(cast(size({c}) as string), '{{', array_join(transform(map_entries({c}), e -> "
                f"concat({_tagged_spark(_null_safe(k.text_spark, 'e.key'), 'e.key')}, "
                f"{_tagged_spark(_null_safe(v.text_spark, 'e.value'), 'e.value')})), ''), '}}')")
    return ColumnMapping(name, ch_type, st, wire, spark, "text", fp_ch, fp_spark, utf8)


def map_columns(columns: list[tuple[str, str]], table: str, choices: dict[str, str] | None = None,
                keep_nanos: bool = False) -> list[ColumnMapping]:
    """Every target column of a source table, in source order. Raises UnsupportedColumn for the
    first column that cannot be copied exactly, and for a choice naming no source column."""
    choices = dict(choices or {})
    names = {n for n, _ in columns}
    unknown = [n for n in choices if n not in names]
    if unknown:
        raise UnsupportedColumn(f"tables[].columns names {', '.join(unknown)}, not a column of {table} "
                                f"(columns: {', '.join(n for n, _ in columns)})")
    out: list[ColumnMapping] = []
    for n, t in columns:
        out += map_column(n, t, table, choices.get(n), keep_nanos)
    return out
