"""A small client for ClickHouse's HTTP interface, for the work that needs no Spark.

Planning, status, the generator and the tests talk to ClickHouse through this; bulk
data always moves through Spark's JDBC reader (the benchmark's no-Spark peer path aside).
The password travels in a header, never in the URL, and never appears in an error message.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from coldtier.errors import ClickHouseError, ClickHouseUnreachable


@dataclass(frozen=True)
class ClickHouseHTTP:
    url: str  # http(s)://host:port
    user: str = "default"
    password: str = field(default="", repr=False)
    database: str = "default"
    timeout_s: float = 30.0  # connecting (TCP and TLS)
    settings: tuple[tuple[str, str], ...] = ()
    read_timeout_s: float = 300.0  # waiting for the answer; also the server's max_execution_time

    @classmethod
    def from_jdbc_url(
        cls, jdbc_url: str, user: str, password: str, timeout_s: float = 30.0, read_timeout_s: float = 300.0
    ) -> ClickHouseHTTP:
        """``jdbc:clickhouse://host:port/db?ssl=true`` → the same server's HTTP endpoint."""
        rest = jdbc_url.split("jdbc:", 1)[-1]
        for prefix in ("clickhouse:", "ch:"):
            if rest.startswith(prefix):
                rest = rest[len(prefix):]
        if rest.startswith("http://") or rest.startswith("https://"):
            parts = urllib.parse.urlsplit(rest)
        else:
            parts = urllib.parse.urlsplit("http:" + rest)
        q = dict(urllib.parse.parse_qsl(parts.query))
        scheme = "https" if q.get("ssl", "").lower() == "true" or parts.scheme == "https" else "http"
        db = parts.path.strip("/") or "default"
        port = parts.port or (8443 if scheme == "https" else 8123)
        return cls(f"{scheme}://{parts.hostname}:{port}", user, password, db, timeout_s, (), read_timeout_s)

    @property
    def endpoint(self) -> str:
        return self.url

    def _request(self, sql: str, fmt: str, data: bytes | None, settings: dict[str, str] | None,
                 query_id: str | None) -> tuple[str, bytes]:
        params: dict[str, str] = {"database": self.database, "default_format": fmt,
                                  # the server gives up too: no query of coldtier's outlives its wait
                                  "max_execution_time": str(max(1, int(self.read_timeout_s)))}
        params.update(dict(self.settings))
        params.update(settings or {})
        if query_id:
            params["query_id"] = query_id
        body = sql.encode()
        if data is not None:
            params["query"] = sql
            body = data
        return f"/?{urllib.parse.urlencode(params)}", body

    @contextmanager
    def _open(self, req: tuple[str, bytes]) -> Iterator[Any]:
        """POST with separate bounds: ``timeout_s`` to connect, ``read_timeout_s`` for every wait
        on the socket afterwards (ClickHouse sends nothing until its first block is ready)."""
        path, body = req
        parts = urllib.parse.urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "", parts.port, timeout=self.timeout_s)
        stage = "connect"
        try:
            conn.connect()
            stage = "answer"
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout_s)
            conn.request("POST", path, body=body,
                         headers={"X-ClickHouse-User": self.user, "X-ClickHouse-Key": self.password})
            resp = conn.getresponse()
            if resp.status != 200:
                code = int(resp.getheader("X-ClickHouse-Exception-Code") or 0)
                text = resp.read().decode("utf-8", "replace").strip()
                raise ClickHouseError(code, text, self.endpoint)
            yield resp
        except (OSError, http.client.HTTPException) as exc:
            what = (f"to a connection (connect timeout {self.timeout_s:g}s)" if stage == "connect"
                    else f"within the read timeout of {self.read_timeout_s:g}s")
            raise ClickHouseUnreachable(
                f"ClickHouse at {self.endpoint} did not answer {what}: {exc or type(exc).__name__}"
            ) from None
        finally:
            conn.close()

    def query(self, sql: str, fmt: str = "TabSeparated", data: bytes | None = None,
              settings: dict[str, str] | None = None, query_id: str | None = None) -> bytes:
        with self._open(self._request(sql, fmt, data, settings, query_id)) as resp:
            return resp.read()

    @contextmanager
    def stream(self, sql: str, fmt: str, settings: dict[str, str] | None = None) -> Iterator[Any]:
        """The response body as a file-like object, for results too big to hold."""
        with self._open(self._request(sql, fmt, None, settings, None)) as resp:
            yield resp

    def execute(self, sql: str, **kw: Any) -> None:
        self.query(sql, **kw)

    def rows(self, sql: str, settings: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts (JSON output, 64-bit ints as strings)."""
        out = self.query(sql, fmt="JSONEachRow", settings=settings)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def scalar(self, sql: str) -> str:
        return self.query(sql, fmt="TabSeparatedRaw").decode().rstrip("\n")
