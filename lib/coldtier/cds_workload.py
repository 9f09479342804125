"""The training run of the driver JVM's class-data archive (``coldtier.cds``): what a launch does
before and during its first batch, on local tables. The classes these load are the ones the
archive holds. ``python -m coldtier.cds_workload DIR``, run by ``coldtier.cds.train`` in a JVM
started with ``-XX:ArchiveClassesAtExit``."""

from __future__ import annotations

import sys
from pathlib import Path

from coldtier import deps
from coldtier.spark import build_session, iceberg_catalog_conf


def workload(work: Path) -> None:
    """A session, an Iceberg table (a branch fast-forwarded), a Delta table (a txn append, its
    history), the JDBC drivers' classes."""
    root = deps.repo_root()
    jars = deps.cached_jars(root, list(deps.load().packages), resolve_missing=False)
    if not jars:
        raise SystemExit("coldtier.cds: the pinned jars are not resolved; run make bootstrap")
    conf = {"spark.jars": ",".join(map(str, jars)), "spark.ui.enabled": "false",
            **iceberg_catalog_conf("cds", {"type": "hadoop", "warehouse": str(work / "iceberg")})}
    spark = build_session("coldtier-cds", conf, master="local[2]")
    try:
        rows = spark.range(2000).selectExpr(
            "id", "cast(id AS string) AS s", "cast(id / 7 AS decimal(18, 8)) AS d",
            "timestamp_millis(1700000000000 + id) AS ts", "cast(id % 5 AS int) AS p")
        spark.sql("CREATE TABLE cds.db.t (id bigint, s string, d decimal(18, 8), ts timestamp, p int) "
                  "USING iceberg")
        rows.writeTo("cds.db.t").append()
        spark.sql("ALTER TABLE cds.db.t CREATE BRANCH b")
        rows.writeTo("cds.db.t.branch_b").append()
        spark.sql("CALL cds.system.fast_forward('db.t', 'main', 'b')").collect()
        spark.sql("SELECT count(*), max(ts) FROM cds.db.t").collect()
        spark.sql("SELECT snapshot_id, summary FROM cds.db.t.snapshots").collect()
        delta = str(work / "delta")
        rows.write.format("delta").option("userMetadata", "{}").save(delta)
        (rows.write.format("delta").mode("append").option("txnAppId", "cds").option("txnVersion", "1")
         .save(delta))
        from delta.tables import DeltaTable

        DeltaTable.forPath(spark, delta).history(32).collect()
        spark.read.format("delta").load(delta).groupBy("p").count().collect()
        for driver in ("com.clickhouse.jdbc.ClickHouseDriver", "org.postgresql.Driver"):
            spark.sparkContext._jvm.org.apache.spark.util.Utils.classForName(driver, True, False)
    finally:
        spark.stop()


if __name__ == "__main__":
    workload(Path(sys.argv[1]))
