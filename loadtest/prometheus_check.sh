#!/usr/bin/env bash
# The compose topology, natively on loopback: one redis-server, two solar replicas sharing it,
# and a real Prometheus scraping both with docker/prometheus.yml (targets rewritten to
# 127.0.0.1). Seeds a few users, sends bounded load to both replicas, then asks Prometheus's
# HTTP API for the p99 of /rank and fails unless a finite value comes back.
#
#   loadtest/prometheus_check.sh            # LOAD_S=15 SEED_USERS=4 HISTORY=2000 RATE=40
#
# Installs Debian's `prometheus` package with apt-get when it is missing (root only; ~7 s,
# ~95 MB for prometheus + promtool). Also validates the compose Prometheus config
# (`promtool check config`) and every dashboard expression (`promtool check rules`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

LOAD_S="${LOAD_S:-15}"
SEED_USERS="${SEED_USERS:-4}"
HISTORY="${HISTORY:-2000}"
RATE="${RATE:-40}"
MODEL_DIR="${MODEL_DIR:-artifacts/default-model}"

WORK="$(mktemp -d -t solar-promcheck.XXXXXX)"
cleanup() {
    stop_started
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    if [[ "$(id -u)" != 0 ]]; then
        log "prometheus is not installed; run: sudo apt-get install -y prometheus"
        exit 1
    fi
    log "installing Debian's prometheus package"
    DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends prometheus >&2 \
        || { apt-get -q update >&2 && DEBIAN_FRONTEND=noninteractive \
            apt-get -y -q install --no-install-recommends prometheus >&2; }
fi
ensure_installed "$MODEL_DIR"

redis_port="$(free_port)"
port_a="$(free_port)"
port_b="$(free_port)"
port_w="$(free_port)"
prom_port="$(free_port)"
url_a="http://127.0.0.1:$port_a"
url_b="http://127.0.0.1:$port_b"
prom_url="http://127.0.0.1:$prom_port"

# The compose files, checked by promtool: the adapted config and the dashboard's PromQL.
"$VENV_BIN/python" loadtest/promql.py adapt docker/prometheus.yml "$WORK/prometheus.yml" \
    "solar-1:8000=127.0.0.1:$port_a" "solar-2:8000=127.0.0.1:$port_b" \
    "worker:9100=127.0.0.1:$port_w"
"$VENV_BIN/python" loadtest/promql.py rules docker/grafana/dashboards/solar.json "$WORK/rules.yml"
promtool check config "$WORK/prometheus.yml" >&2
promtool check rules "$WORK/rules.yml" >&2

log "redis 127.0.0.1:$redis_port, replicas $url_a $url_b, prometheus $prom_url"
start_redis "$redis_port" "$WORK"
start_postgres "$WORK"  # the durable history the replicas and the worker share
redis_url="redis://127.0.0.1:$redis_port/0"
start_service "$port_a" "$redis_url" "$MODEL_DIR" "$WORK/solar-a.log" SOLAR_APPLIER=external \
    SOLAR_HISTORY_URL="$HISTORY_URL"
start_service "$port_b" "$redis_url" "$MODEL_DIR" "$WORK/solar-b.log" SOLAR_APPLIER=external \
    SOLAR_HISTORY_URL="$HISTORY_URL"
start_worker "$redis_url" "$MODEL_DIR" "$WORK/worker.log" SOLAR_WORKER_METRICS_PORT="$port_w" \
    SOLAR_HISTORY_URL="$HISTORY_URL"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
STARTED_PIDS+=("$!")
wait_ready "$url_a" 120
wait_ready "$url_b" 120

# Seed through replica A; replica B serves the same users from the shared Redis.
"$VENV_BIN/solar" replay --url "$url_a" --synthetic --model-dir "$MODEL_DIR" \
    --users "$SEED_USERS" --events "$HISTORY" --batch-size 1000 --no-progress

log "load: ${LOAD_S} s at ${RATE}/s over both replicas"
SOLAR_LT_RATE="$RATE" SOLAR_LT_LOCUST_USERS=8 SOLAR_LT_USERS="$SEED_USERS" \
SOLAR_LT_EXTRA_HOSTS="$url_b" SOLAR_LT_ITEMS_FILE="$MODEL_DIR/config.json" \
    timeout --signal=INT --kill-after=20 "$((LOAD_S + 40))" \
    "$VENV_BIN/locust" -f loadtest/locustfile.py --headless --host "$url_a" --users 8 \
    --spawn-rate 8 --run-time "${LOAD_S}s" --stop-timeout 5 --only-summary \
    --exit-code-on-error 0 --loglevel WARNING

if ! "$VENV_BIN/python" loadtest/promql.py check "$prom_url" --replicas 2 --timeout 30; then
    log "prometheus log:"; tail -20 "$WORK/prometheus.log" >&2
    exit 1
fi
log "prometheus check passed"
