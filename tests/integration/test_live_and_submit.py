"""The job as users start it: through scripts/spark-submit.sh, live while rows arrive."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from helpers import CH_PASSWORD, ROOT, launch_command_lines
from jobkit import ch_fingerprint, live_feed, progress_lines, spark_fingerprint

pytestmark = pytest.mark.spark




class Submitted:
    """A spark-submit child whose output goes to files: a pipe nobody reads fills up and
    blocks the child (Spark logs a lot)."""

    def __init__(self, job, cfg, *args, new_session=False):
        self.out_path = job.tmp / f"submit-{id(self)}.out"
        self.err_path = job.tmp / f"submit-{id(self)}.err"
        self.proc = subprocess.Popen(
            [str(ROOT / "scripts" / "spark-submit.sh"), "jobs/offload.py", *args, "--config", str(cfg)],
            cwd=ROOT, env=job.env(), stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"),
            start_new_session=new_session)
        self.pid = self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    def kill(self):
        self.proc.kill()

    def communicate(self, timeout):
        self.proc.wait(timeout)
        return self.out_path.read_text(), self.err_path.read_text()


def driver_pid(root_pid):
    """The Python driver among spark-submit's descendants (short-lived helpers may be zombies)."""
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if "python" in p.name() and "jobs/offload.py" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            continue
    raise AssertionError("no Python driver process under spark-submit")


submit = Submitted


def test_print_only_masks_secrets(job):
    cfg = job.write_config([job.table_entry("x", "t")])
    out = subprocess.run([str(ROOT / "scripts" / "spark-submit.sh"), "--print-only", "--conf",
                          "spark.hadoop.fs.s3a.secret.key=TopSecret99", "--master", "local[2]",
                          "jobs/offload.py", "run", "--config", str(cfg)],
                         cwd=ROOT, env=job.env(), capture_output=True, text=True, check=True).stdout
    assert "--master 'local[2]'" in out
    # the pinned packages: by coordinates until a launch resolved them, then as those jars
    assert "--packages org.apache.iceberg:iceberg-spark-runtime-4.0_2.13:1.11.0" in out \
        or "iceberg-spark-runtime-4.0_2.13-1.11.0.jar" in out.split("--jars ")[1].split()[0]
    assert "--py-files" in out and "coldtier-lib-" in out
    assert "TopSecret99" not in out and "spark.hadoop.fs.s3a.secret.key=***" in out
    assert job.postgres.password not in out


def test_output_is_progress_on_stdout_and_coldtier_on_stderr(job, spark):
    """A run through the launcher prints its progress JSON on stdout and coldtier's own messages
    on stderr (spark-submit's PythonRunner would merge the driver's stderr into stdout); Spark
    logs at WARN, the JVM's banner, Ivy's resolution report and Spark's INFO lines are gone.
    ``--verbose`` brings Spark's log back; an error still goes to stderr."""
    import re

    job.client.execute(f"CREATE TABLE {job.database}.chatty (ts DateTime64(6), id UInt64, note String) "
                       f"ENGINE = MergeTree ORDER BY (ts, id)")
    job.client.execute(f"INSERT INTO {job.database}.chatty VALUES ('2026-01-01 00:00:00', 1, 'fine')")
    cfg = job.write_config([job.table_entry("chatty", "chatty", cursor={"timestamp_column": "ts",
                                                                        "incrementing_column": "id"})])
    env = {k: v for k, v in job.env().items() if k != "COLDTIER_SPARK_LOG_LEVEL"}
    launch = [str(ROOT / "scripts" / "spark-submit.sh"), "jobs/offload.py", "run", "--config", str(cfg),
              "--trigger", "available-now"]
    quiet = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert all(line.startswith("{") for line in quiet.stdout.splitlines()), quiet.stdout
    assert [p["rows"] for p in progress_lines(quiet.stdout) if "batch_id" in p] == [1]
    assert '"stopped_by_signal": false' in quiet.stderr  # the run's summary: coldtier's, on stderr
    for noise in ("Using incubator modules", "Ivy Default Cache", ":: resolving dependencies", "found ",
                  "Using Spark's default log4j profile", "NativeCodeLoader", "resolves to a loopback"):
        assert noise not in quiet.stderr, (noise, quiet.stderr[-3000:])
    spark_log = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (\w+) ", re.M)
    assert set(spark_log.findall(quiet.stderr)) <= {"WARN", "ERROR"}, quiet.stderr[-3000:]

    job.client.execute(f"INSERT INTO {job.database}.chatty VALUES ('2026-01-01 00:00:01', 2, unhex('61ff62'))")
    loud = subprocess.run([launch[0], "--verbose", *launch[1:]], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert loud.returncode == 6, loud.stderr[-3000:]
    assert "coldtier:" not in loud.stdout, loud.stdout[-3000:]
    errors = [line for line in loud.stderr.splitlines() if line.startswith("coldtier: data problem")]
    assert len(errors) == 1 and "column note of" in errors[0] and errors[0].endswith("(exit 6)")
    assert "INFO" in spark_log.findall(loud.stderr)  # --verbose: Spark's own log is back


def test_relaunch_with_nothing_to_do_starts_no_jvm(job, spark, capsys, tmp_path):
    """The launcher runs ``run`` ahead without Spark: a scheduled relaunch that finds nothing
    exits 0 without starting spark-submit, and still writes its metrics (the run, lag 0, backlog
    0: a quiet source must not look stalled); with rows to move it hands over; a failure the
    driver would meet ends there, with the driver's message and code, and no JVM."""
    from coldtier.lock import AdvisoryLock
    from jobkit import run_inprocess

    trades = job.trades()
    trades.bulk(1000)
    prom = tmp_path / "coldtier.prom"
    cfg = job.write_config([job.table_entry("noop", trades.table)], metrics={"textfile": str(prom)})
    code, _, err = run_inprocess(capsys, cfg)
    assert code == 0, err
    prom.unlink()
    fake_home = tmp_path / "spark"
    (fake_home / "bin").mkdir(parents=True)
    marker = tmp_path / "spark-submit-started"
    script = fake_home / "bin" / "spark-submit"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {marker}\nexit 99\n")
    script.chmod(0o755)
    env = {**job.env(), "SPARK_HOME": str(fake_home)}
    launch = [str(ROOT / "scripts" / "spark-submit.sh"), "jobs/offload.py", "run", "--config", str(cfg),
              "--trigger", "available-now"]
    time.sleep(2)  # the source's newest row is older now than at the last commit
    before = time.time()
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert progress_lines(done.stdout) == [{"pipeline": job.pipeline, "table": "noop", "rows": 0,
                                            "caught_up": True}]
    assert not marker.exists()
    series = {line.split(" ")[0]: float(line.split(" ")[1]) for line in prom.read_text().splitlines()
              if line and not line.startswith("#")}
    labels = f'pipeline="{job.pipeline}",table="noop"'
    assert series[f'coldtier_last_run_timestamp_seconds{{pipeline="{job.pipeline}"}}'] >= before
    assert series[f'coldtier_last_run_success{{pipeline="{job.pipeline}"}}'] == 1
    assert series[f"coldtier_source_lag_seconds{{{labels}}}"] == 0
    assert series[f"coldtier_backlog_rows{{{labels}}}"] == 0
    assert series[f"coldtier_last_batch_id{{{labels}}}"] == 1
    # failures the driver would meet: its message and exit code, and no JVM
    holder = AdvisoryLock(job.postgres.dsn, f"coldtier/{job.pipeline}/noop")
    holder.acquire()
    try:
        held = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        holder.release()
    assert held.returncode == 3 and "coldtier: lock held:" in held.stderr and not marker.exists(), held.stderr
    wrong = subprocess.run(launch, cwd=ROOT, env={**env, "TEST_CH_PASSWORD": "not-the-password"},
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 4 and "Authentication failed" in wrong.stderr and not marker.exists()
    good = cfg.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(job.write_config([job.table_entry("noop", trades.table,
                                                     cursor={"incrementing_column": "nope"})]).read_text())
    cfg.write_text(good)
    missing = subprocess.run([*launch[:4], str(bad), *launch[5:]], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 6 and "nope" in missing.stderr and not marker.exists(), missing.stderr
    usage = subprocess.run([*launch, "--max-batches", "many"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 2 and "--max-batches" in usage.stderr and not marker.exists()
    # rows to move, or a loop: handed over to spark-submit
    trades.bulk(10, end_ms_ago=1000)
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 99 and "jobs/offload.py run" in marker.read_text()
    marker.unlink()
    processing = [*launch[:-1], "processing-time=15s"]
    looped = subprocess.run(processing, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert looped.returncode == 99 and marker.exists()


@pytest.mark.slow
def test_live_feed_processing_time_then_drain(job, spark):
    """~200 rows/s arrive for 60 s while processing-time=2s runs through spark-submit; then
    SIGTERM (the batch in flight commits), stop the feed, drain with available-now."""
    trades = job.trades()
    trades.bulk(2000)
    cfg = job.write_config([job.table_entry("live", trades.table, cursor={"lag_s": 3},
                                            batch={"max_rows": 5000})])
    feed = live_feed(job, 60)
    runner = submit(job, cfg, "run", "--trigger", "processing-time=2s")
    try:
        assert feed.wait(120) == 0
        time.sleep(3)
        # SIGTERM goes to the Python driver (the JVM's child under spark-submit): it finishes
        # the batch in flight and exits 0. (A SIGTERM to the JVM stops Spark under it.)
        driver_pid(runner.pid).send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=120)
    finally:
        feed.kill()
        runner.kill()
    assert runner.returncode == 0, err[-3000:]
    live = [p for p in progress_lines(out) if "batch_id" in p]
    # what the loop guarantees, however busy the machine: batches one after another from 1, none
    # over max_rows (how many fit in 60 s is the machine's business, not the feature's)
    assert live and [p["batch_id"] for p in live] == list(range(1, len(live) + 1)), err[-3000:]
    assert all(0 < p["rows"] <= 5000 for p in live)
    time.sleep(4)  # the last rows age past the lag before the drain
    drain = submit(job, cfg, "run", "--trigger", "available-now")
    out, err = drain.communicate(timeout=300)
    assert drain.returncode == 0, err[-3000:]
    drained = [p for p in progress_lines(out) if "batch_id" in p]
    total = int(job.client.scalar(f"SELECT count() FROM {job.database}.{trades.table}"))
    assert total > 2000  # the feed ran
    assert sum(p["rows"] for p in live + drained) == total
    got = spark_fingerprint(spark.table(job.target("live")))
    assert got == ch_fingerprint(job.client, f"{job.database}.{trades.table}")
    assert got["keys"] == got["n"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["process-group", "launcher"])
def test_sigterm_commits_the_batch_in_flight_and_exits_0(job, spark, target):
    """processing-time under spark-submit; while batch 2's read is held at the source, SIGTERM
    goes to the whole process group (as systemd's default KillMode, Airflow or Ctrl-C do: the
    JVM gets it too) or to the launcher alone (systemd KillMode=mixed, ``kill PID``). The JVM
    keeps running, batch 2 commits, the lock is released, exit 0."""
    from chembed.server import Gates
    from coldtier.lock import AdvisoryLock
    from coldtier.source import query_tag
    from helpers import wait_until

    trades = job.trades()
    trades.bulk(3000)
    cfg = job.write_config([job.table_entry("term", trades.table)])
    gate = job.chembed.gate_dir / Gates.name(query_tag(job.pipeline, "term", 2))
    gate.with_suffix(".hold").touch()
    runner = submit(job, cfg, "run", "--trigger", "processing-time=1s", new_session=True)
    try:
        wait_until(lambda: '"batch_id":1' in runner.out_path.read_text() or runner.proc.poll() is not None,
                   180, "batch 1")
        trades.bulk(2000, end_ms_ago=1000)
        wait_until(lambda: gate.with_suffix(".arrived").exists(), 60, "batch 2's read")
        if target == "process-group":
            os.killpg(runner.pid, signal.SIGTERM)
        else:
            os.kill(runner.pid, signal.SIGTERM)
        time.sleep(3)
        assert runner.proc.poll() is None, "the signal must not stop the JVM under the batch in flight"
        released = time.monotonic()
        gate.with_suffix(".hold").unlink()
        out, err = runner.communicate(timeout=120)
        took = time.monotonic() - released
    finally:
        gate.with_suffix(".hold").unlink(missing_ok=True)
        runner.kill()
    assert runner.returncode == 0, err[-3000:]
    print(f"SIGTERM ({target}): exit 0 {took:.1f} s after the batch in flight was let go")
    assert [(p["batch_id"], p["rows"]) for p in progress_lines(out) if "batch_id" in p] == [(1, 3000), (2, 2000)]
    assert '"stopped_by_signal": true' in out + err
    lock = AdvisoryLock(job.postgres.dsn, f"coldtier/{job.pipeline}/term")
    lock.acquire(0)  # released: free at once
    lock.release()
    got = spark_fingerprint(spark.table(job.target("term")))
    assert got == ch_fingerprint(job.client, f"{job.database}.{trades.table}")


@pytest.mark.slow
def test_supervisor_relaunches_overlapping_while_rows_arrive(job, spark):
    """Plays supervisor: a launch every 4 s for a minute while ~200 rows/s arrive, launches
    overlapping (each run outlives the interval); every launch exits 0 (work done, or nothing
    to do) or 3 (another run holds the lock). Then drain: source == sink, no duplicates."""
    trades = job.trades()
    trades.bulk(5000)
    cfg = job.write_config([job.table_entry("sup", trades.table, cursor={"lag_s": 3},
                                            batch={"max_rows": 20_000})])
    feed = live_feed(job, 60)
    launches: list[Submitted] = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 60:
            launches.append(submit(job, cfg, "run", "--trigger", "available-now"))
            time.sleep(4)
        assert feed.wait(60) == 0
        codes = [run.proc.wait(300) for run in launches]
    finally:
        feed.kill()
        for run in launches:
            run.kill()
    assert set(codes) <= {0, 3}, [(c, r.err_path.read_text()[-1500:]) for c, r in zip(codes, launches, strict=True)
                                  if c not in (0, 3)]
    assert codes.count(3) >= 1 and codes.count(0) >= 1, codes  # overlap happened, and runs did the work
    committed = [p for r in launches for p in progress_lines(r.out_path.read_text()) if "batch_id" in p]
    assert sum(p["rows"] for p in committed) > 5000  # the launches moved rows that arrived meanwhile
    ids = [p["batch_id"] for p in committed]
    assert len(ids) == len(set(ids)), "a batch id was committed twice"
    print(f"supervisor: {len(launches)} launches, exit codes {codes}, {len(committed)} batches, "
          f"{sum(p['rows'] for p in committed)} rows while the feed ran")
    time.sleep(4)  # the last rows age past the lag
    drain = submit(job, cfg, "run", "--trigger", "available-now")
    _, err = drain.communicate(timeout=300)
    assert drain.returncode == 0, err[-3000:]
    got = spark_fingerprint(spark.table(job.target("sup")))
    assert got == ch_fingerprint(job.client, f"{job.database}.{trades.table}")
    assert got["keys"] == got["n"]
    fed = int(got["n"]) - 5000
    print(f"supervisor: {fed} rows fed while it ran (the feed is best effort on a loaded machine)")
    assert fed >= 60 * 200 * 0.25  # rows really arrived during the launches


def test_dev_services_start_status_stop(tmp_path):
    from helpers import free_port

    env = {**os.environ, "COLDTIER_DEV_DIR": str(tmp_path / "dev"), "COLDTIER_CH_PORT": str(free_port()),
           "COLDTIER_PG_PORT": str(free_port()), "COLDTIER_CH_PASSWORD": "devpw1",
           "COLDTIER_PG_PASSWORD": "devpw2", "TMPDIR": "/tmp"}
    script = str(ROOT / "scripts" / "dev-services.sh")
    try:
        start = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=180)
        assert start.returncode == 0, start.stderr
        assert f"http://127.0.0.1:{env['COLDTIER_CH_PORT']}" in start.stdout
        again = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=60)
        assert "already running" in again.stdout
        assert subprocess.run([script, "status"], env=env, capture_output=True).returncode == 0
        from coldtier.clickhouse_http import ClickHouseHTTP

        ch = ClickHouseHTTP(f"http://127.0.0.1:{env['COLDTIER_CH_PORT']}", "default", "devpw1")
        assert ch.scalar("SELECT toDateTime64('2026-01-02 03:04:05.678',3,'UTC')") == "2026-01-02 03:04:05.678"
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=int(env["COLDTIER_PG_PORT"]), user="coldtier",
                                password="devpw2", dbname="coldtier")
        conn.close()
    finally:
        stop = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert subprocess.run([script, "status"], env=env, capture_output=True).returncode == 1


@pytest.mark.slow
def test_no_secret_on_any_command_line_log_or_event_log(job, spark):
    """YAML spark.conf secrets, REST-style catalog credentials and the source's password (read by
    either reader: the JDBC driver's properties, the Native reader's options): never in a process's
    command line (ps), the launcher's output, or Spark's event log (what the UI's Environment and
    SQL tabs show: settings, plans, scan descriptions)."""
    import yaml

    trades = job.trades()
    trades.bulk(500)
    cfg = job.write_config([job.table_entry("sec", trades.table),
                            job.table_entry("sec_native", trades.table, batch={"reader": "native"})])
    events = job.tmp / "events"
    events.mkdir()
    doc = yaml.safe_load(cfg.read_text())
    doc["spark"]["conf"].update({"spark.hadoop.fs.s3a.secret.key": "${TEST_S3_SECRET}",
                                 "spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{events}",
                                 "spark.eventLog.compress": "false"})  # readable, so the check is real
    # a hadoop catalog ignores these; a REST catalog would send them: they must be redacted anyway
    doc["catalogs"][job.catalog].update({"credential": "${TEST_REST_CREDENTIAL}",
                                         "header.X-Api-Key": "${TEST_API_KEY}"})
    cfg.write_text(yaml.safe_dump(doc))
    secrets = {"TEST_S3_SECRET": "s3-Top-Secret-817", "TEST_REST_CREDENTIAL": "client:rest-Secret-412",
               "TEST_API_KEY": "api-Key-Secret-95"}
    env = {**job.env(), **secrets}
    out_path, err_path = job.tmp / "sec.out", job.tmp / "sec.err"  # files: a full pipe would block it
    proc = subprocess.Popen([str(ROOT / "scripts" / "spark-submit.sh"), "jobs/offload.py", "run", "--config",
                             str(cfg)], cwd=ROOT, env=env, stdout=open(out_path, "w"), stderr=open(err_path, "w"))
    lines = launch_command_lines(proc, 600)  # every process of the launch
    proc.wait(60)
    out, err = out_path.read_text(), err_path.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert any("spark-submit" in c or "SparkSubmit" in c for c in lines) and len(lines) >= 3
    logs = "\n".join(p.read_text(errors="replace") for p in events.rglob("*") if p.is_file())
    assert "spark.hadoop.fs.s3a.secret.key" in logs  # the event log holds the settings, redacted
    assert "ClickHouseNative[" in logs and "JDBCRelation" in logs  # and both readers' plans
    for value in [*secrets.values(), job.postgres.password, CH_PASSWORD]:
        for where, text in (("a command line", "\n".join(lines)), ("stdout", out), ("stderr", err),
                            ("the event log", logs)):
            assert value not in text, f"{value!r} in {where}"
