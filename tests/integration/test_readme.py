"""README's "Your own table" quickstart, run as written in a fresh shell (no PYTHONPATH, no
activated venv) against the test services: only the dev stack's addresses, passwords, names and
directories are swapped for the test's."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from helpers import CH_PASSWORD, ROOT
from jobkit import unique

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_quickstart_for_a_table_that_is_not_trades(job, tmp_path):
    blocks = re.findall(r"```bash\n(.*?)```", section("Your own table"), re.S)
    assert len(blocks) == 3  # create the table; validate, plan, run, status; count, head, check-duplicates
    db, pipeline, warehouse = unique("shop"), unique("quickstart"), tmp_path / "warehouse"
    pg = job.postgres
    config = (ROOT / "conf" / "quickstart.yaml").read_text()
    config = config.replace("pipeline: quickstart", f"pipeline: {pipeline}").replace("shop.orders", f"{db}.orders")
    config = re.sub(r"dsn: .*", f"dsn: host={pg.host} port={pg.port} dbname={pg.dbname} user={pg.user} "
                                f"password={pg.password}", config)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "quickstart.yaml").write_text(config)
    port = job.chembed.jdbc_url.rsplit(":", 1)[1].split("/")[0]

    def swap(block: str) -> str:
        return (block.replace("http://127.0.0.1:18123/", f"http://127.0.0.1:{port}/")
                .replace("dev-ch-Q7v2p", CH_PASSWORD).replace("shop", db)
                .replace("conf/quickstart.yaml", str(tmp_path / "conf" / "quickstart.yaml"))
                .replace(".dev/quickstart-warehouse", str(warehouse)))

    fresh = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
             "COLDTIER_CH_PORT": port, "COLDTIER_CH_PASSWORD": CH_PASSWORD,
             "COLDTIER_QUICKSTART_WAREHOUSE": str(warehouse), "JAVA_HOME": job.env().get("JAVA_HOME", ""),
             "TZ": job.env().get("TZ", "")}
    fresh = {k: v for k, v in fresh.items() if v}
    out = []
    for block in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", swap(block)], cwd=ROOT, env=fresh,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (block, done.stdout[-3000:], done.stderr[-3000:])
        out.append(done.stdout)
    _, moved, looked = out
    assert "6 checks: 6 ok" in moved and "next run plans batch 1: 5,000 rows" in moved, moved
    lines = [json.loads(line) for line in moved.splitlines() if line.startswith("{")]
    plan, progress = lines[0], lines[1]
    assert (plan["kind"], plan["planned_rows"]) == ("next", 5000)
    assert (progress["batch_id"], progress["rows"], progress["end"]) == (1, 5000, plan["end"])
    assert re.search(r"^orders\s+1\s+.*batch 1 committed 5,000 rows", moved, re.M), moved
    # the quick path, with the same config: counted, three rows shown, no key twice
    assert "\n5,000 rows\n" in looked, looked
    assert looked.count("['sku-1', 'sku-2']") == 3, looked
    assert "5,000 rows read; key (created_at, order_id): 0 keys held by more than one row" in looked, looked
