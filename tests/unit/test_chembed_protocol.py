import pytest

from chembed.protocol import (
    ChError,
    can_stream,
    header_size,
    http_status_for,
    is_streaming,
    output_format,
    parse_insert,
    split_params,
)


def test_insert_statement_in_url_takes_the_whole_body_as_data():
    ins = parse_insert("INSERT INTO t (a, b) FORMAT RowBinary", b"\x01\x02")
    assert ins is not None
    assert ins.statement == "INSERT INTO t (a, b)"
    assert ins.fmt == "RowBinary"
    assert ins.head == b"\x01\x02"


def test_insert_with_data_in_the_body_splits_after_one_whitespace():
    ins = parse_insert(None, b"INSERT INTO t FORMAT TSV\n1\tx\n2\ty\n")
    assert ins is not None and ins.fmt == "TSV" and ins.head == b"1\tx\n2\ty\n"
    assert ins.statement == "INSERT INTO t"


def test_values_and_select_inserts_are_plain_statements():
    assert parse_insert(None, b"INSERT INTO t VALUES (1, 'x')") is None
    assert parse_insert(None, b"INSERT INTO t SELECT * FROM u") is None
    assert parse_insert(None, b"SELECT 1") is None


def test_leading_comments_do_not_hide_an_insert():
    ins = parse_insert(None, b"-- load\n/* x */ INSERT INTO t FORMAT JSONEachRow {\"a\":1}")
    assert ins is not None and ins.fmt == "JSONEachRow" and ins.head == b'{"a":1}'


def test_params_split_into_settings_and_query_parameters():
    settings, qparams = split_params({
        "compress": "1", "database": "k2", "max_block_size": "100", "param_x": "5",
        "query_id": "q", "send_progress_in_http_headers": "1",
    })
    assert settings == {"max_block_size": "100"}
    assert qparams == {"x": "5"}


@pytest.mark.parametrize(("code", "status"), [(516, 403), (194, 401), (60, 404), (62, 400),
                                              (999, 500)])
def test_error_status_codes(code, status):
    assert http_status_for(code) == status


def test_error_body_keeps_clickhouse_text_and_appends_version():
    err = ChError.from_engine(RuntimeError(
        "Streaming query failed: Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE)"))
    assert err.code == 60
    assert err.body("26.9") == b"Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE) (version 26.9)\n"


def test_statement_kinds_and_formats():
    assert is_streaming("  -- c\n select 1")
    assert not is_streaming("SHOW TABLES")
    assert is_streaming("(SELECT 1) UNION ALL (SELECT 2)")
    assert not is_streaming("CREATE TABLE t (a Int8) ENGINE=Memory")
    assert output_format("SELECT 1 FORMAT JSONEachRow;", "TSV") == "JSONEachRow"
    assert output_format("SELECT 'FORMAT x' AS f", "TSV") == "TSV"
    assert can_stream("RowBinaryWithNamesAndTypes") and not can_stream("JSON")


def test_header_size_of_rowbinary_with_names_and_types():
    header = b"\x02\x01a\x02bb\x06UInt64\x06String"
    assert header_size("RowBinaryWithNamesAndTypes", header + b"rows...") == len(header)
    assert header_size("CSVWithNamesAndTypes", b'"a"\n"UInt8"\n1\n') == len('"a"\n"UInt8"\n')
    assert header_size("RowBinary", b"abc") == 0
