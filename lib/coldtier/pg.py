"""PostgreSQL connections with every wait bounded (the ledger's and the lock's).

- ``connect_timeout``: connecting;
- client keepalives and ``tcp_user_timeout``: a peer that vanished (host frozen, network cut,
  failover) is noticed within ``tcp_timeout_s`` instead of the kernel's ~15 minutes;
- the same keepalives on the server side (``-c tcp_keepalives_*``, ``tcp_user_timeout``): a
  session a NAT dropped silently ends on the server too, and with it its advisory lock;
- ``statement_timeout``: no statement waits on the server longer than ``statement_timeout_s``;
- ``deadline``: a client-side bound on each round trip, for a server process that is frozen.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg2


def connect_args(connect_timeout_s: float, statement_timeout_s: float,
                 tcp_timeout_s: float) -> dict[str, Any]:
    tcp = max(1, int(tcp_timeout_s))
    idle, interval, count = max(1, tcp // 3), max(1, tcp // 6), 3
    server = (f"-c statement_timeout={int(statement_timeout_s * 1000)} -c tcp_keepalives_idle={idle} "
              f"-c tcp_keepalives_interval={interval} -c tcp_keepalives_count={count} "
              f"-c tcp_user_timeout={tcp * 1000}")
    return {"connect_timeout": max(1, int(connect_timeout_s)), "keepalives": 1, "keepalives_idle": idle,
            "keepalives_interval": interval, "keepalives_count": count, "tcp_user_timeout": tcp * 1000,
            "options": server}


def connect(dsn: str, application_name: str, connect_timeout_s: float = 10.0,
            statement_timeout_s: float = 60.0, tcp_timeout_s: float = 30.0) -> Any:
    return psycopg2.connect(dsn, application_name=application_name,
                            **connect_args(connect_timeout_s, statement_timeout_s, tcp_timeout_s))


@contextmanager
def deadline(conn: Any, seconds: float) -> Iterator[None]:
    """Bound one round trip on the client side. A server *process* that is frozen (SIGSTOP, a
    stalled VM) leaves its kernel answering TCP, so neither keepalives nor ``tcp_user_timeout``
    fire, and libpq has no read timeout: past ``seconds`` the connection's socket is shut down,
    which makes the waiting call fail at once (psycopg2.OperationalError)."""
    def cut() -> None:
        with suppress(OSError, ValueError):
            sock = socket.socket(fileno=os.dup(conn.fileno()))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
