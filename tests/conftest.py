"""Shared, session-scoped services: one embedded ClickHouse, one PostgreSQL, one Spark.

Every integration test uses these same processes (started once per run); tests that
must kill or restart a service start their own instance.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from pytest_postgresql.executors.proc import PostgreSQLExecutor

from coldtier import cds, deps
from coldtier.spark import build_session, iceberg_catalog_conf
from helpers import CH_PASSWORD, PG_PASSWORD, ROOT, ChembedProcess, free_port, wait_until

# The class-data archive bootstrap trained (coldtier.cds) is mapped by the shared session too
# (the drivers that coldtier itself launches add it on their own; jobkit.c1_only adds C1 for them).
os.environ.setdefault("SPARK_SUBMIT_OPTS", cds.java_options(ROOT))


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    datadir: str = ""

    @property
    def dsn(self) -> str:
        return (f"host={self.host} port={self.port} user={self.user} "
                f"password={self.password} dbname={self.dbname}")

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.dbname}"

    def connect(self):
        return psycopg2.connect(self.dsn)

    def create_database(self, name: str) -> Postgres:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return Postgres(self.host, self.port, self.user, self.password, name, self.datadir)


@pytest.fixture(scope="session")
def chembed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChembedProcess]:
    base = tmp_path_factory.mktemp("chembed")
    server = ChembedProcess(base / "data", gate_dir=base / "gates").start()
    yield server
    server.stop()


def _pg_base_dir() -> Path:
    # Not under pytest's tmp dirs: those are private to root, and PostgreSQL runs unprivileged.
    base = Path(tempfile.mkdtemp(prefix="coldtier-test-pg-"))
    base.chmod(0o755)
    return base


def _accepts(pg: Postgres) -> bool:
    try:
        psycopg2.connect(pg.dsn, connect_timeout=5).close()
        return True
    except psycopg2.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    base = _pg_base_dir()
    port = free_port()
    executor = PostgreSQLExecutor(
        executable=str(ROOT / "scripts" / "pg_ctl"),
        host="127.0.0.1",
        port=port,
        datadir=str(base / "data"),
        unixsocketdir=str(base),
        logfile=str(base / "postgres.log"),
        startparams="-w",
        dbname="coldtier",
        user="coldtier",
        password=PG_PASSWORD,
        postgres_options="-c listen_addresses=127.0.0.1",
    )
    executor.start()
    pg = Postgres("127.0.0.1", port, "coldtier", PG_PASSWORD, "postgres", str(base / "data"))
    wait_until(lambda: _accepts(pg), 120, "PostgreSQL to accept connections")  # not just "starting up"
    pg = pg.create_database("coldtier")
    yield pg
    executor.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("warehouse")


@pytest.fixture(scope="session")
def spark(warehouse: Path, postgres: Postgres):
    """One local[2] session for the whole run, with two Iceberg catalogs:
    ``hadoop_cat`` (a warehouse directory) and ``jdbc_cat`` (stored in PostgreSQL)."""
    conf = {
        "spark.jars.packages": deps.load().packages_arg,
        "spark.jars": str(deps.native_jar(deps.repo_root())),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.driver.memory": "2g",
    }
    conf.update(iceberg_catalog_conf("hadoop_cat", {"type": "hadoop",
                                                   "warehouse": str(warehouse / "hadoop")}))
    conf.update(iceberg_catalog_conf("jdbc_cat", {
        "type": "jdbc", "uri": postgres.jdbc_url, "jdbc.user": postgres.user,
        "jdbc.password": postgres.password, "warehouse": str(warehouse / "jdbc"),
        "jdbc.schema-version": "V1",
    }))
    session = build_session("coldtier-tests", conf, master="local[2]")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def job(request, chembed, postgres, warehouse, tmp_path, spark, monkeypatch):
    """An isolated pipeline on the shared services, its secrets in the environment. Its sink is
    Iceberg unless a test parametrizes it: ``@pytest.mark.parametrize("job", SINKS, indirect=True)``."""
    from jobkit import JobEnv

    env = JobEnv(chembed, postgres, warehouse, tmp_path, sink=getattr(request, "param", "iceberg"))
    for k, v in env.env().items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture(scope="session")
def ch(chembed: ChembedProcess):
    return chembed.client()


__all__ = ["CH_PASSWORD", "PG_PASSWORD"]
