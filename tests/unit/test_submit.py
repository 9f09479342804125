"""The spark-submit command line: secrets never on it (``ps`` shows every argument)."""

import os
import stat
from pathlib import Path

from coldtier.submit import build_command, parse, redaction_regex

CONFIG = """\
pipeline: p
spark:
  master: local[2]
  conf: {spark.hadoop.fs.s3a.secret.key: "${S3_SECRET}", spark.executor.memory: 2g}
sources: {ch: {url: "jdbc:clickhouse://127.0.0.1:8123/default", password: "${CH_PW}"}}
ledger: {dsn: "host=127.0.0.1 dbname=x user=u password=${PG_PW}"}
catalogs:
  rest: {type: rest, uri: "http://127.0.0.1:8181", credential: "${REST_CRED}", header.X-Api-Key: "${API_KEY}"}
tables:
  - name: t
    source: {connection: ch, table: db.t}
    target: {catalog: rest, table: ns.t}
"""
ENV = {"S3_SECRET": "s3-Secret-Value-1", "CH_PW": "ch-Secret-2", "PG_PW": "pg-Secret-3",
       "REST_CRED": "client:rest-Secret-4", "API_KEY": "api-Secret-5", "COLDTIER_JARS_DIR": ""}


def test_no_secret_goes_on_the_command_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "x.jar").write_text("")
    env = {**os.environ, **ENV, "COLDTIER_JARS_DIR": str(jars)}
    for mode in ("client", "cluster"):
        args = parse(["--deploy-mode", mode, "--master", "yarn", "--conf", "spark.x.password=cli-Secret-6",
                      "jobs/offload.py", "run", "--config", str(cfg)])
        work = tmp_path / mode
        work.mkdir()
        cmd, secrets = build_command(args, Path(__file__).resolve().parents[2], env, work)
        line = " ".join(cmd)
        for value in [*ENV.values(), "cli-Secret-6"]:
            if value and not value.startswith("/"):
                assert value not in line, (mode, value)
        props = Path(cmd[cmd.index("--properties-file") + 1])
        assert "--load-spark-defaults" in cmd
        assert stat.S_IMODE(props.stat().st_mode) == 0o600
        text = props.read_text()
        assert "s3-Secret-Value-1" in text and "cli-Secret-6" in text and "executor.memory=2g" in text
        assert "s3-Secret-Value-1" in secrets and "cli-Secret-6" in secrets
        assert "credential" in text and "header" in text  # the redaction regex covers them


def test_redaction_regex_extends_spark_default_and_yours():
    assert redaction_regex(None) == r"(?i)secret|password|token|access[.]?key|credential|[.]header[.]|dsn"
    assert redaction_regex("(?i)mine").startswith("(?i)mine|credential")
    assert redaction_regex(redaction_regex(None)) == redaction_regex(None)
