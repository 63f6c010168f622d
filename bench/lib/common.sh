# Shared helpers of the bench/ scripts: build, start and stop servers, make a tenant.
# Every server listens on 127.0.0.1 only, and every run is bounded in time.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
BERTH="$TARGET/release/berth"
OPERATOR_TOKEN="bop_bench_operator_token_0123456789"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

build_release() {
    echo "building release binaries (berth, mock-llm, loadgen)..." >&2
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p berth -p berth-testkit --bins)
}

ensure_wrk() {
    if ! command -v wrk >/dev/null; then
        echo "installing wrk..." >&2
        apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null
    fi
}

# need_binary PATH...: fail with the reason rather than with a server that "did not come up".
need_binary() {
    for b in "$@"; do
        if [ ! -x "$b" ]; then
            echo "no binary at $b: build it (drop SKIP_BUILD=1) or set CARGO_TARGET_DIR to where it was built" >&2
            exit 1
        fi
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    return 1
}

# start_berth PORT DATA_DIR [DATABASE_URL] [CPUSET] -- extra env via BERTH_* already exported
start_berth() {
    local port="$1" dir="$2" db="${3:-}" cpus="${4:-}"
    local args=(serve --listen "127.0.0.1:$port" --data-dir "$dir")
    [ -n "$db" ] && args+=(--database-url "$db")
    local pin=()
    [ -n "$cpus" ] && pin=(taskset -c "$cpus")
    BERTH_OPERATOR_TOKEN="$OPERATOR_TOKEN" RUST_LOG="${RUST_LOG:-warn}" \
        "${pin[@]}" "$BERTH" "${args[@]}" >"$dir.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
    wait_http "http://127.0.0.1:$port/healthz"
}

# make_key PORT ROLE -> prints a bk_ key of a fresh tenant
make_key() {
    local port="$1" role="$2" name="bench-$RANDOM$RANDOM"
    local tenant
    tenant=$(curl -fsS -X POST "http://127.0.0.1:$port/v1/tenants" -H "Authorization: Bearer $OPERATOR_TOKEN" \
        -H 'Content-Type: application/json' -d "{\"name\":\"$name\",\"plan\":\"pro\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    curl -fsS -X POST "http://127.0.0.1:$port/v1/tenants/$tenant/keys" -H "Authorization: Bearer $OPERATOR_TOKEN" \
        -H 'Content-Type: application/json' -d "{\"name\":\"bench\",\"role\":\"$role\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}

rss_mb() { # pid
    awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"
}
