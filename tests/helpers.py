"""Test helpers: processes the tests start, and the data checks they share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import port_for

from coldtier.clickhouse_http import ClickHouseHTTP

ROOT = Path(__file__).resolve().parents[1]
CH_PASSWORD = "ch-Test-Secret-7f3a"
PG_PASSWORD = "pg-Test-Secret-91c2"
CH_DRIVER = "com.clickhouse.jdbc.ClickHouseDriver"


def free_port() -> int:
    return int(port_for.select_random())


def launch_command_lines(proc: subprocess.Popen, timeout: float) -> list[str]:
    """Every distinct command line of ``proc`` and its descendants, sampled until it ends (or
    ``timeout`` passes): where a secret must never appear."""
    import psutil

    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            break
        for p in procs:
            try:
                line = " ".join(p.cmdline())
            except psutil.Error:
                continue  # it ended between the listing and the read
            if line not in seen:
                seen.append(line)
        time.sleep(0.1)
    return seen


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class ChembedProcess:
    """The embedded ClickHouse server in a child process of the test run."""

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    gate_dir: Path | None = None  # test-only fault gates (chembed.server.Gates)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:clickhouse://127.0.0.1:{self.port}/default"

    def client(self, database: str = "default") -> ClickHouseHTTP:
        return ClickHouseHTTP(self.http_url, "default", CH_PASSWORD, database)

    def jdbc_options(self) -> dict[str, str]:
        return {"url": self.jdbc_url, "driver": CH_DRIVER, "user": "default",
                "password": CH_PASSWORD}

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/ping", timeout=1) as r:
                return r.read() == b"Ok.\n"
        except OSError:
            return False

    def start(self) -> ChembedProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.gate_dir:
            self.gate_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.log_path = self.data_dir.parent / f"chembed-{self.port}.log"
        env = {**os.environ, "CHEMBED_PASSWORD": CH_PASSWORD,
               "PYTHONPATH": str(ROOT / "lib")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chembed", "--data-dir", str(self.data_dir),
             "--port", str(self.port),
             *(["--gate-dir", str(self.gate_dir)] if self.gate_dir else [])],
            env=env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self.ping() or self.proc.poll() is not None, 60, "chembed /ping")
        if self.proc.poll() is not None:
            raise RuntimeError(f"chembed exited: {self.log_path.read_text()[-2000:]}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)
