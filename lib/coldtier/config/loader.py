"""YAML configuration: load, substitute ``${VAR}``, validate, freeze (``load``).

Every problem is reported before Spark starts, as one paragraph naming the file, the line and
the key. Values never appear in errors for keys that hold secrets. One module because one reader
(``_Reader``, line-aware) validates every section and the sections refer to each other (a table
names a source connection and a catalog); it is the YAML's only door.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from coldtier.config.model import (
    CURSOR_MODES,
    READERS,
    SINK_FORMATS,
    AppConfig,
    BatchConfig,
    CursorConfig,
    LedgerConfig,
    MaintenanceConfig,
    MetricsConfig,
    RunConfig,
    SourceConfig,
    SparkSection,
    TableConfig,
    TargetConfig,
)
from coldtier.errors import ConfigError
from coldtier.types import COLUMN_CHOICES

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLAIN_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUOTED_IDENT = re.compile(r"^`[^`\x00]+`$")
_PARTITION_RE = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*|(years|months|days|hours|identity|bucket|truncate)\("
    r"(\d+,\s*)?[A-Za-z_][A-Za-z0-9_]*(,\s*\d+)?\))$")

# --- loading with line numbers ----------------------------------------------------------

class _Node:
    """A YAML value with the line it came from."""

    def __init__(self, value: Any, line: int) -> None:
        self.value = value
        self.line = line


def _convert(node: yaml.Node, path: str, file: str) -> _Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _Node] = {}
        for k, v in node.value:
            key = str(k.value)
            if key in out:
                raise ConfigError(f"{file}:{k.start_mark.line + 1}: key {path + key!r} appears twice.")
            out[key] = _convert(v, f"{path}{key}.", file)
        return _Node(out, line)
    if isinstance(node, yaml.SequenceNode):
        return _Node([_convert(v, f"{path}[{i}].", file) for i, v in enumerate(node.value)], line)
    value = yaml.safe_load(yaml.serialize(node)) if node.tag != "tag:yaml.org,2002:str" else node.value
    return _Node(value, line)


_KIND = {int: "a whole number", float: "a number"}


class _Map(dict):
    """A YAML mapping's entries, remembering the mapping's line (for a key that is missing)."""

    line: int = 0


# Iceberg's catalog types (CatalogUtil); any other catalog is named by `catalog-impl`
CATALOG_TYPES = ("hadoop", "hive", "rest", "jdbc", "glue", "nessie")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")  # pipeline and table names: letters, digits, _ and -


class _Reader:
    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env

    def fail(self, node: _Node | None, key: str, problem: str) -> ConfigError:
        where = f"{self.file}:{node.line}" if node else self.file
        return ConfigError(f"{where}: {key}: {problem}")

    def mapping(self, node: _Node, key: str, allowed: tuple[str, ...]) -> dict[str, _Node]:
        if not isinstance(node.value, dict):
            raise self.fail(node, key, f"expected a mapping, got {type(node.value).__name__}.")
        unknown = [k for k in node.value if k not in allowed]
        if unknown:
            bad = node.value[unknown[0]]
            raise self.fail(bad, f"{key}.{unknown[0]}" if key else unknown[0],
                            f"unknown key. Allowed here: {', '.join(allowed)}.")
        out = _Map(node.value)
        out.line = node.line
        return out

    def missing(self, m: dict[str, _Node], key: str,
                problem: str = "is required but missing.") -> ConfigError:
        """A required key that is absent: named with the line of the mapping it belongs in."""
        line = getattr(m, "line", 0)
        return self.fail(_Node(None, line) if line else None, key, problem)

    def subst(self, node: _Node, key: str, value: str) -> str:
        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.env and m.group(2) is not None:
                return m.group(2)
            if name not in self.env:
                raise self.fail(node, key, f"environment variable ${{{name}}} is not set.")
            return self.env[name]

        return _ENV_RE.sub(repl, value)

    def string(self, m: dict[str, _Node], name: str, key: str,
               default: str | dict[str, Any] | None = None, required: bool = False) -> str | None:
        fallback = default.get(name) if isinstance(default, dict) else default  # dict: _defaults
        node = m.get(name)
        if node is None or node.value is None:
            if required:
                raise self.missing(m, f"{key}{name}")
            return None if fallback is None else str(fallback)
        if isinstance(node.value, (dict, list)):
            raise self.fail(node, f"{key}{name}", "expected a string.")
        return self.subst(node, f"{key}{name}", str(node.value))

    def reference(self, m: dict[str, _Node], name: str, key: str, section: str,
                  entries: Mapping[str, Any]) -> str:
        """A required key whose value must name an entry of another section."""
        value = self.string(m, name, key, required=True) or ""
        if value not in entries:
            raise self.fail(m[name], key + name,
                            f"{value!r} is not one of {section}: {', '.join(entries) or '(none)'}.")
        return value

    def number(self, m: dict[str, _Node], name: str, key: str, default: float | dict[str, Any], kind: type,
               minimum: float | None = None) -> Any:
        if isinstance(default, dict):  # a dataclass's defaults (_defaults)
            default = default[name]
        node = m.get(name)
        if node is None:
            return default
        value = node.value
        if isinstance(value, str):
            value = self.subst(node, key + name, value)
            try:
                value = kind(value)
            except ValueError:
                raise self.fail(node, key + name, f"expected {_KIND[kind]}, got {value!r}.") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not isinstance(value, int)
        ):
            raise self.fail(node, key + name, f"expected {_KIND[kind]}, got {value!r}.")
        if minimum is not None and value < minimum:
            raise self.fail(node, key + name, f"must be at least {minimum}, got {value}.")
        return kind(value)

    def boolean(self, m: dict[str, _Node], name: str, key: str, default: bool | dict[str, Any]) -> bool:
        """A real YAML boolean (true/false): a quoted "false", 0 or "no" is an error, never True."""
        if isinstance(default, dict):  # a dataclass's defaults (_defaults)
            default = bool(default[name])
        node = m.get(name)
        if node is None or node.value is None:
            return default
        if not isinstance(node.value, bool):
            raise self.fail(node, key + name, f"expected true or false (unquoted), got {node.value!r}.")
        return node.value

    def str_map(self, m: dict[str, _Node], name: str, key: str) -> dict[str, str]:
        node = m.get(name)
        if node is None or node.value is None:
            return {}
        if not isinstance(node.value, dict):
            raise self.fail(node, key + name, "expected a mapping of names to values.")
        out = {}
        for k, v in node.value.items():
            if isinstance(v.value, (dict, list)):
                raise self.fail(v, f"{key}{name}.{k}", "expected a scalar value.")
            val = v.value
            if isinstance(val, bool):
                val = str(val).lower()
            out[k] = self.subst(v, f"{key}{name}.{k}", str(val))
        return out

    def str_list(self, m: dict[str, _Node], name: str, key: str) -> tuple[str, ...]:
        node = m.get(name)
        if node is None or node.value is None:
            return ()
        items = node.value if isinstance(node.value, list) else [node]
        return tuple(self.subst(i, key + name, str(i.value)) for i in items)

    def identifier(self, node_map: dict[str, _Node], name: str, key: str, value: str | None,
                   parts: tuple[int, ...] = (1,)) -> None:
        if value is None:
            return
        pieces = _split_ident(value)
        if pieces is None or len(pieces) not in parts or not all(
            _PLAIN_IDENT.match(p) or _QUOTED_IDENT.match(p) for p in pieces
        ):
            shape = " or ".join({1: "name", 2: "db.name", 3: "a.b.name"}[p] for p in parts)
            raise self.fail(node_map.get(name), key + name,
                            f"{value!r} is not a plain or `quoted` identifier ({shape}).")


def _unset_vars(node: _Node, key: str, env: Mapping[str, str]) -> Iterator[tuple[int, str, str]]:
    """(line, key, name) of every ``${NAME}`` without a default whose variable is not set."""
    if isinstance(node.value, dict):
        for k, v in node.value.items():
            yield from _unset_vars(v, f"{key}.{k}" if key else k, env)
    elif isinstance(node.value, list):
        for i, v in enumerate(node.value):
            yield from _unset_vars(v, f"{key}[{i}]", env)
    elif isinstance(node.value, str):
        for m in _ENV_RE.finditer(node.value):
            if m.group(1) not in env and m.group(2) is None:
                yield node.line, key, m.group(1)


def _keys(node: _Node) -> tuple[str, ...]:
    return tuple(node.value) if isinstance(node.value, dict) else ()


def _split_ident(value: str) -> list[str] | None:
    out, cur, quoted = [], "", False
    for ch in value:
        if ch == "`":
            quoted = not quoted
            cur += ch
        elif ch == "." and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if quoted:
        return None
    out.append(cur)
    return out


ENV_FILE_VAR = "COLDTIER_ENV_FILE"


def referenced_env(text: str) -> list[str]:
    """Names of the environment variables a config text refers to (``${NAME}``)."""
    return list(dict.fromkeys(m.group(1) for m in _ENV_RE.finditer(text)))


def process_env() -> dict[str, str]:
    """The environment configs are resolved against: this process's, plus the variables in
    the JSON file named by ``COLDTIER_ENV_FILE`` when set. In YARN/Kubernetes cluster mode the
    driver runs far from the launcher's environment; the launcher ships the config's
    variables in that file (``--files``, private to the application) instead of on a command
    line. Variables set in the process win."""
    env = dict(os.environ)
    name = env.get(ENV_FILE_VAR)
    if name and os.path.exists(name):
        import json

        with open(name) as fh:
            for k, v in json.load(fh).items():
                env.setdefault(k, v)
    return env


def _iceberg_target(r: _Reader, gm: dict[str, _Node], k: str, catalogs: Mapping[str, Any]) -> TargetConfig:
    if "path" in gm:
        raise r.fail(gm["path"], k + "path", "is for Delta targets (format: delta).")
    catalog = r.reference(gm, "catalog", k, "catalogs", catalogs)
    ttable = r.string(gm, "table", k, required=True) or ""
    r.identifier(gm, "table", k, ttable, (2,))
    partition_by = r.str_list(gm, "partition_by", k)
    for p in partition_by:
        if not _PARTITION_RE.match(p):
            raise r.fail(gm["partition_by"], k + "partition_by",
                         f"{p!r} is not a column or a transform like days(col) / bucket(16, col).")
    sort_by = r.str_list(gm, "sort_by", k)
    for s in sort_by:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*( (ASC|DESC))?$", s, re.I):
            raise r.fail(gm["sort_by"], k + "sort_by", f"{s!r} is not `column [ASC|DESC]`.")
    return TargetConfig(catalog, ttable, partition_by, sort_by, r.str_map(gm, "properties", k))


def _delta_target(r: _Reader, gm: dict[str, _Node], k: str, catalogs: Mapping[str, Any]) -> TargetConfig:
    tpath = r.string(gm, "path", k, required=True) or ""
    for key in ("catalog", "table", "sort_by"):
        if key in gm:
            raise r.fail(gm[key], k + key, "does not apply to a Delta target (named by its path).")
    partition_by = r.str_list(gm, "partition_by", k)
    for p in partition_by:
        if not _PLAIN_IDENT.match(p):
            raise r.fail(gm["partition_by"], k + "partition_by",
                         f"{p!r}: Delta partitions by plain columns (transforms are Iceberg's).")
    return TargetConfig("", "", partition_by, (), r.str_map(gm, "properties", k), "delta", tpath)


def _defaults(cls: type) -> dict[str, Any]:
    """A dataclass's field defaults: each default is written once, on its field."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


_SRC, _LEDGER, _CURSOR, _BATCH = map(_defaults, (SourceConfig, LedgerConfig, CursorConfig, BatchConfig))
_TARGET, _TABLE = map(_defaults, (TargetConfig, TableConfig))
_METRICS, _MAINT, _RUN = map(_defaults, (MetricsConfig, MaintenanceConfig, RunConfig))


def load(path: str | Path, env: Mapping[str, str] | None = None) -> AppConfig:
    file = str(path)
    env = process_env() if env is None else env
    try:
        text = Path(file).read_text()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror}.") from None
    try:
        root_node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(f"{where}: malformed YAML: {getattr(exc, 'problem', exc)}.") from None
    if root_node is None:
        raise ConfigError(f"{file}: the config file is empty.")
    r = _Reader(file, env)
    tree = _convert(root_node, "", file)
    unset = list(_unset_vars(tree, "", env))
    if unset:
        raise ConfigError("; ".join(f"{file}:{line}: {key}: environment variable ${{{name}}} is not set"
                                    for line, key, name in unset) + ".")
    root = r.mapping(tree, "",
                     ("pipeline", "spark", "sources", "ledger", "catalogs", "tables", "metrics",
                      "maintenance", "run"))

    pipeline = r.string(root, "pipeline", "", required=True)
    assert pipeline is not None
    if not _NAME.match(pipeline):
        raise r.fail(root["pipeline"], "pipeline", f"{pipeline!r}: a name is letters, digits, _ and -, "
                                                   f"starting with a letter or _.")

    spark = SparkSection()
    if "spark" in root:
        sm = r.mapping(root["spark"], "spark", ("master", "deploy_mode", "conf"))
        spark = SparkSection(r.string(sm, "master", "spark."), r.string(sm, "deploy_mode", "spark."),
                             r.str_map(sm, "conf", "spark."))
        if spark.deploy_mode not in (None, "client", "cluster"):
            raise r.fail(sm["deploy_mode"], "spark.deploy_mode",
                         f"{spark.deploy_mode!r} is not one of client, cluster.")

    sources: dict[str, SourceConfig] = {}
    src_root = r.mapping(root["sources"], "sources", _keys(root["sources"])) \
        if "sources" in root else {}
    if not src_root:
        raise r.missing(root, "sources", "at least one source connection is required.")
    for name, node in src_root.items():
        k = f"sources.{name}."
        sm = r.mapping(node, f"sources.{name}",
                       ("url", "user", "password", "properties", "connect_timeout_s", "read_timeout_s"))
        url = r.string(sm, "url", k, required=True)
        assert url is not None
        if not url.startswith("jdbc:clickhouse:") and not url.startswith("jdbc:ch:"):
            raise r.fail(sm["url"], k + "url", "must be a jdbc:clickhouse://host:port/db URL.")
        sources[name] = SourceConfig(
            name, url, r.string(sm, "user", k, _SRC) or _SRC["user"],
            r.string(sm, "password", k, _SRC) or "", r.str_map(sm, "properties", k),
            r.number(sm, "connect_timeout_s", k, _SRC, float, 0.1),
            r.number(sm, "read_timeout_s", k, _SRC, float, 1.0))

    if "ledger" not in root:
        raise r.missing(root, "ledger", "is required (ledger.dsn: the PostgreSQL batch ledger).")
    lm = r.mapping(root["ledger"], "ledger",
                   ("dsn", "schema", "connect_timeout_s", "statement_timeout_s", "tcp_timeout_s"))
    ledger = LedgerConfig(r.string(lm, "dsn", "ledger.", required=True) or "",
                          r.string(lm, "schema", "ledger.", _LEDGER) or _LEDGER["schema"],
                          r.number(lm, "connect_timeout_s", "ledger.", _LEDGER, float, 0.1),
                          r.number(lm, "statement_timeout_s", "ledger.", _LEDGER, float, 1.0),
                          r.number(lm, "tcp_timeout_s", "ledger.", _LEDGER, float, 1.0))
    r.identifier(lm, "schema", "ledger.", ledger.schema)

    catalogs: dict[str, dict[str, str]] = {}
    if "catalogs" in root:
        for name, node in r.mapping(root["catalogs"], "catalogs", _keys(root["catalogs"])).items():
            if not _PLAIN_IDENT.match(name):
                raise r.fail(node, f"catalogs.{name}", "catalog names must be plain identifiers.")
            props = r.str_map({name: node}, name, "catalogs.")
            ctype = props.get("type")
            if ctype is None and "catalog-impl" not in props:
                raise r.fail(node, f"catalogs.{name}.type",
                             f"is required: one of {', '.join(CATALOG_TYPES)} (or catalog-impl: a class).")
            if ctype is not None and ctype not in CATALOG_TYPES:
                raise r.fail(node.value["type"], f"catalogs.{name}.type",
                             f"{ctype!r} is not one of {', '.join(CATALOG_TYPES)} (for another catalog, "
                             f"catalog-impl: a class).")
            catalogs[name] = props

    tables: list[TableConfig] = []
    tnode = root.get("tables")
    if tnode is None or not isinstance(tnode.value, list) or not tnode.value:
        raise r.fail(tnode, "tables", "a non-empty list of tables is required.") if tnode is not None \
            else r.missing(root, "tables", "a non-empty list of tables is required.")
    seen: set[str] = set()
    for i, node in enumerate(tnode.value):
        k = f"tables[{i}]."
        tm = r.mapping(node, f"tables[{i}]",
                       ("name", "source", "cursor", "batch", "target", "keep_nanos", "columns", "short_read",
                        "key"))
        name = r.string(tm, "name", k, required=True) or ""
        if not _NAME.match(name):
            raise r.fail(tm["name"], k + "name", f"{name!r}: a name is letters, digits, _ and -, starting "
                                                 f"with a letter or _.")
        if name in seen:
            raise r.fail(tm["name"], k + "name", f"table name {name!r} is used twice.")
        seen.add(name)
        if "source" not in tm:
            raise r.missing(tm, k + "source", "is required.")
        sm = r.mapping(tm["source"], k + "source", ("connection", "table"))
        conn = r.reference(sm, "connection", k + "source.", "sources", sources)
        src_table = r.string(sm, "table", k + "source.", required=True) or ""
        r.identifier(sm, "table", k + "source.", src_table, (2,))

        cm = r.mapping(tm["cursor"], k + "cursor",
                       ("mode", "timestamp_column", "incrementing_column", "lag_s", "ttl_margin_s",
                        "ordered_writer")) \
            if "cursor" in tm else {}
        mode = r.string(cm, "mode", k + "cursor.", _CURSOR) or ""
        if mode not in CURSOR_MODES:
            raise r.fail(cm.get("mode"), k + "cursor.mode",
                         f"{mode!r} is not one of {', '.join(CURSOR_MODES)}.")
        ts_col = r.string(cm, "timestamp_column", k + "cursor.",
                          _CURSOR["timestamp_column"] if mode != "incrementing" else None)
        inc_col = r.string(cm, "incrementing_column", k + "cursor.",
                           _CURSOR["incrementing_column"] if mode != "timestamp" else None)
        if mode == "incrementing":
            ts_col = None
        if mode == "timestamp":
            inc_col = None
        r.identifier(cm, "timestamp_column", k + "cursor.", ts_col)
        r.identifier(cm, "incrementing_column", k + "cursor.", inc_col)
        ordered_writer = r.string(cm, "ordered_writer", k + "cursor.")
        if mode == "incrementing" and not ordered_writer:
            raise r.fail(cm.get("mode") or node, k + "cursor.mode",
                         "'incrementing' has no timestamp, so no visibility lag and no reconcile: a row "
                         "whose number was assigned before a row already copied, but committed after it, is "
                         "lost without a trace. Use it only when one writer assigns the numbers in commit "
                         "order, and say so: cursor.ordered_writer: <who assigns them>.")
        cursor = CursorConfig(mode, ts_col, inc_col,
                              r.number(cm, "lag_s", k + "cursor.", _CURSOR, float, 0.0),
                              r.number(cm, "ttl_margin_s", k + "cursor.", _CURSOR, float, 0.0),
                              ordered_writer)

        bm = r.mapping(tm["batch"], k + "batch",
                       ("max_rows", "num_partitions", "fetchsize", "options", "reader")) \
            if "batch" in tm else {}
        reader = r.string(bm, "reader", k + "batch.", _BATCH) or _BATCH["reader"]
        if reader not in READERS:
            raise r.fail(bm.get("reader"), k + "batch.reader",
                         f"{reader!r} is not one of {', '.join(READERS)}.")
        batch = BatchConfig(r.number(bm, "max_rows", k + "batch.", _BATCH, int, 1),
                            r.number(bm, "num_partitions", k + "batch.", _BATCH, int, 1),
                            r.number(bm, "fetchsize", k + "batch.", _BATCH, int, 1),
                            r.str_map(bm, "options", k + "batch."), reader)

        if "target" not in tm:
            raise r.missing(tm, k + "target", "is required.")
        gm = r.mapping(tm["target"], k + "target",
                       ("format", "catalog", "table", "path", "partition_by", "sort_by", "properties"))
        fmt = r.string(gm, "format", k + "target.", _TARGET) or _TARGET["format"]
        if fmt not in SINK_FORMATS:
            raise r.fail(gm.get("format"), k + "target.format",
                         f"{fmt!r} is not one of {', '.join(SINK_FORMATS)}.")
        maker = _delta_target if fmt == "delta" else _iceberg_target
        target = maker(r, gm, k + "target.", catalogs)
        keep_nanos = r.boolean(tm, "keep_nanos", k, _TABLE)
        columns = r.str_map(tm, "columns", k)
        for col, choice in columns.items():
            if choice not in COLUMN_CHOICES:
                raise r.fail(tm["columns"].value[col], f"{k}columns.{col}",
                             f"{choice!r} is not one of {', '.join(COLUMN_CHOICES)}.")
        short_read = r.string(tm, "short_read", k, _TABLE) or _TABLE["short_read"]
        if short_read not in ("fail", "warn"):
            raise r.fail(tm["short_read"], k + "short_read", f"{short_read!r} is not one of fail, warn.")
        row_key = r.str_list(tm, "key", k)
        for col in row_key:
            r.identifier(tm, "key", k, col)
        tables.append(TableConfig(name, conn, src_table, cursor, batch, target, keep_nanos, columns,
                                  short_read, row_key))

    metrics = MetricsConfig()
    if "metrics" in root:
        mm = r.mapping(root["metrics"], "metrics", ("textfile", "pushgateway", "port", "job"))
        gateway = r.string(mm, "pushgateway", "metrics.")
        if gateway and not re.match(r"^https?://[^/\s]+", gateway):
            raise r.fail(mm["pushgateway"], "metrics.pushgateway", f"{gateway!r} is not an http(s):// URL.")
        port = r.number(mm, "port", "metrics.", 0, int, 0)
        if port > 65535:
            raise r.fail(mm["port"], "metrics.port", f"{port} is not a TCP port.")
        metrics = MetricsConfig(r.string(mm, "textfile", "metrics."), gateway, port or None,
                                r.string(mm, "job", "metrics.", _METRICS) or _METRICS["job"])
    maint = MaintenanceConfig()
    if "maintenance" in root:
        mm = r.mapping(root["maintenance"], "maintenance",
                       ("target_file_size_mb", "snapshot_retention_h", "retain_last", "orphan_age_h",
                        "unsafe_short_retention"))
        unsafe = r.boolean(mm, "unsafe_short_retention", "maintenance.", _MAINT)
        floor = 0.0 if unsafe else 1.0
        for key in ("snapshot_retention_h", "orphan_age_h"):
            if key in mm and not unsafe and r.number(mm, key, "maintenance.", 1.0, float) < 1.0:
                raise r.fail(mm[key], f"maintenance.{key}",
                             "must be at least 1 (hours): a shorter retention lets VACUUM or orphan removal "
                             "delete the files of a commit still in flight (another writer's, or a batch "
                             "being staged). To accept that risk, set maintenance.unsafe_short_retention: "
                             "true.")
        maint = MaintenanceConfig(r.number(mm, "target_file_size_mb", "maintenance.", _MAINT, int, 1),
                                  r.number(mm, "snapshot_retention_h", "maintenance.", _MAINT, float, floor),
                                  r.number(mm, "retain_last", "maintenance.", _MAINT, int, 1),
                                  r.number(mm, "orphan_age_h", "maintenance.", _MAINT, float, floor),
                                  unsafe)
    run = RunConfig()
    if "run" in root:
        rm = r.mapping(root["run"], "run", ("max_concurrent_tables",))
        run = RunConfig(r.number(rm, "max_concurrent_tables", "run.", _RUN, int, 1))
    return AppConfig(file, pipeline, spark, sources, ledger, catalogs, tuple(tables), metrics, maint, run)
