"""The benchmark's pure parts: the tuning matrix and the targets check."""

from __future__ import annotations

import pytest

from coldtier.bench import matrix, report
from coldtier.bench.matrix import Cell, MatrixError


def write(tmp_path, text):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


def test_sweep_varies_one_knob_at_a_time_around_the_base(tmp_path):
    m = matrix.load(write(tmp_path, """
base: {num_partitions: 2, max_rows: 1000}
sweep:
  num_partitions: [1, 2, 4]     # 2 is the base: not run twice
  compress: [false]
  master: ["local[1]"]
"""))
    assert [c.name for c in m.cells] == ["base", "num_partitions=1", "num_partitions=4", "compress=false",
                                         "master=local[1]"]
    assert all(c.max_rows == 1000 for c in m.cells)
    assert m.cells[3].batch_section()["options"]["compress"] == "false"
    groups = m.groups()
    assert [len(g) for g in groups] == [4, 1] and groups[0][0].knob == "base"
    assert groups[1][0].master == "local[1]"


def test_grid_is_the_full_product(tmp_path):
    m = matrix.load(write(tmp_path, """
grid:
  num_partitions: [1, 2]
  parquet_codec: [zstd, snappy]
"""))
    assert len(m.cells) == 4  # base equals one combination, counted once
    assert {(c.num_partitions, c.parquet_codec) for c in m.cells} == {(1, "zstd"), (1, "snappy"), (2, "zstd"),
                                                                        (2, "snappy")}


@pytest.mark.parametrize("text, words", [
    ("sweep: {partitions: [1]}", ["m.yaml", "unknown knob 'partitions'"]),
    ("base: {max_rows: -5}", ["base.max_rows", "-5"]),
    ("base: {compress: 'no'}", ["base.compress"]),
    ("sweep: {max_rows: 5}", ["sweep.max_rows", "non-empty list"]),
    ("cells: []", ["unknown key(s) cells"]),
    ("sweep: {max_rows: [1]}\ngrid: {max_rows: [1]}", ["either sweep or grid"]),
])
def test_bad_matrix_names_what_and_where(tmp_path, text, words):
    with pytest.raises(MatrixError) as err:
        matrix.load(write(tmp_path, text))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_max_block_size_and_app_knobs_reach_the_config():
    c = Cell(max_block_size=8192, executor_cores=2, executor_memory="2g", executor_instances=3)
    assert c.batch_section()["options"]["clickhouse_setting_max_block_size"] == "8192"
    assert c.batch_section()["options"]["clickhouse_setting_use_query_condition_cache"] == "0"
    assert c.spark_conf() == {"spark.driver.memory": "4g", "spark.executor.cores": "2",
                              "spark.executor.memory": "2g", "spark.executor.instances": "3"}


def cell(name, rows_per_s, rows=10_000_000, retained=300.0, knob=None):
    return {"cell": name, "knob": knob or name, "rows": rows, "expected_rows": rows, "rows_per_s": rows_per_s,
            "seconds": rows / rows_per_s, "driver_retained_heap_mb": retained}


def test_targets_are_ratios_of_figures_from_the_same_run():
    cells = [cell("base", 500_000), cell("num_partitions=4", 600_000, knob="num_partitions"),
             {**cell("broken", 900_000), "error": "boom"}]
    checks = report.targets(
        cells, cells[0], cell("scaling", 450_000, rows=1_000_000, retained=280.0, knob="scaling"),
        source={"rows": 10_000_000, "seconds": 4.0}, sink={"rows": 10_000_000, "seconds": 8.0},
        peer={"rows_per_s": 800_000}, incremental={"rows_per_batch": 3000, "batches": 32, "p50_s": 0.6,
                                                   "p95_s": 1.6},
        noop_s=[2.5, 2.9])
    got = {t.name.split(" (")[0].split(" 3,000")[0]: t for t in checks}
    serial = got["backfill vs serial ceiling"]
    assert serial.ok and "72%" in serial.figure and "num_partitions=4" in serial.figure  # 600K / (10M/12 s)
    assert got["backfill vs the old system"].ok
    assert not got["incremental"].ok  # p95 1.6 > 1.5
    assert got["scaling 1,000,000 → 10,000,000 rows"].ok
    assert got["driver memory as the backlog grows 10x"].ok
    assert got["scheduled relaunch with no new rows"].ok
    assert got["backfill vs the no-Spark peer path"].ok and "0.75x" in got["backfill vs the no-Spark peer path"].figure
    assert not got["backfill of 10,000,000 rows"].ok  # 600K rows/s < the 800K goal


def test_combined_cell_takes_each_knob_that_beat_the_base_beyond_noise():
    base = Cell()
    results = [{"cell": "base", "knob": "base", "rows_per_s": 500_000},
               {"cell": "num_partitions=4", "knob": "num_partitions", "num_partitions": 4, "rows_per_s": 600_000},
               {"cell": "num_partitions=1", "knob": "num_partitions", "num_partitions": 1, "rows_per_s": 380_000},
               {"cell": "compress=false", "knob": "compress", "compress": False, "rows_per_s": 540_000},
               {"cell": "fetchsize=100", "knob": "fetchsize", "fetchsize": 100, "rows_per_s": 520_000}]  # noise
    c = matrix.combined(base, results)
    assert c is not None and (c.num_partitions, c.compress, c.fetchsize) == (4, False, base.fetchsize)
    assert c.name == "combined" and c.value == "num_partitions=4,compress=false"
    assert matrix.combined(base, results[:3]) is None  # one winner: already measured
    assert matrix.combined(base, [results[0], results[4]]) is None


def test_repetitions_report_the_lower_median_run():
    from coldtier.bench.harness import aggregate

    runs = [{"cell": "base", "rows_per_s": 500}, {"cell": "base", "rows_per_s": 540},
            {"cell": "x", "rows_per_s": 10}, {"cell": "x", "error": "boom"}]
    got = {r["cell"]: r for r in aggregate(runs)}
    assert got["base"]["rows_per_s"] == 500 and got["base"]["rows_per_s_runs"] == "500/540"
    assert got["base"]["spread_pct"] == 8.0
    assert got["x"]["error"] == "boom"


def test_recommendation_needs_every_run_to_beat_the_base():
    base = {"cell": "base", "knob": "base", "rows": 10, "expected_rows": 10, "rows_per_s": 500,
            "rows_per_s_min": 500, "rows_per_s_max": 560}
    inside_noise = {**base, "cell": "a", "knob": "a", "rows_per_s": 540, "rows_per_s_min": 540,
                    "rows_per_s_max": 600}
    assert report.recommended([base, inside_noise]) is base  # higher figure, overlapping runs
    clear = {**base, "cell": "b", "knob": "b", "rows_per_s": 580, "rows_per_s_min": 580, "rows_per_s_max": 590}
    assert report.recommended([base, inside_noise, clear]) is clear
    assert "every run faster" in report.why(clear, base)


def load(tmp_path, text):
    return matrix.load(write(tmp_path, text))


def test_tables_section_defaults_and_errors(tmp_path):
    m = load(tmp_path, "base: {}\n")
    assert m.tables is not None and m.tables.counts == (1, 10, 50, 100) and m.tables.seconds(100) == 600
    assert m.tables.seconds(10) == 120 and m.envelope_driver_memory == "2g"
    off = load(tmp_path, "base: {}\ntables: false\nenvelope: false\n")
    assert off.tables is None and off.envelope_driver_memory is None
    some = load(tmp_path, "base: {}\ntables: {counts: [2, 4], trigger_s: 5, max_concurrent_tables: 8}\n")
    assert some.tables is not None and some.tables.counts == (2, 4) and some.tables.max_concurrent_tables == 8
    for text, words in (("tables: {counts: [0]}", "tables.counts"), ("tables: {trigger_s: -1}", "tables.trigger_s"),
                        ("tables: {speed: 2}", "unknown key(s) speed"), ("envelope: {cores: 2}", "envelope")):
        with pytest.raises(MatrixError, match=words.replace("(", r"\(").replace(")", r"\)")):
            load(tmp_path, "base: {}\n" + text + "\n")


def test_cycles_are_trigger_ticks_after_every_table_committed_once():
    from types import SimpleNamespace as R

    from coldtier.bench.worker import cycle_figures

    recs = [R(table="a", due=0.0, started=0.0, finished=4.0, rows=10, kind="step"),  # warm-up: creates a
            R(table="b", due=0.0, started=0.0, finished=6.0, rows=10, kind="step"),  # ... and b
            R(table="a", due=10.0, started=10.0, finished=11.0, rows=5, kind="step"),
            R(table="b", due=10.0, started=10.0, finished=12.5, rows=5, kind="step"),
            R(table="a", due=20.0, started=20.0, finished=20.5, rows=None, kind="step"),
            R(table="b", due=20.0, started=20.0, finished=21.0, rows=5, kind="step")]
    out = cycle_figures(recs, 10.0, 2)
    assert out["warmup_s"] == 6.0 and out["ticks"] == 2 and out["cycles_s"] == [2.5, 1.0]
    assert out["cycle_max_s"] == 2.5 and out["kept_trigger"] is True and out["batches"] == 5
    late = cycle_figures([*recs[:2], R(table="a", due=10.0, started=10.0, finished=24.0, rows=5, kind="step"),
                          R(table="b", due=10.0, started=10.0, finished=11.0, rows=5, kind="step")], 10.0, 2)
    assert late["cycles_s"] == [14.0] and late["kept_trigger"] is False
    assert cycle_figures(recs[:1], 10.0, 2)["kept_trigger"] is False  # b never committed: not kept


def test_backlog_is_bounded_when_the_second_half_does_not_grow():
    run = {"rows_per_trigger": 100, "tables": 2}
    assert report.backlog_bounded({**run, "backlog_series": [(t, v) for t, v in enumerate([900, 50, 300, 200])]})
    assert not report.backlog_bounded({**run, "backlog_series": [(t, v) for t, v in
                                                                 enumerate([100, 200, 300, 500, 800, 1300])]})
    assert report.backlog_bounded({**run, "backlog_series": [(t, v) for t, v in enumerate([0, 10, 390, 400])]})


def test_the_reader_is_a_cell_knob():
    from coldtier.bench.matrix import CELL_KNOBS

    assert "reader" in CELL_KNOBS
    assert Cell().batch_section()["reader"] == "jdbc"
    assert Cell(reader="native", knob="reader", value="native").batch_section()["reader"] == "native"
