#!/usr/bin/env bash
# Runs the standard benchmark set (BENCHMARKS.md) against locally started release builds:
#
#   scripts/bench.sh [STAGE ...]     stages: rest fanout idle cluster (default: all four)
#
#   rest     send (concurrency 64, 100 listeners), history and search at 1,000,000 messages
#   fanout   18,000 members in one space on one process: 10 msgs/s, then higher rates
#   idle     18,000 idle authenticated connections: server RSS per connection
#   cluster  50,000 members over 3 instances sharing PostgreSQL and Redis, 10 msgs/s
#   floor    fan-out at 2,000, 5,000 and 18,000 sockets × 20 msgs/s, against alterego and against
#            the generator's bare `floor` server: server CPU µs per delivery, alterego ÷ floor
#            (FLOOR_SIZES="2000 5000" for fewer)
#   storm    18,000 sockets on one server, which is stopped (SIGTERM) and started again; every
#            socket resumes, with 0–5 s random jitter, then all at once
#
# Needs PostgreSQL and Redis on 127.0.0.1 (as for the tests). The generator's users live in
# BENCH_DIR (state files) and the `alterego_bench` database, and are reused by later runs;
# `BENCH_FRESH=1` starts over. Results are appended to BENCH_DIR/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-target/bench}
DB_NAME=${BENCH_DB:-alterego_bench}
PG=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
MEMBERS=${BENCH_MEMBERS:-18000}
CLUSTER_MEMBERS=${BENCH_CLUSTER_MEMBERS:-50000}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(rest fanout idle cluster)

ulimit -n 20000 || { echo "bench: cannot raise the open-file limit to 20000" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
results=$BENCH_DIR/results.jsonl
commit=$(git rev-parse --short HEAD)

# `--start-server PORT` (the storm stage's restart command) only starts one server and leaves it.
[ "${1:-}" = --start-server ] || cargo build --release --bin alterego --bin alterego-loadgen
server=target/release/alterego
loadgen=target/release/alterego-loadgen

if [ "${BENCH_FRESH:-0}" = 1 ]; then
    rm -f "$BENCH_DIR"/*.json
    psql "$PG/postgres" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)"
fi

pids=()
stop_servers() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # A restarted server is not this shell's child: poll instead of `wait`.
    for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
    pids=()
}

# start_server PORT: a release server sharing the bench database and Redis; the generator is
# not throttled (RATE_LIMITS=off), may hold every socket from one address
# (MAX_CONNECTIONS_PER_IP=0) and registers its users quickly (BCRYPT_COST=4) — the first and last
# refused in production.
start_server() {
    local port=$1
    RATE_LIMITS=off MAX_CONNECTIONS_PER_IP=0 BCRYPT_COST=4 ACCESS_TOKEN_TTL=86400 RUST_LOG=warn \
        JWT_SECRET=alterego-bench-secret-not-for-production-0123456789 \
        BIND_ADDR=127.0.0.1:$port PUBLIC_URL=http://127.0.0.1:$port JWT_ISSUER=http://alterego.bench \
        DATABASE_URL="$PG/$DB_NAME?sslmode=disable" REDIS_URL=$REDIS REDIS_PREFIX=bench: \
        "$server" >>"$BENCH_DIR/server-$port.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "bench: the server on port $port did not become ready" >&2
    exit 1
}

if [ "${1:-}" = --start-server ]; then
    start_server "$2"
    echo "${pids[-1]}" >"$BENCH_DIR/server-$2.pid"
    exit 0
fi
trap stop_servers EXIT

# run LABEL ARGS...: one loadgen run; its JSON line is kept with the date and commit.
run() {
    local label=$1
    shift
    echo "== $label: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$loadgen" "$@" | tee "$BENCH_DIR/last.txt"
    head -n1 "$BENCH_DIR/last.txt" |
        jq -c --arg name "$label" --arg commit "$commit" --arg date "$(date -u +%F)" \
            --arg load "$(cut -d' ' -f1 /proc/loadavg)" '. + {"label": $name, "commit": $commit, "date": $date, "loadAvg": $load}' \
            >>"$results"
}

state=$BENCH_DIR/members.json
for stage in "${stages[@]}"; do
    case $stage in
    rest)
        start_server 3600
        "$loadgen" populate --base-url http://127.0.0.1:3600 --state "$state" --members "$MEMBERS"
        run "send c64, 100 listeners" send --state "$state" --concurrency 64 --seconds 10 --listeners 100
        history=$BENCH_DIR/history.json
        if [ ! -f "$history" ]; then
            "$loadgen" populate --base-url http://127.0.0.1:3600 --state "$history" --members 0
            scripts/seed-messages.sh "$PG/$DB_NAME" "$(jq -r .channelId "$history")" "$(jq -r .userId "$history")" 1000000
        fi
        run "history c1" history --state "$history" --requests 3000 --concurrency 1
        run "history c4" history --state "$history" --requests 3000 --concurrency 4
        run "search c1" search --state "$history" --requests 1000 --concurrency 1 \
            --queries 'alpha,item7,"number 123456",lorem -bravo,mike or tango'
        stop_servers
        ;;
    fanout)
        start_server 3600
        "$loadgen" populate --base-url http://127.0.0.1:3600 --state "$state" --members "$MEMBERS"
        for rate in 10 20 40; do
            run "fanout $MEMBERS members, $rate msgs/s" fanout --state "$state" --members "$MEMBERS" \
                --rate "$rate" --seconds 10 --settle 20
        done
        stop_servers
        ;;
    idle)
        start_server 3600
        "$loadgen" populate --base-url http://127.0.0.1:3600 --state "$state" --members "$MEMBERS"
        run "idle $MEMBERS" idle --state "$state" --members "$MEMBERS" --server-pid "${pids[0]}" --settle 70 --seconds 30
        stop_servers
        ;;
    cluster)
        start_server 3601
        start_server 3602
        start_server 3603
        cstate=$BENCH_DIR/cluster.json
        "$loadgen" populate --base-url http://127.0.0.1:3601 --state "$cstate" --members "$CLUSTER_MEMBERS" --concurrency 24
        run "fanout $CLUSTER_MEMBERS members over 3 instances, 10 msgs/s" fanout --state "$cstate" \
            --members "$CLUSTER_MEMBERS" --rate 10 --seconds 10 --settle 30 \
            --ws-urls ws://127.0.0.1:3601/ws,ws://127.0.0.1:3602/ws,ws://127.0.0.1:3603/ws
        stop_servers
        ;;
    floor)
        start_server 3600
        "$loadgen" populate --base-url http://127.0.0.1:3600 --state "$state" --members "$MEMBERS"
        "$loadgen" floor --listen 127.0.0.1:3700 2>>"$BENCH_DIR/floor.log" &
        pids+=($!)
        floor_pid=$!
        for n in ${FLOOR_SIZES:-2000 5000 18000}; do
            run "fanout $n members, 20 msgs/s (alterego)" fanout --state "$state" --members "$n" \
                --rate 20 --seconds 10 --settle 10 --server-pid "${pids[0]}"
            run "fanout $n members, 20 msgs/s (floor)" fanout --state "$state" --members "$n" \
                --rate 20 --seconds 10 --settle 5 --server-pid "$floor_pid" \
                --ws-urls ws://127.0.0.1:3700/ws --send-url http://127.0.0.1:3700/messages
        done
        stop_servers
        ;;
    storm)
        start_server 3600
        "$loadgen" populate --base-url http://127.0.0.1:3600 --state "$state" --members "$MEMBERS"
        for jitter in 5000 0; do
            run "storm $MEMBERS sockets, restart, resume with 0-$jitter ms jitter" storm --state "$state" \
                --members "$MEMBERS" --server-pid "${pids[-1]}" --jitter-ms "$jitter" --wait 60 \
                --restart-cmd "scripts/bench.sh --start-server 3600"
            pids=("$(cat "$BENCH_DIR/server-3600.pid")")
        done
        stop_servers
        ;;
    *)
        echo "bench: unknown stage $stage (rest fanout idle cluster floor storm)" >&2
        exit 2
        ;;
    esac
done
echo "results: $results"
