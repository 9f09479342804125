"""The spark-submit command line: secrets never on it (``ps`` shows every argument)."""

import os
import stat
import sys
from pathlib import Path

import pytest

from coldtier import deps
from coldtier.submit import (
    JVM_BANNER,
    QUIET_LOGGERS,
    build_command,
    parse,
    redaction_regex,
    supervise,
    write_log4j,
)

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
pipeline: p
spark:
  master: local[2]
  conf: {spark.hadoop.fs.s3a.secret.key: "${S3_SECRET}", spark.executor.memory: 2g}
sources: {ch: {url: "jdbc:clickhouse://127.0.0.1:8123/default", password: "${CH_PW}"}}
ledger: {dsn: "host=127.0.0.1 dbname=x user=u password=${PG_PW}"}
catalogs:
  rest: {type: rest, uri: "http://127.0.0.1:8181", credential: "${REST_CRED}", header.X-Api-Key: "${API_KEY}"}
tables:
  - name: t
    source: {connection: ch, table: db.t}
    target: {catalog: rest, table: ns.t}
"""
ENV = {"S3_SECRET": "s3-Secret-Value-1", "CH_PW": "ch-Secret-2", "PG_PW": "pg-Secret-3",
       "REST_CRED": "client:rest-Secret-4", "API_KEY": "api-Secret-5", "COLDTIER_JARS_DIR": ""}


def test_no_secret_goes_on_the_command_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "x.jar").write_text("")
    env = {**os.environ, **ENV, "COLDTIER_JARS_DIR": str(jars)}
    for mode in ("client", "cluster"):
        args = parse(["--deploy-mode", mode, "--master", "yarn", "--conf", "spark.x.password=cli-Secret-6",
                      "jobs/offload.py", "run", "--config", str(cfg)])
        work = tmp_path / mode
        work.mkdir()
        cmd, secrets = build_command(args, Path(__file__).resolve().parents[2], env, work)
        line = " ".join(cmd)
        for value in [*ENV.values(), "cli-Secret-6"]:
            if value and not value.startswith("/"):
                assert value not in line, (mode, value)
        props = Path(cmd[cmd.index("--properties-file") + 1])
        assert "--load-spark-defaults" in cmd
        assert stat.S_IMODE(props.stat().st_mode) == 0o600
        text = props.read_text()
        assert "s3-Secret-Value-1" in text and "cli-Secret-6" in text and "executor.memory=2g" in text
        assert "s3-Secret-Value-1" in secrets and "cli-Secret-6" in secrets
        assert "credential" in text and "header" in text  # the redaction regex covers them


def test_redaction_regex_extends_spark_default_and_yours():
    assert redaction_regex(None) == r"(?i)secret|password|token|access[.]?key|credential|[.]header[.]|dsn"
    assert redaction_regex("(?i)mine").startswith("(?i)mine|credential")
    assert redaction_regex(redaction_regex(None)) == redaction_regex(None)


def test_cached_jars_go_with_jars_and_nothing_is_resolved(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.replace("spark.executor.memory: 2g",
                                  "spark.executor.memory: 2g, spark.jars.packages: 'x:extra:1', "
                                  "spark.jars.repositories: 'https://mirror.example/maven'"))
    env = {**os.environ, **ENV}
    asked = []

    def resolver(packages, ivy):
        asked.append((packages, ivy))
        return [Path("/cache/a.jar"), Path("/cache/b.jar")]

    args = parse(["--verbose", "jobs/offload.py", "run", "--config", str(cfg)])
    assert args.verbose
    cmd, _ = build_command(args, ROOT, env, tmp_path, resolver)
    native = str(deps.native_jar(ROOT))  # coldtier's own classes (lib/java) go with every launch
    assert cmd[cmd.index("--jars") + 1] == f"/cache/a.jar,/cache/b.jar,{native}" and "--packages" not in cmd
    [(packages, ivy)] = asked
    assert packages == [*deps.load(ROOT / "conf" / "dependencies.yaml").packages, "x:extra:1"]
    assert ivy == {"spark.jars.repositories": "https://mirror.example/maven"}
    # a resolver that has nothing (--print-only before any launch): the coordinates
    cmd, _ = build_command(args, ROOT, env, tmp_path, lambda packages, ivy: None)
    assert cmd[cmd.index("--jars") + 1] == native and cmd[cmd.index("--packages") + 1].endswith(",x:extra:1")


def test_cached_jars_resolve_once_per_set_of_packages(tmp_path, monkeypatch):
    jar = tmp_path / "ivy" / "a.jar"
    jar.parent.mkdir()
    jar.write_text("")
    calls = []
    monkeypatch.setattr(deps, "resolve", lambda packages, ivy=None, log=None: calls.append(packages) or [jar])
    assert deps.cached_jars(tmp_path, ["g:a:1"], resolve_missing=False) is None
    assert deps.cached_jars(tmp_path, ["g:a:1"]) == [jar]
    assert deps.cached_jars(tmp_path, ["g:a:1"]) == [jar] and len(calls) == 1  # cached
    assert deps.cached_jars(tmp_path, ["g:a:1"], {"spark.jars.repositories": "https://m"}) == [jar]
    assert len(calls) == 2  # other repositories: another resolution
    jar.unlink()  # Ivy's cache cleaned: resolve again rather than pass a missing jar
    assert deps.cached_jars(tmp_path, ["g:a:1"], resolve_missing=False) is None


def test_quiet_log4j_keeps_spark_at_warn(tmp_path):
    text = write_log4j(tmp_path).read_text()
    assert "rootLogger.level = warn" in text and "appender.console.target = SYSTEM_ERR" in text
    for name in QUIET_LOGGERS:
        assert f"name = {name}\n" in text
    assert text.count("level = error") == len(QUIET_LOGGERS)


# Plays spark-submit: its own stdout and stderr, and a "driver" that attaches to the launcher's
# stderr as cli.main does, whose stdout is merged with its stderr the way PythonRunner does
FAKE_SUBMIT = f"""
import subprocess, sys
print('{{"progress": 1}}', flush=True)
sys.stderr.buffer.write({JVM_BANNER!r} + b"\\n")
print("26/01/01 00:00:00 WARN Spark: a warning", file=sys.stderr, flush=True)
driver = (
    "import sys\\n"
    "from coldtier.handoff import attach_stderr\\n"
    "attach_stderr()\\n"
    "print('{{\\"progress\\": 2}}', flush=True)\\n"
    "print('coldtier: a message', file=sys.stderr, flush=True)\\n"
    "sys.stderr.write('coldtier: last words without a newline')\\n"
)
sys.exit(subprocess.run([sys.executable, "-c", driver], stderr=subprocess.STDOUT).returncode + 3)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_launcher_demultiplexes_the_drivers_stderr(capfd, verbose):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    assert supervise([sys.executable, "-c", FAKE_SUBMIT], env, verbose=verbose) == 3
    out, err = capfd.readouterr()
    assert out.splitlines() == ['{"progress": 1}', '{"progress": 2}']
    assert "coldtier: a message\n" in err and err.endswith("coldtier: last words without a newline\n")
    assert "WARN Spark: a warning" in err
    assert (JVM_BANNER.decode() in err) is verbose


def test_the_lib_zip_is_named_by_its_content(tmp_path):
    """A launch's --py-files never changes under it: another launch that runs newer code from the
    same checkout writes another file (Spark refuses a py-file whose content changed while it
    copies it)."""
    import zipfile

    from coldtier.submit import build_lib_zip

    pkg = tmp_path / "lib" / "coldtier"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VERSION = 1\n")
    first = build_lib_zip(tmp_path)
    assert build_lib_zip(tmp_path) == first  # same content: the same file, not rewritten
    before = first.read_bytes()
    (pkg / "__init__.py").write_text("VERSION = 2\n")
    second = build_lib_zip(tmp_path)
    assert second != first and first.read_bytes() == before
    assert zipfile.ZipFile(second).read("coldtier/__init__.py") == b"VERSION = 2\n"


def test_the_native_reader_jar_is_built_once_per_source_and_needs_a_jdk(tmp_path, monkeypatch):
    import shutil
    import zipfile

    shutil.copytree(ROOT / "lib" / "java", tmp_path / "lib" / "java")
    jar = deps.native_jar(tmp_path)
    with zipfile.ZipFile(jar) as zf:
        assert "coldtier/clickhouse/NativeSource.class" in zf.namelist()
    built = jar.stat().st_mtime_ns
    assert deps.native_jar(tmp_path) == jar and jar.stat().st_mtime_ns == built  # not built again
    src = tmp_path / "lib" / "java" / "coldtier" / "clickhouse" / "NativeInput.java"
    src.write_text(src.read_text() + "\n// changed\n")
    assert deps.native_jar(tmp_path) != jar  # a new digest: a stale jar is never used
    src.write_text(src.read_text() + "\n// changed again\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no javac anywhere
    with pytest.raises(deps.DependencyError, match=r"javac .* is needed once to build"):
        deps.native_jar(tmp_path)
