"""SparkSession construction shared by the jobs and the tests."""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from coldtier.jvm import jclass

if TYPE_CHECKING:
    from coldtier.config import AppConfig

T = TypeVar("T")

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
DELTA_EXTENSIONS = "io.delta.sql.DeltaSparkSessionExtension"
SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"
ALL_FILES_IN_CRC = "spark.databricks.delta.allFilesInCrc.enabled"


def base_conf() -> dict[str, str]:
    """Settings every coldtier session gets; YAML's ``spark.conf`` overrides them."""
    return {
        "spark.sql.extensions": f"{ICEBERG_EXTENSIONS},{DELTA_EXTENSIONS}",
        # Delta path tables (delta.`/path`) resolve through the session catalog
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        # tables run concurrently (run.max_concurrent_tables), each in a pool of its own: a big
        # backfill shares the executors fairly with the live tables instead of queueing them
        "spark.scheduler.mode": "FAIR",
        # The ClickHouse driver reports String columns with precision 0, which Spark reads
        # as varchar(0); writing those to Iceberg then fails plan validation. ClickHouse
        # strings have no length: read them as plain strings.
        "spark.sql.legacy.charVarcharAsString": "true",
        # Spark's default redaction plus the secrets of Iceberg REST catalogs (credential,
        # header.*) and DSNs: hidden in the UI's Environment tab and the event log
        "spark.redaction.regex": "(?i)secret|password|token|access[.]?key|credential|[.]header[.]|dsn",
        # Delta 4.0 keeps the list of a small table's files (under 50) in each commit's checksum
        # file, and when the JVM's or the session's time zone is not UTC it verifies that list by
        # a second full rebuild of the table's state on every commit. The list only serves that
        # verification: off, a non-UTC host commits as a UTC one does (a 3K-row batch 3.4-3.9 s
        # -> 3.0-3.3 s on a fresh table here, docs/tuning.md)
        ALL_FILES_IN_CRC: "false",
    }


# Setting names that carry secrets (a catalog's jdbc.password, S3 keys, REST credentials and
# headers, DSNs): never on a command line, hidden in the UI by ``spark.redaction.regex``
SECRET_CONF = ("password", "secret", "token", "access.key", "credential", ".header.", "dsn")


def secret_conf(key: str) -> bool:
    return any(s in key.lower() for s in SECRET_CONF)


def write_properties(conf: Mapping[str, str], directory: Path) -> Path:
    """Spark settings as a 0600 properties file for ``--properties-file``."""
    path = directory / "coldtier-spark.properties"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for k, v in conf.items():
            fh.write(f"{_prop_escape(k)}={_prop_escape(v)}\n")
    return path


def _prop_escape(text: str) -> str:
    """java.util.Properties escaping (Spark reads the file with it)."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("=", "\\=") \
        .replace(":", "\\:").replace("#", "\\#").replace("!", "\\!")
    return out.replace(" ", "\\ ") if out.startswith(" ") else out


# SQLSTATEs of a PostgreSQL that restarted under a pooled connection (admin/crash shutdown,
# starting up, cannot connect): the Iceberg JDBC catalog reconnects and retries on these too
PG_RECONNECT_STATES = "57P01,57P02,57P03,08001"


# What a quiet run (the launcher's; `sql` and `shell`) keeps from Spark's log: WARN and above,
# less these loggers' warnings, which say nothing a coldtier user can act on (native Hadoop
# libraries absent; the host name resolving to a loopback address and port retries; a
# deprecation inside Iceberg's own manifest reading)
QUIET_LOGGERS = ("org.apache.hadoop.util.NativeCodeLoader", "org.apache.spark.util.Utils",
                 "org.apache.iceberg.ManifestReader",
                 # "pool <table> has not been configured ... created with default configuration": coldtier
                 # gives each table a FAIR pool of its own, on purpose
                 "org.apache.spark.scheduler.FairSchedulableBuilder")


def write_log4j(directory: Path) -> Path:
    """A log4j2 configuration for a quiet run: Spark at WARN on stderr, ``QUIET_LOGGERS`` at ERROR,
    and in YARN cluster mode the application's final report (``final status: SUCCEEDED``,
    the tracking URL): the driver's own output is in the container logs then."""
    layout = "%d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex"
    lines = ["rootLogger.level = warn", "rootLogger.appenderRef.stderr.ref = console"]
    for name, extra in (("console", []), ("final", [
            "filter.status.type = RegexFilter", "filter.status.regex = (?s).*final status: (?!UNDEFINED).*",
            "filter.status.onMatch = ACCEPT", "filter.status.onMismatch = DENY"])):
        lines += [f"appender.{name}.{line}" for line in (
            "type = Console", f"name = {name}", "target = SYSTEM_ERR", "layout.type = PatternLayout",
            f"layout.pattern = {layout}", *extra)]
    yarn = "logger.yarnclient"
    lines += [f"{yarn}.name = org.apache.spark.deploy.yarn.Client", f"{yarn}.level = info",
              f"{yarn}.additivity = false", f"{yarn}.appenderRef.warn.ref = console",
              f"{yarn}.appenderRef.warn.level = warn", f"{yarn}.appenderRef.final.ref = final"]
    for i, name in enumerate(QUIET_LOGGERS):
        lines += [f"logger.quiet{i}.name = {name}", f"logger.quiet{i}.level = error"]
    path = directory / "coldtier-log4j2.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def iceberg_catalog_conf(name: str, props: Mapping[str, str]) -> dict[str, str]:
    """``spark.sql.catalog.<name>`` settings for an Iceberg catalog. A JDBC catalog on
    PostgreSQL also retries, once on a fresh connection, the errors of a PostgreSQL restart
    (``retryable_status_codes``; Iceberg's own list has only 08000/08003/08006/08007/40001)."""
    conf = {f"spark.sql.catalog.{name}": "org.apache.iceberg.spark.SparkCatalog"}
    if props.get("type") == "jdbc" and str(props.get("uri", "")).startswith("jdbc:postgresql:"):
        conf[f"spark.sql.catalog.{name}.retryable_status_codes"] = PG_RECONNECT_STATES
    conf.update({f"spark.sql.catalog.{name}.{k}": str(v) for k, v in props.items()})
    return conf




def delta_conf(conf: Mapping[str, str]) -> dict[str, str]:
    """The Delta settings coldtier changes, less those ``conf`` (the YAML) sets itself.

    - Delta rebuilds a table's state from its log for every commit, in ``SNAPSHOT_PARTITIONS``
      tasks (50 by default): for a batch of a few thousand rows, 50 near-empty tasks per commit
      (1.9 s per one-row batch here, 1.0 s with 2). It follows ``spark.sql.shuffle.partitions``
      when the YAML sets that. (Fixed Delta settings are in ``base_conf``.)"""
    width = conf.get("spark.sql.shuffle.partitions")
    return {SNAPSHOT_PARTITIONS: width} if width is not None and SNAPSHOT_PARTITIONS not in conf else {}


def build_session(app_name: str, conf: Mapping[str, str], master: str | None = None):  # noqa: ANN201
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = {**base_conf(), **conf}
    settings.update(delta_conf(settings))
    secrets = {k: v for k, v in settings.items() if secret_conf(k)}
    for k, v in settings.items():
        if k not in secrets:
            builder = builder.config(k, v)
    from pyspark import SparkContext

    if not secrets or "PYSPARK_GATEWAY_PORT" in os.environ or SparkContext._gateway is not None:
        # the JVM runs already (spark-submit, or an earlier session): the settings reach it
        # through py4j, never a command line
        for k, v in secrets.items():
            builder = builder.config(k, v)
        return builder.getOrCreate()
    # pyspark starts the JVM with spark-submit and passes every builder setting as --conf on
    # its command line, where `ps` shows it to every user: the secrets go in a 0600
    # properties file instead, read once at the JVM's start and removed after it
    with tempfile.TemporaryDirectory(prefix="coldtier-conf-") as d:
        props = write_properties(secrets, Path(d))
        before = os.environ.get("PYSPARK_SUBMIT_ARGS")
        os.environ["PYSPARK_SUBMIT_ARGS"] = \
            f"--properties-file {shlex.quote(str(props))} --load-spark-defaults {before or 'pyspark-shell'}"
        try:
            return builder.getOrCreate()
        finally:
            if before is None:
                os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
            else:
                os.environ["PYSPARK_SUBMIT_ARGS"] = before


def shield_jvm_from_stop_signals(spark) -> None:  # noqa: ANN001
    """Make the driver JVM ignore SIGTERM and SIGINT.

    A supervisor stopping the job signals the whole process group or cgroup (systemd,
    Airflow, Ctrl-C): the JVM would run its shutdown hooks and stop the SparkContext under
    the batch in flight. The Python driver handles the signal instead (finish the batch,
    commit, release the lock, exit 0), and the JVM exits when the driver does. SIGKILL
    still ends everything at once; exactly-once holds either way.
    """
    signal, handler = jclass(spark, "sun.misc.Signal"), jclass(spark, "sun.misc.SignalHandler")
    for name in ("TERM", "INT"):
        signal.handle(signal(name), handler.SIG_IGN)


def session_for(cfg: AppConfig) -> Any:
    """The SparkSession of a config: its catalogs and Spark settings; under spark-submit the
    master and jars come from the command line, in a plain ``python -m coldtier`` from here."""
    from coldtier import cds, deps

    conf: dict[str, str] = {}
    for name, props in cfg.catalogs.items():
        conf.update(iceberg_catalog_conf(name, props))
    conf.update(cfg.spark.conf)
    master = None  # under spark-submit the master comes from its command line
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain `python -m coldtier run|sql|shell`
        root = deps.repo_root()
        ivy = {k: v for k, v in conf.items() if k in deps.IVY_KEYS}
        pinned = deps.load()
        jars = deps.cached_jars(root, list(pinned.packages), ivy, resolve_missing=False)
        own = [str(deps.native_jar(root)), *filter(None, [conf.get("spark.jars")])]
        if jars and "spark.jars.packages" not in conf:  # resolved before: no Ivy run, no Ivy report
            conf["spark.jars"] = ",".join([*(str(j) for j in jars), *own])
        else:
            conf.setdefault("spark.jars.packages", pinned.packages_arg)
            conf["spark.jars"] = ",".join(own)
        if "spark.driver.extraJavaOptions" not in conf:
            opts = [cds.java_options(root)]  # the class-data archive bootstrap trained, if any
            if not os.environ.get("COLDTIER_VERBOSE"):
                (root / "build").mkdir(exist_ok=True)  # Spark at WARN, less its startup chatter
                opts.append(f"-Dlog4j2.configurationFile=file:{write_log4j(root / 'build')}")
            if joined := " ".join(filter(None, opts)):
                conf["spark.driver.extraJavaOptions"] = joined
        master = cfg.spark.master or "local[*]"
    spark = build_session(f"coldtier-{cfg.pipeline}", conf, master=master)
    spark.sparkContext.setLogLevel(os.environ.get("COLDTIER_SPARK_LOG_LEVEL", "WARN"))
    if not os.environ.get("COLDTIER_VERBOSE"):
        quiet_query_context_loggers()
    return spark


def quiet_query_context_loggers() -> None:
    """PySpark 4 logs every SQL error that has a query context as a JSON ``ERROR`` line with the
    JVM's whole stack (``SQLQueryContextLogger``, ``DataFrameQueryContextLogger``), before the
    caller sees the exception: coldtier names the error in one paragraph itself, and handles
    some on purpose. Off unless ``COLDTIER_VERBOSE``."""
    import logging

    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def activate(spark: Any) -> None:
    """Make ``spark`` the active session of the calling thread: a JVM thread of py4j starts
    without one, and its SQL conf would be the defaults (the JVM's time zone, not the
    session's UTC): plans built there go wrong."""
    jclass(spark, "org.apache.spark.sql.SparkSession").setActiveSession(spark._jsparkSession)


@dataclass(frozen=True)
class ReadAhead(Generic[T]):
    """A read of Spark started in a thread of its own while the caller goes on with other work;
    ``result()`` waits for it. The thread is a ``pyspark.InheritableThread`` (the caller's
    scheduler pool), with the session active and the caller's job group suffixed with
    ``label`` (its jobs are not the caller's: a watcher of the caller's group does not see
    them). A read that failed gives None: the caller reads again, in its own thread, and
    meets the error there."""

    future: Future[T]

    @classmethod
    def start(cls, spark: Any, read: Callable[[], T], label: str) -> ReadAhead[T]:
        from pyspark import InheritableThread

        future: Future[T] = Future()
        sc = spark.sparkContext
        group = sc.getLocalProperty("spark.jobGroup.id") or "coldtier"

        def run() -> None:
            try:
                activate(spark)
                sc.setJobGroup(f"{group}/{label}", f"{group}: {label}, read ahead", False)
                future.set_result(read())
            except Exception as exc:
                future.set_exception(exc)

        InheritableThread(run, daemon=True, name=f"coldtier-{label}").start()
        return cls(future)

    def result(self) -> T | None:
        return None if self.future.exception() is not None else self.future.result()
