"""The tuning matrix: which settings each benchmark cell runs with.

A matrix file (``conf/tuning/*.yaml``) names a ``base`` cell and either a ``sweep`` (each
listed knob varied alone around the base: the usual way to read one knob's effect) or a
``grid`` (the full product). Knobs that belong to the Spark application (master, driver and
executor resources) split the cells into groups, one spark-submit application each; the
other knobs vary per cell inside a warm application, as a scheduled ``run`` would see them.
Pure: no Spark, no I/O beyond reading the file.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

APP_KNOBS = ("master", "driver_memory", "executor_cores", "executor_memory", "executor_instances")
CELL_KNOBS = ("num_partitions", "max_rows", "fetchsize", "parquet_codec", "compress", "max_block_size",
              "reader")
KNOBS = APP_KNOBS + CELL_KNOBS


class MatrixError(ValueError):
    """The tuning matrix file is malformed."""


@dataclass(frozen=True)
class Cell:
    """One benchmark configuration. ``knob``/``value`` say what it varies from the base."""

    master: str = "local[2]"
    driver_memory: str = "4g"
    executor_cores: int | None = None
    executor_memory: str | None = None
    executor_instances: int | None = None
    num_partitions: int = 2
    max_rows: int = 2_500_000
    fetchsize: int = 10_000
    parquet_codec: str = "zstd"
    compress: bool = True
    max_block_size: int | None = None
    reader: str = "jdbc"  # batch.reader: jdbc | native
    knob: str = "base"
    value: str = ""

    @property
    def name(self) -> str:
        return self.knob if self.knob in ("base", "combined") else f"{self.knob}={self.value}"

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.name).strip("_").lower()

    @property
    def app_key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in APP_KNOBS)

    def spark_conf(self) -> dict[str, str]:
        """The application's ``spark.conf`` for this cell's app knobs."""
        conf = {"spark.driver.memory": self.driver_memory}
        for key, knob in (("spark.executor.cores", self.executor_cores),
                          ("spark.executor.memory", self.executor_memory),
                          ("spark.executor.instances", self.executor_instances)):
            if knob is not None:
                conf[key] = str(knob)
        return conf

    def batch_section(self) -> dict[str, Any]:
        """The YAML ``batch`` section of a table running with this cell's knobs."""
        options: dict[str, str] = {"clickhouse_setting_use_query_condition_cache": "0"}
        if not self.compress:
            options["compress"] = "false"
        if self.max_block_size is not None:
            options["clickhouse_setting_max_block_size"] = str(self.max_block_size)
        return {"max_rows": self.max_rows, "num_partitions": self.num_partitions,
                "fetchsize": self.fetchsize, "options": options, "reader": self.reader}

    def target_properties(self) -> dict[str, str]:
        return {"write.parquet.compression-codec": self.parquet_codec}

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["cell"] = self.name
        return row


@dataclass(frozen=True)
class TablesRun:
    """Many tables in one application: a processing-time run per table count, each table fed
    ``rows_per_s`` by the generator (``coldtier.synth live --venues N``) in inserts every
    ``feed_interval_s``; each count runs ``duration_s``, the largest ``longest_s``."""

    counts: tuple[int, ...] = (1, 10, 50, 100)
    trigger_s: float = 15.0
    rows_per_s: float = 200.0  # 3,000 rows per 15 s trigger
    feed_interval_s: float = 5.0
    duration_s: float = 120.0
    longest_s: float = 600.0
    max_concurrent_tables: int | None = None  # None: the config default
    driver_memory: str = "2g"

    def seconds(self, count: int) -> float:
        return self.longest_s if count == max(self.counts) else self.duration_s


@dataclass(frozen=True)
class Matrix:
    path: str
    base: Cell
    cells: tuple[Cell, ...]
    rows: int = 10_000_000
    scaling_rows: int = 1_000_000
    incremental_batches: int = 32
    incremental_rows: int = 3_000
    incremental_partitions: int = 1
    noop_relaunches: int = 3
    peer: bool = True
    repeat: int = 2
    tables: TablesRun | None = TablesRun()
    envelope_driver_memory: str | None = "2g"  # the 10M backfill again under the 2 CPU / 4 GB profile
    extra: Mapping[str, Any] = field(default_factory=dict)

    def groups(self) -> list[tuple[Cell, ...]]:
        """Cells grouped by application settings, the base cell's group first."""
        order: dict[tuple[Any, ...], list[Cell]] = {self.base.app_key: []}
        for c in self.cells:
            order.setdefault(c.app_key, []).append(c)
        return [tuple(g) for g in order.values() if g]


_TYPES = {f.name: f.type for f in fields(Cell)}


def _coerce(path: str, where: str, knob: str, value: Any) -> Any:
    if knob not in KNOBS:
        raise MatrixError(f"{path}: {where}: unknown knob {knob!r}; knobs are: {', '.join(KNOBS)}")
    kind = _TYPES[knob]
    if value is None:
        if "None" not in str(kind):
            raise MatrixError(f"{path}: {where}.{knob}: a value is required")
        return None
    try:
        if "bool" in str(kind):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if "int" in str(kind):
            if isinstance(value, bool) or int(value) != value or int(value) <= 0:
                raise TypeError
            return int(value)
        if isinstance(value, (dict, list)):
            raise TypeError
        return str(value)
    except (TypeError, ValueError):
        raise MatrixError(f"{path}: {where}.{knob}: {value!r} is not a valid {kind}") from None


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def cells_from(path: str, base: Cell, sweep: Mapping[str, Any] | None,
               grid: Mapping[str, Any] | None) -> tuple[Cell, ...]:
    """The base cell, then one cell per swept value (or every grid combination)."""
    if sweep and grid:
        raise MatrixError(f"{path}: give either sweep or grid, not both")
    out = [base]
    seen = {replace(base, knob="", value="")}

    def add(cell: Cell) -> None:
        key = replace(cell, knob="", value="")
        if key not in seen:
            seen.add(key)
            out.append(cell)

    for knob, values in (sweep or {}).items():
        if not isinstance(values, list) or not values:
            raise MatrixError(f"{path}: sweep.{knob}: expected a non-empty list of values")
        for v in values:
            val = _coerce(path, "sweep", knob, v)
            add(replace(base, **{knob: val}, knob=knob, value=_text(v)))
    if grid:
        keys = list(grid)
        for knob in keys:
            if not isinstance(grid[knob], list) or not grid[knob]:
                raise MatrixError(f"{path}: grid.{knob}: expected a non-empty list of values")
        for combo in itertools.product(*(grid[k] for k in keys)):
            vals = {k: _coerce(path, "grid", k, v) for k, v in zip(keys, combo, strict=True)}
            label = ",".join(f"{k}={_text(v)}" for k, v in zip(keys, combo, strict=True))
            add(replace(base, **vals, knob="grid", value=label))
    return tuple(out)


_TOP = {"dataset", "base", "sweep", "grid", "incremental", "noop_relaunches", "peer", "repeat", "tables",
        "envelope"}
_TABLES_KEYS = {f.name for f in fields(TablesRun)}


def _known(path: str, where: str, doc: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse keys a section does not have, naming them and the ones it has."""
    bad = set(doc) - allowed
    if bad:
        raise MatrixError(f"{path}: {where + ': ' if where else ''}unknown key(s) {', '.join(sorted(bad))}; "
                          f"expected {', '.join(sorted(allowed))}")


def _tables_run(path: str, doc: Any) -> TablesRun | None:
    """The ``tables`` section (``false``: no many-table runs)."""
    if doc is False:
        return None
    if doc is None:
        return TablesRun()
    if not isinstance(doc, dict):
        raise MatrixError(f"{path}: tables: expected a mapping or false")
    _known(path, "tables", doc, _TABLES_KEYS)
    out = TablesRun()
    for key, value in doc.items():
        if key == "counts":
            if not isinstance(value, list) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise MatrixError(f"{path}: tables.counts: expected a list of positive integers")
            value = tuple(value)
        elif key == "driver_memory":
            value = str(value)
        elif key == "max_concurrent_tables":
            value = _positive(path, "tables.max_concurrent_tables", value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise MatrixError(f"{path}: tables.{key}: {value!r} is not a positive number")
        out = replace(out, **{key: value})
    return out


def load(path: str | Path) -> Matrix:
    p = str(path)
    try:
        doc = yaml.safe_load(Path(p).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MatrixError(f"{p}: cannot read the tuning matrix: {exc}") from None
    if not isinstance(doc, dict):
        raise MatrixError(f"{p}: expected a mapping at the top level")
    _known(p, "", doc, _TOP)
    base = Cell(**{k: _coerce(p, "base", k, v) for k, v in (doc.get("base") or {}).items()})
    data = doc.get("dataset") or {}
    incr = doc.get("incremental") or {}
    for where, section, allowed in (("dataset", data, {"rows", "scaling_rows"}),
                                    ("incremental", incr, {"batches", "rows_per_batch", "num_partitions"})):
        bad = set(section) - allowed
        if bad:
            raise MatrixError(f"{p}: {where}: unknown key(s) {', '.join(sorted(bad))}")
    return Matrix(
        path=p, base=base, cells=cells_from(p, base, doc.get("sweep"), doc.get("grid")),
        rows=int(data.get("rows", 10_000_000)), scaling_rows=int(data.get("scaling_rows", 1_000_000)),
        incremental_batches=int(incr.get("batches", 32)),
        incremental_rows=int(incr.get("rows_per_batch", 3000)),
        incremental_partitions=int(incr.get("num_partitions", 1)),
        noop_relaunches=int(doc.get("noop_relaunches", 3)), peer=bool(doc.get("peer", True)),
        repeat=_positive(p, "repeat", doc.get("repeat", 2)), tables=_tables_run(p, doc.get("tables")),
        envelope_driver_memory=_envelope(p, doc.get("envelope")))


def _envelope(path: str, doc: Any) -> str | None:
    """``envelope: {driver_memory: 2g}`` (``false``: no envelope run)."""
    if doc is False:
        return None
    if doc is None:
        return "2g"
    if not isinstance(doc, dict) or set(doc) != {"driver_memory"}:
        raise MatrixError(f"{path}: envelope: expected {{driver_memory: SIZE}} or false")
    return str(doc["driver_memory"])


def _positive(path: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MatrixError(f"{path}: {key}: {value!r} is not a positive integer")
    return value


def combined(base: Cell, results: list[dict[str, Any]], margin: float = 0.05) -> Cell | None:
    """The base cell with every swept knob set to its winning value: the one whose cell beat
    the base's throughput by more than ``margin`` (noise), if any. None when no knob won or
    the combination is a cell already measured."""
    by_name = {r["cell"]: r for r in results if not r.get("error")}
    base_rate = by_name.get("base", {}).get("rows_per_s")
    if not base_rate:
        return None
    base_max = by_name["base"].get("rows_per_s_max", base_rate)
    winners: dict[str, Any] = {}
    for knob in KNOBS:
        tried = [r for r in by_name.values() if r.get("knob") == knob]
        if tried:
            best = max(tried, key=lambda r: r["rows_per_s"])
            # beyond the noise: better by the margin, and (with repetitions) every run of it
            # faster than every run of the base
            if best["rows_per_s"] > base_rate * (1 + margin) and best.get("rows_per_s_min",
                                                                          best["rows_per_s"]) > base_max:
                winners[knob] = best[knob]
    if not winners:
        return None
    label = ",".join(f"{k}={_text(v)}" for k, v in winners.items())
    cell = replace(base, **winners, knob="combined", value=label)
    if len(winners) == 1:
        return None  # that cell was measured already
    return cell
