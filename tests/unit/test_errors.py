"""Exit codes come from the failure's class, never from guesswork."""

import pytest

from coldtier import errors
from coldtier.errors import classify


@pytest.mark.parametrize(("exc", "code"), [
    (errors.ConfigError("x"), 2), (errors.UsageError("x"), 2), (errors.LockHeld("x"), 3),
    (errors.FencedOut("x"), 3), (errors.ClickHouseError(516, "auth", "http://h"), 4),
    (errors.ClickHouseUnreachable("x"), 4), (errors.LedgerError("x"), 4), (errors.ShortRead("x"), 4),
    (errors.DependencyError("x"), 4), (errors.LedgerInconsistent("x"), 5), (errors.SourceSchemaError("x"), 6),
    (errors.SchemaConflict("x"), 6), (errors.SourceDataError("x"), 6),
])
def test_each_failure_carries_its_exit_code(exc, code):
    assert classify(exc)[0] == code == exc.exit_code


def test_what_is_not_named_is_an_internal_error():
    # a stray ValueError is a bug, not "fix your config" (exit 2 would stop every retry)
    assert classify(ValueError("x")) == (1, "internal error (ValueError)")
    assert classify(KeyError("x"))[0] == 1


def test_spark_and_driver_errors_are_translated_by_kind():
    def named(name):
        return type(name, (Exception,), {})()
    assert classify(named("AnalysisException"))[0] == 6  # a table or column Spark cannot resolve
    assert classify(named("Py4JJavaError"))[0] == 4
    assert classify(named("OperationalError"))[0] == 4  # psycopg2: the server went away


def test_every_exception_is_importable_where_it_was():
    from coldtier import clickhouse_http, config, ledger, lock, sinks, source

    assert config.ConfigError is errors.ConfigError and lock.LockHeld is errors.LockHeld
    assert ledger.LedgerInconsistent is errors.LedgerInconsistent and sinks.ShortRead is errors.ShortRead
    assert source.SourceDataError is errors.SourceDataError
    assert clickhouse_http.ClickHouseError is errors.ClickHouseError


def test_a_jvm_error_reads_as_its_chain_of_causes_without_stack_frames():
    """A wrong catalog password: the root cause (PostgreSQL's answer) is in the one paragraph,
    not lost after 2,000 characters of stack frames; secrets still masked."""
    from coldtier.cli import error_text

    class Py4JJavaError(Exception):
        """Carries the text py4j gives a JVM failure (error_text reads only str())."""

    trace = ("An error occurred while calling o71.sql.\n"
             ": org.apache.iceberg.jdbc.UncheckedSQLException: Failed to connect: jdbc:postgresql://db:5432/cold\n"
             + "\tat org.apache.iceberg.jdbc.JdbcClientPool.newClient(JdbcClientPool.java:90)\n" * 80
             + "\tat scala.Option.orElse(Option.scala:477)\n"
             "\tSuppressed: org.apache.spark.util.Utils$OriginalTryStackTraceException: Full stacktrace of "
             "original doTryWithCallerStacktrace caller\n"
             "\t\tat org.apache.spark.sql.catalyst.analysis.package$AnalysisErrorAt.tableNotFound(package.scala:91)\n"
             "\t\t... 22 more\n"
             "Caused by: org.postgresql.util.PSQLException: FATAL: password authentication failed for user "
             "\"cold\" (s3cr3t)\n"
             "\tat org.postgresql.core.v3.ConnectionFactoryImpl.doAuthentication(ConnectionFactoryImpl.java:693)\n"
             "\t... 40 more\n")
    assert error_text(Py4JJavaError(trace), ("s3cr3t",)) == (
        "org.apache.iceberg.jdbc.UncheckedSQLException: Failed to connect: jdbc:postgresql://db:5432/cold "
        "Caused by: org.postgresql.util.PSQLException: FATAL: password authentication failed for user "
        "\"cold\" (***)")
