"""Prefect flow: the old system's scheduler, now launching coldtier every 15 minutes.

    prefect deploy docs/ops/examples/prefect_flow.py:coldtier_offload --cron "*/15 * * * *"

Retries only what is worth retrying (exit 4 runtime, 1 internal); exit 3 (lock held) is a
skip; 2/5/6 fail at once (an operator must act: README "Exit codes").
"""

from __future__ import annotations

import subprocess

from prefect import flow, get_run_logger, task

COLDTIER = "/opt/coldtier"
RETRYABLE = {1, 4}


class Retryable(RuntimeError):
    """An exit code worth retrying (1 internal, 4 runtime)."""


@task(retries=2, retry_delay_seconds=60, retry_condition_fn=lambda t, r, s: isinstance(
    s.result(raise_on_failure=False), Retryable))
def offload(config: str) -> int:
    cmd = [f"{COLDTIER}/scripts/spark-submit.sh", "jobs/offload.py", "run", "--config", config,
           "--trigger", "available-now"]
    rc = subprocess.run(cmd, cwd=COLDTIER).returncode
    if rc == 3:
        get_run_logger().info("another coldtier run holds the lock; skipping")
        return rc
    if rc in RETRYABLE:
        raise Retryable(f"coldtier exited {rc}")
    if rc != 0:
        raise RuntimeError(f"coldtier exited {rc}: needs an operator (README 'Exit codes')")
    return rc


@flow(name="coldtier-offload")
def coldtier_offload(config: str = "conf/prod.yaml") -> int:
    return offload(config)


if __name__ == "__main__":
    coldtier_offload()
