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
    assert not got["backfill vs the no-Spark peer path"].ok and "0.75x" in got["backfill vs the no-Spark peer path"].figure


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
