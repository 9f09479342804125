"""The soak harness itself, end to end in about a minute and a half (``make soak`` runs it for an
hour or a day): its own services, the feed, the supervised job, two faults, drain, reconcile,
report. Nothing lost, nothing doubled, every fault recovered."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import ROOT


@pytest.mark.slow
def test_soak_smoke(tmp_path):
    out = tmp_path / "soak"
    done = subprocess.run([str(ROOT / "scripts" / "soak.sh"), "--duration", "40s", "--trigger", "5s",
                           "--fault-every", "10s", "--faults", "kill-driver,restart-postgres", "--seed", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert [t["rows_in"] for t in result["tables"]] == [t["rows_out"] for t in result["tables"]]
    assert all(t["rows_in"] >= 40 * 250 for t in result["tables"])  # the feed ran the whole time
    assert all(t["duplicate_keys"] == 0 for t in result["tables"])
    assert result["faults"] and all(f["recovered"] for f in result["faults"])
    assert {f["kind"] for f in result["faults"]} <= {"kill-driver", "restart-postgres"}
    assert result["drain_rc"] == 0 and result["reconcile_rc"] == 0
    assert result["samples"] and result["batches"]
    assert "**PASS**" in (out / "soak.md").read_text() and (out / "soak.png").exists()
    assert done.stdout.splitlines()[-2].startswith("soak: PASS — ")
    # its services are gone (no --keep-services): nothing left listening, nothing left running
    assert not (out / "services" / "clickhouse.pid").exists()
