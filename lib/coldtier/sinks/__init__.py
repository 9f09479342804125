"""Sinks: where a batch becomes durable, one atomic commit carrying its identity, found again
after a crash (``base.Sink``). ``target.format`` picks one per table:

- ``iceberg``: snapshot summary properties, write-audit-publish through a staging branch;
- ``delta``: commit ``userMetadata`` and Delta's idempotent ``txnAppId``/``txnVersion``.

Adding a sink: a module here with a class that implements ``base.Sink`` (its batch identity
through ``base.batch_properties`` / ``base.of_identity``), and one entry in ``SINKS``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from coldtier.config import TargetConfig
from coldtier.errors import SchemaConflict, ShortRead  # noqa: F401  (also importable from here)
from coldtier.records import SnapshotInfo  # noqa: F401
from coldtier.sinks.base import Sink

# target.format → the class that writes it (imported when first used: Delta's Python package is
# only needed by Delta targets)
SINKS = {"iceberg": "coldtier.sinks.iceberg:IcebergSink", "delta": "coldtier.sinks.delta:DeltaSink"}


def make_sink(spark: Any, target: TargetConfig) -> Sink:
    module, _, name = SINKS[target.format].partition(":")
    cls = getattr(import_module(module), name)
    return cls(spark, target)
