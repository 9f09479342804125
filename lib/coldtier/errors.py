"""Exit codes, and which failure gets which (README's table; supervisors act on them).

  0 success (batches committed, or nothing to do)
  1 unexpected internal error
  2 configuration or usage error: fix the config; retrying will not help
  3 lock held: another run of the same pipeline/table is active; retry later
  4 runtime failure (source, sink or ledger unreachable or failing): retry later
  5 ledger inconsistent with itself or with the sink: recover-ledger / adopt (operator)
  6 schema or data problem (missing table or column, a type or bytes that cannot be copied exactly)
  7 reconcile found buckets where ClickHouse and the sink differ
"""

from __future__ import annotations

EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_LOCK, EXIT_RUNTIME, EXIT_LEDGER, EXIT_SCHEMA = 0, 1, 2, 3, 4, 5, 6
EXIT_MISMATCH = 7


class NeedsSpark(Exception):
    """Raised where ``run`` would start Spark, when the launcher runs it ahead (``precheck``)."""


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the message's lead for an exception that ends a command."""
    from coldtier.clickhouse_http import ClickHouseError, ClickHouseUnreachable
    from coldtier.config import ConfigError
    from coldtier.ledger import LedgerError, LedgerInconsistent
    from coldtier.lock import LockHeld
    from coldtier.sinks import SchemaConflict, ShortRead
    from coldtier.source import SourceDataError, SourceSchemaError

    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, "configuration error"
    if isinstance(exc, ValueError):
        return EXIT_CONFIG, "usage error"
    if isinstance(exc, LockHeld):
        return EXIT_LOCK, "lock held"
    if isinstance(exc, LedgerInconsistent):
        return EXIT_LEDGER, "ledger inconsistent"
    if isinstance(exc, (SourceSchemaError, SchemaConflict)):
        return EXIT_SCHEMA, "schema problem"
    if isinstance(exc, SourceDataError):
        return EXIT_SCHEMA, "data problem"
    if isinstance(exc, (ClickHouseError, ClickHouseUnreachable, LedgerError, ShortRead)):
        return EXIT_RUNTIME, "runtime failure"
    name = type(exc).__name__  # Spark/Py4J and anything unforeseen
    if name == "AnalysisException":  # deterministic: a table or column Spark cannot resolve
        return EXIT_SCHEMA, "schema problem (AnalysisException)"
    if name in ("Py4JJavaError", "OperationalError"):
        return EXIT_RUNTIME, f"runtime failure ({name})"
    return EXIT_INTERNAL, f"runtime failure ({name})"
