#!/usr/bin/env bash
# Development services: the embedded ClickHouse (chembed) and a throwaway PostgreSQL.
#   scripts/dev-services.sh start|stop|status|destroy|restart-ch|restart-pg|pids
# start is idempotent and waits until both answer; stop ends only what start started
# (by pid file); destroy stops them and deletes their data; restart-ch / restart-pg restart one
# (the soak's faults); pids prints "clickhouse PID" and "postgres PID" (the postmaster). Ports, passwords and the data directory come from the environment:
#   COLDTIER_CH_PORT (18123)  COLDTIER_CH_PASSWORD (dev-ch-Q7v2p)
#   COLDTIER_PG_PORT (15432)  COLDTIER_PG_PASSWORD (dev-pg-K4m8w)  COLDTIER_DEV_DIR (.dev)
set -euo pipefail
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac  # runuser, useradd (cron's PATH lacks them)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
CH_PORT=${COLDTIER_CH_PORT:-18123}
PG_PORT=${COLDTIER_PG_PORT:-15432}
export COLDTIER_CH_PASSWORD=${COLDTIER_CH_PASSWORD:-dev-ch-Q7v2p}
export COLDTIER_PG_PASSWORD=${COLDTIER_PG_PASSWORD:-dev-pg-K4m8w}
DEV=${COLDTIER_DEV_DIR:-$root/.dev}
mkdir -p "$DEV"
DEV=$(cd "$DEV" && pwd)
PY=${COLDTIER_PYTHON:-$root/.venv/bin/python}
[ -x "$PY" ] || PY=python3
CH_DIR=$DEV/clickhouse
CH_PID=$DEV/clickhouse.pid
PG_DIR=$DEV/postgres
if [ "$(id -u)" = 0 ] && ! runuser -u "${COLDTIER_PG_OS_USER:-postgres}" -- test -x "$DEV" 2>/dev/null; then
  # PostgreSQL runs unprivileged; it cannot reach a directory under a private home.
  PG_DIR=${TMPDIR:-/tmp}/coldtier-dev-postgres-$(printf %s "$DEV" | sha1sum | cut -c1-10)
fi
PG_DATA=$PG_DIR/data

ch_up() { curl -fsS -m 2 "http://127.0.0.1:$CH_PORT/ping" >/dev/null 2>&1; }
pg_up() { "$root/scripts/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; }

start_ch() {
  if ch_up; then echo "clickhouse: already running on $CH_PORT"; return; fi
  mkdir -p "$CH_DIR"
  CHEMBED_PASSWORD=$COLDTIER_CH_PASSWORD PYTHONPATH="$root/lib" nohup "$PY" -m chembed \
    --data-dir "$CH_DIR" --port "$CH_PORT" --password-env CHEMBED_PASSWORD \
    >"$DEV/clickhouse.log" 2>&1 &
  echo $! >"$CH_PID"
  for _ in $(seq 1 150); do ch_up && return; sleep 0.2; done
  echo "clickhouse: did not answer on 127.0.0.1:$CH_PORT within 30s; see $DEV/clickhouse.log" >&2
  exit 1
}

start_pg() {
  if pg_up; then echo "postgres: already running on $PG_PORT"; return; fi
  mkdir -p "$PG_DIR"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    pw=$(mktemp)
    printf %s "$COLDTIER_PG_PASSWORD" >"$pw"
    "$root/scripts/pg_ctl" initdb -s -D "$PG_DATA" \
      -o "--username=coldtier --auth=scram-sha-256 --pwfile=$pw --encoding=UTF8 --locale=C" >/dev/null
    rm -f "$pw"
  fi
  "$root/scripts/pg_ctl" start -s -w -D "$PG_DATA" -l "$PG_DIR/postgres.log" \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR" >/dev/null
  PGPASSWORD=$COLDTIER_PG_PASSWORD "$PY" - "$PG_PORT" <<'PYEOF'
import os, sys
import psycopg2
try:
    conn = psycopg2.connect(host="127.0.0.1", port=int(sys.argv[1]), user="coldtier",
                            password=os.environ["PGPASSWORD"], dbname="postgres")
except psycopg2.OperationalError as exc:
    sys.exit(f"postgres: cannot log in as coldtier with $COLDTIER_PG_PASSWORD ({' '.join(str(exc).split())}); "
             f"its data directory was created with another password (older checkouts used another "
             f"default): set COLDTIER_PG_PASSWORD to that one, or start afresh with "
             f"scripts/dev-services.sh destroy")
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = 'coldtier'")
    if cur.fetchone() is None:
        cur.execute("CREATE DATABASE coldtier")
PYEOF
}

stop_ch() {
  if [ -f "$CH_PID" ] && kill -0 "$(cat "$CH_PID")" 2>/dev/null; then
    kill -TERM "$(cat "$CH_PID")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$CH_PID")" 2>/dev/null || break; sleep 0.1; done
    echo "clickhouse: stopped"
  else
    echo "clickhouse: not started by this script"
  fi
  rm -f "$CH_PID"
}

stop_pg() {
  if pg_up; then "$root/scripts/pg_ctl" stop -s -w -m fast -D "$PG_DATA" && echo "postgres: stopped"
  else echo "postgres: not running"; fi
}

print_urls() {
  cat <<INFO
clickhouse  http://127.0.0.1:$CH_PORT   jdbc:clickhouse://127.0.0.1:$CH_PORT/default
            user default, password \$COLDTIER_CH_PASSWORD (default: dev-ch-Q7v2p), data $CH_DIR
postgres    postgresql://coldtier@127.0.0.1:$PG_PORT/coldtier
            user coldtier, password \$COLDTIER_PG_PASSWORD (default: dev-pg-K4m8w), data $PG_DATA
INFO
}

case "${1:-}" in
  start) start_ch; start_pg; print_urls ;;
  stop) stop_ch; stop_pg ;;
  destroy) stop_ch; stop_pg; rm -rf "$CH_DIR" "$PG_DIR" "$DEV"/clickhouse.log; echo "data removed" ;;
  status)
    rc=0
    if ch_up; then echo "clickhouse: up on $CH_PORT"; else echo "clickhouse: down"; rc=1; fi
    if pg_up; then echo "postgres: up on $PG_PORT"; else echo "postgres: down"; rc=1; fi
    exit $rc ;;
  restart-ch) stop_ch; start_ch ;;
  restart-pg) stop_pg; start_pg ;;
  pids)
    [ -f "$CH_PID" ] && echo "clickhouse $(cat "$CH_PID")"
    [ -f "$PG_DATA/postmaster.pid" ] && echo "postgres $(head -1 "$PG_DATA/postmaster.pid")"
    true ;;
  *) echo "usage: $0 start|stop|status|destroy|restart-ch|restart-pg|pids" >&2; exit 2 ;;
esac
