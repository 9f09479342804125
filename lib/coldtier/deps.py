"""The pinned JVM dependencies (conf/dependencies.yaml), for spark-submit and the tests.

``python -m coldtier.deps --packages`` prints the ``--packages`` value;
``--resolve`` starts a throwaway local Spark once so that Ivy caches every jar.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml


def repo_root() -> Path:
    env = os.environ.get("COLDTIER_HOME")
    return Path(env) if env else Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Dependencies:
    spark: str
    scala: str
    packages: tuple[str, ...]

    @property
    def packages_arg(self) -> str:
        return ",".join(self.packages)


def load(path: Path | None = None) -> Dependencies:
    path = path or repo_root() / "conf" / "dependencies.yaml"
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    return Dependencies(str(doc["spark"]), str(doc["scala"]), tuple(doc["packages"].values()))


def _resolve(deps: Dependencies) -> None:
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("coldtier-resolve-jars")
        .config("spark.jars.packages", deps.packages_arg)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    spark.range(1).count()
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coldtier.deps")
    ap.add_argument("--packages", action="store_true", help="print the --packages value")
    ap.add_argument("--resolve", action="store_true", help="download every jar into Ivy's cache")
    args = ap.parse_args(argv)
    deps = load()
    if args.resolve:
        _resolve(deps)
    if args.packages or not args.resolve:
        print(deps.packages_arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
