"""Every failure coldtier names, each carrying its exit code (README "Exit codes"; supervisors
act on them), and the translation of anything else at the edge (``classify``).

  0 success (batches committed, or nothing to do)
  1 unexpected internal error (anything not named here)
  2 configuration or usage error: fix the config or the command; retrying will not help
  3 lock held: another run of the same pipeline/table is active; retry later
  4 runtime failure (source, sink, ledger or dependencies unreachable or failing): retry later
  5 ledger inconsistent with itself or with the sink: recover-ledger / adopt (operator)
  6 schema or data problem (missing table or column, a type or bytes that cannot be copied exactly)
  7 reconcile found buckets where ClickHouse and the sink differ

Pure: no I/O, no imports of the adapters.
"""

from __future__ import annotations

EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_LOCK, EXIT_RUNTIME, EXIT_LEDGER, EXIT_SCHEMA = 0, 1, 2, 3, 4, 5, 6
EXIT_MISMATCH = 7


class ColdtierError(Exception):
    """A failure coldtier recognises; ``exit_code`` is what the command exits with."""

    exit_code = EXIT_INTERNAL
    lead = "internal error"


# -- 2: fix the config or the command ----------------------------------------------------------
class ConfigError(ColdtierError, ValueError):
    """The configuration is unusable; the message says what and where."""

    exit_code, lead = EXIT_CONFIG, "configuration error"


class UsageError(ColdtierError, ValueError):
    """A command line coldtier cannot act on (a bad --trigger, --since, --bucket ...)."""

    exit_code, lead = EXIT_CONFIG, "usage error"


# -- 3: another run is active ------------------------------------------------------------------
class LockHeld(ColdtierError, RuntimeError):
    """Another run holds the lock."""

    exit_code, lead = EXIT_LOCK, "lock held"


class FencedOut(LockHeld):
    """This run lost its lock to another instance while a batch was in flight."""


# -- 4: retry later -----------------------------------------------------------------------------
class RuntimeFailure(ColdtierError, RuntimeError):
    """A service failed or could not be reached; a later run may succeed."""

    exit_code, lead = EXIT_RUNTIME, "runtime failure"


class ClickHouseError(RuntimeFailure):
    """ClickHouse answered with an error (``code`` is ClickHouse's error code)."""

    def __init__(self, code: int, message: str, endpoint: str) -> None:
        super().__init__(f"ClickHouse at {endpoint} answered error {code}: {message}")
        self.code = code
        self.server_message = message
        self.endpoint = endpoint


class ClickHouseUnreachable(RuntimeFailure):
    """No connection to ClickHouse within the connect timeout, or no answer within the read
    timeout."""


class LedgerError(RuntimeFailure):
    """The ledger cannot be reached or used."""


class ShortRead(RuntimeFailure):
    """A batch read fewer rows than it planned: rows vanished from its range (a lagging replica,
    a TTL, a mutation). Nothing was published; the batch is replayed by the next run."""


class StageLost(RuntimeFailure):
    """A batch's stage (an Iceberg stage branch) was removed before the batch was published:
    another run recovering the table drops the stages it finds. Nothing was published."""


class DependencyError(RuntimeFailure):
    """The packages could not be resolved (no network, a coordinate that does not exist)."""


# -- 5: an operator decides ----------------------------------------------------------------------
class LedgerInconsistent(ColdtierError, RuntimeError):
    """The ledger contradicts itself or the sink; an operator must decide (recover-ledger)."""

    exit_code, lead = EXIT_LEDGER, "ledger inconsistent"


# -- 6: the data or its shape ----------------------------------------------------------------------
class SchemaProblem(ColdtierError, RuntimeError):
    exit_code, lead = EXIT_SCHEMA, "schema problem"


class SourceSchemaError(SchemaProblem):
    """The source table is missing or cannot be read as configured."""


class SchemaConflict(SchemaProblem):
    """The source and the target table disagree in a way coldtier must not paper over."""


class SourceDataError(ColdtierError, RuntimeError):
    """A batch holds values coldtier refuses to copy inexactly (e.g. bytes that are not UTF-8)."""

    exit_code, lead = EXIT_SCHEMA, "data problem"


class CursorTypeError(ValueError):
    """A cursor column has a type that cannot order rows (pure code; the caller turns it into a
    SourceSchemaError naming the table)."""


class UnsupportedColumn(ValueError):
    """A source column whose type coldtier cannot copy exactly (as configured; pure code, turned
    into a SourceSchemaError naming the table)."""


# -- control flow -----------------------------------------------------------------------------------
class NeedsSpark(Exception):
    """Raised where ``run`` would start Spark, when the launcher runs it ahead (``precheck``)."""


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the message's lead for an exception that ends a command: coldtier's own
    carry theirs; Spark's and the drivers' are translated here, once; anything else is exit 1."""
    if isinstance(exc, ColdtierError):
        return exc.exit_code, exc.lead
    name = type(exc).__name__
    if name == "AnalysisException":  # deterministic: a table or column Spark cannot resolve
        return EXIT_SCHEMA, "schema problem (AnalysisException)"
    if name in ("Py4JJavaError", "Py4JNetworkError", "OperationalError", "InterfaceError"):
        return EXIT_RUNTIME, f"runtime failure ({name})"  # a JVM-side or PostgreSQL failure
    return EXIT_INTERNAL, f"internal error ({name})"
