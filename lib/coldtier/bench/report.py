"""Benchmark results: results.csv, results.md, PNG plots and the best cell as a YAML profile.

``targets`` is pure: the issue's targets checked against the figures of one run, as ratios
measured side by side (absolute times drift on shared machines).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coldtier.bench.matrix import Cell, Matrix

# The system coldtier replaces (a Prefect + Spark offload), its published figures.
OLD_BACKFILL_ROWS, OLD_BACKFILL_S = 53_782, 10.0
OLD_INCREMENTAL_S = 5.0
ENVELOPE_MB = 4096  # the old system's production envelope: 2 CPU / 4 GB
BACKFILL_GOAL = 800_000  # rows/s for the 10M backfill on the 2-core machine (issue 16)

CSV_COLUMNS = (
    "cell", "knob", "value", "master", "driver_memory", "executor_cores", "executor_memory",
    "executor_instances", "num_partitions", "max_rows", "fetchsize", "parquet_codec", "compress",
    "max_block_size", "reader", "rows", "seconds", "rows_per_s", "rows_per_s_runs", "spread_pct", "mb_per_s",
    "batches", "plan_s", "read_s",
    "write_s", "commit_s", "files", "bytes_written", "driver_peak_heap_mb", "driver_retained_heap_mb",
    "driver_jvm_peak_rss_mb",
    "driver_python_peak_rss_mb", "executor_peak_heap_mb", "error",
)


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    goal: str
    ok: bool | None  # None: not measured in this run


def ok_cells(cells: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [c for c in cells if not c.get("error") and c.get("rows") == c.get("expected_rows")]


def best_cell(cells: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    good = [c for c in ok_cells(cells) if c.get("knob") != "scaling"]
    return max(good, key=lambda c: c["rows_per_s"]) if good else None


def clearly_faster(cell: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    """Every run of ``cell`` beat every run of ``base``: a difference that the run-to-run
    spread of this machine cannot explain."""
    return cell.get("rows_per_s_min", cell["rows_per_s"]) > base.get("rows_per_s_max", base["rows_per_s"])


def recommended(cells: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The profile to recommend: the fastest cell among those clearly faster than the base;
    the base when none is (a higher figure inside the noise is not evidence)."""
    good = [c for c in ok_cells(cells) if c.get("knob") != "scaling"]
    base = next((c for c in good if c["knob"] == "base"), None)
    if base is None:
        return best_cell(cells)
    winners = [c for c in good if c is not base and clearly_faster(c, base)]
    return max(winners, key=lambda c: c["rows_per_s"]) if winners else base


def why(rec: Mapping[str, Any], base: Mapping[str, Any] | None) -> str:
    if base is None or rec is base or rec.get("knob") == "base":
        return "no cell was faster than the base in every run"
    return (f"every run faster than every run of the base ({rec.get('rows_per_s_runs')} vs "
            f"{base.get('rows_per_s_runs')} rows/s)")


def targets(cells: Sequence[Mapping[str, Any]], base: Mapping[str, Any] | None,
            scaling: Mapping[str, Any] | None, source: Mapping[str, Any] | None,
            sink: Mapping[str, Any] | None, peer: Mapping[str, Any] | None,
            incremental: Mapping[str, Any] | None, noop_s: Sequence[float]) -> list[Target]:
    out: list[Target] = []
    best = best_cell(cells)
    if best and source and sink:
        serial = best["rows"] / (source["seconds"] * best["rows"] / source["rows"]
                                 + sink["seconds"] * best["rows"] / sink["rows"])
        ratio = best["rows_per_s"] / serial
        out.append(Target("backfill vs serial ceiling (export + Spark Parquet write)",
                          f"{best['rows_per_s']:,.0f} rows/s = {ratio:.0%} of {serial:,.0f} rows/s "
                          f"({best['cell']})", ">= 50%", ratio >= 0.5))
    if best:
        old = OLD_BACKFILL_ROWS / OLD_BACKFILL_S
        out.append(Target("backfill vs the old system", f"{best['rows_per_s'] / old:,.0f}x "
                          f"({best['rows_per_s']:,.0f} vs {old:,.0f} rows/s)", "faster",
                          best["rows_per_s"] > old))
    if incremental and not incremental.get("error"):
        p50, p95 = incremental["p50_s"], incremental["p95_s"]
        out.append(Target(f"incremental {incremental['rows_per_batch']:,}-row batches, warm loop "
                          f"({incremental['batches']} batches)", f"p50 {p50:.3f} s, p95 {p95:.3f} s; "
                          f"{OLD_INCREMENTAL_S / p50:.1f}x the old 5 s", "p50 <= 1.0 s, p95 <= 1.5 s",
                          p50 <= 1.0 and p95 <= 1.5))
    if base and scaling and not scaling.get("error") and not base.get("error"):
        ratio = base["rows_per_s"] / scaling["rows_per_s"]
        heap = base["driver_retained_heap_mb"] / max(scaling["driver_retained_heap_mb"], 1.0)
        grows = base["rows"] / scaling["rows"]
        out.append(Target(f"scaling {scaling['rows']:,} → {base['rows']:,} rows (throughput ratio)",
                          f"{ratio:.2f} ({scaling['rows_per_s']:,.0f} → {base['rows_per_s']:,.0f} rows/s)",
                          ">= 0.85 (within 15% of linear)", ratio >= 0.85))
        out.append(Target(f"driver memory as the backlog grows {grows:.0f}x (heap retained after GC)",
                          f"{heap:.2f} ({scaling['driver_retained_heap_mb']:.0f} → "
                          f"{base['driver_retained_heap_mb']:.0f} MB)",
                          "flat (<= 1.5)", heap <= 1.5))
    if noop_s:
        worst = max(noop_s)
        out.append(Target("scheduled relaunch with no new rows (spark-submit, exit 0)",
                          f"max {worst:.2f} s over {len(noop_s)} launches", "<= 3 s", worst <= 3.0))
    if best and peer and not peer.get("error"):
        ratio = best["rows_per_s"] / peer["rows_per_s"]
        out.append(Target("backfill vs the no-Spark peer path (ClickHouse → Arrow → PyIceberg)",
                          f"{ratio:.2f}x ({best['rows_per_s']:,.0f} vs {peer['rows_per_s']:,.0f} rows/s)",
                          ">= 0.67x", ratio >= 0.67))
    if best:
        out.append(Target(f"backfill of {best['rows']:,} rows",
                          f"{best['rows_per_s']:,.0f} rows/s ({best['cell']})",
                          f">= {BACKFILL_GOAL:,} rows/s", best["rows_per_s"] >= BACKFILL_GOAL))
    return out


def scale_targets(tables: Sequence[Mapping[str, Any]], envelope: Mapping[str, Any] | None) -> list[Target]:
    """Many tables keep the trigger; the process tree stays inside the 4 GB envelope."""
    out: list[Target] = []
    good = [t for t in tables if not t.get("error") and t.get("cycle_p95_s") is not None]
    if good:
        top = max(good, key=lambda t: t["tables"])
        out.append(Target(f"{top['tables']} tables keep a {top['trigger_s']:g} s trigger "
                          f"({top['seconds'] / 60:.0f} min, {top['rows_per_trigger']:,} rows per table per "
                          f"trigger)", f"cycle p95 {top['cycle_p95_s']:.2f} s; backlog "
                          f"{bounded_text(top)}", f"p95 <= {top['trigger_s']:g} s, backlog bounded",
                          bool(top["kept_trigger"]) and backlog_bounded(top)))
    live = max(good, key=lambda t: t["tables"]) if good else None
    for name, run in ((f"{(envelope or {}).get('rows', 0):,}-row backfill", envelope),
                      (f"live run of {(live or {}).get('tables')} tables", live)):
        if run and not run.get("error") and run.get("tree_peak_rss_mb"):
            out.append(Target(f"peak RSS of the process tree, {name} (launcher, JVM, Python)",
                              f"{run['tree_peak_rss_mb']:,.0f} MB", f"<= {ENVELOPE_MB:,} MB",
                              run["tree_peak_rss_mb"] <= ENVELOPE_MB))
    return out


def backlog_bounded(run: Mapping[str, Any]) -> bool:
    """Rows waiting do not grow: the second half's peak is no higher than the first half's
    (or than two triggers' worth of rows over all tables)."""
    first, second = _halves(run)
    if len(first) + len(second) < 4:
        return False
    slack = 2 * run["rows_per_trigger"] * run["tables"]
    return max(second) <= max(max(first), slack)


def bounded_text(run: Mapping[str, Any]) -> str:
    first, second = _halves(run)
    if not second:
        return "not measured"
    return (f"max {max(first or [0]):,} rows in the first half, {max(second):,} in the second, "
            f"{second[-1]:,} at the end")


def _halves(run: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """The rows-waiting samples of a run, split into its first and second half."""
    series = [v for _, v in run.get("backlog_series") or []]
    return series[:len(series) // 2], series[len(series) // 2:]


def tables_markdown(tables: Sequence[Mapping[str, Any]], envelope: Mapping[str, Any] | None) -> list[str]:
    if not tables and not envelope:
        return []
    lines = ["", "## Many tables in one application", ""]
    if tables:
        t0 = tables[0]
        lines += [f"`run --trigger processing-time={t0.get('trigger_s', 15):g}s` over N tables, each fed "
                  f"{t0.get('rows_per_trigger', 0):,} rows per trigger by `coldtier.synth live --venues N`; "
                  f"max_concurrent_tables {t0.get('max_concurrent_tables')}. A cycle is one trigger tick, "
                  f"until the last table it triggered has committed; ticks before every table's first "
                  f"commit (creating the targets) are the warm-up.", "",
                  "| tables | run | warm-up s | ticks | cycle p50 s | cycle p95 s | cycle max s | batches "
                  "| rows | backlog (rows waiting) | tree peak RSS MB | trigger kept |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
        for t in tables:
            if t.get("error"):
                lines.append(f"| {t.get('tables', '?')} | error: {t['error'][:160]} |" + " |" * 10)
                continue
            fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {t['tables']} | {t['seconds'] / 60:.0f} min | {t.get('warmup_s') or ''} "
                         f"| {t['ticks']} | {fmt(t['cycle_p50_s'])} | {fmt(t['cycle_p95_s'])} "
                         f"| {fmt(t['cycle_max_s'])} | {t['batches']:,} | {t['rows']:,} | {bounded_text(t)} "
                         f"| {t['tree_peak_rss_mb']:,.0f} "
                         f"| {'yes' if t['kept_trigger'] and backlog_bounded(t) else 'no'} |")
        lines += ["", "![many tables](tables.png)"]
    if envelope:
        if envelope.get("error"):
            lines += ["", f"Envelope backfill: error: {envelope['error'][:300]}"]
        else:
            lines += ["", f"Envelope profile (driver memory {envelope.get('driver_memory')}): the "
                          f"{envelope['rows']:,}-row backfill at {envelope['rows_per_s']:,} rows/s, the "
                          f"whole process tree peaking at {envelope['tree_peak_rss_mb']:,.0f} MB RSS (JVM "
                          f"{envelope['driver_jvm_peak_rss_mb']:,.0f} MB, peak heap "
                          f"{envelope['driver_peak_heap_mb']:,.0f} MB)."]
    return lines


def plot_tables(path: Path, tables: Sequence[Mapping[str, Any]]) -> None:
    """Cycle p50/p95 against the table count; the largest run's backlog and memory over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [t for t in tables if not t.get("error") and t.get("cycle_p95_s") is not None]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    if good:
        counts = [t["tables"] for t in good]
        ax.plot(counts, [t["cycle_p50_s"] for t in good], "o-", label="cycle p50")
        ax.plot(counts, [t["cycle_p95_s"] for t in good], "s-", label="cycle p95")
        ax.axhline(good[0]["trigger_s"], color="#d62728", linestyle="--", label="trigger interval")
        ax.set_xlabel("tables in the application")
        ax.set_ylabel("seconds")
        ax.set_title("cycle time against table count")
        ax.legend(fontsize=8)
        top = max(good, key=lambda t: t["tables"])
        bl = top.get("backlog_series") or []
        ax2.plot([x for x, _ in bl], [v for _, v in bl], color="#1f77b4", label="rows waiting (all tables)")
        ax2.set_xlabel("seconds into the run")
        ax2.set_ylabel("rows waiting", color="#1f77b4")
        ax3 = ax2.twinx()
        rss = top.get("rss_series") or []
        ax3.plot([x for x, _ in rss], [v for _, v in rss], color="#ff7f0e", label="process tree RSS MB")
        ax3.axhline(ENVELOPE_MB, color="#d62728", linestyle=":", linewidth=1)
        ax3.set_ylabel("process tree RSS MB", color="#ff7f0e")
        ax2.set_title(f"{top['tables']} tables: backlog and memory over time")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path: Path, cells: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for c in cells:
            w.writerow({k: ("" if c.get(k) is None else c.get(k)) for k in CSV_COLUMNS})


def profile(best: Mapping[str, Any], label: str) -> str:
    """The best cell as YAML to merge into a coldtier config."""
    cell = Cell(**{k: best[k] for k in Cell.__dataclass_fields__ if k in best})
    doc = {
        "spark": {"master": cell.master, "conf": cell.spark_conf()},
        "tables": [{"name": "<your table>", "batch": cell.batch_section(),
                    "target": {"properties": cell.target_properties()}}],
    }
    head = (f"# coldtier tuning profile: the best cell ({best['cell']}, {best['rows_per_s']:,} rows/s) of\n"
            f"# the benchmark run of {label}.\n"
            f"# Merge `spark` into your config, and each table's `batch` and\n"
            f"# `target.properties` into its entry; the ClickHouse query condition cache is off here\n"
            f"# only to measure honestly: drop that option in production if you like.\n")
    return head + yaml.safe_dump(doc, sort_keys=False)


def plot_throughput(path: Path, cells: Sequence[Mapping[str, Any]], refs: Mapping[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [c for c in ok_cells(cells) if c["knob"] != "scaling"]
    base = next((c for c in good if c["knob"] == "base"), None)
    knobs = list(dict.fromkeys(c["knob"] for c in good if c["knob"] not in ("base", "combined"))) or ["base"]
    if any(c["knob"] == "combined" for c in good):
        knobs.append("combined")
    fig, axes = plt.subplots(1, len(knobs), figsize=(max(8.0, 2.6 * len(knobs) + 1), 4.8), sharey=True,
                             squeeze=False, layout="constrained")
    ref_colors = ("#d62728", "#2ca02c", "#9467bd")
    for ax, knob in zip(axes[0], knobs, strict=True):
        group = ([base] if base else []) + [c for c in good if c["knob"] == knob]
        labels = [(c["value"] or "base") if c["knob"] not in ("base", "combined") else
                  f"{c['knob']}\n({_knob_value(c, knob)})" for c in group]
        ax.bar(labels, [c["rows_per_s"] / 1000 for c in group],
               color=["#888888" if c["knob"] == "base" else "#1f77b4" for c in group])
        for (name, value), color in zip(refs.items(), ref_colors, strict=False):
            ax.axhline(value / 1000, linestyle="--", linewidth=1.2, color=color, label=name)
        ax.set_title(knob)
        ax.tick_params(axis="x", labelrotation=30)
    axes[0][0].set_ylabel("thousand rows/s")
    if refs:
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=len(refs),
                   fontsize=8)
    fig.suptitle("coldtier backfill throughput by setting (grey: the base cell)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _knob_value(cell: Mapping[str, Any], knob: str) -> str:
    return "" if knob in ("base", "grid", "combined") else str(cell.get(knob))


PHASE_LABELS = {"plan": "plan (ClickHouse range query)", "read": "read setup (JDBC schema query)",
                "write": "read + write (one Spark job streams rows into Parquet)",
                "commit": "ledger commit (Iceberg's commit is inside read + write)"}


def plot_phases(path: Path, cells: Sequence[Mapping[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = ok_cells(cells)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(good) + 1.8), layout="constrained")
    names = [c["cell"] for c in good]
    left = [0.0] * len(good)
    colors = {"plan": "#2ca02c", "read": "#ff7f0e", "write": "#1f77b4", "commit": "#d62728"}
    for phase, color in colors.items():
        vals = [c[f"{phase}_s"] for c in good]
        ax.barh(names, vals, left=left, color=color, label=PHASE_LABELS[phase])
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("seconds, summed over the run's batches")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title("coldtier backfill: seconds per phase")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(label: str, matrix: Matrix, cells: Sequence[Mapping[str, Any]], extras: Mapping[str, Any],
             checks: Sequence[Target], rec: Mapping[str, Any] | None = None) -> str:
    bpr = (extras.get("source") or {}).get("bytes_per_row")
    lines = [f"# coldtier benchmark — {label}", "",
             f"Matrix `{matrix.path}`; {matrix.rows:,} rows per backfill cell. Throughput = rows moved / "
             f"wall time of a whole `run --trigger available-now` (plan, read, write, commit, every batch).",
             f"Each cell ran {matrix.repeat} time(s), interleaved; the table shows the run with the lower "
             f"median throughput and every run's rows/s.",
             "", "| cell | rows/s | runs | MB/s | s | batches | plan s | read s | write s | commit s | files "
             "| MB written | peak heap MB | JVM RSS MB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        if c.get("error"):
            lines.append(f"| {c['cell']} | error: {c['error'][:120]} |" + " |" * 12)
            continue
        lines.append(
            f"| {c['cell']} | {c['rows_per_s']:,} | {c.get('rows_per_s_runs', '')} | {c.get('mb_per_s', '')} "
            f"| {c['seconds']:.1f} "
            f"| {c['batches']} | {c['plan_s']:.2f} | {c['read_s']:.2f} | {c['write_s']:.1f} "
            f"| {c['commit_s']:.2f} | {c['files']} | {c['bytes_written'] / 1e6:.0f} "
            f"| {c['driver_peak_heap_mb']:.0f} | {c['driver_jvm_peak_rss_mb']:.0f} |")
    for c in cells:
        if c.get("knob") == "combined":
            lines += ["", f"`combined` = the base with every knob that beat it by > 5%: {c['value']}."]
    lines += ["", "## Baselines measured in the same run", "", "| path | rows | s | rows/s |",
              "|---|---:|---:|---:|"]
    for key, name in (("source", "ClickHouse export `SELECT *` (RowBinaryWithNamesAndTypes over HTTP)"),
                      ("jdbc", "Spark reads them through the JDBC driver, discards them (noop sink)"),
                      ("sink", "Spark writes the cached rows to Parquet zstd"),
                      ("peer", "no-Spark peer: ClickHouse → Arrow → PyIceberg append")):
        b = extras.get(key)
        if b and not b.get("error"):
            lines.append(f"| {name} | {b['rows']:,} | {b['seconds']:.1f} | {b['rows_per_s']:,} |")
        elif b:
            lines.append(f"| {name} | error: {b['error'][:160]} | | |")
    lines.append(f"| old system (published): backfill | {OLD_BACKFILL_ROWS:,} | {OLD_BACKFILL_S:.0f} "
                 f"| {OLD_BACKFILL_ROWS / OLD_BACKFILL_S:,.0f} |")
    sink = extras.get("sink") or {}
    peer = extras.get("peer") or {}
    if peer.get("peak_rss_mb"):
        lines += ["", f"The peer path holds the whole table in memory: the harness process peaked at "
                      f"{peer['peak_rss_mb']:,.0f} MB RSS for {peer['rows']:,} rows (coldtier's batches are "
                      f"bounded by max_rows)."]
    if sink.get("smallest_job_s") is not None:
        lines += ["", f"A warm session's smallest job (read 3K rows of Parquet, write them): "
                      f"{sink['smallest_job_s']:.3f} s (median of 5)."]
    if bpr:
        lines += [f"Source rows are {bpr} bytes each in RowBinary; MB/s = rows/s × that."]
    inc = extras.get("incremental") or {}
    if inc and not inc.get("error"):
        lines += ["", f"Incremental: {inc['batches']} batches of {inc['rows_per_batch']:,} rows in a warm "
                      f"loop: p50 {inc['p50_s']:.3f} s, p95 {inc['p95_s']:.3f} s, max {inc['max_s']:.3f} s "
                      f"end to end "
                      f"(phase p50s: plan {inc['plan_p50_s']:.3f}, read {inc['read_p50_s']:.3f}, write "
                      f"{inc['write_p50_s']:.3f}, commit {inc['commit_p50_s']:.3f} s)."]
    noop = extras.get("noop_s") or []
    if noop:
        lines += ["", "Relaunch with no new rows through scripts/spark-submit.sh: "
                      + ", ".join(f"{s:.2f} s" for s in noop) + "."]
    lines += tables_markdown(extras.get("tables") or [], extras.get("envelope"))
    lines += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in checks:
        lines.append(f"| {t.name} | {t.figure} | {t.goal} | {'yes' if t.ok else 'no'} |")
    if rec:
        base = next((c for c in cells if c.get("knob") == "base"), None)
        lines += ["", f"**Recommended profile: {rec['cell']}** — {why(rec, base)}; "
                      f"written to best-profile.yaml."]
    lines += ["", "![throughput](throughput.png)", "", "![phases](phases.png)", ""]
    return "\n".join(lines)
