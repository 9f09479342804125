"""spark-submit where users run it: a Spark standalone cluster the test starts itself (a
Master and one Worker on 127.0.0.1, 2 cores), with the jars shipped by --jars from a
directory filled by scripts/fetch-jars.sh, as on a cluster without internet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg2
import pyspark
import pytest

from helpers import CH_PASSWORD, ROOT, free_port, wait_until
from jobkit import assert_source_equals_sink, progress_lines

pytestmark = pytest.mark.spark

SPARK_CLASS = str(Path(pyspark.__file__).parent / "bin" / "spark-class")


@pytest.fixture(scope="module")
def jars_dir(tmp_path_factory):
    """The pinned jars, fetched once into a directory (scripts/fetch-jars.sh)."""
    d = tmp_path_factory.mktemp("jars")
    done = subprocess.run([str(ROOT / "scripts" / "fetch-jars.sh"), str(d)], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in d.glob("*.jar"))
    assert any(n.startswith("org.apache.iceberg_iceberg-spark-runtime") for n in names)
    assert any(n.startswith("com.clickhouse_clickhouse-jdbc") for n in names)
    return d


class Standalone:
    def __init__(self, base: Path):
        self.port, self.web = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "512m",
               "SPARK_WORKER_DIR": str(base / "work"), "PYSPARK_PYTHON": sys.executable}
        self.logs = [base / "master.log", base / "worker.log"]
        self.procs = [
            subprocess.Popen([SPARK_CLASS, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                              "--port", str(self.port), "--webui-port", str(self.web)],
                             env=env, stdout=open(self.logs[0], "w"), stderr=subprocess.STDOUT),
            subprocess.Popen([SPARK_CLASS, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                              "--cores", "2", "--memory", "3g", "--webui-port", str(free_port()), self.url],
                             env=env, stdout=open(self.logs[1], "w"), stderr=subprocess.STDOUT),
        ]
        wait_until(lambda: self.state().get("aliveworkers", 0) >= 1, 120, "a Spark worker registered")

    def state(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/json/", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return {}

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            p.wait(30)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    cluster = Standalone(tmp_path_factory.mktemp("standalone"))
    yield cluster
    cluster.stop()


def submit(job, cfg, *args, jars_dir=None, timeout=600):
    env = {**job.env(), **({"COLDTIER_JARS_DIR": str(jars_dir)} if jars_dir else {})}
    return subprocess.run([str(ROOT / "scripts" / "spark-submit.sh"), *args, "jobs/offload.py", "run",
                           "--config", str(cfg), "--trigger", "available-now"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_offload_on_a_standalone_cluster_in_client_mode(job, spark, standalone, jars_dir):
    trades = job.trades()
    trades.bulk(300_000)
    cfg = job.write_config([job.table_entry("sa", trades.table, batch={"max_rows": 100_000})],
                           spark={"master": standalone.url, "deploy_mode": "client",
                                  "conf": {"spark.executor.memory": "1g", "spark.executor.cores": "2",
                                           "spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false"}})
    done = submit(job, cfg, jars_dir=jars_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [p["rows"] for p in progress_lines(done.stdout) if "batch_id" in p] == [100_000] * 3
    assert_source_equals_sink(job, spark, trades.table, job.target("sa"))
    apps = [a for a in standalone.state()["completedapps"] if a["name"] == f"coldtier-{job.pipeline}"]
    assert len(apps) == 1 and apps[0]["cores"] == 2  # the executors ran on the cluster's worker


@pytest.fixture(scope="module")
def mini_yarn(tmp_path_factory):
    """A MiniYARNCluster (tests/mini_yarn.py), jars from conf/dependencies.yaml's test_packages."""
    import yaml

    from coldtier import deps

    coords = yaml.safe_load((ROOT / "conf" / "dependencies.yaml").read_text())["test_packages"]["yarn_minicluster"]
    jars = tmp_path_factory.mktemp("yarn-jars")
    deps.fetch(jars, coords)
    work = tmp_path_factory.mktemp("yarn")
    log = open(work / "mini_yarn.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mini_yarn.py"), str(jars), str(work)],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: (work / "ready").exists() or proc.poll() is not None, 180, "MiniYARNCluster")
    assert proc.poll() is None, (work / "mini_yarn.log").read_text()[-3000:]
    yield work
    proc.terminate()
    proc.wait(60)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["client", "cluster"])
def test_offload_on_yarn(job, spark, mini_yarn, mode):
    """Through scripts/spark-submit.sh to YARN (a MiniYARNCluster): in client mode the driver
    runs here, in cluster mode inside the ApplicationMaster's container, with the YAML shipped
    by --files and its ${VAR}s in a private env file, never on a command line."""
    trades = job.trades()
    trades.bulk(50_000)
    spark_jars = Path(pyspark.__file__).parent / "jars"
    cfg = job.write_config([job.table_entry("y", trades.table, batch={"max_rows": 20_000})],
                           spark={"master": "yarn", "deploy_mode": mode, "conf": {
                               "spark.yarn.jars": f"local:{spark_jars}/*", "spark.executor.instances": "1",
                               "spark.executor.cores": "2", "spark.executor.memory": "1g",
                               "spark.driver.memory": "1g", "spark.yarn.am.memory": "512m",
                               "spark.ui.enabled": "false"}})
    env = {**job.env(), "HADOOP_CONF_DIR": str(mini_yarn / "conf")}
    done = subprocess.run([str(ROOT / "scripts" / "spark-submit.sh"), "jobs/offload.py", "run", "--config",
                           str(cfg), "--trigger", "available-now"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "final status: SUCCEEDED" in done.stderr or mode == "client"
    assert_source_equals_sink(job, spark, trades.table, job.target("y"))
    with psycopg2.connect(job.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT batch_id, rows FROM coldtier.batches WHERE pipeline = %s AND status = 'committed' "
                    "ORDER BY 1", (job.pipeline,))
        assert cur.fetchall() == [(1, 20_000), (2, 20_000), (3, 10_000)]
    if mode == "client":
        batches = [p for p in progress_lines(done.stdout) if "batch_id" in p]
    else:  # the driver's stdout is the ApplicationMaster container's log
        app = re.search(r"application_\d+_\d+", done.stderr).group(0)
        logs = [p for p in mini_yarn.rglob("stdout") if app in str(p)]
        batches = [p for f in logs for p in progress_lines(f.read_text()) if "batch_id" in p]
        for f in mini_yarn.rglob("*"):
            if app in str(f) and f.is_file() and f.suffix != ".jar":
                text = f.read_text(errors="replace")
                assert job.postgres.password not in text and CH_PASSWORD not in text, f
    assert [p["rows"] for p in batches] == [20_000, 20_000, 10_000]
    assert job.postgres.password not in done.stdout + done.stderr and CH_PASSWORD not in done.stdout + done.stderr


def test_cluster_mode_on_standalone_is_refused_before_launch(job):
    cfg = job.write_config([job.table_entry("cm", "t")])
    done = submit(job, cfg, "--master", "spark://127.0.0.1:7077", "--deploy-mode", "cluster")
    assert done.returncode == 2
    assert "client mode only" in done.stderr and "docs/deploy.md" in done.stderr
    assert done.stderr.count("\n") == 1  # one paragraph


def test_yaml_packages_join_the_pinned_ones_and_cli_conf_wins(job):
    cfg = job.write_config([job.table_entry("pk", "t")],
                           spark={"master": "yarn", "deploy_mode": "cluster",
                                  "conf": {"spark.jars.packages": "org.apache.iceberg:iceberg-aws-bundle:1.11.0",
                                           "spark.executor.instances": "4", "spark.executor.memory": "2g"}})
    done = subprocess.run([str(ROOT / "scripts" / "spark-submit.sh"), "--print-only", "--conf",
                           "spark.executor.instances=8", "jobs/offload.py", "run", "--config", str(cfg)],
                          cwd=ROOT, env=job.env(), capture_output=True, text=True, check=True)
    out = done.stdout
    command, settings = out.splitlines()[0], out.splitlines()[2:]  # the command, then its properties file
    assert "--master yarn --deploy-mode cluster" in command
    assert "org.apache.iceberg:iceberg-spark-runtime-4.0_2.13:1.11.0,com.clickhouse:clickhouse-jdbc:0.10.0," in command
    assert ",org.apache.iceberg:iceberg-aws-bundle:1.11.0 " in command and "spark.jars.packages" not in out
    assert "--properties-file " in command and "--load-spark-defaults" in command and " --conf " not in command
    assert "spark.executor.instances=8" in settings and "spark.executor.instances=4" not in out
    assert f"--files {cfg}," in command and "coldtier-env.json" in command
    assert command.endswith(f"--config {cfg.name}")
    assert "spark.yarn.appMasterEnv.COLDTIER_ENV_FILE=coldtier-env.json" in settings
