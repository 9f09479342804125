"""A small client for ClickHouse's HTTP interface, for the work that needs no Spark.

Planning, status, the generator and the tests talk to ClickHouse through this; bulk
data always moves through Spark's JDBC reader (the benchmark's no-Spark peer path aside).
The password travels in a header, never in the URL, and never appears in an error message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


class ClickHouseError(RuntimeError):
    """ClickHouse answered with an error (``code`` is ClickHouse's error code)."""

    def __init__(self, code: int, message: str, endpoint: str) -> None:
        super().__init__(f"ClickHouse at {endpoint} answered error {code}: {message}")
        self.code = code
        self.server_message = message
        self.endpoint = endpoint


class ClickHouseUnreachable(RuntimeError):
    """No answer from ClickHouse within the connect timeout."""


@dataclass(frozen=True)
class ClickHouseHTTP:
    url: str  # http(s)://host:port
    user: str = "default"
    password: str = field(default="", repr=False)
    database: str = "default"
    timeout_s: float = 30.0
    settings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_jdbc_url(
        cls, jdbc_url: str, user: str, password: str, timeout_s: float = 30.0
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
        return cls(f"{scheme}://{parts.hostname}:{port}", user, password, db, timeout_s)

    @property
    def endpoint(self) -> str:
        return self.url

    def _request(self, sql: str, fmt: str, data: bytes | None, settings: dict[str, str] | None,
                 query_id: str | None) -> urllib.request.Request:
        params: dict[str, str] = {"database": self.database, "default_format": fmt}
        params.update(dict(self.settings))
        params.update(settings or {})
        if query_id:
            params["query_id"] = query_id
        body = sql.encode()
        if data is not None:
            params["query"] = sql
            body = data
        return urllib.request.Request(
            f"{self.url}/?{urllib.parse.urlencode(params)}",
            data=body,
            method="POST",
            headers={"X-ClickHouse-User": self.user, "X-ClickHouse-Key": self.password},
        )

    @contextmanager
    def _open(self, req: urllib.request.Request) -> Iterator[Any]:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                yield resp
        except urllib.error.HTTPError as exc:
            code = int(exc.headers.get("X-ClickHouse-Exception-Code") or 0)
            text = exc.read().decode("utf-8", "replace").strip()
            raise ClickHouseError(code, text, self.endpoint) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClickHouseUnreachable(
                f"ClickHouse at {self.endpoint} did not answer within {self.timeout_s:g}s: {reason}"
            ) from None

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
