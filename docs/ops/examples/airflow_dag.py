"""Airflow DAG: a coldtier offload run every 15 minutes (BashOperator; SparkSubmitOperator
works too, but scripts/spark-submit.sh already builds the whole command from the YAML).

Exit codes (README): 0 ok; 3 lock held → skip (another run is active); 4 runtime → retry;
2/5/6/1 → fail and alert without retrying into the same error.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.exceptions import AirflowSkipException
from airflow.operators.python import PythonOperator

COLDTIER = "/opt/coldtier"


def offload(**_: object) -> None:
    import subprocess

    cmd = [f"{COLDTIER}/scripts/spark-submit.sh", "jobs/offload.py", "run", "--config", "conf/prod.yaml",
           "--trigger", "available-now"]
    rc = subprocess.run(cmd, cwd=COLDTIER).returncode  # output goes to the task log
    if rc == 3:
        raise AirflowSkipException("another coldtier run holds the lock")
    if rc != 0:
        raise RuntimeError(f"coldtier exited {rc}; see README 'Exit codes'")


with DAG(
    dag_id="coldtier_offload",
    schedule=dt.timedelta(minutes=15),
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # coldtier's advisory lock guards this too
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1),
                  "execution_timeout": dt.timedelta(minutes=30)},
) as dag:
    PythonOperator(task_id="offload", python_callable=offload)
