#!/usr/bin/env bash
# Compares two server builds back to back with the same load generator (BENCHMARKS.md, "A/B"):
#
#   scripts/bench-ab.sh BASE_SERVER NEW_SERVER [ROUNDS]
#
# Each round runs, for A then B (order alternating between rounds, so drift from the machine
# warming up does not favour one side): `send` (concurrency 64 for 10 s, 100 listeners) and
# `fanout` (2,000 members, 20 msgs/s for 10 s). Both servers use the same `alterego_ab` database
# and Redis, started with the bench settings of scripts/bench.sh. The generator is this
# checkout's release build (or LOADGEN). JSON lines go to BENCH_DIR/ab.jsonl with the label of each side.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { echo "usage: scripts/bench-ab.sh BASE_SERVER NEW_SERVER [ROUNDS]" >&2; exit 2; }
base=$1
new=$2
rounds=${3:-2}
BENCH_DIR=${BENCH_DIR:-target/bench}
DB_NAME=${BENCH_AB_DB:-alterego_ab}
PG=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
MEMBERS=${BENCH_AB_MEMBERS:-2000}

ulimit -n 20000 || { echo "bench-ab: cannot raise the open-file limit to 20000" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
# LOADGEN: a generator binary to use instead of this checkout's release build.
if [ -z "${LOADGEN:-}" ]; then
    cargo build --release --bin alterego-loadgen
fi
loadgen=${LOADGEN:-target/release/alterego-loadgen}
state=$BENCH_DIR/ab-members.json
out=$BENCH_DIR/ab.jsonl

pid=
stop() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
trap stop EXIT

start() {
    RATE_LIMITS=off MAX_CONNECTIONS_PER_IP=0 BCRYPT_COST=4 ACCESS_TOKEN_TTL=86400 RUST_LOG=warn \
        JWT_SECRET=alterego-bench-secret-not-for-production-0123456789 \
        BIND_ADDR=127.0.0.1:3700 PUBLIC_URL=http://127.0.0.1:3700 JWT_ISSUER=http://alterego.bench \
        DATABASE_URL="$PG/$DB_NAME?sslmode=disable" REDIS_URL=$REDIS REDIS_PREFIX=ab: \
        "$1" >>"$BENCH_DIR/ab-server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        curl -fs http://127.0.0.1:3700/readyz >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "bench-ab: $1 did not become ready" >&2
    exit 1
}

# side LABEL SERVER: both scenarios against one build.
side() {
    local label=$1
    start "$2"
    "$loadgen" populate --base-url http://127.0.0.1:3700 --state "$state" --members "$MEMBERS" >/dev/null
    for scenario in send fanout; do
        local args=(send --state "$state" --concurrency 64 --seconds 10 --listeners 100)
        [ "$scenario" = fanout ] &&
            args=(fanout --state "$state" --members "$MEMBERS" --rate 20 --seconds 10 --settle 20)
        echo "== $label $scenario: load average $(cut -d' ' -f1-3 /proc/loadavg)"
        "$loadgen" "${args[@]}" | tee "$BENCH_DIR/ab-last.txt"
        head -n1 "$BENCH_DIR/ab-last.txt" | jq -c --arg side "$label" --arg date "$(date -u +%FT%TZ)" \
            '. + {"side": $side, "date": $date}' >>"$out"
    done
    stop
}

for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) = 1 ]; then
        side A "$base"
        side B "$new"
    else
        side B "$new"
        side A "$base"
    fi
done
echo "results: $out"
