"""Table maintenance (``coldtier maintain``), run under the same per-table lock as ``run``.

15-second batches leave many small files. Per table:
- Iceberg: ``rewrite_data_files`` to the target size, ``rewrite_manifests``,
  ``expire_snapshots`` older than the retention, and never the newest snapshot carrying this
  pipeline's batch id (the recovery check reads it), then orphan files (a crashed write's
  leftovers) older than a safe age, through Iceberg's DeleteOrphanFiles action;
- Delta: OPTIMIZE (compaction to the target size), then VACUUM with the retention, its listing
  as wide as the session's default parallelism. VACUUM leaves Delta's log alone; Delta's own log
  cleanup, which these commits' checkpoints run, deletes commits past
  ``delta.logRetentionDuration``, batch commits included: the sink then reads Delta's transaction
  record (``DeltaSink.aged_out_batch``).
Returns the figures recorded in the ledger and printed as a progress line.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from coldtier.config import MaintenanceConfig, TargetConfig
from coldtier.jvm import jclass
from coldtier.sinks.iceberg import IcebergSink

MB = 1024 * 1024
# VACUUM lists the table's directories in exactly this many tasks (Spark's default: 10,000,
# however few the directories): a minute of empty tasks per pass on two cores
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def maintain(spark: Any, target: TargetConfig, cfg: MaintenanceConfig, pipeline: str,
             table: str) -> dict[str, Any]:
    started = time.perf_counter()
    fn = _delta if target.format == "delta" else _iceberg
    out = fn(spark, target, cfg, pipeline, table)
    return {"pipeline": pipeline, "table": table, "maintained": target.identifier, **out,
            "seconds": round(time.perf_counter() - started, 3)}


def _ts(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _iceberg_files(spark: Any, ident: str) -> tuple[int, int]:
    row = spark.sql(f"SELECT count(*) AS n, coalesce(sum(file_size_in_bytes), 0) AS b "
                    f"FROM {ident}.files").collect()[0]
    return int(row.n), int(row.b)


def _iceberg(spark: Any, target: TargetConfig, cfg: MaintenanceConfig, pipeline: str,
             table: str) -> dict[str, Any]:
    sink = IcebergSink(spark, target)
    ident, cat = target.identifier, target.catalog
    # Iceberg's procedures read a table argument whose first part names a catalog as that
    # catalog: 'cold.trades' in catalog `cold` would be table `trades`. Fully qualified and
    # quoted, any naming (a namespace named like its catalog, dots or dashes in names) resolves
    name = ".".join("`" + part.replace("`", "``") + "`" for part in (cat, *target.table.split(".")))
    files_before, bytes_before = _iceberg_files(spark, ident)
    snaps_before = spark.sql(f"SELECT count(*) FROM {ident}.snapshots").collect()[0][0]
    size = cfg.target_file_size_mb * MB
    spark.sql(f"CALL {cat}.system.rewrite_data_files(table => '{name}', options => map("
              f"'target-file-size-bytes', '{size}', 'min-input-files', '2'))").collect()
    spark.sql(f"CALL {cat}.system.rewrite_manifests('{name}')").collect()
    now_ms = int(time.time() * 1000)
    older_than = now_ms - int(cfg.snapshot_retention_h * 3_600_000)
    newest_ms = sink.newest_batch_timestamp_ms(pipeline, table)
    if newest_ms is not None:  # the recovery check must still find the newest batch's snapshot
        older_than = min(older_than, newest_ms)
    spark.sql(f"CALL {cat}.system.expire_snapshots(table => '{name}', older_than => TIMESTAMP "
              f"'{_ts(older_than)}', retain_last => {cfg.retain_last})").collect()
    orphan_before = now_ms - int(cfg.orphan_age_h * 3_600_000)
    jt = sink.table_handle()
    result = (jclass(spark, "org.apache.iceberg.spark.actions.SparkActions").get(spark._jsparkSession)
              .deleteOrphanFiles(jt).olderThan(orphan_before).execute())
    orphans = sum(1 for _ in result.orphanFileLocations())
    files_after, bytes_after = _iceberg_files(spark, ident)
    snaps_after = spark.sql(f"SELECT count(*) FROM {ident}.snapshots").collect()[0][0]
    return {"files_before": files_before, "files_after": files_after, "bytes_before": bytes_before,
            "bytes_after": bytes_after, "snapshots_before": int(snaps_before),
            "snapshots_after": int(snaps_after),
            "orphans_removed": orphans, "expired_before": _ts(older_than)}


def _delta(spark: Any, target: TargetConfig, cfg: MaintenanceConfig, pipeline: str,
           table: str) -> dict[str, Any]:
    from delta.tables import DeltaTable

    dtable = DeltaTable.forPath(spark, target.path or "")
    before = dtable.detail().collect()[0]
    conf = spark.conf
    saved = {k: conf.get(k, None) for k in ("spark.databricks.delta.optimize.maxFileSize",
                                           "spark.databricks.delta.retentionDurationCheck.enabled",
                                           LISTING_PARALLELISM)}
    try:
        conf.set("spark.databricks.delta.optimize.maxFileSize", str(cfg.target_file_size_mb * MB))
        if saved[LISTING_PARALLELISM] is None:  # unless the YAML sets it
            conf.set(LISTING_PARALLELISM, str(spark.sparkContext.defaultParallelism))
        optimized = dtable.optimize().executeCompaction().collect()[0]
        # the retention is the operator's decision (YAML); Delta's 7-day guard would override it
        conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        files_on_disk = _parquet_files(spark, target.path)
        dtable.vacuum(cfg.snapshot_retention_h)
        removed = files_on_disk - _parquet_files(spark, target.path)
    finally:
        for k, v in saved.items():
            if v is None:
                conf.unset(k)
            else:
                conf.set(k, v)
    after = DeltaTable.forPath(spark, target.path or "").detail().collect()[0]
    metrics = optimized["metrics"]
    return {"files_before": int(before["numFiles"]), "files_after": int(after["numFiles"]),
            "bytes_before": int(before["sizeInBytes"]), "bytes_after": int(after["sizeInBytes"]),
            "files_compacted": int(metrics["numFilesRemoved"]), "files_vacuumed": removed}


def _parquet_files(spark: Any, path: str | None) -> int:
    """Data files under the table's location (referenced or not), through Hadoop's filesystem."""
    p = jclass(spark, "org.apache.hadoop.fs.Path")(path)
    fs = p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    it = fs.listFiles(p, True)
    n = 0
    while it.hasNext():
        name = it.next().getPath().getName()
        if name.endswith(".parquet") and "_delta_log" not in name:
            n += 1
    return n
