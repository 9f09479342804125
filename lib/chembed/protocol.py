"""Pure pieces of ClickHouse's HTTP protocol: parameters, statements, errors.

Nothing here does I/O, so all of it is unit-tested without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# URL parameters that are part of the HTTP interface, not ClickHouse settings.
PROTOCOL_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "compress",
        "decompress",
        "enable_http_compression",
        "session_id",
        "session_check",
        "session_timeout",
        "role",
        "quota_key",
        "buffer_size",
        "wait_end_of_query",
        "stacktrace",
        "client_protocol_version",
    }
)
# Settings a real server accepts but the embedded engine has no use for.
IGNORED_SETTINGS = frozenset(
    {
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_wait_end_of_query",
        "http_response_buffer_size",
        "cancel_http_readonly_queries_on_client_close",
        "http_write_exception_in_output_format",
        "output_format_write_statistics",
    }
)

ERROR_NAMES = {
    16: "NO_SUCH_COLUMN_IN_TABLE",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    36: "BAD_ARGUMENTS",
    47: "UNKNOWN_IDENTIFIER",
    57: "TABLE_ALREADY_EXISTS",
    60: "UNKNOWN_TABLE",
    62: "SYNTAX_ERROR",
    73: "UNKNOWN_FORMAT",
    81: "UNKNOWN_DATABASE",
    115: "UNKNOWN_SETTING",
    159: "TIMEOUT_EXCEEDED",
    160: "TOO_SLOW",
    164: "READONLY",
    194: "REQUIRED_PASSWORD",
    271: "CANNOT_DECOMPRESS",
    394: "QUERY_WAS_CANCELLED",
    516: "AUTHENTICATION_FAILED",
    1000: "POCO_EXCEPTION",
    1001: "STD_EXCEPTION",
}
_FORBIDDEN = {164, 192, 193, 497, 516}
_NOT_FOUND = {60, 81, 73}
_BAD_REQUEST = {
    6, 16, 26, 27, 32, 33, 36, 38, 41, 42, 43, 44, 46, 47, 53, 62, 69, 70, 72, 115, 117, 184, 190,
    271, 352,
}
_CODE_RE = re.compile(r"Code:\s*(\d+)\.")

_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_INSERT_RE = re.compile(r"INSERT\s+INTO\b", re.I)
_FORMAT_RE = re.compile(rb"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)", re.I)
_TRAILING_FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*$", re.I)
_STREAMING_VERBS = ("SELECT", "WITH", "(")


class ChError(Exception):
    """An error as ClickHouse reports it: numeric code plus message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, "UNKNOWN_EXCEPTION")

    @property
    def http_status(self) -> int:
        return http_status_for(self.code)

    def body(self, version: str) -> bytes:
        msg = self.message
        if not msg.startswith("Code:"):
            msg = f"Code: {self.code}. DB::Exception: {msg}. ({self.name})"
        return f"{msg} (version {version})\n".encode()

    @classmethod
    def from_engine(cls, exc: BaseException) -> ChError:
        """Wrap an exception raised by chdb, keeping ClickHouse's own code and text."""
        text = str(exc)
        for prefix in ("Streaming query failed: ", "Streaming insert append failed: ",
                       "Streaming insert finish failed: "):
            text = text.replace(prefix, "")
        m = _CODE_RE.search(text)
        if m:
            return cls(int(m.group(1)), text[m.start():].strip())
        return cls(1001, text.strip() or type(exc).__name__)


def http_status_for(code: int) -> int:
    if code == 194:
        return 401
    if code in _FORBIDDEN:
        return 403
    if code in _NOT_FOUND:
        return 404
    if code in _BAD_REQUEST:
        return 400
    return 500


def split_params(params: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split URL parameters into (settings, query parameters ``param_*``)."""
    settings: dict[str, str] = {}
    qparams: dict[str, str] = {}
    for k, v in params.items():
        if k.startswith("param_"):
            qparams[k[len("param_"):]] = v
        elif k in PROTOCOL_PARAMS or k in IGNORED_SETTINGS:
            continue
        else:
            settings[k] = v
    return settings, qparams


def strip_leading_comments(sql: str) -> str:
    return sql[_LEADING_COMMENTS.match(sql).end():]  # type: ignore[union-attr]


def is_insert(sql: str) -> bool:
    return _INSERT_RE.match(strip_leading_comments(sql)) is not None


def is_streaming(sql: str) -> bool:
    """True for statements that return rows; they are streamed, everything else is run whole."""
    return strip_leading_comments(sql).upper().startswith(_STREAMING_VERBS)


def output_format(sql: str, default: str) -> str:
    m = _TRAILING_FORMAT_RE.search(sql)
    return m.group(1) if m else default


@dataclass(frozen=True)
class InsertWithData:
    """``INSERT ... FORMAT fmt`` whose rows follow in the request body."""

    statement: str  # the INSERT without its FORMAT clause
    fmt: str
    head: bytes = field(default=b"", repr=False)  # data bytes already read with the statement


def parse_insert(query_param: str | None, body_head: bytes) -> InsertWithData | None:
    """Recognise an INSERT whose data is in the body, as ClickHouse does.

    Either the statement is in the ``query`` URL parameter and the whole body is data,
    or the body starts with ``INSERT ... FORMAT name`` and the data follows after one
    whitespace character. ``INSERT ... VALUES (...)`` and ``INSERT ... SELECT`` are
    plain statements and give None.
    """
    if query_param is not None and is_insert(query_param):
        m = _FORMAT_RE.search(query_param.encode())
        if m is None:
            return None
        return InsertWithData(query_param[: m.start()].strip(), m.group(1).decode(), body_head)
    if query_param is None and is_insert(body_head[:4096].decode("utf-8", "replace")):
        m = _FORMAT_RE.search(body_head, 0, 65536)
        if m is None:
            return None
        data_start = m.end()
        if data_start < len(body_head) and body_head[data_start : data_start + 1] in b" \t\r\n":
            data_start += 1
            if body_head[data_start - 1 : data_start + 1] == b"\r\n":
                data_start += 1
        stmt = body_head[: m.start()].decode("utf-8").strip()
        return InsertWithData(stmt, m.group(1).decode(), body_head[data_start:])
    return None


# --- streaming output --------------------------------------------------------------
# chdb's streaming API formats every chunk as a complete output of its own: a format's
# prefix (names, types) and suffix are repeated per chunk. Row formats with no prefix are
# streamed as they come; formats whose prefix is a header are streamed with the repeated
# header cut from every chunk after the first; all others are produced whole.
_NO_PREFIX = frozenset(
    {
        "RowBinary", "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV", "JSONEachRow",
        "JSONLines", "NDJSON", "JSONCompactEachRow", "JSONStringsEachRow",
        "JSONCompactStringsEachRow", "Native", "TSKV", "LineAsString", "RawBLOB",
    }
)
_BINARY_HEADER = {"RowBinaryWithNames": 1, "RowBinaryWithNamesAndTypes": 2}
_LINE_HEADER = {
    "TabSeparatedWithNames": 1, "TSVWithNames": 1, "TabSeparatedWithNamesAndTypes": 2,
    "TSVWithNamesAndTypes": 2, "CSVWithNames": 1, "CSVWithNamesAndTypes": 2,
    "JSONCompactEachRowWithNames": 1, "JSONCompactEachRowWithNamesAndTypes": 2,
    "TabSeparatedRawWithNames": 1, "TabSeparatedRawWithNamesAndTypes": 2,
}


def can_stream(fmt: str) -> bool:
    return fmt in _NO_PREFIX or fmt in _BINARY_HEADER or fmt in _LINE_HEADER


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def header_size(fmt: str, first_chunk: bytes) -> int:
    """Length of the header that chdb repeats at the start of every streamed chunk."""
    if fmt in _BINARY_HEADER:
        n, pos = _varint(first_chunk, 0)
        for _ in range(n * _BINARY_HEADER[fmt]):
            size, pos = _varint(first_chunk, pos)
            pos += size
        return pos
    if fmt in _LINE_HEADER:
        pos = 0
        for _ in range(_LINE_HEADER[fmt]):
            pos = first_chunk.index(b"\n", pos) + 1
        return pos
    return 0
