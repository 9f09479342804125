#!/usr/bin/env bash
# The demo: dev services up, synthetic trades in, the offload job through spark-submit on
# local[*], then the status table. Safe to run again: it continues where it left off.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export COLDTIER_CH_PASSWORD=${COLDTIER_CH_PASSWORD:-dev-ch-Q7v2p}
export COLDTIER_PG_PASSWORD=${COLDTIER_PG_PASSWORD:-dev-pg-K4m8w}
export COLDTIER_WAREHOUSE=${COLDTIER_WAREHOUSE:-$root/.dev/warehouse}
rows=${DEMO_ROWS:-200000}
scripts/dev-services.sh start
echo "== loading $rows synthetic trades per exchange"
.venv/bin/python -m coldtier.synth bulk --rows "$rows"
echo "== validate: config, services, tables, what a run would do (no Spark)"
.venv/bin/coldtier validate --config conf/dev.yaml
echo "== offload: scripts/spark-submit.sh jobs/offload.py run --config conf/dev.yaml --trigger available-now"
scripts/spark-submit.sh jobs/offload.py run --config conf/dev.yaml --trigger available-now
echo "== status"
.venv/bin/coldtier status --config conf/dev.yaml
echo "== source row counts (the status table above shows the rows committed to Iceberg)"
for ex in binance kraken; do
  ch=$(curl -fsS -u "default:$COLDTIER_CH_PASSWORD" "http://127.0.0.1:${COLDTIER_CH_PORT:-18123}/" \
       --data-binary "SELECT count() FROM k2.bronze_trades_$ex")
  echo "k2.bronze_trades_$ex: $ch rows in ClickHouse"
done
echo "demo done; stop the services with: scripts/dev-services.sh stop"
