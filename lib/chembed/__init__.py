"""chembed: an embedded, ClickHouse-compatible HTTP server built on chdb.

For development, the demo and CI only. Production points coldtier at a real
ClickHouse server; nothing in coldtier knows which of the two it talks to.
See docs/embedded-clickhouse.md for what of the HTTP interface is supported.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
