"""The HTTP layer: ClickHouse's HTTP interface in front of an embedded chdb engine.

One engine per process, bound to one data directory. Every request gets its own
lightweight chdb connection (cheap: ~0.1 ms), so per-request settings from the URL
and the current database never leak between requests and concurrent requests run
in parallel inside the engine.

Longer than 300 lines: the HTTP server and its ClickHouse-compatible behaviours (sessions,
settings, gates for fault tests); the protocol pieces are in ``protocol`` and ``framing``.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from chembed import framing
from chembed.protocol import (
    ERROR_NAMES,
    ChError,
    InsertWithData,
    can_stream,
    header_size,
    is_streaming,
    output_format,
    parse_insert,
    split_params,
)

log = logging.getLogger("chembed")

READ_CHUNK = 1 << 20
DISPLAY_NAME = "chembed"


@dataclass(frozen=True)
class ServerConfig:
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 18123
    user: str = "default"
    password: str = ""
    verbose: bool = False
    gate_dir: str | None = None  # test-only fault gates, see Gates


class Gates:
    """Test-only fault gates, keyed by a query's ``log_comment`` setting (coldtier tags every
    query of a batch with it), so a test can hold or fail exactly one batch's reads.

    In ``gate_dir``, for a tag sanitised to NAME (characters outside ``[A-Za-z0-9._-]`` → ``_``),
    every tagged query is logged to ``NAME.queries``, and:
    - ``NAME.hold`` exists: the query appends a line to ``NAME.arrived`` and waits until the
      file is removed (at most ``HOLD_LIMIT_S``), then runs;
    - ``NAME.fail`` exists: the first query to remove it fails, once, with the error code the
      file holds (empty: 159 TIMEOUT_EXCEEDED, which the JDBC driver retries by itself; a
      code it does not retry, such as 160 TOO_SLOW, fails the read);
    - ``NAME.pace`` holds a number of seconds: a streamed answer waits that long after each
      block it sends (a slow network, so that a test can act while rows are in flight).
    A schema probe (``… WHERE 1=0``, what Spark's JDBC reader sends to learn the columns; ``DESCRIBE
    …``, what coldtier's Native reader sends) and INSERTs pass untouched. Off unless the server
    was started with ``--gate-dir``.
    """

    HOLD_LIMIT_S = 600.0

    def __init__(self, gate_dir: str) -> None:
        self.dir = gate_dir

    @staticmethod
    def name(tag: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", tag)

    def pace(self, settings: dict[str, str]) -> float:
        """Seconds to wait after each streamed block of this query's answer (0: none)."""
        tag = settings.get("log_comment")
        if not tag:
            return 0.0
        try:
            with open(os.path.join(self.dir, self.name(tag)) + ".pace") as fh:
                return float(fh.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0.0

    def check(self, settings: dict[str, str], sql: str) -> None:
        tag = settings.get("log_comment")
        if not tag or re.search(r"WHERE\s+1\s*=\s*0\s*$", sql.strip(), re.I) \
                or re.match(r"\s*DESCRIBE\b", sql, re.I):
            return
        base = os.path.join(self.dir, self.name(tag))
        with open(base + ".queries", "a") as fh:
            fh.write(" ".join(sql.split()) + "\n")
        if os.path.exists(base + ".hold"):
            with open(base + ".arrived", "a") as fh:
                fh.write(f"{time.time():.3f}\n")
            deadline = time.monotonic() + self.HOLD_LIMIT_S
            while os.path.exists(base + ".hold") and time.monotonic() < deadline:
                time.sleep(0.02)
        try:
            with open(base + ".fail") as fh:
                code = int(fh.read().strip() or 159)
            os.remove(base + ".fail")
        except (FileNotFoundError, ValueError):
            return
        raise ChError(code, f"Code: {code}. DB::Exception: Injected by chembed gate {self.name(tag)}.fail. "
                            f"({ERROR_NAMES.get(code, 'UNKNOWN_EXCEPTION')})")


class Engine:
    """The embedded ClickHouse engine and a factory of per-request connections."""

    def __init__(self, data_dir: str) -> None:
        os.environ.setdefault("TZ", "UTC")
        import chdb  # imported late: the engine reads TZ when it loads

        self._chdb = chdb
        self.data_dir = os.path.abspath(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        # The master connection keeps the engine alive for the server's lifetime.
        self._master = chdb.connect(self.data_dir)
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self.setting_names = frozenset(self._scalar("SELECT name FROM system.settings").split("\n"))

    def _scalar(self, sql: str) -> str:
        return self._master.query(sql, "TabSeparatedRaw").bytes().decode().strip()

    def connect(self, settings: dict[str, str], database: str) -> Any:
        for name in settings:
            if name not in self.setting_names and not name.startswith("custom_"):
                raise ChError(115, f"Code: 115. DB::Exception: Setting {name} is neither a "
                                   f"builtin setting nor started with the prefix 'custom_' "
                                   f"registered for user-defined settings. (UNKNOWN_SETTING)")
        target = self.data_dir + ("?" + urlencode(settings) if settings else "")
        try:
            conn = self._chdb.connect(target)
        except Exception as exc:  # an unknown setting or a bad value
            err = ChError.from_engine(exc)
            if err.code == 1001:
                err = ChError(115, f"Code: 115. DB::Exception: Cannot apply settings "
                                   f"{sorted(settings)}: {exc}. (UNKNOWN_SETTING)")
            raise err from None
        if database and database != "default":
            try:
                conn.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
            except Exception as exc:
                conn.close()
                raise ChError.from_engine(exc) from None
        return conn

    def close(self) -> None:
        self._master.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, config: ServerConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.gates = Gates(config.gate_dir) if config.gate_dir else None
        super().__init__((config.host, config.port), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing -------------------------------------------------------------
    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client went away between requests on a kept-alive connection

    def log_message(self, format: str, *args: Any) -> None:
        # The default access log prints the request line, which may carry a password.
        if self.server.config.verbose:
            log.info("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.config.verbose:
            log.info("%s %s %s %s", self.command, urlsplit(self.path).path, code, self._query_id)

    def _send_plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, err: ChError, compress: bool) -> None:
        body = err.body(self.server.engine.version)
        status = err.http_status
        # Like ClickHouse, the message is framed when the client asked for compression,
        # except for authentication failures, which are answered before any of that.
        if compress and status not in (401, 403):
            body = b"".join(framing.encode(body))
        self._send_plain(
            status,
            body,
            {
                "X-ClickHouse-Exception-Code": str(err.code),
                "X-ClickHouse-Query-Id": self._query_id,
                "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            },
        )

    def _common_headers(self, fmt: str, summary: dict[str, int]) -> None:
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        self.send_header("X-ClickHouse-Query-Id", self._query_id)
        self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Timezone", self.server.engine.timezone)
        self.send_header(
            "X-ClickHouse-Summary", json.dumps({k: str(v) for k, v in summary.items()})
        )

    def _iter_raw_body(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    piece = self.rfile.read(min(remaining, READ_CHUNK))
                    if not piece:
                        raise ChError(1000, "Unexpected end of chunked request body")
                    remaining -= len(piece)
                    yield piece
                self.rfile.readline(3)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                piece = self.rfile.read(min(remaining, READ_CHUNK))
                if not piece:
                    raise ChError(1000, "Unexpected end of request body")
                remaining -= len(piece)
                yield piece

    def _iter_body(self, params: dict[str, str]) -> Iterator[bytes]:
        chunks: Iterator[bytes] = self._iter_raw_body()
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            chunks = _inflate(chunks, encoding)
        elif encoding not in ("", "identity"):
            raise ChError(1000, f"Unsupported Content-Encoding: {encoding}")
        if params.get("decompress") == "1":
            chunks = _decode_framed(chunks)
        return chunks

    # -- authentication ----------------------------------------------------------
    def _authenticate(self, params: dict[str, str]) -> None:
        user, password = "default", ""
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                user, password = "", ""
        elif "X-ClickHouse-User" in self.headers or "X-ClickHouse-Key" in self.headers:
            user = self.headers.get("X-ClickHouse-User", "default")
            password = self.headers.get("X-ClickHouse-Key", "")
        elif "user" in params or "password" in params:
            user = params.get("user", "default")
            password = params.get("password", "")
        cfg = self.server.config
        ok_user = hmac.compare_digest(user.encode(), cfg.user.encode())
        ok_pass = hmac.compare_digest(password.encode(), cfg.password.encode())
        if not (ok_user and ok_pass):
            raise ChError(
                516,
                f"Code: 516. DB::Exception: {user}: Authentication failed: password is "
                f"incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)",
            )

    # -- verbs ----------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch(is_get=True)

    def do_POST(self) -> None:
        self._dispatch(is_get=False)

    def _dispatch(self, is_get: bool) -> None:
        self._headers_sent = False
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        self._query_id = (
            params.get("query_id") or self.headers.get("X-ClickHouse-Query-Id") or str(uuid.uuid4())
        )
        compress = params.get("compress") == "1"
        if split.path in ("/ping", "/replicas_status") or (
            is_get and split.path == "/" and "query" not in params
        ):
            self._send_plain(200, b"Ok.\n")
            return
        if split.path != "/":
            self._send_plain(404, b"There is no handle " + split.path.encode() + b"\n")
            return
        try:
            self._authenticate(params)
            self._execute(params, is_get, compress)
        except ChError as err:
            self._respond_error(err, compress)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # never let an engine fault kill the handler thread
            log.exception("query %s failed", self._query_id)
            self._respond_error(ChError.from_engine(exc), compress)

    def _respond_error(self, err: ChError, compress: bool) -> None:
        if self._headers_sent:
            # The status line went out already: cut the stream so the client sees it broken.
            log.warning("query %s failed mid-stream: %s", self._query_id, err.message)
            self.close_connection = True
            return
        self.close_connection = True  # the request body may be unread
        try:
            self._send_error(err, compress)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _execute(self, params: dict[str, str], is_get: bool, compress: bool) -> None:
        settings, qparams = split_params(params)
        if is_get and "readonly" not in settings:
            settings["readonly"] = "2"
        database = params.get("database") or self.headers.get("X-ClickHouse-Database") or "default"
        default_fmt = (
            self.headers.get("X-ClickHouse-Format") or params.get("default_format") or "TabSeparated"
        )
        query_param = params.get("query")
        body = iter(()) if is_get else self._iter_body(params)
        head = next(body, b"")
        insert = parse_insert(query_param, head)
        conn = self.server.engine.connect(settings, database)
        try:
            if insert is not None:
                self._run_insert(conn, insert, body, default_fmt, compress)
                return
            sql_bytes = head + b"".join(body)
            sql = ((query_param + " ") if query_param else "") + sql_bytes.decode("utf-8")
            if not sql.strip():
                raise ChError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
            if self.server.gates is not None:
                self.server.gates.check(settings, sql)
            fmt = output_format(sql, default_fmt)
            if is_streaming(sql) and can_stream(fmt):
                pace = self.server.gates.pace(settings) if self.server.gates is not None else 0.0
                self._run_streaming(conn, sql, fmt, qparams, compress, pace)
            else:
                self._run_whole(conn, sql, fmt, qparams, compress)
        finally:
            conn.close()

    def _run_insert(
        self, conn: Any, insert: InsertWithData, body: Iterator[bytes], fmt: str, compress: bool
    ) -> None:
        started = time.perf_counter()
        try:
            inserter = conn.send_insert(insert.statement, insert.fmt)
        except Exception as exc:
            raise ChError.from_engine(exc) from None
        try:
            if insert.head:
                inserter.append(insert.head)
            for chunk in body:
                inserter.append(chunk)
            result = inserter.finish()
        except ChError:
            inserter.cancel()
            raise
        except Exception as exc:
            inserter.cancel()
            raise ChError.from_engine(exc) from None
        summary = {
            "read_rows": 0,
            "read_bytes": 0,
            "written_rows": result.rows_written,
            "written_bytes": result.bytes_written,
            "total_rows_to_read": 0,
            "result_rows": result.rows_written,
            "result_bytes": result.bytes_written,
            "elapsed_ns": int((time.perf_counter() - started) * 1e9),
        }
        self._finish_whole(b"", fmt, summary, compress)

    def _run_whole(
        self, conn: Any, sql: str, fmt: str, qparams: dict[str, str], compress: bool
    ) -> None:
        started = time.perf_counter()
        try:
            res = conn.query(sql, fmt, params=qparams)
        except Exception as exc:
            raise ChError.from_engine(exc) from None
        data = res.bytes() if res is not None else b""
        summary = {
            "read_rows": res.rows_read() if res is not None else 0,
            "read_bytes": res.bytes_read() if res is not None else 0,
            "written_rows": res.rows_written() if res is not None else 0,
            "written_bytes": res.bytes_written() if res is not None else 0,
            "total_rows_to_read": 0,
            "result_rows": 0,
            "result_bytes": len(data),
            "elapsed_ns": int((time.perf_counter() - started) * 1e9),
        }
        self._finish_whole(data, fmt, summary, compress)

    def _finish_whole(self, data: bytes, fmt: str, summary: dict[str, int], compress: bool) -> None:
        body = b"".join(framing.encode(data)) if compress and data else data
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self._common_headers(fmt, summary)
        self.end_headers()
        self._headers_sent = True
        self.wfile.write(body)

    def _run_streaming(
        self, conn: Any, sql: str, fmt: str, qparams: dict[str, str], compress: bool, pace: float = 0.0
    ) -> None:
        try:
            stream = conn.send_query(sql, fmt, params=qparams)
            chunks = iter(stream)
            first = next(chunks, None)  # surfaces parse/analysis errors before the 200
        except Exception as exc:
            raise ChError.from_engine(exc) from None
        if first is None:
            # chdb's streaming API yields nothing for an empty result, not even the
            # format's prefix (column names and types), which clients need: re-run it whole.
            stream.close()
            self._run_whole(conn, sql, fmt, qparams, compress)
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Transfer-Encoding", "chunked")
            self._common_headers(fmt, {"read_rows": 0, "read_bytes": 0, "written_rows": 0,
                                       "written_bytes": 0, "total_rows_to_read": 0,
                                       "result_rows": 0, "result_bytes": 0, "elapsed_ns": 0})
            self.end_headers()
            self._headers_sent = True
            write = self.wfile.write
            chunk = first
            data = first.bytes()
            header = data[: header_size(fmt, data)]
            while chunk is not None:
                if chunk is not first:
                    data = chunk.bytes()
                    if header:
                        if not data.startswith(header):
                            raise ChError(1001, "streamed chunk does not start with the header")
                        data = data[len(header):]
                if data:
                    pieces = framing.encode(data) if compress else (data,)
                    for piece in pieces:
                        write(b"%X\r\n%b\r\n" % (len(piece), piece))
                    if pace:  # test-only: a slow network (Gates.pace)
                        self.wfile.flush()
                        time.sleep(pace)
                try:
                    chunk = next(chunks, None)
                except Exception as exc:
                    raise ChError.from_engine(exc) from None
            write(b"0\r\n\r\n")
        finally:
            stream.close()


def _inflate(chunks: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    d = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    for c in chunks:
        out = d.decompress(c)
        if out:
            yield out
    tail = d.flush()
    if tail:
        yield tail


def _decode_framed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from framing.decode(chunks)
    except framing.FramingError as exc:
        raise ChError(271, f"Code: 271. DB::Exception: {exc}. (CANNOT_DECOMPRESS)") from None


class EmbeddedClickHouse:
    """Owns the engine and the HTTP server; ``serve_forever`` until ``shutdown``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine = Engine(config.data_dir)
        self.httpd = _Server(config, self.engine)
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.httpd.server_close()
            self.engine.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting requests; safe to call from a signal handler's thread."""
        threading.Thread(target=self.httpd.shutdown, daemon=True).start()
