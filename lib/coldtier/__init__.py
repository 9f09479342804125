"""coldtier: exactly-once incremental offload of ClickHouse tables into Iceberg."""

__version__ = "0.1.0"
