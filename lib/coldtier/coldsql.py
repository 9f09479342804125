"""``coldtier sql`` and ``coldtier shell``: Spark SQL on the cold tier with the offload job's own
catalogs, credentials and session time zone (``spark.session_for``: the same YAML, the same
code), read-only unless asked.

Read-only is decided on Spark's parsed plan, before anything runs: a statement is let through
when its plan is a query (SELECT, WITH, VALUES, TABLE, a metadata table such as
``t.snapshots``) or one of the catalog's read commands (SHOW, DESCRIBE, EXPLAIN). Everything
else — INSERT, MERGE, UPDATE, DELETE, CREATE, DROP, ALTER, CALL, CACHE, SET … — is refused
with exit 2 unless ``--allow-writes`` is given.
"""

from __future__ import annotations

import code
import datetime as dt
from typing import Any

from coldtier.config import AppConfig
from coldtier.errors import UsageError

# top-level nodes of a parsed query (Spark 4's AstBuilder) and of read-only catalog commands
READ_PLANS = frozenset({
    "Project", "Filter", "Aggregate", "Sort", "GlobalLimit", "LocalLimit", "Offset", "Tail", "Distinct",
    "Deduplicate", "Union", "Intersect", "Except", "Join", "LateralJoin", "UnresolvedWith", "WithCTE",
    "SubqueryAlias", "Window", "WithWindowDefinition", "Sample", "Generate", "Pivot", "Unpivot",
    "UnresolvedRelation", "UnresolvedInlineTable", "LocalRelation", "OneRowRelation",
    "UnresolvedTableValuedFunction", "RepartitionByExpression", "Repartition", "UnresolvedHint",
    "ShowTables", "ShowTablesExtended", "ShowNamespaces", "ShowColumns", "ShowViews", "ShowFunctions",
    "ShowTableProperties", "ShowCreateTable", "ShowPartitions", "DescribeRelation", "DescribeColumn",
    "DescribeNamespace", "DescribeFunction", "ExplainCommand",
})


def plan_kind(spark: Any, statement: str) -> str:
    """The class of ``statement``'s parsed (unresolved) plan: Spark's parser, nothing run."""
    plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(statement)
    return str(plan.getClass().getSimpleName())


def check_read_only(spark: Any, statement: str) -> None:
    kind = plan_kind(spark, statement)
    if kind not in READ_PLANS:
        first = " ".join(statement.split())[:80]
        raise UsageError(
            f"coldtier sql is read-only: {first!r} parses to {kind}, which is not a query or a "
            f"SHOW/DESCRIBE/EXPLAIN; the cold tier is the system of record. To change it on "
            f"purpose, add --allow-writes"
        )


def run_sql(spark: Any, statement: str, allow_writes: bool) -> Any:
    """The DataFrame of ``statement`` after the read-only check (a write runs here, when allowed)."""
    if not allow_writes:
        check_read_only(spark, statement)
    return spark.sql(statement)


def render(df: Any, rows: int, zone: dt.tzinfo, as_json: bool) -> tuple[str, bool]:
    """Up to ``rows`` rows of ``df`` as text (or JSON lines) and whether there were more.
    Through Arrow: timestamps arrive as instants (UTC), shown in ``zone``, never in this
    process's local zone."""
    import json

    from coldtier.query import show, text_table

    table = df.limit(rows + 1).toArrow()
    more = table.num_rows > rows
    data = table.slice(0, rows).to_pylist()
    if as_json:
        return "\n".join(
            json.dumps({k: show(v, zone) if v is not None else None for k, v in r.items()}) for r in data
        ), more
    return text_table(table.column_names, [list(r.values()) for r in data], zone), more


BANNER = """coldtier shell — pipeline {pipeline}, catalogs: {catalogs}; session time zone {zone}.
  spark        the SparkSession (the offload job's catalogs and settings; NOT read-only)
  sql("...")   run a statement through coldtier's read-only check and print it
  cfg          the loaded config
Ctrl-D leaves."""


def shell(cfg: AppConfig, spark: Any, zone: dt.tzinfo) -> int:
    """A Python REPL (pyspark's, with the job's session bound)."""

    def sql(statement: str, rows: int = 50) -> None:
        text, more = render(run_sql(spark, statement, allow_writes=False), rows, zone, as_json=False)
        print(text + (f"\n… more than {rows} rows" if more else ""))

    banner = BANNER.format(pipeline=cfg.pipeline, catalogs=", ".join(cfg.catalogs) or "none", zone=zone)
    code.interact(banner=banner, local={"spark": spark, "sql": sql, "cfg": cfg}, exitmsg="")
    return 0
