"""Ops artefacts that cannot run here are checked for what they must agree on: alert rules
(structure and promtool; tests/integration/test_prometheus.py evaluates them in a real server),
the Grafana dashboard, the docker-compose stack (``docker-compose config``) against
conf/compose.yaml, and the supervisor examples."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from coldtier import config as config_mod
from coldtier.config import MetricsConfig
from coldtier.metrics import RunMetrics
from helpers import ROOT

PROM = ROOT / "conf" / "prometheus"


def exported_names() -> set[str]:
    """Every series name coldtier's registry can export (counters with _total, histograms
    with their suffixes)."""
    m = RunMetrics(MetricsConfig(), "p")
    m.observe({"table": "t", "batch_id": 1, "rows": 1, "plan_s": 0.1, "total_s": 0.1, "source_lag_s": 1,
               "backlog_rows": 0, "ttl_margin_s": 5.0})
    m.failed("t", "write")
    m.last_run.labels("p").set(1)
    m.last_success.labels("p").set(1)
    return {s.name for f in m.registry.collect() for s in f.samples}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bcoldtier_[a-z_]+", expr))


def test_alert_rules_use_real_metrics_and_pass_promtool():
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = exported_names()
    assert {r["alert"] for r in rules} >= {"ColdtierSourceLagHigh", "ColdtierNoCommit", "ColdtierTTLMarginLow",
                                           "ColdtierRepeatedFailures"}
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
        used = metric_names(r["expr"])
        assert used and used <= names, f"{r['alert']}: {used - names} are not exported"
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: scripts/bootstrap.sh installs Debian's prometheus (as root)"
    check = subprocess.run([promtool, "check", "rules", str(PROM / "alerts.yml")], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", str(PROM / "alerts_test.yml")], capture_output=True,
                          text=True)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_grafana_dashboard_queries_real_metrics():
    dash = json.loads((ROOT / "docs" / "ops" / "grafana" / "coldtier-dashboard.json").read_text())
    names = exported_names()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    for e in exprs:
        assert metric_names(e) <= names, e
    provider = yaml.safe_load((ROOT / "conf" / "grafana" / "provisioning" / "dashboards" / "coldtier.yaml")
                              .read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/coldtier"


def test_compose_stack_matches_conf_compose():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"clickhouse", "postgres", "minio", "iceberg-rest", "spark-master", "spark-worker",
                             "pushgateway", "prometheus", "grafana", "coldtier"}
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image})"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name}: {src} does not exist"
    env = {k: "x" for k in services["coldtier"]["environment"]}
    cfg = config_mod.load(ROOT / "conf" / "compose.yaml", env)  # every ${VAR} is set by the service
    container_port = {"clickhouse": 8123, "postgres": 5432, "iceberg-rest": 8181, "minio": 9000,
                      "spark-master": 7077, "pushgateway": 9091}

    def check(url_host: str, url_port: int) -> None:
        assert url_host in services, f"{url_host} is not a compose service"
        assert container_port[url_host] == url_port
        ports = [p.split(":")[-1] for p in services[url_host].get("ports", [])]
        assert not ports or str(url_port) in ports

    host, port = re.search(r"//([^:/]+):(\d+)", cfg.sources["ch"].url).groups()
    check(host, int(port))
    check(re.search(r"host=(\S+)", cfg.ledger.dsn).group(1), int(re.search(r"port=(\d+)", cfg.ledger.dsn).group(1)))
    cat = cfg.catalogs["cold"]
    for url in (cat["uri"], cat["s3.endpoint"], cfg.spark.master, cfg.metrics.pushgateway):
        host, port = re.search(r"//([^:/]+):(\d+)", url).groups()
        check(host, int(port))
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["pushgateway:9091"]
    assert prom["scrape_configs"][0]["honor_labels"] is True


def _compose() -> list[str]:
    """Docker Compose v1 (Debian's docker-compose) or v2 (``docker compose``): both validate and
    interpolate a file without an engine."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    assert v1, "docker-compose is not installed: scripts/bootstrap.sh installs Debian's (as root)"
    return [v1]


def test_docker_compose_config_validates_and_agrees_with_conf_compose(tmp_path):
    """`docker-compose config` accepts the file and interpolates the secrets from the environment;
    conf/compose.yaml, loaded with the coldtier service's resolved environment, uses exactly the
    passwords the ClickHouse, PostgreSQL and MinIO services were given."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CH_PASSWORD": "ci-ch-9Fq", "PG_PASSWORD": "ci-pg-2Lw",
           "MINIO_USER": "ci-minio", "MINIO_PASSWORD": "ci-minio-7Zr"}
    done = subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]

    def environment(name: str) -> dict[str, str]:
        e = services[name].get("environment") or {}
        return dict(v.split("=", 1) for v in e) if isinstance(e, list) else {k: str(v) for k, v in e.items()}

    job_env = environment("coldtier")
    assert job_env["CH_PASSWORD"] == environment("clickhouse")["CLICKHOUSE_PASSWORD"] == "ci-ch-9Fq"
    assert job_env["PG_PASSWORD"] == environment("postgres")["POSTGRES_PASSWORD"] == "ci-pg-2Lw"
    assert job_env["AWS_ACCESS_KEY_ID"] == environment("minio")["MINIO_ROOT_USER"] == "ci-minio"
    cfg = config_mod.load(ROOT / "conf" / "compose.yaml", job_env)
    assert cfg.sources["ch"].password == "ci-ch-9Fq"
    assert "password=ci-pg-2Lw" in cfg.ledger.dsn
    assert cfg.catalogs["cold"]["s3.secret-access-key"] == environment("minio")["MINIO_ROOT_PASSWORD"]
    # a malformed file is refused by the same command, before any engine
    broken = tmp_path / "broken.yml"
    broken.write_text("services:\n  x:\n    image: busybox:1.36\n    ports: [\"not-a-port\"]\n")
    bad = subprocess.run([*_compose(), "-f", str(broken), "config", "-q"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert bad.returncode != 0


@pytest.mark.parametrize("name", ["airflow_dag.py", "prefect_flow.py"])
def test_supervisor_examples_compile_and_call_the_launcher(name):
    path = ROOT / "docs" / "ops" / "examples" / name
    subprocess.run([sys.executable, "-m", "py_compile", str(path)], check=True)
    text = path.read_text()
    assert '"scripts/spark-submit.sh"' in text or "scripts/spark-submit.sh" in text
    assert '"--trigger", "available-now"' in text and "rc == 3" in text


def test_systemd_and_cron_examples_honour_the_exit_code_contract():
    ex = ROOT / "docs" / "ops" / "examples"
    service = ex.joinpath("coldtier.service").read_text()
    assert "SuccessExitStatus=3" in service and "KillMode=mixed" in service and "Type=oneshot" in service
    assert "--trigger available-now" in service
    live = ex.joinpath("coldtier-live.service").read_text()
    assert "RestartPreventExitStatus=2 5 6" in live and "processing-time" in live
    assert "OnCalendar=*:0/15" in ex.joinpath("coldtier.timer").read_text()
    cron = ex.joinpath("coldtier.cron").read_text()
    assert "flock -n" in cron


@pytest.mark.parametrize(("exit_code", "busy", "logged"), [
    (0, False, False), (3, False, False), (4, False, True), (1, False, True), (0, True, False),
])
def test_cron_line_logs_only_real_failures(tmp_path, exit_code, busy, logged):
    """The cron entry's command, run by bash: coldtier's exit code 0 or 3, or a launch still
    running on the host (flock busy), log nothing; any other exit code is logged."""
    import fcntl

    line = next(ln for ln in (ROOT / "docs" / "ops" / "examples" / "coldtier.cron").read_text().splitlines()
                if ln.startswith("*/15"))
    command = line.split(None, 6)[6]  # after the five schedule fields and the user
    home = tmp_path / "home"
    (home / "scripts").mkdir(parents=True)
    launcher = home / "scripts" / "spark-submit.sh"
    launcher.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    launcher.chmod(0o755)
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "logger").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'logged'}\n")
    (shims / "logger").chmod(0o755)
    lock = tmp_path / "coldtier.lock"
    command = command.replace("/run/lock/coldtier.lock", str(lock)).replace("/var/log/coldtier", str(tmp_path))
    held = open(lock, "w")
    if busy:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        subprocess.run(["bash", "-c", command], env={"PATH": f"{shims}:/usr/bin:/bin", "COLDTIER_HOME": str(home)},
                       check=False, timeout=30)
    finally:
        held.close()
    assert (tmp_path / "logged").exists() is logged
