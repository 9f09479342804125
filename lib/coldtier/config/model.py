"""The configuration's model: frozen dataclasses, each default written once on its field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from coldtier.config.secrets import dsn_password, is_secret_key
from coldtier.errors import ConfigError

CURSOR_MODES = ("timestamp+incrementing", "incrementing", "timestamp")


@dataclass(frozen=True)
class SparkSection:
    master: str | None = None
    deploy_mode: str | None = None
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    url: str
    user: str = "default"
    password: str = field(default="", repr=False)
    properties: Mapping[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0  # a silent connection fails after this (JDBC socket_timeout, HTTP)


@dataclass(frozen=True)
class LedgerConfig:
    dsn: str = field(repr=False)
    schema: str = "coldtier"
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 60.0  # server-side bound on every ledger/lock statement
    tcp_timeout_s: float = 30.0  # keepalives + tcp_user_timeout: a dead peer is noticed within this


@dataclass(frozen=True)
class CursorConfig:
    mode: str = "timestamp+incrementing"
    timestamp_column: str | None = "exchange_timestamp"
    incrementing_column: str | None = "sequence_number"
    lag_s: float = 300.0
    ttl_margin_s: float = 86_400.0
    ordered_writer: str | None = None  # incrementing mode: who assigns the numbers, in order


@dataclass(frozen=True)
class BatchConfig:
    max_rows: int = 100_000
    num_partitions: int = 2
    fetchsize: int = 10_000
    options: Mapping[str, str] = field(default_factory=dict)
    # how a batch's rows are read: Spark's JDBC reader through clickhouse-jdbc, or coldtier's
    # columnar reader of ClickHouse's Native format over HTTP (lib/java, docs/design.md)
    reader: str = "jdbc"


READERS = ("jdbc", "native")
SINK_FORMATS = ("iceberg", "delta")


@dataclass(frozen=True)
class TargetConfig:
    catalog: str  # Iceberg: a key of catalogs; Delta: unused ("")
    table: str  # Iceberg: namespace.table; Delta: unused ("")
    partition_by: tuple[str, ...] = ()
    sort_by: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    format: str = "iceberg"
    path: str | None = None  # Delta: the table's location

    @property
    def identifier(self) -> str:
        if self.format == "delta":
            return "delta.`" + (self.path or "").replace("`", "``") + "`"
        return f"{self.catalog}.{self.table}"


@dataclass(frozen=True)
class TableConfig:
    name: str
    connection: str
    source_table: str  # database.table
    cursor: CursorConfig
    batch: BatchConfig
    target: TargetConfig
    keep_nanos: bool = False
    columns: Mapping[str, str] = field(default_factory=dict)  # column → string | binary | exclude
    short_read: str = "fail"  # a batch reading fewer rows than planned: fail | warn
    key: tuple[str, ...] = ()  # a row's identity (check-duplicates); default: the cursor columns


@dataclass(frozen=True)
class MetricsConfig:
    """Where a run's Prometheus metrics go (docs/ops/metrics.md): any combination."""

    textfile: str | None = None  # node_exporter textfile-collector file (*.prom), rewritten per batch
    pushgateway: str | None = None  # http(s)://host:9091, pushed at the end of a run
    port: int | None = None  # serve /metrics while the run lasts (processing-time loops)
    job: str = "coldtier"


@dataclass(frozen=True)
class MaintenanceConfig:
    """Table maintenance (``maintain``): docs/ops/maintenance.md."""

    target_file_size_mb: int = 128  # compaction target
    snapshot_retention_h: float = 168.0  # expire snapshots / vacuum files older than this
    retain_last: int = 10  # Iceberg: keep at least this many snapshots
    orphan_age_h: float = 72.0  # Iceberg: delete unreferenced files older than this
    # below 1 h, VACUUM/orphan removal can delete the files of a commit still in flight
    unsafe_short_retention: bool = False


@dataclass(frozen=True)
class RunConfig:
    """How one application drives its tables (docs/config.md)."""

    # tables making progress at the same time, each in its own Spark FAIR pool; 1: one after another
    max_concurrent_tables: int = 4


@dataclass(frozen=True)
class AppConfig:
    path: str
    pipeline: str
    spark: SparkSection
    sources: Mapping[str, SourceConfig]
    ledger: LedgerConfig
    catalogs: Mapping[str, Mapping[str, str]]
    tables: tuple[TableConfig, ...]
    metrics: MetricsConfig = MetricsConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    run: RunConfig = RunConfig()

    def table(self, name: str) -> TableConfig:
        for t in self.tables:
            if t.name == name:
                return t
        raise ConfigError(f"{self.path}: no table named {name!r} (have: "
                          f"{', '.join(t.name for t in self.tables)})")

    def select(self, names: list[str] | None) -> tuple[TableConfig, ...]:
        return tuple(self.table(n) for n in names) if names else self.tables

    def secrets(self) -> tuple[str, ...]:
        """Every secret value in this config, for masking output by value; not those equal to a
        name coldtier prints (``weak_secrets``): masking those would garble every message and
        hide nothing. ``mask`` hides a password after ``password=`` or in a URL whatever it is."""
        weak = self.weak_secrets()
        return tuple(s for s in self._secret_values() if s not in weak)

    def weak_secrets(self) -> tuple[str, ...]:
        """Secrets equal to a name that appears in coldtier's messages (the product, the
        pipeline, a user, a table, a catalog...): `validate` warns about them."""
        words = {"coldtier", self.pipeline, self.ledger.schema, *self.catalogs}
        for src in self.sources.values():
            words |= {src.name, src.user}
        for t in self.tables:
            words |= {t.name, t.connection, *t.source_table.split("."), *t.target.table.split(".")}
        return tuple(s for s in dict.fromkeys(self._secret_values()) if s in words)

    def _secret_values(self) -> list[str]:
        out = [s.password for s in self.sources.values() if s.password]
        out += [dsn_password(self.ledger.dsn)]
        for props in self.catalogs.values():
            out += [v for k, v in props.items() if is_secret_key(k)]
        return [s for s in out if s]
