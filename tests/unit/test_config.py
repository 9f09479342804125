from pathlib import Path

import pytest

from coldtier.config import ConfigError, load, mask

GOOD = """\
pipeline: p1
spark:
  master: local[2]
  conf: {spark.executor.memory: 2g}
sources:
  ch:
    url: jdbc:clickhouse://127.0.0.1:8123/default
    user: default
    password: ${CH_PW}
ledger:
  dsn: host=127.0.0.1 dbname=x user=u password=${PG_PW:-pgsecret}
catalogs:
  cold: {type: hadoop, warehouse: /tmp/wh}
tables:
  - name: trades
    source: {connection: ch, table: k2.bronze_trades_binance}
    cursor: {lag_s: 60}
    batch: {max_rows: 3000, num_partitions: 4, options: {clickhouse_setting_max_block_size: 8192}}
    target: {catalog: cold, table: cold.trades, partition_by: ["days(exchange_timestamp)"],
             sort_by: [exchange_timestamp], properties: {write.target-file-size-bytes: 134217728}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_good_config_loads_with_env_and_defaults(tmp_path):
    cfg = load(write(tmp_path, GOOD), {"CH_PW": "chsecret"})
    t = cfg.tables[0]
    assert cfg.sources["ch"].password == "chsecret"
    assert "password=pgsecret" in cfg.ledger.dsn
    assert t.cursor.mode == "timestamp+incrementing" and t.cursor.lag_s == 60
    assert t.batch.options == {"clickhouse_setting_max_block_size": "8192"}
    assert t.batch.reader == "jdbc"  # the default reader
    assert t.target.identifier == "cold.cold.trades"
    assert set(cfg.secrets()) == {"chsecret", "pgsecret"}
    assert "chsecret" not in repr(cfg)


@pytest.mark.parametrize(("change", "message"), [
    (("    user: default\n", "    user: default\n    pasword: x\n"), r"c.yaml:9: sources.ch.pasword: unknown key"),
    (("${CH_PW}", "${NOPE_VAR}"), r"c.yaml:9: sources.ch.password: environment variable \$\{NOPE_VAR\} is not set"),
    (("k2.bronze_trades_binance", "x; DROP TABLE y"), r"tables\[0\].source.table: 'x; DROP TABLE y' is not a plain"),
    (("max_rows: 3000", "max_rows: lots"), r"c.yaml:18: tables\[0\].batch.max_rows: expected a whole number, "
                                           r"got 'lots'"),
    (("max_rows: 3000", "max_rows: 2.5"), r"max_rows: expected a whole number, got 2.5"),
    (("master: local[2]\n", "master: local[2]\n  deploy_mode: clustre\n"),
     r"c.yaml:4: spark.deploy_mode: 'clustre' is not one of client, cluster"),
    (("type: hadoop", "type: hadop"), r"c.yaml:13: catalogs.cold.type: 'hadop' is not one of hadoop, hive, rest"),
    (("type: hadoop, ", ""), r"c.yaml:13: catalogs.cold.type: is required"),
    (("warehouse: /tmp/wh}", "warehouse: [a, b]}"), r"c.yaml:13: catalogs.cold.warehouse: expected a scalar"),
    (("    source: {connection: ch, table: k2.bronze_trades_binance}\n", ""),
     r"c.yaml:15: tables\[0\].source: is required"),
    (("    url: jdbc:clickhouse://127.0.0.1:8123/default\n", ""), r"c.yaml:7: sources.ch.url: is required"),
    (("name: trades", "name: 'trades!'"), r"tables\[0\].name: 'trades!': a name is letters, digits, _ and -"),
    (("max_rows: 3000", "max_rows: 0"), r"max_rows: must be at least 1"),
    (("catalog: cold", "catalog: warm"), r"target.catalog: 'warm' is not one of catalogs: cold"),
    (("lag_s: 60", "mode: sideways"), r"cursor.mode: 'sideways' is not one of"),
    (("num_partitions: 4,", "num_partitions: 4, reader: arrow,"),
     r"c.yaml:18: tables\[0\].batch.reader: 'arrow' is not one of jdbc, native"),
    (("pipeline: p1\n", "pipeline: p1\n  - broken: [\n"), r"c.yaml:\d+: malformed YAML"),
])
def test_bad_config_names_file_line_and_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, GOOD.replace(*change)), {"CH_PW": "s"})


def test_every_unset_variable_is_named_at_once(tmp_path):
    text = GOOD.replace("dsn: host=127.0.0.1", "dsn: host=${PG_HOST}")
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), {})
    assert str(err.value).endswith("c.yaml:9: sources.ch.password: environment variable ${CH_PW} is not set; "
                                   f"{tmp_path}/c.yaml:11: ledger.dsn: environment variable ${{PG_HOST}} is not "
                                   f"set.")  # PG_PW has a default


def test_names_may_hold_dashes(tmp_path):
    cfg = load(write(tmp_path, GOOD.replace("pipeline: p1", "pipeline: k2-cold").replace(
        "name: trades", "name: trades-binance")), {"CH_PW": "x"})
    assert cfg.pipeline == "k2-cold" and cfg.tables[0].name == "trades-binance"


def test_mask_hides_values_not_words_inside_paths():
    assert mask("password=hunter2 at /x/hunter2-lib.zip", ("hunter2",)) == "password=*** at /x/hunter2-lib.zip"


def test_a_secret_equal_to_a_printed_name_is_not_masked_as_a_word(tmp_path):
    """The dev stack's old password was `coldtier`: every message read `another *** run holds the
    lock for ***/newcomer/binance`. A secret equal to a name coldtier prints hides nothing by
    being masked as a word; it is still hidden after `password=` and in URLs."""
    cfg = load(write(tmp_path, GOOD.replace("pipeline: p1", "pipeline: newcomer")),
               {"CH_PW": "coldtier", "PG_PW": "A-long-Secret-9"})
    assert cfg.secrets() == ("A-long-Secret-9",) and cfg.weak_secrets() == ("coldtier",)
    message = "another coldtier run holds the lock for coldtier/newcomer/trades"
    assert mask(message, cfg.secrets()) == message
    assert mask("dsn host=h password=coldtier user=coldtier", cfg.secrets()) == \
        "dsn host=h password=*** user=coldtier"
    assert mask("http://default:coldtier@127.0.0.1:8123/", cfg.secrets()) == "http://default:***@127.0.0.1:8123/"
    assert mask('{"token": "coldtier"} A-long-Secret-9 x', cfg.secrets()) == '{"token": "***"} *** x'
    # a config error naming a secret key keeps its words
    assert mask("catalogs.rest.token: unknown key", cfg.secrets()) == "catalogs.rest.token: unknown key"


@pytest.mark.parametrize("value", ['"false"', '"0"', '"no"', "0", "1", "no-thanks", '""'])
def test_booleans_accept_only_real_booleans(tmp_path, value):
    text = GOOD.replace("    cursor: {lag_s: 60}\n", f"    cursor: {{lag_s: 60}}\n    keep_nanos: {value}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:18: tables\[0\].keep_nanos: expected true or false"):
        load(write(tmp_path, text), {"CH_PW": "x"})


@pytest.mark.parametrize(("value", "want"), [("true", True), ("false", False), ("yes", True), ("off", False)])
def test_booleans_accept_yaml_booleans(tmp_path, value, want):
    text = GOOD.replace("    cursor: {lag_s: 60}\n", f"    cursor: {{lag_s: 60}}\n    keep_nanos: {value}\n")
    assert load(write(tmp_path, text), {"CH_PW": "x"}).tables[0].keep_nanos is want


def test_column_choices_are_checked(tmp_path):
    text = GOOD.replace("    cursor: {lag_s: 60}\n", "    cursor: {lag_s: 60}\n    columns: {price: binary, raw: "
                        "exclude}\n")
    assert dict(load(write(tmp_path, text), {"CH_PW": "x"}).tables[0].columns) == {"price": "binary",
                                                                                "raw": "exclude"}
    bad = text.replace("raw: exclude", "raw: text")
    with pytest.raises(ConfigError, match=r"c.yaml:18: tables\[0\].columns.raw: 'text' is not one of string, "
                                          r"binary, exclude"):
        load(write(tmp_path, bad), {"CH_PW": "x"})


def test_incrementing_mode_needs_a_named_ordered_writer(tmp_path):
    text = GOOD.replace("cursor: {lag_s: 60}", "cursor: {mode: incrementing}")
    with pytest.raises(ConfigError, match=r"c.yaml:17: tables\[0\].cursor.mode: 'incrementing' has no timestamp.*"
                                          r"cursor.ordered_writer"):
        load(write(tmp_path, text), {"CH_PW": "x"})
    ok = GOOD.replace("cursor: {lag_s: 60}", "cursor: {mode: incrementing, ordered_writer: the sequencer}")
    assert load(write(tmp_path, ok), {"CH_PW": "x"}).tables[0].cursor.ordered_writer == "the sequencer"


@pytest.mark.parametrize("key", ["snapshot_retention_h", "orphan_age_h"])
def test_maintenance_retention_has_a_floor_unless_unsafe_is_named(tmp_path, key):
    text = GOOD + f"maintenance: {{{key}: 0.5}}\n"
    with pytest.raises(ConfigError, match=rf"c.yaml:\d+: maintenance.{key}: must be at least 1 \(hours\).*"
                                          r"unsafe_short_retention: true"):
        load(write(tmp_path, text), {"CH_PW": "x"})
    unsafe = GOOD + f"maintenance: {{{key}: 0, unsafe_short_retention: true}}\n"
    assert load(write(tmp_path, unsafe), {"CH_PW": "x"}).maintenance.unsafe_short_retention is True


def test_every_environment_variable_is_documented():
    import re

    from helpers import ROOT

    table = (ROOT / "docs" / "config.md").read_text().split("## Environment variables", 1)[1]
    files = [*(ROOT / "lib").rglob("*.py"), *(ROOT / "scripts").iterdir(), *(ROOT / "conf").glob("*.yaml"),
             ROOT / "Makefile", ROOT / ".ci" / "run", *(ROOT / "jobs").glob("*.py")]
    used = {m for f in files if f.is_file() for m in re.findall(r"COLDTIER_[A-Z_]+[A-Z]", f.read_text())}
    used -= {"COLDTIER_REDACTION"}  # a constant in submit.py, not a variable
    assert used and not {v for v in used if f"`{v}`" not in table}


def test_tables_run_concurrently_by_default_and_the_bound_is_checked(tmp_path):
    assert load(write(tmp_path, GOOD), {"CH_PW": "x"}).run.max_concurrent_tables == 4
    one = load(write(tmp_path, GOOD + "run: {max_concurrent_tables: 1}\n"), {"CH_PW": "x"})
    assert one.run.max_concurrent_tables == 1
    for bad, problem in (("0", "must be at least 1"), ("two", "expected a whole number"), ("1.5", "expected")):
        with pytest.raises(ConfigError, match=rf"c.yaml:\d+: run.max_concurrent_tables: {problem}"):
            load(write(tmp_path, GOOD + f"run: {{max_concurrent_tables: {bad}}}\n"), {"CH_PW": "x"})
    with pytest.raises(ConfigError, match=r"run.threads: unknown key"):
        load(write(tmp_path, GOOD + "run: {threads: 2}\n"), {"CH_PW": "x"})


def test_the_native_reader_is_chosen_per_table(tmp_path):
    cfg = load(write(tmp_path, GOOD.replace("num_partitions: 4,", "num_partitions: 4, reader: native,")),
               {"CH_PW": "s"})
    assert cfg.tables[0].batch.reader == "native"
