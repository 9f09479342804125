"""The pinned JVM dependencies (conf/dependencies.yaml), for spark-submit and the tests.

``python -m coldtier.deps --packages`` prints the ``--packages`` value;
``--resolve`` resolves them once (Ivy's cache, and the list of jars in ``build/jars/`` that
``scripts/spark-submit.sh`` then passes with ``--jars``, so that a launch resolves nothing);
``--fetch DIR`` (scripts/fetch-jars.sh) copies the resolved jars into DIR, for clusters
without internet (``COLDTIER_JARS_DIR=DIR scripts/spark-submit.sh …`` then uses ``--jars``).
``--native`` builds coldtier's own JVM classes (``lib/java``: the Native-format reader) into
``build/jars/`` (``native_jar``; every launch does so when they are missing or stale).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from coldtier.errors import DependencyError


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


# Spark settings that change what Ivy resolves (a private mirror, an ivysettings file, ...)
IVY_KEYS = ("spark.jars.repositories", "spark.jars.ivySettings", "spark.jars.ivy", "spark.jars.excludes")


def spark_submit_binary() -> str:
    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "bin" / "spark-submit").exists():
        return str(Path(home) / "bin" / "spark-submit")
    here = Path(sys.executable).parent / "spark-submit"
    return str(here) if here.exists() else (shutil.which("spark-submit") or "spark-submit")


def resolve(packages: list[str], ivy_conf: dict[str, str] | None = None,
            log: Callable[[str], None] | None = None) -> list[Path]:
    """Resolve ``packages`` exactly as ``spark-submit --packages`` does (it *is* spark-submit,
    running an empty Python file, ~3 s when Ivy's cache is warm) and return the jar files, in
    Spark's order. Ivy's own output goes to ``log`` when given (``--verbose``)."""
    with tempfile.TemporaryDirectory(prefix="coldtier-resolve-") as tmp:
        noop = Path(tmp) / "resolve.py"
        noop.write_text("")
        cmd = [spark_submit_binary(), "--verbose", "--master", "local[1]", "--packages", ",".join(packages),
               "--conf", f"spark.pyspark.python={sys.executable}"]
        for k, v in (ivy_conf or {}).items():
            cmd += ["--conf", f"{k}={v}"]
        env = {**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
        if "SPARK_HOME" not in env:  # spark-submit's own lookup runs whatever `python3` is on PATH
            import pyspark

            env["SPARK_HOME"] = str(Path(pyspark.__file__).parent)
        with open(Path(tmp) / "ivy.log", "w+") as out:
            code = subprocess.run([*cmd, str(noop)], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=1800, cwd=tmp, env=env).returncode
            out.seek(0)
            text = out.read()
    if log is not None:
        log(text)
    jars = re.search(r"^\(spark\.jars,(.*)\)$", text, re.M)
    if code != 0 or jars is None:
        tail = " ".join(line.strip() for line in text.splitlines()[-12:])
        raise DependencyError(f"resolving {', '.join(packages)} with Ivy (as spark-submit --packages does) "
                              f"failed (exit {code}); Maven Central or the repositories in "
                              f"spark.jars.repositories / spark.jars.ivySettings must be reachable once, "
                              f"or set COLDTIER_JARS_DIR to a directory filled by scripts/fetch-jars.sh. "
                              f"Ivy said: {tail[-1500:]}")
    return [Path(u.removeprefix("file://")) for u in jars.group(1).split(",") if u]


def cached_jars(root: Path, packages: list[str], ivy_conf: dict[str, str] | None = None,
                log: Callable[[str], None] | None = None, resolve_missing: bool = True) -> list[Path] | None:
    """The jars of ``packages``, resolved once per set of coordinates and remembered in
    ``build/jars/<digest>.txt``: later launches pass them with ``--jars`` and run no Ivy
    resolution at all (no output, no network, no unreachable resolver). A manifest whose files
    are gone (Ivy's cache cleaned) resolves again. ``resolve_missing=False``: None instead."""
    key = json.dumps([sorted(packages), sorted((ivy_conf or {}).items())])
    manifest = root / "build" / "jars" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"
    if manifest.exists():
        jars = [Path(line) for line in manifest.read_text().splitlines() if line]
        if jars and all(j.is_file() for j in jars):
            return jars
    if not resolve_missing:
        return None
    jars = resolve(packages, ivy_conf, log)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("".join(f"{j}\n" for j in jars))
    os.replace(tmp, manifest)
    return jars


def fetch(dest: Path, packages: list[str]) -> list[Path]:
    """Resolve ``packages`` (Ivy, as spark-submit does) and copy every resulting jar into
    ``dest``. Returns the copied files."""
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(jar, dest / jar.name)) for jar in resolve(packages)]


def native_jar(root: Path) -> Path:
    """coldtier's own JVM classes (``lib/java``), compiled against the Spark jars of the installed
    pyspark into ``build/jars/coldtier-native-<digest>.jar``: the digest covers the sources and
    pyspark's version, so a change to either builds a new jar and a built one is never stale.
    Built once (a few seconds of javac), atomically: concurrent launches agree on the result."""
    import zipfile

    import pyspark

    sources = sorted((root / "lib" / "java").rglob("*.java"))
    if not sources:
        raise DependencyError(f"no JVM sources under {root / 'lib' / 'java'}: a broken checkout?")
    h = hashlib.sha256(pyspark.__version__.encode())
    for src in sources:
        h.update(str(src.relative_to(root)).encode() + b"\0" + src.read_bytes())
    jar = root / "build" / "jars" / f"coldtier-native-{h.hexdigest()[:16]}.jar"
    if jar.is_file():
        return jar
    home = os.environ.get("JAVA_HOME")
    javac = str(Path(home) / "bin" / "javac") if home and (Path(home) / "bin" / "javac").exists() \
        else shutil.which("javac")
    if not javac:
        raise DependencyError("javac (a JDK 17) is needed once to build coldtier's Native reader "
                              "(lib/java): install openjdk-17-jdk-headless, or run make bootstrap.")
    jar.parent.mkdir(parents=True, exist_ok=True)
    spark_jars = Path(pyspark.__file__).parent / "jars"
    with tempfile.TemporaryDirectory(dir=jar.parent) as tmp:
        classes = Path(tmp) / "classes"
        res = subprocess.run([javac, "-nowarn", "-Xlint:-options", "--release", "17", "-encoding", "UTF-8",
                              "-cp", str(spark_jars / "*"), "-d", str(classes), *map(str, sources)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise DependencyError(f"javac could not build lib/java (exit {res.returncode}): "
                                  f"{res.stderr.strip()[-2000:]}")
        part = Path(tmp) / jar.name
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: coldtier\n\n")
            for f in sorted(classes.rglob("*.class")):
                zf.write(f, str(f.relative_to(classes)))
        os.replace(part, jar)
    return jar


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coldtier.deps")
    ap.add_argument("--packages", action="store_true", help="print the --packages value")
    ap.add_argument("--resolve", action="store_true", help="download every jar into Ivy's cache")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # --resolve these coordinates instead
    ap.add_argument("--fetch", metavar="DIR", help="copy the pinned jars (and --extra ones) into DIR")
    ap.add_argument("--extra", default="", help="more coordinates, comma-separated (e.g. iceberg-aws-bundle)")
    ap.add_argument("--native", action="store_true", help="build coldtier's own JVM classes (lib/java)")
    args = ap.parse_args(argv)
    deps = load()
    if args.native:
        print(native_jar(repo_root()))
        return 0
    if args.fetch:
        extra = [p.strip() for p in args.extra.split(",") if p.strip()]
        jars = fetch(Path(args.fetch), [*deps.packages, *extra])
        jars.append(Path(shutil.copy2(native_jar(repo_root()), Path(args.fetch))))
        print(f"{len(jars)} jars in {args.fetch}; use them with COLDTIER_JARS_DIR={args.fetch}")
        return 0
    if args.resolve:
        resolved = cached_jars(repo_root(), (args.only or deps.packages_arg).split(",")) or []
        print(f"{len(resolved)} jars resolved", file=sys.stderr)
    if args.packages or not args.resolve:
        print(deps.packages_arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
