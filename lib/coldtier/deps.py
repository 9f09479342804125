"""The pinned JVM dependencies (conf/dependencies.yaml), for spark-submit and the tests.

``python -m coldtier.deps --packages`` prints the ``--packages`` value;
``--resolve`` starts a throwaway local Spark once so that Ivy caches every jar;
``--fetch DIR`` (scripts/fetch-jars.sh) copies the resolved jars into DIR, for clusters
without internet (``COLDTIER_JARS_DIR=DIR scripts/spark-submit.sh …`` then uses ``--jars``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
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


def _resolve(packages: str) -> None:
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("coldtier-resolve-jars")
        .config("spark.jars.packages", packages)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    spark.range(1).count()
    spark.stop()


def fetch(dest: Path, packages: list[str]) -> list[Path]:
    """Resolve ``packages`` (Ivy, as spark-submit does) and copy every resulting jar into
    ``dest``. Returns the copied files."""
    lib = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": lib + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "coldtier.deps", "--resolve", "--only", ",".join(packages)],
                          capture_output=True, text=True, timeout=1800, env=env)
    where = re.search(r"The jars for the packages stored in: (\S+)", done.stderr)
    found = re.findall(r"found (\S+)#(\S+);(\S+) in ", done.stderr)
    if done.returncode != 0 or where is None or not found:
        raise RuntimeError(f"resolving {', '.join(packages)} failed: {done.stderr[-2000:]}")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for org, name, version in found:
        jar = Path(where.group(1)) / f"{org}_{name}-{version}.jar"
        if jar.exists():  # a module may be a pom-only parent with no jar
            out.append(Path(shutil.copy2(jar, dest / jar.name)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coldtier.deps")
    ap.add_argument("--packages", action="store_true", help="print the --packages value")
    ap.add_argument("--resolve", action="store_true", help="download every jar into Ivy's cache")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # --resolve these coordinates instead
    ap.add_argument("--fetch", metavar="DIR", help="copy the pinned jars (and --extra ones) into DIR")
    ap.add_argument("--extra", default="", help="more coordinates, comma-separated (e.g. iceberg-aws-bundle)")
    args = ap.parse_args(argv)
    deps = load()
    if args.fetch:
        extra = [p.strip() for p in args.extra.split(",") if p.strip()]
        jars = fetch(Path(args.fetch), [*deps.packages, *extra])
        print(f"{len(jars)} jars in {args.fetch}; use them with COLDTIER_JARS_DIR={args.fetch}")
        return 0
    if args.resolve:
        _resolve(args.only or deps.packages_arg)
    if args.packages or not args.resolve:
        print(deps.packages_arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
