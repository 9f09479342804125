"""Builds the spark-submit command line (``scripts/spark-submit.sh`` calls this).

    scripts/spark-submit.sh [--print-only] [--master M] [--deploy-mode client|cluster]
                            [--conf k=v ...] JOB.py COMMAND --config FILE [...]

- master/deploy mode: command line, else ``COLDTIER_SPARK_MASTER``, else YAML ``spark.master``;
- dependencies: ``--packages`` from conf/dependencies.yaml, or ``--jars`` from
  ``COLDTIER_JARS_DIR`` (a directory filled for clusters without internet);
- the coldtier package as a zip through ``--py-files``;
- Spark settings from YAML ``spark.conf`` and ``--conf`` (which wins) go into a 0600 properties
  file (``--properties-file``, with ``--load-spark-defaults`` so the cluster's
  spark-defaults.conf still applies), never onto a command line where ``ps`` shows them; Spark's
  redaction regex is extended to every secret coldtier knows (``spark.redaction.regex``);
- in cluster mode the YAML travels with ``--files`` and the job reads it by name;
- ``--print-only`` prints the final command with secrets masked.

Longer than 300 lines: the launcher is one process with three jobs that share its state (the
command from YAML, quiet logging and the stderr relay, signal forwarding); the driver's side
lives in ``handoff``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from coldtier import cds, deps
from coldtier import config as config_mod
from coldtier.config import ConfigError, mask
from coldtier.handoff import DRIVER_PIDFILE_VAR, DRIVER_STDERR_VAR
from coldtier.spark import (  # noqa: F401  (QUIET_LOGGERS: submit.QUIET_LOGGERS)
    QUIET_LOGGERS,
    secret_conf,
    write_log4j,
    write_properties,
)

# Spark's own default, plus the secrets of Iceberg REST catalogs (credential, header.*) and DSNs
SPARK_REDACTION = r"(?i)secret|password|token|access[.]?key"
COLDTIER_REDACTION = r"credential|[.]header[.]|dsn"


def redaction_regex(current: str | None) -> str:
    """``spark.redaction.regex`` covering Spark's defaults, what the YAML set, and coldtier's."""
    base = current or SPARK_REDACTION
    return base if COLDTIER_REDACTION in base else f"{base}|{COLDTIER_REDACTION}"


VERBOSE_VAR = "COLDTIER_VERBOSE"
# The one line every JVM of Spark 4 prints (Spark adds --add-modules=jdk.incubator.vector
# itself); no JVM option turns it off, so a quiet launch drops exactly this line
JVM_BANNER = b"WARNING: Using incubator modules: jdk.incubator.vector"


@dataclass(frozen=True)
class SubmitArgs:
    print_only: bool
    master: str | None
    deploy_mode: str | None
    conf: tuple[tuple[str, str], ...]
    job: str
    job_args: tuple[str, ...]
    verbose: bool = False


def parse(argv: list[str]) -> SubmitArgs:
    print_only, verbose, master, mode, conf = False, False, None, None, []
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        a = argv[i]
        if a == "--print-only":
            print_only = True
        elif a == "--verbose":
            verbose = True
        elif a in ("--master", "--deploy-mode", "--conf") and i + 1 < len(argv):
            v = argv[i + 1]
            i += 1
            if a == "--master":
                master = v
            elif a == "--deploy-mode":
                mode = v
            else:
                k, sep, val = v.partition("=")
                if not sep:
                    raise ConfigError(f"--conf {v!r}: expected key=value")
                conf.append((k, val))
        else:
            raise ConfigError(f"spark-submit.sh: unknown option {a!r} before the job file")
        i += 1
    if i >= len(argv):
        raise ConfigError("spark-submit.sh: missing the job file (e.g. jobs/offload.py run --config F)")
    return SubmitArgs(print_only, master, mode, tuple(conf), argv[i], tuple(argv[i + 1:]), verbose)


def build_lib_zip(root: Path) -> Path:
    """The ``lib/coldtier`` package as a zip for ``--py-files``, named by its content
    (``build/coldtier-lib-<digest>.zip``): a launch never sees the file change under it while
    Spark copies it (Spark refuses a py-file whose content changed between two reads: "exists
    and does not match contents"), even when another launch from the same checkout runs a newer
    code; zips of other contents older than a day are removed."""
    sources = sorted((root / "lib" / "coldtier").rglob("*.py"))
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(root / "lib")).encode() + b"\0" + path.read_bytes() + b"\0")
    out = root / "build" / f"coldtier-lib-{digest.hexdigest()[:16]}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        tmp = out.with_suffix(f".zip.{os.getpid()}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sources:
                zf.write(path, path.relative_to(root / "lib"))
        os.replace(tmp, out)
    for old in out.parent.glob("coldtier-lib*.zip"):
        with contextlib.suppress(OSError):
            if old != out and old.stat().st_mtime < time.time() - 86_400:
                old.unlink()
    return out


def _config_path(job_args: tuple[str, ...]) -> str | None:
    for i, a in enumerate(job_args):
        if a == "--config" and i + 1 < len(job_args):
            return job_args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def write_env_file(cfg_path: str, env: dict[str, str], directory: Path) -> Path:
    """The config's ``${VAR}`` values, for a driver that runs in the cluster (cluster mode):
    a 0600 JSON file shipped with ``--files`` (the driver finds it through
    ``COLDTIER_ENV_FILE``), so that no secret goes on a command line."""
    names = config_mod.referenced_env(Path(cfg_path).read_text())
    path = directory / "coldtier-env.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({n: env[n] for n in names if n in env}, fh)
    return path


def master_and_mode(args: SubmitArgs, env: dict[str, str],
                    cfg: config_mod.AppConfig | None) -> tuple[str, str]:
    """``--master`` / ``--deploy-mode``: the command line, else the environment, else the YAML."""
    master = args.master or env.get("COLDTIER_SPARK_MASTER") or (cfg.spark.master if cfg else None) \
        or "local[*]"
    mode = args.deploy_mode or env.get("COLDTIER_DEPLOY_MODE") or (cfg.spark.deploy_mode if cfg else None) \
        or "client"
    if mode == "cluster" and master.startswith("spark://"):
        raise ConfigError(
            f"deploy mode 'cluster' on the standalone master {master}: Spark runs Python applications "
            f"on standalone clusters in client mode only (spark-submit refuses: \"Cluster deploy mode is "
            f"currently not supported for python applications on standalone clusters\"). Use "
            f"--deploy-mode client (the driver runs where this script runs; executors on the cluster), "
            f"or YARN / Kubernetes for a driver inside the cluster (docs/deploy.md).")
    if mode not in ("client", "cluster"):
        raise ConfigError(f"deploy mode {mode!r}: use client or cluster")
    return master, mode


Resolver = Callable[[list[str], dict[str, str]], "list[Path] | None"]


def build_command(args: SubmitArgs, root: Path, env: dict[str, str],
                  env_dir: Path | None = None,
                  resolve_jars: Resolver | None = None) -> tuple[list[str], tuple[str, ...]]:
    """(argv, secrets to mask when printing). Spark settings go to a properties file in
    ``env_dir`` (a temporary directory that lives as long as spark-submit); in cluster mode the
    config's variables are written there for the driver too (``write_env_file``).
    ``resolve_jars(packages, ivy settings)`` gives the packages' jar files (``deps.cached_jars``):
    they go with ``--jars`` and spark-submit resolves nothing; without it, or when it gives
    None, ``--packages``."""
    cfg_path = _config_path(args.job_args)
    cfg = config_mod.load(cfg_path, env) if cfg_path else None
    secrets = cfg.secrets() if cfg else ()
    master, mode = master_and_mode(args, env, cfg)
    cmd = [deps.spark_submit_binary(), "--master", master, "--deploy-mode", mode]
    conf = dict(cfg.spark.conf) if cfg else {}
    conf.update(dict(args.conf))
    # packages named in YAML (e.g. iceberg-aws-bundle for S3) join the pinned ones
    extra = [p for p in conf.pop("spark.jars.packages", "").split(",") if p.strip()]
    jars_dir = env.get("COLDTIER_JARS_DIR")
    if jars_dir:
        jars = sorted(str(p) for p in Path(jars_dir).glob("*.jar"))
        if not jars:
            raise ConfigError(f"COLDTIER_JARS_DIR={jars_dir} holds no jars (run scripts/fetch-jars.sh)")
        if not any(Path(j).name.startswith("coldtier-native-") for j in jars):
            jars.append(str(deps.native_jar(root)))  # a directory fetched before the reader existed
        cmd += ["--jars", ",".join(jars)]
    else:
        pinned = deps.load(root / "conf" / "dependencies.yaml").packages
        packages = [*pinned, *(p.strip() for p in extra if p.strip() not in pinned)]
        ivy = {k: v for k, v in conf.items() if k in deps.IVY_KEYS}
        resolved = resolve_jars(packages, ivy) if resolve_jars else None
        native = str(deps.native_jar(root))  # coldtier's own classes (lib/java), shipped like the rest
        if resolved:
            cmd += ["--jars", ",".join([*(str(j) for j in resolved), native])]
        else:
            cmd += ["--packages", ",".join(packages), "--jars", native]
    cmd += ["--py-files", str(build_lib_zip(root))]
    python = env.get("PYSPARK_PYTHON") or sys.executable
    conf.setdefault("spark.pyspark.python", python)
    conf["spark.redaction.regex"] = redaction_regex(conf.get("spark.redaction.regex"))
    for k, v in conf.items():
        if secret_conf(k) and v:
            secrets += (v,)
    job_args = list(args.job_args)
    if mode == "cluster" and cfg_path:
        files = [str(Path(cfg_path).resolve())]
        if env_dir is not None:
            env_file = write_env_file(cfg_path, env, env_dir)
            files.append(str(env_file))
            for key in ("spark.yarn.appMasterEnv", "spark.kubernetes.driverEnv"):
                conf[f"{key}.{config_mod.ENV_FILE_VAR}"] = env_file.name
        cmd += ["--files", ",".join(files)]
        idx = job_args.index("--config") if "--config" in job_args else None
        if idx is not None:
            job_args[idx + 1] = Path(cfg_path).name
    if env_dir is not None:
        cmd += ["--properties-file", str(write_properties(conf, env_dir)), "--load-spark-defaults"]
    else:  # no directory for the file (a caller that only looks): the settings as --conf
        for k, v in conf.items():
            cmd += ["--conf", f"{k}={v}"]
    cmd.append(args.job)
    cmd += job_args
    return cmd, secrets


USAGE = """\
usage: scripts/spark-submit.sh [--print-only] [--verbose] [--master M] [--deploy-mode client|cluster]
                               [--conf key=value ...] JOB.py COMMAND --config FILE [options]

Builds the spark-submit command from the YAML (master, deploy mode, spark.conf), the pinned jars
and the coldtier package, and runs it as a child (signals go to the Python driver). A `run` that
finds nothing to do, or that would fail before Spark (config, lock, services, source columns),
ends here without a JVM.

  --print-only     print the final command, secrets masked, and exit
  --verbose        Spark's INFO log, Ivy's report and the JVM banner (also COLDTIER_VERBOSE=1)
  --master M       local[*], spark://host:7077, yarn, k8s://... (else $COLDTIER_SPARK_MASTER, YAML)
  --deploy-mode D  client or cluster (else $COLDTIER_DEPLOY_MODE, YAML spark.deploy_mode)
  --conf k=v       a Spark setting; wins over the YAML's spark.conf

JOB.py is jobs/offload.py; its commands and options: `coldtier --help`, `coldtier run --help`.
Environment: COLDTIER_JARS_DIR (jars instead of Maven), COLDTIER_SUBMIT_PRECHECK=0 (always launch).
"""


def main(argv: list[str] | None = None) -> int:
    root = deps.repo_root()
    env = dict(os.environ)
    raw = list(sys.argv[1:] if argv is None else argv)
    before_job = raw[:next((i for i, a in enumerate(raw) if not a.startswith("-")), len(raw))]
    if not raw or "--help" in before_job or "-h" in before_job:
        print(USAGE, end="", file=sys.stdout if raw else sys.stderr)
        return 0 if raw else 2
    try:
        args = parse(raw)
        cfg_path = _config_path(args.job_args)
        _, mode = master_and_mode(args, env, config_mod.load(cfg_path, env) if cfg_path else None)
    except ConfigError as exc:
        print(f"coldtier: configuration error: {exc} (exit 2)", file=sys.stderr)
        return 2
    verbose = args.verbose or env.get(VERBOSE_VAR, "") not in ("", "0")
    if not args.print_only and Path(args.job).name == "offload.py" \
            and env.get("COLDTIER_SUBMIT_PRECHECK", "1") != "0":
        from coldtier.precheck import prerun

        code = prerun(list(args.job_args), remote_driver=mode == "cluster")
        if code is not None:  # nothing to do, or a failure the driver would meet: no JVM started
            return code
    with tempfile.TemporaryDirectory(prefix="coldtier-submit-") as tmp:
        try:
            cmd, secrets = build_command(args, root, env, Path(tmp),
                                         _jar_resolver(root, print_only=args.print_only, verbose=verbose))
        except ConfigError as exc:
            print(f"coldtier: configuration error: {exc} (exit 2)", file=sys.stderr)
            return 2
        except deps.DependencyError as exc:
            print(f"coldtier: runtime failure: {exc} (exit 4)", file=sys.stderr)
            return 4
        if args.print_only:
            # the files a launch writes live in a private directory made per launch and deleted
            # after it: shown by what they hold, under a placeholder name
            launch_dir = "$LAUNCH_DIR"
            print(mask(shlex.join(cmd).replace(tmp, launch_dir), secrets))
            for written in sorted(Path(tmp).iterdir()):
                print(f"# {launch_dir}/{written.name} (0600, written at launch, deleted after it):")
                if written.suffix == ".json":  # the config's variables: names only
                    names = json.loads(written.read_text())
                    print("".join(f"#   {name}=***\n" for name in names), end="")
                else:
                    print(mask(written.read_text(), secrets), end="")
            return 0
        env["PYTHONPATH"] = str(root / "lib") + os.pathsep + env.get("PYTHONPATH", "")
        opts = [env.get("SPARK_SUBMIT_OPTS", ""), cds.java_options(root)]  # the class-data archive
        if verbose:
            env.setdefault("COLDTIER_SPARK_LOG_LEVEL", "INFO")
        else:
            opts.append(f"-Dlog4j2.configurationFile=file:{write_log4j(Path(tmp))}")
        if joined := " ".join(filter(None, opts)):
            env["SPARK_SUBMIT_OPTS"] = joined
        return supervise(cmd, env, verbose=verbose)


def _jar_resolver(root: Path, print_only: bool, verbose: bool) -> Resolver:
    """``deps.cached_jars`` for the launcher: the first launch with a new set of packages
    resolves them (one line says so; ``--verbose`` shows Ivy's report), later ones find them
    cached. ``--print-only`` resolves nothing: it shows ``--packages`` until a launch has."""
    def resolve(packages: list[str], ivy: dict[str, str]) -> list[Path] | None:
        if print_only:
            return deps.cached_jars(root, packages, ivy, resolve_missing=False)
        cached = deps.cached_jars(root, packages, ivy, resolve_missing=False)
        if cached:
            return cached
        print(f"coldtier: resolving {len(packages)} packages with Ivy once (later launches reuse the "
              f"jars; --verbose shows Ivy's report)", file=sys.stderr, flush=True)
        return deps.cached_jars(root, packages, ivy, log=_to_stderr if verbose else None)
    return resolve


def _to_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def supervise(cmd: list[str], env: dict[str, str], verbose: bool = False) -> int:
    """Run spark-submit as a child and pass a stop signal on to the Python driver.

    A supervisor stops the job by signalling this process (systemd ``KillMode=mixed``,
    ``kill PID``) or its whole group/cgroup. The driver JVM ignores SIGTERM/SIGINT (see
    ``spark.shield_jvm_from_stop_signals``), so the signal goes to the Python driver, whose
    pid it writes to ``COLDTIER_DRIVER_PIDFILE``: it finishes the batch in flight, commits,
    releases the lock and exits 0. Before the driver is up, the signal stops spark-submit
    itself (nothing is in flight yet). Returns the child's exit code (128+N for signal N).

    Output: the child's stdout is ours (the progress JSON). Its stderr and the driver's own
    stderr (a FIFO the driver attaches to, see ``attach_stderr``) are copied to ours a whole line
    at a time; a quiet run drops the JVM's incubator-module banner.
    """
    with tempfile.TemporaryDirectory(prefix="coldtier-submit-") as tmp:
        pidfile = Path(tmp) / "driver.pid"
        fifo = Path(tmp) / "driver.stderr"
        os.mkfifo(fifo, 0o600)
        # read-write: opening never blocks, and the driver's open for writing finds a reader
        relay_fd = os.open(fifo, os.O_RDWR)
        env = {**env, DRIVER_PIDFILE_VAR: str(pidfile), DRIVER_STDERR_VAR: str(fifo)}
        child = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        lock = threading.Lock()
        drop = (lambda line: False) if verbose else (lambda line: line.rstrip() == JVM_BANNER)
        assert child.stderr is not None
        stop_r, stop_w = os.pipe()
        pumps = [threading.Thread(target=_relay, args=(child.stderr, drop, lock), daemon=True),
                 threading.Thread(target=_relay_fifo, args=(relay_fd, stop_r, lock), daemon=True)]
        for pump in pumps:
            pump.start()

        def driver_pid() -> int | None:
            try:
                return int(pidfile.read_text())
            except (OSError, ValueError):
                return None  # no driver yet

        def forward(signum: int, _frame: object) -> None:
            pid = driver_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):  # gone: stop spark-submit itself
                    os.kill(pid, signal.SIGTERM)
                    return
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        code = child.wait()
        pumps[0].join(10)  # spark-submit's stderr ends with it (unless a grandchild keeps it open)
        os.write(stop_w, b"x")  # the FIFO never ends by itself: this process holds a writer too
        pumps[1].join(10)
        for fd in (relay_fd, stop_r, stop_w):
            os.close(fd)
    return 128 - code if code < 0 else code


def _write_err(data: bytes, lock: threading.Lock) -> None:
    with lock:
        out = getattr(sys.stderr, "buffer", None)
        if out is not None:
            out.write(data)
        else:
            sys.stderr.write(data.decode("utf-8", "replace"))
        sys.stderr.flush()


def _relay(src: BinaryIO, drop: Callable[[bytes], bool], lock: threading.Lock) -> None:
    with contextlib.suppress(OSError, ValueError):  # closed under us at the end
        for line in iter(src.readline, b""):
            if not drop(line):
                _write_err(line, lock)


def _relay_fifo(fd: int, stop: int, lock: threading.Lock) -> None:
    """Copy the driver's stderr (the FIFO) line by line until ``stop`` is readable and the FIFO
    holds nothing more."""
    pending = b""
    while True:
        ready, _, _ = select.select([fd, stop], [], [])
        if fd in ready:
            pending += os.read(fd, 65536)
            *lines, pending = pending.split(b"\n")
            if lines:
                _write_err(b"".join(line + b"\n" for line in lines), lock)
        elif stop in ready:
            if pending:
                _write_err(pending + b"\n", lock)
            return


if __name__ == "__main__":
    sys.exit(main())
