"""Tuning runs and benchmarks: ``scripts/bench.sh`` (see docs/tuning.md).

- ``matrix``: the tuning matrix from ``conf/tuning/*.yaml`` → cells (pure, no Spark);
- ``peers``: the no-Spark measurements: the source's export ceiling and the
  ClickHouse → Arrow → PyIceberg peer path;
- ``worker``: runs inside one spark-submit application per group of cells sharing the
  application's settings: each cell is a real ``run`` of the offload job;
- ``report``: results.csv, results.md, PNG plots and the best cell as a YAML profile;
- ``harness``: the orchestration, with progress and ETA.
"""
