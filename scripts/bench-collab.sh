#!/usr/bin/env bash
# The collaborative-document benchmark (BENCHMARKS.md, "Collab"):
#
#   scripts/bench-collab.sh [DOCS] [EDITORS] [RATE] [SECONDS] [WORKERS]   (default 50 10 5 60 2)
#
# Starts a release server on a fresh `alterego_collab` database (with Redis, as deployed),
# creates one user, one space and DOCS document channels, then runs tests/node/collab-bench.mjs:
# DOCS × EDITORS real y-websocket clients, each typing RATE updates a second for SECONDS. It
# prints the client summary (propagation latency p50/p95/p99), the server's CPU seconds and RSS
# (from /proc) before and after, and the stored rows and snapshot bytes right after the run and
# once the idle rooms are compacted. Needs the tests/node packages (./scripts/test.sh installs
# them) and curl, psql, node.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCS=${1:-50}
EDITORS=${2:-10}
RATE=${3:-5}
SECONDS_=${4:-60}
WORKERS=${5:-2}
PORT=${BENCH_COLLAB_PORT:-3597}
PG=${PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
DB=alterego_collab
OUT=${BENCH_DIR:-target/bench}
mkdir -p "$OUT"
ulimit -n 20000 || true

cargo build --release --bin alterego
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null

RATE_LIMITS=off MAX_CONNECTIONS_PER_IP=0 BCRYPT_COST=4 ACCESS_TOKEN_TTL=86400 RUST_LOG=warn \
    JWT_SECRET=alterego-bench-secret-not-for-production-0123456789 \
    BIND_ADDR=127.0.0.1:$PORT PUBLIC_URL=http://127.0.0.1:$PORT \
    DATABASE_URL="$PG/$DB?sslmode=disable" REDIS_URL=$REDIS REDIS_PREFIX=benchcollab: \
    target/release/alterego >"$OUT/collab-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done

api() { curl -fs -H 'content-type: application/json' "$@"; }
json() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s)$1))"; }
token=$(api -d '{"email":"bench@example.org","name":"Bench","password":"bench-password"}' \
    "http://127.0.0.1:$PORT/account/register" | json '.accessToken')
space=$(api -H "authorization: Bearer $token" -d '{"name":"Bench"}' "http://127.0.0.1:$PORT/spaces/" | json '.id')
channels=()
for i in $(seq 1 "$DOCS"); do
    channels+=("$(api -H "authorization: Bearer $token" -d "{\"name\":\"doc $i\",\"type\":\"DOCUMENT\"}" \
        "http://127.0.0.1:$PORT/spaces/$space/channels/" | json '.id')")
done
printf '{"channels":[%s],"tokens":["%s"]}\n' \
    "$(printf '"%s",' "${channels[@]}" | sed 's/,$//')" "$token" >"$OUT/collab-tokens.json"

cpu() { awk '{print ($14 + $15) / 100}' "/proc/$server/stat"; }
rss() { awk '/VmRSS/ {print $2 / 1024}' "/proc/$server/status"; }
stored() {
    psql "$PG/$DB" -Atc "SELECT (SELECT count(*) FROM document_updates), \
        (SELECT coalesce(sum(length(data)), 0) FROM document_updates), \
        (SELECT coalesce(sum(length(y_state)), 0) FROM documents)"
}
cpu0=$(cpu)
rss0=$(rss)
# The peak RSS while the documents are open.
(peak=0; while kill -0 $server 2>/dev/null; do
    r=$(rss); peak=$(awk -v a="$peak" -v b="$r" 'BEGIN {print (b > a) ? b : a}'); echo "$peak" >"$OUT/collab-peak-rss"
    sleep 1; done) &
sampler=$!
summary=$(node tests/node/collab-bench.mjs --base "ws://127.0.0.1:$PORT" --tokens "$OUT/collab-tokens.json" \
    --docs "$DOCS" --editors "$EDITORS" --rate "$RATE" --seconds "$SECONDS_" --workers "$WORKERS")
cpu1=$(cpu)
rss1=$(cat "$OUT/collab-peak-rss")
kill $sampler 2>/dev/null || true
after_run=$(stored)
sleep 5
after_idle=$(stored)
echo "$summary"
echo "{\"serverCpuSeconds\": $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print b - a}'), \"rssMiBIdle\": $rss0, \"rssMiBPeak\": $rss1, \
\"storedAfterRun\": \"$after_run\", \"storedAfterIdleCompaction\": \"$after_idle\", \
\"docs\": $DOCS, \"editors\": $EDITORS, \"rate\": $RATE, \"seconds\": $SECONDS_, \
\"commit\": \"$(git rev-parse --short HEAD)\", \"date\": \"$(date -u +%FT%TZ)\"}"
