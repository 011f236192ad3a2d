#!/usr/bin/env bash
# Headless locust run against solar; writes loadtest/out/ (CSVs, HTML report, summary.json).
#
#   DURATION=30 loadtest/run.sh               # private redis + service, svd mode, Poisson
#   ARRIVALS=constant DURATION=30 loadtest/run.sh   # constant pacing: synchronized waves
#   MODE=softmax DURATION=30 loadtest/run.sh  # the exact-softmax baseline, same load
#   HOST=http://127.0.0.1:8000 loadtest/run.sh   # an already running, already seeded service
#   loadtest/compare.py loadtest/out/summary-svd.json loadtest/out/summary-softmax.json
#
# Environment: DURATION (s, 60), USERS (locust users, 20), RATE (total requests/s, 100;
# 0 = unpaced, to measure saturation throughput), ARRIVALS (poisson, the default: exponential
# gaps; constant: fixed gaps, every user in step), MODE (svd|svd_exact|softmax), SEED_USERS
# (20), HISTORY (events per seeded user, 10000), CANDIDATES (2048), TOP_K (100), OUT
# (loadtest/out), MODEL_DIR (artifacts/default-model), SERVICE_ENV (extra VAR=VALUE words
# for the service, e.g. "SOLAR_MAX_BATCH=16"), APPLIER (external: one `solar worker` beside
# the service, the default; inline: the service applies in-process). Any SOLAR_LT_* variable
# reaches the locustfile.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

DURATION="${DURATION:-60}"
USERS="${USERS:-20}"
RATE="${RATE:-100}"
ARRIVALS="${ARRIVALS:-poisson}"
MODE="${MODE:-svd}"
SEED_USERS="${SEED_USERS:-20}"
HISTORY="${HISTORY:-10000}"
CANDIDATES="${CANDIDATES:-2048}"
TOP_K="${TOP_K:-100}"
OUT="${OUT:-loadtest/out}"
MODEL_DIR="${MODEL_DIR:-artifacts/default-model}"
SERVICE_ENV="${SERVICE_ENV:-}"
APPLIER="${APPLIER:-external}"
HOST="${HOST:-}"

WORK="$(mktemp -d -t solar-loadtest.XXXXXX)"
cleanup() {
    stop_started
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
if [[ -z "$HOST" ]]; then
    ensure_installed "$MODEL_DIR"
    redis_port="$(free_port)"
    service_port="$(free_port)"
    HOST="http://127.0.0.1:$service_port"
    log "starting redis-server on 127.0.0.1:$redis_port and solar on $HOST"
    start_redis "$redis_port" "$WORK"
    start_postgres "$WORK"  # the durable history, shared by serve and worker
    SERVICE_ENV="SOLAR_HISTORY_URL=$HISTORY_URL $SERVICE_ENV"
    # shellcheck disable=SC2086  # SERVICE_ENV is a list of VAR=VALUE words
    start_service "$service_port" "redis://127.0.0.1:$redis_port/0" "$MODEL_DIR" \
        "$OUT/service.log" SOLAR_APPLIER="$APPLIER" $SERVICE_ENV
    if [[ "$APPLIER" == external ]]; then
        worker_port="$(free_port)"
        export SOLAR_LT_WORKER_METRICS="http://127.0.0.1:$worker_port/metrics"
        # shellcheck disable=SC2086
        start_worker "redis://127.0.0.1:$redis_port/0" "$MODEL_DIR" "$OUT/worker.log" \
            SOLAR_WORKER_METRICS_PORT="$worker_port" $SERVICE_ENV
    fi
    wait_ready "$HOST" 120
    log "seeding $SEED_USERS users x $HISTORY events (solar replay)"
    seed_start=$SECONDS
    "$VENV_BIN/solar" replay --url "$HOST" --synthetic --model-dir "$MODEL_DIR" \
        --users "$SEED_USERS" --events "$HISTORY" --batch-size 1000 --concurrency 2 --no-progress
    log "seeded in $((SECONDS - seed_start)) s"
elif [[ ! -x "$VENV_BIN/locust" ]]; then
    make -C "$REPO_ROOT" install >&2
fi
# Candidates from the checkpoint's vocabulary when it is here, else from GET /model.
items_file=""
[[ -f "$MODEL_DIR/config.json" ]] && items_file="$MODEL_DIR/config.json"

log "locust: ${DURATION} s, $USERS users, rate ${RATE}/s ($ARRIVALS), mode $MODE, $CANDIDATES candidates"
rm -f "$OUT/summary.json"
SOLAR_LT_RATE="$RATE" SOLAR_LT_ARRIVALS="$ARRIVALS" SOLAR_LT_LOCUST_USERS="$USERS" SOLAR_LT_MODE="$MODE" \
SOLAR_LT_USERS="$SEED_USERS" SOLAR_LT_CANDIDATES="$CANDIDATES" SOLAR_LT_TOP_K="$TOP_K" \
SOLAR_LT_SUMMARY="$OUT/summary.json" SOLAR_LT_ITEMS_FILE="$items_file" \
    timeout --signal=INT --kill-after=30 "$((DURATION + 60))" \
    "$VENV_BIN/locust" -f loadtest/locustfile.py --headless --host "$HOST" \
    --users "$USERS" --spawn-rate "$USERS" --run-time "${DURATION}s" --stop-timeout 5 \
    --csv "$OUT/locust" --html "$OUT/report.html" --only-summary --exit-code-on-error 0 \
    --loglevel WARNING

[[ -s "$OUT/summary.json" ]] || { log "locust wrote no summary"; exit 1; }
cp "$OUT/summary.json" "$OUT/summary-$MODE.json"
"$VENV_BIN/python" loadtest/compare.py --show "$OUT/summary.json"
log "wrote $OUT/summary.json (and summary-$MODE.json), locust_*.csv, report.html"
