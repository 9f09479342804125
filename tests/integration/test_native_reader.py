"""The Native reader against answers a real ClickHouse sends and the embedded one does not.

A query that fails after its first blocks went out cannot change the HTTP status any more: a real
server writes its exception text after the blocks it sent and ends the body cleanly. A proxy can
cut a body anywhere. Here a loopback HTTP server replays real Native bytes (three blocks, made by
the embedded ClickHouse) whole, followed by such an exception, cut inside a block, or behind an
HTTP error; the reader must return the rows of the whole answer only, and fail every other one
loudly, with the server's own text where it sent one: never a short batch taken for a whole one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coldtier.source import NATIVE_FORMAT
from helpers import CH_PASSWORD

pytestmark = pytest.mark.spark

EXCEPTION = (b"Code: 395. DB::Exception: Value passed to 'throwIf' function is non-zero: while executing "
             b"'FUNCTION throwIf(...)'. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO) (version 25.8.1.1)\n")


class Replay:
    """Answers DESCRIBE with ``describe`` and any other query with ``body`` (and ``status``)."""

    def __init__(self, describe: bytes) -> None:
        self.describe = describe
        self.body = b""
        self.status = 200
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sql = self.rfile.read(int(self.headers["Content-Length"])).decode()
                body, status = (replay.describe, 200) if sql.startswith("DESCRIBE") else (replay.body, replay.status)
                self.send_response(status)
                if status != 200:
                    self.send_header("X-ClickHouse-Exception-Code", "60")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """No access log: the test's output is the reader's errors."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture()
def native_answer(job) -> Iterator[tuple[Replay, bytes, int]]:
    """The replay server, the real Native bytes of a 3,000-row query in 1,000-row blocks, and the
    offset where the second block starts."""
    trades = job.trades()
    trades.bulk(3000)
    sql = (f"SELECT sequence_number, toUnixTimestamp64Micro(exchange_timestamp) AS ts, "
           f"CAST(symbol AS String) AS symbol, price FROM {job.database}.{trades.table} ORDER BY sequence_number")
    settings = {"max_block_size": "1000", "max_threads": "1"}
    body = job.client.query(sql, fmt="Native", settings=settings)
    one_block = job.client.query(sql + " LIMIT 1000", fmt="Native", settings=settings)
    assert body.startswith(one_block) and len(body) > 2 * len(one_block)
    describe = job.client.query(f"DESCRIBE TABLE ({sql})", fmt="TabSeparated")
    replay = Replay(describe)
    try:
        yield replay, body, len(one_block)
    finally:
        replay.server.shutdown()


def read_all(spark, replay: Replay) -> list:
    query = "SELECT 1"  # the replay server answers any query with its body
    return (spark.read.format(NATIVE_FORMAT)
            .options(endpoint=replay.endpoint, user="default", password="Native-Secret-31", socketTimeoutMs="20000",
                     schemaQuery=query, partitions="1", **{"query.0": query})
            .load().collect())


def test_a_whole_answer_is_every_row_in_order(spark, native_answer):
    replay, body, _ = native_answer
    replay.body = body
    rows = read_all(spark, replay)
    assert [int(r.sequence_number) for r in rows] == sorted(int(r.sequence_number) for r in rows)
    assert len(rows) == 3000 and len({r.sequence_number for r in rows}) == 3000


@pytest.mark.parametrize("where", ["after the last block", "after the first block"])
def test_an_exception_written_after_blocks_fails_the_read_with_the_servers_text(spark, native_answer, where):
    replay, body, second = native_answer
    replay.body = (body if where == "after the last block" else body[:second]) + EXCEPTION
    with pytest.raises(Exception) as failed:
        read_all(spark, replay)
    message = str(failed.value)
    assert "broke off" in message and "Code: 395. DB::Exception" in message, message[-3000:]


@pytest.mark.parametrize("cut", [1, 7, 500])
def test_an_answer_cut_inside_a_block_fails_the_read(spark, native_answer, cut):
    replay, body, second = native_answer
    replay.body = body[:second + cut]  # the second block's header or values, then a clean end
    with pytest.raises(Exception) as failed:
        read_all(spark, replay)
    assert "ended inside a block" in str(failed.value), str(failed.value)[-3000:]


def test_an_http_error_names_the_server_and_its_text_but_not_the_password(spark, native_answer):
    replay, _, _ = native_answer
    replay.body, replay.status = b"Code: 60. DB::Exception: Unknown table expression identifier", 404
    with pytest.raises(Exception) as failed:
        read_all(spark, replay)
    message = str(failed.value)
    assert f"ClickHouse at {replay.endpoint} answered HTTP 404: Code: 60." in message, message[-3000:]
    assert "Native-Secret-31" not in message


def test_low_cardinality_columns_are_read_as_their_plain_type(job, spark):
    """A wire column passed through as it is can be LowCardinality (a LowCardinality(Float64)
    price): the Native format would send a dictionary and indexes, so the scan's query CASTs it to
    the plain type, whose blocks it decodes; the values are exact."""
    from coldtier.clickhouse_http import ClickHouseHTTP

    http = ClickHouseHTTP.from_jdbc_url(job.chembed.jdbc_url, "default", CH_PASSWORD)
    query = ("SELECT toLowCardinality(toFloat64(number) / 4) AS f, toLowCardinality(toNullable(toString(number))) "
             "AS s FROM numbers(5000)")
    assert "LowCardinality(Float64)" in job.client.query(f"DESCRIBE TABLE ({query})").decode()
    rows = (spark.read.format(NATIVE_FORMAT)
            .options(endpoint=http.url, database=http.database, user="default", password=CH_PASSWORD,
                     schemaQuery=query, partitions="1", **{"query.0": query})
            .load().collect())
    assert sorted((r.f, r.s) for r in rows) == sorted((n / 4, str(n)) for n in range(5000))
