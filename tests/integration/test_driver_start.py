"""A launch's driver JVM maps the class-data archive bootstrap trained (coldtier.cds): Spark's
classes come from it, not from parsing and verifying the jars again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coldtier import cds
from helpers import ROOT, launch_command_lines

pytestmark = pytest.mark.spark


def test_a_launch_maps_the_trained_archive(job, tmp_path):
    archive = cds.archive_path(ROOT)
    assert archive is not None and archive.is_file(), "make bootstrap trains it (python -m coldtier.cds)"
    cfg = job.write_config([job.table_entry("t", "unused")])
    loaded = tmp_path / "class-load.log"
    # only the class-load log of the caller's: the archive must come from coldtier itself
    env = {**job.env(), "SPARK_SUBMIT_OPTS": f"-Xlog:class+load=info:file={loaded}"}
    proc = subprocess.run([sys.executable, "-m", "coldtier", "sql", "--config", str(cfg), "SELECT 1 AS one"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].strip() == "one" and lines[2].strip() == "1", proc.stdout
    assert "cds" not in proc.stdout.lower() and "shared archive" not in proc.stderr.lower()
    log = loaded.read_text()
    for name in ("org.apache.spark.SparkContext", "org.apache.spark.sql.SparkSession",
                 "scala.collection.immutable.List"):
        [line] = [x for x in log.splitlines() if f" {name} source:" in x]
        assert "shared objects file (top)" in line, line


def test_a_plain_launch_keeps_secrets_off_the_command_line_and_errors_in_one_paragraph(job):
    """``coldtier sql`` (pyspark starts the JVM itself, passing every setting as --conf): the
    catalog's password reaches the catalog but no process's command line; a failed statement is
    one ``coldtier:`` paragraph, not PySpark's JSON error log with the JVM's stack."""
    job.catalog = "jdbc_cat"
    cfg = job.write_config([job.table_entry("t", "unused")])
    proc = subprocess.Popen([sys.executable, "-m", "coldtier", "sql", "--config", str(cfg),
                             f"SELECT * FROM jdbc_cat.{job.pipeline}.missing"],
                            env=job.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = launch_command_lines(proc, 300)
    out, err = proc.communicate(timeout=60)
    assert any("SparkSubmit" in line or "spark-submit" in line for line in lines), lines
    assert not [line for line in lines if job.postgres.password in line]
    assert proc.returncode == 6, err[-3000:]  # the table is missing: the catalog itself answered
    assert "TABLE_OR_VIEW_NOT_FOUND" in err and job.postgres.password not in out + err
    shown = [line for line in err.splitlines() if line.strip() and "incubator modules" not in line]
    assert len(shown) == 1 and shown[0].startswith("coldtier: schema problem"), err[-3000:]
