# Shared helpers of loadtest/run.sh and loadtest/prometheus_check.sh (sourced, not run).
# Every process started here is recorded in STARTED_PIDS and stopped by `stop_started`,
# which the callers install as an EXIT trap. Everything binds to 127.0.0.1.

STARTED_PIDS=()
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="${VENV_BIN:-$REPO_ROOT/.venv/bin}"

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$(basename "$0")" "$*" >&2; }

# A loopback TCP port nothing listens on now; never 6379 (it may be a real Redis).
free_port() {
    "$VENV_BIN/python" -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    if port != 6379:
        print(port); break'
}

# stop_started: stop each recorded process, newest first (the services before the Redis they
# drain into), with SIGTERM, then SIGKILL after 10 s.
stop_started() {
    local pid i
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${STARTED_PIDS[$i]}"
        kill -0 "$pid" 2>/dev/null || continue
        kill -CONT "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}

# ensure_installed MODEL_DIR: the venv and the default model, through the Makefile.
ensure_installed() {
    local model_dir="$1"
    if [[ ! -x "$VENV_BIN/solar" || ! -f "$model_dir/model.safetensors" ]]; then
        log "installing and training the default model (make install model)"
        make -C "$REPO_ROOT" install model MODEL_DIR="$model_dir" >&2
    fi
}

# start_redis PORT DIR: a private, non-persistent redis-server on 127.0.0.1:PORT.
start_redis() {
    local port="$1" dir="$2"
    [[ "$port" != 6379 ]] || { log "refusing port 6379"; return 1; }
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --dir "$dir" >"$dir/redis-$port.log" 2>&1 &
    STARTED_PIDS+=("$!")
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "redis-server on port $port did not answer PING"; cat "$dir/redis-$port.log" >&2
    return 1
}

# start_postgres DIR: a private PostgreSQL (the durable history tier that serve and worker
# share) on a free loopback port, never 5432; sets HISTORY_URL.
start_postgres() {
    local dir="$1"
    "$VENV_BIN/python" -m solar_tools.postgres_server --fsync --url-file "$dir/pg.url" \
        >"$dir/postgres.log" 2>&1 &
    STARTED_PIDS+=("$!")
    for _ in $(seq 600); do
        if [[ -s "$dir/pg.url" ]]; then
            HISTORY_URL="$(cat "$dir/pg.url")"
            return 0
        fi
        sleep 0.1
    done
    log "private PostgreSQL did not start"; cat "$dir/postgres.log" >&2
    return 1
}

# start_service PORT REDIS_URL MODEL_DIR LOGFILE [VAR=VALUE ...]: `solar serve` on loopback.
# numpy's OpenBLAS gets one thread: the factor updates are many tiny (64×64) SVDs, and a
# multi-threaded OpenBLAS spinning against the load generator on 2 cores makes each ~100×
# slower (measured: a 1,000-event block in 3 s instead of 0.07 s).
start_service() {
    local port="$1" redis_url="$2" model_dir="$3" logfile="$4"
    shift 4
    env OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" \
        SOLAR_REDIS_URL="$redis_url" SOLAR_MODEL_PATH="$model_dir" "$@" \
        "$VENV_BIN/solar" serve --host 127.0.0.1 --port "$port" >"$logfile" 2>&1 &
    STARTED_PIDS+=("$!")
}

# start_worker REDIS_URL MODEL_DIR LOGFILE [VAR=VALUE ...]: a `solar worker` (the applier).
start_worker() {
    local redis_url="$1" model_dir="$2" logfile="$3"
    shift 3
    env OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" \
        SOLAR_REDIS_URL="$redis_url" SOLAR_MODEL_PATH="$model_dir" "$@" \
        "$VENV_BIN/solar" worker >"$logfile" 2>&1 &
    STARTED_PIDS+=("$!")
}

# wait_ready URL TIMEOUT_S: poll URL/readyz until it answers 200.
wait_ready() {
    local url="$1" timeout_s="$2" deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if "$VENV_BIN/python" -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)" \
            "$url/readyz" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.3
    done
    log "$url not ready after ${timeout_s} s"
    return 1
}
