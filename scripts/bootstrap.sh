#!/usr/bin/env bash
# Installs what coldtier needs on a fresh machine, idempotently:
#   - Java 17 (a JDK: javac builds lib/java), PostgreSQL, Prometheus (server + promtool) and
#     docker-compose from Debian (as root, when absent): the tests evaluate the shipped alerts
#     in a real Prometheus and validate docker-compose.yml with `docker-compose config` (no
#     Docker engine needed)
#   - .venv from requirements.txt, with coldtier installed editable (the `coldtier` command)
#   - the Spark-side jars, resolved once into the Ivy cache (--packages)
#   - coldtier's own JVM classes (lib/java → build/jars/coldtier-native-*.jar)
#   - the driver JVM's class-data archive (build/jvm/), trained once per JDK/pyspark/packages
set -euo pipefail
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac  # runuser, useradd (cron's PATH lacks them)
cd "$(dirname "$0")/.."

apt_pkgs=()
# a JDK, not only a JRE: javac builds coldtier's own JVM classes (lib/java, the Native reader)
{ command -v java && command -v javac; } >/dev/null 2>&1 || apt_pkgs+=(openjdk-17-jdk-headless)
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || apt_pkgs+=(postgresql)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || apt_pkgs+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || apt_pkgs+=(docker-compose)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing ${apt_pkgs[*]}; install them as root (apt-get install ${apt_pkgs[*]})" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${apt_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || { [ "$(id -u)" != 0 ] || useradd --system --no-create-home postgres; }

py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null || true)" != "$want" ] || [ ! -x .venv/bin/coldtier ]; then
  echo "bootstrap: pip install -r requirements.txt, and coldtier itself (editable: .venv/bin/coldtier)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > .venv/.requirements.sha256
fi

# Resolve the pinned jars once (Spark's Ivy cache); later sessions start without network.
stamp=.venv/.jars.sha256
jwant=$(sha256sum conf/dependencies.yaml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$jwant" ]; then
  echo "bootstrap: resolving Spark packages"
  PYTHONPATH=lib .venv/bin/python -m coldtier.deps --resolve
  echo "$jwant" > "$stamp"
fi
# coldtier's own JVM classes (lib/java) into build/jars/: a few seconds of javac, once per change.
PYTHONPATH=lib .venv/bin/python -m coldtier.deps --native >/dev/null
# The driver JVM's class-data archive (build/jvm/, ~1 min once): a driver then starts in about
# half the time. Trained again when the JDK, pyspark or the packages change.
if ! PYTHONPATH=lib .venv/bin/python -m coldtier.cds --if-missing --check; then
  echo "bootstrap: training the driver JVM's class-data archive (coldtier.cds)"
  PYTHONPATH=lib .venv/bin/python -m coldtier.cds >/dev/null
fi
echo "bootstrap: ready"
