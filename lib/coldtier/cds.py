"""The driver JVM's class-data archive (AppCDS): the classes of Spark, Scala, Hadoop, Iceberg,
Delta and the JDBC drivers, parsed and verified once at bootstrap, then mapped by every driver
JVM a launch starts.

A driver JVM loads some 20,000 classes before its first batch; on this 2-core machine that was
~10 s to a ready session and ~5 s more for its first queries, every launch. With the archive it
is ~5 s and ~2.5 s (docs/tuning.md, "Driver start"): a relaunch under a supervisor, and every
crash test, pays that each time.

``python -m coldtier.cds`` (run by ``make bootstrap``) writes ``build/jvm/driver-<key>.jsa``:
a short training run (``coldtier.cds_workload``: a session, an Iceberg and a Delta table written
and read back) with ``-XX:ArchiveClassesAtExit``. The key covers the JDK, pyspark and the
pinned packages, so an upgrade of any of them leaves the old archive unused (the JVM checks
the class path too) until bootstrap trains a new one. A missing archive changes nothing but
the start time. The JVM's own CDS messages are turned off: its warnings go to stdout, where the
progress lines are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from coldtier import deps

QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def _java() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).exists() else None


def archive_path(root: Path) -> Path | None:
    """Where the archive of this JDK, pyspark and set of packages lives (None: no java)."""
    java = _java()
    if java is None:
        return None
    modules = java.parent.parent / "lib" / "modules"  # the JDK's class image: changes with every build
    stamp = modules.stat().st_mtime_ns if modules.exists() else 0
    try:
        from importlib.metadata import version

        pyspark = version("pyspark")
    except Exception:  # pyspark not installed: no driver JVM to speed up either
        return None
    packages = sorted(deps.load(root / "conf" / "dependencies.yaml").packages)
    key = json.dumps([str(java), stamp, pyspark, packages])
    return root / "build" / "jvm" / f"driver-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def java_options(root: Path) -> str:
    """The driver's JVM options that map the archive; empty when it was not trained (a named
    archive that does not exist would turn off the JDK's own class sharing too)."""
    path = archive_path(root)
    return f"-XX:SharedArchiveFile={path} {QUIET}" if path is not None and path.is_file() else ""


def train(root: Path) -> Path | None:
    """Writes the archive for this machine (a training run of ~1 min); None without java."""
    path = archive_path(root)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="coldtier-cds-") as work:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "lib"),
                                                                        os.environ.get("PYTHONPATH")])),
               # only the training JVM dumps; options the caller set stay
               "SPARK_SUBMIT_OPTS": f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} "
                                    f"-XX:ArchiveClassesAtExit={tmp} {QUIET}".strip()}
        proc = subprocess.run([sys.executable, "-m", "coldtier.cds_workload", work], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise SystemExit(f"coldtier.cds: the training run failed (exit {proc.returncode}); the "
                             f"driver starts without an archive. Its last output:\n{proc.stderr[-2000:]}")
    for old in path.parent.glob("driver-*.jsa"):  # archives of a former JDK or pyspark
        old.unlink(missing_ok=True)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coldtier.cds",
                                 description="Train the driver JVM's class-data archive (build/jvm/).")
    ap.add_argument("--if-missing", action="store_true", help="do nothing when this machine's archive exists")
    ap.add_argument("--check", action="store_true", help="with --if-missing: exit 1 instead of training")
    args = ap.parse_args(argv)
    root = deps.repo_root()
    path = archive_path(root)
    if args.if_missing and (path is None or path.is_file()):
        return 0
    if args.check:
        return 1
    done = train(root)
    print(f"coldtier.cds: {done}" if done else "coldtier.cds: no java found; nothing to train")
    return 0


if __name__ == "__main__":
    sys.exit(main())
