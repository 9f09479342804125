"""The embedded ClickHouse server through its HTTP interface, as curl or any client sees it."""

from __future__ import annotations

import base64
import os
import threading
import urllib.error
import urllib.parse
import urllib.request

import psutil
import pytest

from chembed import framing
from coldtier.clickhouse_http import ClickHouseError
from helpers import CH_PASSWORD, ChembedProcess


def post(server, sql: bytes | str, params: dict | None = None, auth=("default", CH_PASSWORD),
         headers: dict | None = None):
    q = urllib.parse.urlencode(params or {})
    body = sql.encode() if isinstance(sql, str) else sql
    hdrs = dict(headers or {})
    if auth:
        hdrs["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(f"{server.http_url}/?{q}", data=body, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_ping_answers_ok(chembed):
    with urllib.request.urlopen(f"{chembed.http_url}/ping") as r:
        assert r.read() == b"Ok.\n"


def test_wrong_password_is_code_516(chembed):
    status, headers, body = post(chembed, "SELECT 1", auth=("default", "wrong"))
    assert status == 403
    assert headers["X-ClickHouse-Exception-Code"] == "516"
    assert body.startswith(b"Code: 516. DB::Exception: default: Authentication failed")


def test_datetime64_round_trips(chembed):
    status, headers, body = post(chembed, "SELECT toDateTime64('2026-01-02 03:04:05.678',3,'UTC')")
    assert status == 200, body
    assert body == b"2026-01-02 03:04:05.678\n"
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Timezone"] == post(chembed, "SELECT timezone()")[2].decode().strip()


def test_unknown_table_error_as_clickhouse_reports_it(chembed):
    status, headers, body = post(chembed, "SELECT * FROM default.no_such_table")
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:") and b"(version " in body


def test_inserts_with_data_in_the_body(chembed, ch):
    ch.execute("CREATE TABLE default.ins (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    assert post(chembed, "INSERT INTO default.ins FORMAT TSV\n1\tone\n2\ttwo\n")[0] == 200
    assert post(chembed, b'INSERT INTO default.ins FORMAT JSONEachRow {"a":3,"s":"three"}')[0] == 200
    rowbinary = (4).to_bytes(4, "little") + b"\x04four"
    status, headers, _ = post(chembed, rowbinary,
                              {"query": "INSERT INTO default.ins (a, s) FORMAT RowBinary"})
    assert status == 200
    assert '"written_rows": "1"' in headers["X-ClickHouse-Summary"]
    framed = b"".join(framing.encode(b"5\tfive\n"))
    assert post(chembed, framed, {"query": "INSERT INTO default.ins FORMAT TSV",
                                  "decompress": "1"})[0] == 200
    assert ch.query("SELECT a, s FROM default.ins ORDER BY a") == (
        b"1\tone\n2\ttwo\n3\tthree\n4\tfour\n5\tfive\n")


def test_compressed_response_is_clickhouse_framed(chembed):
    status, _, body = post(chembed, "SELECT number FROM numbers(300000)",
                           {"compress": "1", "default_format": "RowBinary"})
    assert status == 200
    data = b"".join(framing.decode([body]))
    assert data == b"".join(i.to_bytes(8, "little") for i in range(300000))


def test_rowbinary_with_names_and_types_streams_one_header(chembed):
    # chdb repeats the header in every streamed chunk; the server must send it once.
    status, _, body = post(chembed, "SELECT number AS n FROM numbers(500000)",
                           {"default_format": "RowBinaryWithNamesAndTypes"})
    header = b"\x01\x01n\x06UInt64"
    assert status == 200
    assert body.count(header) == 1 and body.startswith(header)
    assert len(body) == len(header) + 8 * 500000


def test_empty_result_still_has_the_format_header(chembed):
    status, _, body = post(chembed, "SELECT number AS n FROM numbers(10) WHERE 0",
                           {"default_format": "RowBinaryWithNamesAndTypes"})
    assert status == 200 and body == b"\x01\x01n\x06UInt64"


def test_url_settings_apply_per_request_only(chembed):
    _, _, body = post(chembed, "SELECT getSetting('max_block_size')", {"max_block_size": "123"})
    assert body == b"123\n"
    _, _, body = post(chembed, "SELECT getSetting('max_block_size')")
    assert body != b"123\n"
    status, headers, body = post(chembed, "SELECT 1", {"no_such_setting_xyz": "1"})
    assert status >= 400 and headers["X-ClickHouse-Exception-Code"] == "115"


def test_concurrent_readers_and_writer(chembed, ch):
    ch.execute("CREATE TABLE default.conc (a UInt64) ENGINE = MergeTree ORDER BY a")
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(40):
                ch.execute(f"INSERT INTO default.conc SELECT number + {i * 1000} FROM numbers(1000)")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(40):
                n = int(ch.scalar("SELECT count() FROM default.conc"))
                assert n % 1000 == 0  # an insert is all or nothing
                big = ch.query("SELECT number FROM numbers(200000)", fmt="RowBinary")
                assert len(big) == 1_600_000
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert ch.scalar("SELECT count(), uniqExact(a) FROM default.conc") == "40000\t40000"


def test_large_results_stream_in_bounded_memory(chembed, ch):
    proc = psutil.Process(chembed.proc.pid)
    before = proc.memory_info().rss
    peak = before
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            stop.wait(0.02)

    t = threading.Thread(target=sample)
    t.start()
    req = urllib.request.Request(
        f"{chembed.http_url}/?default_format=RowBinary&compress=1",
        data=b"SELECT number, toString(number) FROM numbers(20000000)",
        headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": CH_PASSWORD})
    total = 0
    dec = framing.Decoder()
    with urllib.request.urlopen(req) as r:
        while chunk := r.read(1 << 20):
            total += sum(len(x) for x in dec.feed(chunk))
    stop.set()
    t.join()
    assert total > 300_000_000  # ~340 MB of RowBinary went through
    assert peak - before < 200_000_000, f"server grew by {(peak - before) / 1e6:.0f} MB"


def test_client_error_names_endpoint_but_never_the_password(chembed):
    from coldtier.clickhouse_http import ClickHouseHTTP

    bad = ClickHouseHTTP(chembed.http_url, "default", "not-" + CH_PASSWORD)
    with pytest.raises(ClickHouseError) as ei:
        bad.query("SELECT 1")
    assert ei.value.code == 516
    assert chembed.http_url in str(ei.value) and CH_PASSWORD not in str(ei.value)


def test_sigterm_keeps_data_and_restart_sees_it(tmp_path):
    server = ChembedProcess(tmp_path / "data").start()
    client = server.client()
    client.execute("CREATE DATABASE k2")
    client.execute("CREATE TABLE k2.keep (a UInt64) ENGINE = MergeTree ORDER BY a")
    client.execute("INSERT INTO k2.keep SELECT number FROM numbers(12345)")
    assert server.stop() == 0
    assert not server.ping()
    port = server.port
    again = ChembedProcess(tmp_path / "data", port=port).start()
    try:
        assert again.client().scalar("SELECT count(), sum(a) FROM k2.keep") == f"12345\t{sum(range(12345))}"
        assert "keep" in again.client().scalar("SHOW TABLES FROM k2")
    finally:
        assert again.stop() == 0
    assert os.path.isdir(tmp_path / "data")


def test_gates_hold_and_fail_only_the_tagged_query(chembed):
    """The test-only gates: a .hold file holds the tagged query until removed; a .fail file
    fails the next tagged query once with code 159; other queries and schema probes pass."""
    import time

    tag = "coldtier:p/t/batch-7"
    base = chembed.gate_dir / "coldtier_p_t_batch-7"
    tagged = {"log_comment": tag}
    base.with_suffix(".hold").touch()
    got: list[bytes] = []
    worker = threading.Thread(target=lambda: got.append(post(chembed, "SELECT 42", tagged)[2]))
    worker.start()
    deadline = time.monotonic() + 10
    while not base.with_suffix(".arrived").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert base.with_suffix(".arrived").exists()
    assert post(chembed, "SELECT 1")[2] == b"1\n"  # untagged: not held
    assert post(chembed, "SELECT * FROM (SELECT 1 AS x) WHERE 1=0", tagged)[0] == 200  # schema probe
    time.sleep(0.3)
    assert worker.is_alive() and not got
    base.with_suffix(".hold").unlink()
    worker.join(10)
    assert got == [b"42\n"]

    base.with_suffix(".fail").touch()
    status, headers, body = post(chembed, "SELECT 42", tagged)
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "159", body
    assert b"TIMEOUT_EXCEEDED" in body and not base.with_suffix(".fail").exists()
    assert post(chembed, "SELECT 42", tagged)[2] == b"42\n"  # once only
