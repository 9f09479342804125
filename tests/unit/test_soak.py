"""The soak's verdict and report (lib/coldtier/soak/report.py) on made-up results: what counts as
a failure, the figures, and the files it writes. The harness itself: test_soak_smoke.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from coldtier.soak import report
from coldtier.soak.harness import FAULTS, parse_duration


def _result() -> dict[str, Any]:
    t0 = 1_800_000_000.0
    batches = [{"table": f"v00{i % 2}", "batch_id": i // 2, "committed_at": t0 + 15 * i, "rows": 3750,
                "total_s": 0.5 + (i % 3) * 0.1, "source_lag_s": 5.5, "backlog_rows": 1250, "attempts": 1}
               for i in range(40)]
    return {
        "plan": {"tables": 2, "rate": 250.0, "trigger": "15s", "lag_s": 5.0, "fault_every_s": 300.0,
                 "faults": list(FAULTS), "seed": 7, "duration_s": 600.0},
        "began": t0, "fed_until": t0 + 600, "ended": t0 + 660,
        "tables": [{"table": "v000", "rows_in": 150_000, "rows_out": 150_000, "duplicate_keys": 0,
                    "snapshots": 20, "files": 20},
                   {"table": "v001", "rows_in": 150_000, "rows_out": 150_000, "duplicate_keys": 0,
                    "snapshots": 20, "files": 20}],
        "faults": [{"kind": "kill-driver", "at": t0 + 100, "fault_s": 0.0, "note": "killed", "recovered": True,
                    "recovery_s": 21.5},
                   {"kind": "freeze-postgres", "at": t0 + 400, "fault_s": 8.0, "note": "", "recovered": True,
                    "recovery_s": 12.0}],
        "exits": [{"at": t0 + 100, "rc": -9, "ran_s": 99.0}], "launches": 2, "feed_failures": 0,
        "drain_rc": 0, "drain_s": 20.0, "reconcile_rc": 0, "batches": batches,
        "samples": [{"at": t0 + 5 * i, "rss_mb": 800.0 + i % 5} for i in range(120)],
        "iceberg": [{"at": t0 + 60 * i, "table": "v000", "snapshots": 4 * i, "files": 4 * i, "rows": 15000 * i}
                    for i in range(10)],
    }


def test_a_clean_soak_passes_and_its_report_says_so(tmp_path):
    result = _result()
    assert report.verdict(result) == []
    assert report.write(tmp_path, result) is True
    md = (tmp_path / "soak.md").read_text()
    assert "**PASS**" in md and "| v000 | 150,000 | 150,000 | 0 | 20 | 20 |" in md
    assert "| +100s | kill-driver | 0.0 | 21.5 | killed |" in md
    assert "fault recovery p50 / max (s) | 16.8 / 21.5 |" in md
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert (tmp_path / "batches.csv").read_text().count("\n") == 41
    assert report.summary(result).startswith("soak: PASS — 0.17 h, 300,000 rows in, 300,000 out, 0 duplicate")


@pytest.mark.parametrize(("change", "says"), [
    (lambda r: r["tables"][1].update(rows_out=149_999), "v001: 150,000 rows in, 149,999 out"),
    (lambda r: r["tables"][0].update(duplicate_keys=3), "v000: 3 duplicate keys"),
    (lambda r: r.update(drain_rc=4), "the drain exited 4"),
    (lambda r: r.update(reconcile_rc=7), "the reconcile exited 7"),
    (lambda r: r["faults"][1].update(recovered=False, recovery_s=None),
     "fault freeze-postgres at +400s did not recover"),
])
def test_a_soak_fails_on_any_loss_doubling_or_unrecovered_fault(tmp_path, change, says):
    result = copy.deepcopy(_result())
    change(result)
    assert report.verdict(result) == [says]
    assert report.write(tmp_path, result) is False
    assert f"**FAIL**: {says}" in (tmp_path / "soak.md").read_text()


def test_flatness_is_reported_first_quarter_against_last():
    result = _result()
    for i, s in enumerate(result["samples"]):
        s["rss_mb"] = 800.0 + i  # a leak: memory grows steadily
    fig = report.figures(result)
    assert fig["rss_first_q"] < 830 and fig["rss_last_q"] > 890


@pytest.mark.parametrize(("text", "secs"), [("90s", 90), ("10m", 600), ("1h", 3600), ("24h", 86400), ("45", 45)])
def test_durations(text, secs):
    assert parse_duration(text) == secs
