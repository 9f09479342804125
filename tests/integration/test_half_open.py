"""Half-open connections: a peer frozen with SIGSTOP keeps its sockets open and answers nothing
(a SIGKILL closes them cleanly, which is the kind case). Every run ends non-zero within a
documented bound (docs/config.md "Timeouts"), the lock is free afterwards, and after SIGCONT a
relaunch copies exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import psycopg2
import pytest
import yaml

from coldtier import cli
from helpers import ROOT, ChembedProcess, wait_until
from jobkit import assert_source_equals_sink, run_inprocess

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def lock_is_free(job, table: str) -> bool:
    conn = psycopg2.connect(job.postgres.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"coldtier/{job.pipeline}/{table}",))
            free = cur.fetchone()[0]
            if free:
                cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                            (f"coldtier/{job.pipeline}/{table}",))
            return bool(free)
    finally:
        conn.close()


@pytest.mark.parametrize("reader", ["jdbc", "native"])
def test_clickhouse_frozen_mid_read(job, spark, tmp_path, capsys, reader):
    """Either reader: the JDBC driver's socket_timeout, the Native reader's read timeout."""
    own = ChembedProcess(tmp_path / "own-ch", gate_dir=tmp_path / "gates").start()
    frozen = False
    try:
        job.chembed = own
        job.__post_init__()
        trades = job.trades()
        trades.bulk(5000)
        cfg = job.write_config([job.table_entry("frz", trades.table,
                                                batch={"num_partitions": 1, "reader": reader})])
        doc = yaml.safe_load(cfg.read_text())
        doc["sources"]["ch"]["read_timeout_s"] = 5
        cfg.write_text(yaml.safe_dump(doc))
        from chembed.server import Gates
        from coldtier.source import query_tag

        gate = own.gate_dir / Gates.name(query_tag(job.pipeline, "frz", 1))
        gate.with_suffix(".hold").touch()
        proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--config", str(cfg)], cwd=ROOT,
                                env=job.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: gate.with_suffix(".arrived").exists(), 180, "batch 1's read at the source")
        os.kill(own.proc.pid, signal.SIGSTOP)  # the host freezes: sockets open, nothing answers
        frozen = True
        gate.with_suffix(".hold").unlink()
        started = time.monotonic()
        _, err = proc.communicate(timeout=300)
        took = time.monotonic() - started
        print(f"half-open ClickHouse ({reader}): the run ended {took:.1f} s after the freeze (read_timeout_s 5)")
        assert proc.returncode == cli.EXIT_RUNTIME, err[-3000:]
        assert took < 120  # bound: read_timeout_s per attempt of the driver, plus Spark's teardown
        assert lock_is_free(job, "frz")
        os.kill(own.proc.pid, signal.SIGCONT)
        frozen = False
        code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
        assert code == 0, err
        assert progress[0]["recovered"] == "replayed" and sum(p["rows"] for p in progress) == 5000
        assert_source_equals_sink(job, spark, trades.table, job.target("frz"))
    finally:
        if frozen:
            os.kill(own.proc.pid, signal.SIGCONT)
        own.stop()


def postgres_processes(job) -> list[psutil.Process]:
    with open(os.path.join(job.postgres.datadir, "postmaster.pid")) as fh:
        postmaster = psutil.Process(int(fh.readline()))
    return [postmaster, *postmaster.children(recursive=True)]


def test_postgres_frozen_mid_batch(job, spark, capsys):
    """The ledger's PostgreSQL freezes while a batch streams: the run's next ledger statement
    (the fence check, the commit) gets no answer; it ends within the bound, not in ~15 minutes."""
    trades = job.trades()
    trades.bulk(5000)
    cfg = job.write_config([job.table_entry("pgf", trades.table, batch={"num_partitions": 1})])
    doc = yaml.safe_load(cfg.read_text())
    doc["ledger"].update({"connect_timeout_s": 2, "tcp_timeout_s": 3, "statement_timeout_s": 5})
    cfg.write_text(yaml.safe_dump(doc))
    from chembed.server import Gates
    from coldtier.source import query_tag

    gate = job.chembed.gate_dir / Gates.name(query_tag(job.pipeline, "pgf", 1))
    gate.with_suffix(".hold").touch()
    proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--config", str(cfg)], cwd=ROOT,
                            env=job.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs: list[psutil.Process] = []
    try:
        wait_until(lambda: gate.with_suffix(".arrived").exists(), 180, "batch 1's read at the source")
        procs = postgres_processes(job)
        for p in procs:
            p.suspend()  # SIGSTOP
        gate.with_suffix(".hold").unlink()
        started = time.monotonic()
        _, err = proc.communicate(timeout=600)
        took = time.monotonic() - started
        print(f"half-open PostgreSQL: the run ended {took:.1f} s after the freeze")
        assert proc.returncode in (cli.EXIT_RUNTIME, cli.EXIT_LOCK), err[-3000:]
        assert took < 180  # bound: (retries + 1) x (connect_timeout_s + tcp_timeout_s) + backoff
    finally:
        for p in procs:
            p.resume()
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: lock_is_free(job, "pgf"), 60, "the lock to be free")
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert sum(p["rows"] for p in progress) == 5000
    assert_source_equals_sink(job, spark, trades.table, job.target("pgf"))


@pytest.mark.parametrize("reader", ["jdbc", "native"])
def test_sigterm_while_a_read_hangs_cancels_after_the_grace(job, spark, capsys, reader):
    """The batch's read hangs at the source; SIGTERM asks the run to stop. After --stop-grace the
    batch's Spark job is cancelled: the run exits 0 in bounded time, the lock is free, the batch
    stays planned, and the relaunch copies it exactly once (either reader)."""
    trades = job.trades()
    trades.bulk(3000)
    cfg = job.write_config([job.table_entry("term", trades.table, batch={"num_partitions": 1, "reader": reader})])
    from chembed.server import Gates
    from coldtier.source import query_tag

    gate = job.chembed.gate_dir / Gates.name(query_tag(job.pipeline, "term", 1))
    gate.with_suffix(".hold").touch()
    proc = subprocess.Popen([sys.executable, "-m", "coldtier", "run", "--stop-grace", "3", "--config", str(cfg)],
                            cwd=ROOT, env=job.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: gate.with_suffix(".arrived").exists(), 180, "batch 1's read at the source")
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - started
    finally:
        gate.with_suffix(".hold").unlink(missing_ok=True)
        proc.kill()
    print(f"SIGTERM with a hung read: the run ended {took:.1f} s after the signal (grace 3 s)")
    assert proc.returncode == 0, err[-3000:]
    assert took < 60 and "was cancelled" in err and '"cancelled": true' in err
    assert lock_is_free(job, "term")
    conn = psycopg2.connect(job.postgres.dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT batch_id, status FROM coldtier.batches WHERE pipeline = %s", (job.pipeline,))
        assert cur.fetchall() == [(1, "planned")]
    conn.close()
    code, progress, err = run_inprocess(capsys, cfg, "--trigger", "available-now")
    assert code == 0, err
    assert [(p["batch_id"], p["rows"], p["recovered"]) for p in progress] == [(1, 3000, "replayed")]
    assert_source_equals_sink(job, spark, trades.table, job.target("term"))
