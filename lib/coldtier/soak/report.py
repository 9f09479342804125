"""The soak's report: soak.md, soak.png and batches.csv from the harness's result document.

The verdict is strict: every table's rows in (ClickHouse) equal its rows out (Iceberg), no key
twice, the drain and the reconcile exit 0, and every fault recovered. Flatness (latency,
memory) is reported as figures — first quarter against last — not judged: a busy machine makes
noise a test cannot tell from a leak; the plot shows it.
"""

from __future__ import annotations

import csv
import datetime as dt
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# a batch as the soak reads it from the ledger (and batches.csv's columns)
BATCH_FIELDS = ("table", "batch_id", "committed_at", "rows", "total_s", "source_lag_s", "backlog_rows",
                "attempts")

FAULT_COLOURS = {
    "kill-driver": "#d62728",
    "restart-clickhouse": "#9467bd",
    "restart-postgres": "#8c564b",
    "freeze-clickhouse": "#e377c2",
    "freeze-postgres": "#7f7f7f",
    "maintain": "#2ca02c",
}


def verdict(result: Mapping[str, Any]) -> list[str]:
    """What went wrong; empty when nothing did."""
    wrong = []
    for t in result["tables"]:
        if t["rows_in"] != t["rows_out"]:
            wrong.append(f"{t['table']}: {t['rows_in']:,} rows in, {t['rows_out']:,} out")
        if t["duplicate_keys"]:
            wrong.append(f"{t['table']}: {t['duplicate_keys']:,} duplicate keys")
    if result["drain_rc"] != 0:
        wrong.append(f"the drain exited {result['drain_rc']}")
    if result["reconcile_rc"] != 0:
        wrong.append(f"the reconcile exited {result['reconcile_rc']}")
    wrong += [
        f"fault {f['kind']} at +{f['at'] - result['began']:.0f}s did not recover"
        for f in result["faults"]
        if not f["recovered"]
    ]
    return wrong


def _quarters(series: Sequence[tuple[float, float]]) -> tuple[float | None, float | None]:
    """Median of the first and of the last quarter of a time series."""
    if len(series) < 8:
        return None, None
    values = [v for _, v in sorted(series)]
    q = len(values) // 4
    return statistics.median(values[:q]), statistics.median(values[-q:])


def figures(result: Mapping[str, Any]) -> dict[str, Any]:
    batches = [b for b in result["batches"] if b["committed_at"] <= result["fed_until"]]
    latency = [(b["committed_at"], float(b["total_s"])) for b in batches if b["total_s"] is not None]
    lag = [(b["committed_at"], float(b["source_lag_s"])) for b in batches if b["source_lag_s"] is not None]
    rss = [(s["at"], s["rss_mb"]) for s in result["samples"]]
    lat_first, lat_last = _quarters(latency)
    rss_first, rss_last = _quarters(rss)
    rec = [f["recovery_s"] for f in result["faults"] if f["recovered"]]
    return {
        "hours": (result["fed_until"] - result["began"]) / 3600,
        "batches": len(result["batches"]),
        "latency_p50": statistics.median([v for _, v in latency]) if latency else None,
        "latency_p95": _pct([v for _, v in latency], 95),
        "latency_first_q": lat_first,
        "latency_last_q": lat_last,
        "lag_p50": statistics.median([v for _, v in lag]) if lag else None,
        "lag_max": max((v for _, v in lag), default=None),
        "rss_max": max((v for _, v in rss), default=None),
        "rss_first_q": rss_first,
        "rss_last_q": rss_last,
        "recovery_max": max(rec, default=None),
        "recovery_p50": statistics.median(rec) if rec else None,
    }


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _f(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(result: Mapping[str, Any]) -> str:
    plan, fig, wrong = result["plan"], figures(result), verdict(result)
    began = dt.datetime.fromtimestamp(result["began"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Soak of {began}: {fig['hours']:.2f} h, {plan['tables']} tables at {plan['rate']:g} rows/s each",
        "",
        f"**{'PASS' if not wrong else 'FAIL'}**" + ("" if not wrong else ": " + "; ".join(wrong)),
        "",
        f"Trigger processing-time={plan['trigger']}, lag_s {plan['lag_s']:g}; faults every "
        f"~{plan['fault_every_s']:g}s ({', '.join(plan['faults']) or 'none'}), seed {plan['seed']}; "
        f"{result['launches']} launches by the supervisor; {result['feed_failures']} inserts refused "
        f"during faults (not counted in: rows in is ClickHouse's own count); drain {result['drain_s']}s "
        f"(exit {result['drain_rc']}), reconcile exit {result['reconcile_rc']}.",
        "",
        "| table | rows in (ClickHouse) | rows out (Iceberg) | duplicate keys | snapshots | data files |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {t['table']} | {t['rows_in']:,} | {t['rows_out']:,} | {t['duplicate_keys']} | "
            f"{t['snapshots']} | {t['files']} |"
            for t in result["tables"]
        ),
        "",
        "| figure | value |",
        "|---|---:|",
        f"| batches committed | {fig['batches']:,} |",
        f"| batch latency p50 / p95 (s) | {_f(fig['latency_p50'])} / {_f(fig['latency_p95'])} |",
        f"| batch latency median, first → last quarter (s) | {_f(fig['latency_first_q'])} → "
        f"{_f(fig['latency_last_q'])} |",
        f"| source lag at commit p50 / max (s) | {_f(fig['lag_p50'], '.1f')} / {_f(fig['lag_max'], '.1f')} |",
        f"| process-tree RSS max (MB) | {_f(fig['rss_max'], ',.0f')} |",
        f"| process-tree RSS median, first → last quarter (MB) | {_f(fig['rss_first_q'], ',.0f')} → "
        f"{_f(fig['rss_last_q'], ',.0f')} |",
        f"| fault recovery p50 / max (s) | {_f(fig['recovery_p50'], '.1f')} / "
        f"{_f(fig['recovery_max'], '.1f')} |",
        "",
        "## Faults",
        "",
        "Recovery: from the fault's start until every table had committed a batch after its end.",
        "",
        "| at | fault | lasted (s) | recovered in (s) | note |",
        "|---:|---|---:|---:|---|",
        *(
            f"| +{f['at'] - result['began']:.0f}s | {f['kind']} | {f['fault_s']} | "
            f"{f['recovery_s'] if f['recovered'] else 'NOT RECOVERED'} | {f['note']} |"
            for f in result["faults"]
        ),
        "",
        "## Job exits (the supervisor relaunched each)",
        "",
        ", ".join(f"+{e['at'] - result['began']:.0f}s exit {e['rc']}" for e in result["exits"]) or "none",
        "",
        "![soak](soak.png)",
        "",
    ]
    return "\n".join(lines)


def plot(path: Path, result: Mapping[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result["began"]
    mins = lambda at: (at - t0) / 60  # noqa: E731
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True, layout="constrained")
    names = sorted({b["table"] for b in result["batches"]})
    for name in names:
        bs = [b for b in result["batches"] if b["table"] == name]
        axes[0].plot([mins(b["committed_at"]) for b in bs], [b["total_s"] for b in bs], ".", ms=3, label=name)
        axes[1].plot(
            [mins(b["committed_at"]) for b in bs], [b["source_lag_s"] for b in bs], ".", ms=3, label=name
        )
        ib = [s for s in result["iceberg"] if s["table"] == name]
        axes[3].plot(
            [mins(s["at"]) for s in ib], [s["snapshots"] for s in ib], "o-", ms=3, label=f"{name} snapshots"
        )
        axes[3].plot(
            [mins(s["at"]) for s in ib], [s["files"] for s in ib], "s--", ms=3, label=f"{name} data files"
        )
    axes[2].plot(
        [mins(s["at"]) for s in result["samples"]],
        [s["rss_mb"] for s in result["samples"]],
        ".",
        ms=2,
        color="#ff7f0e",
    )
    for ax, title, unit in zip(
        axes,
        (
            "batch latency (plan → commit)",
            "source lag at commit",
            "job process-tree RSS (launcher + JVM + Python)",
            "Iceberg snapshots and data files",
        ),
        ("s", "s", "MB", "count"),
        strict=True,
    ):
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        for f in result["faults"]:
            ax.axvline(mins(f["at"]), color=FAULT_COLOURS.get(f["kind"], "k"), alpha=0.5, linewidth=1)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[3].legend(fontsize=7, loc="upper left")
    axes[3].set_xlabel("minutes into the soak")
    from matplotlib.lines import Line2D

    kinds = [k for k in FAULT_COLOURS if any(f["kind"] == k for f in result["faults"])]
    if kinds:  # what the vertical lines are
        axes[1].legend([Line2D([0], [0], color=FAULT_COLOURS[k], alpha=0.6) for k in kinds],
                       [f"fault: {k}" for k in kinds], fontsize=7, loc="upper left", ncol=3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_batches(path: Path, batches: Sequence[Mapping[str, Any]]) -> None:
    keys = BATCH_FIELDS
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for b in batches:
            w.writerow({k: b.get(k) for k in keys})


def write(out: Path, result: Mapping[str, Any]) -> bool:
    """soak.md, soak.png, batches.csv; True when the soak passed."""
    (out / "soak.md").write_text(markdown(result))
    plot(out / "soak.png", result)
    write_batches(out / "batches.csv", result["batches"])
    return not verdict(result)


def summary(result: Mapping[str, Any]) -> str:
    wrong, fig = verdict(result), figures(result)
    ins = sum(t["rows_in"] for t in result["tables"])
    outs = sum(t["rows_out"] for t in result["tables"])
    dups = sum(t["duplicate_keys"] for t in result["tables"])
    return (
        f"soak: {'PASS' if not wrong else 'FAIL: ' + '; '.join(wrong)} — {fig['hours']:.2f} h, "
        f"{ins:,} rows in, {outs:,} out, {dups} duplicate keys, {len(result['faults'])} faults (recovery max "
        f"{_f(fig['recovery_max'], '.1f')}s), batch latency p50 {_f(fig['latency_p50'])}s, RSS max "
        f"{_f(fig['rss_max'], ',.0f')} MB"
    )
