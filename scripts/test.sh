#!/usr/bin/env bash
# The project's single test command.
#
#   ./scripts/test.sh [extra arguments for cargo nextest run / cargo test]
#
# 1. makes sure PostgreSQL answers on 127.0.0.1:5432 and Redis on
#    127.0.0.1:6379, starting the local ones when they are down;
# 2. exports TEST_DATABASE_URL and TEST_REDIS_URL for the test harness
#    (tests/integration/common), unless they are already set;
# 3. installs the Node.js packages of tests/node and clients/typescript-check from their
#    lockfiles (npm ci) when they are missing or older than the folder's package-lock.json: the
#    integration tests check the server against them (tests/integration/common/node.rs, and
#    tests/integration/ts_client.rs for the TypeScript client generated from /api.json);
# 4. runs every target's tests with cargo-nextest, or with `cargo test` when
#    cargo-nextest is not installed. Doc tests are not run.
#
# Set TEST_SKIP_SERVICES=1 to skip step 1, e.g. when TEST_DATABASE_URL and
# TEST_REDIS_URL point at services managed elsewhere.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test.sh %s] %s\n' "$(date '+%H:%M:%S')" "$*"; }
die() { printf '[test.sh] error: %s\n' "$*" >&2; exit 1; }

# need COMMAND HINT: fail with a clear message when COMMAND is missing.
need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed or not on PATH: $2"
}

# wait_for SECONDS WHAT COMMAND...: poll COMMAND once a second until it succeeds.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local waited
    for ((waited = 0; waited < timeout; waited++)); do
        if "$@" >/dev/null 2>&1; then
            log "$what is ready (after ${waited}s)"
            return 0
        fi
        sleep 1
    done
    die "$what did not become ready within ${timeout}s"
}

postgres_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

redis_ready() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }

ensure_postgres() {
    log "checking PostgreSQL on 127.0.0.1:5432"
    need pg_isready "install the PostgreSQL client tools (Debian: postgresql-client)"
    if postgres_ready; then
        log "PostgreSQL is up"
        return 0
    fi
    need pg_ctlcluster "install postgresql-common, or start PostgreSQL on 127.0.0.1:5432 yourself"
    local clusters=(/etc/postgresql/*/)
    [[ -d "${clusters[0]}" ]] || die "no PostgreSQL cluster under /etc/postgresql (is the server installed?)"
    local version
    version=$(basename "${clusters[0]}")
    log "PostgreSQL is down; starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start \
        || die "could not start PostgreSQL cluster $version/main"
    wait_for 30 "PostgreSQL" postgres_ready
}

ensure_redis() {
    log "checking Redis on 127.0.0.1:6379"
    need redis-cli "install the Redis tools (Debian: redis-tools)"
    if redis_ready; then
        log "Redis is up"
        return 0
    fi
    need redis-server "install Redis (Debian: redis-server), or start it on 127.0.0.1:6379 yourself"
    log "Redis is down; starting redis-server (no persistence)"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "${TMPDIR:-/tmp}" \
        || die "could not start redis-server"
    wait_for 15 "Redis" redis_ready
}

# The /docs test renders the API reference in a real headless browser (spec §4.19).
ensure_chromium() {
    if command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1; then
        log "headless browser: $(command -v "${CHROMIUM:-chromium}")"
        return 0
    fi
    need apt-get "install Chromium yourself and set CHROMIUM to its path"
    log "Chromium is missing; installing Debian's chromium package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
        || die "could not install chromium"
}

# The integration tests run third-party Node.js packages from folders of their own, each installed
# exactly as its committed lockfile says:
# - tests/node: LiveKit's server SDK, http_ece, y-websocket and the like;
# - clients/typescript-check: openapi-typescript, openapi-fetch and TypeScript, which generate,
#   compile and run a TypeScript client from the server's /api.json (issue 16).
NODE_DIRS=(tests/node clients/typescript-check)

# ensure_node_packages DIR: npm ci in DIR unless its node_modules matches its lockfile.
ensure_node_packages() {
    local dir=$1
    need node "install Node.js 20 or later (Debian: nodejs)"
    need npm "install npm (Debian: npm)"
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
        || die "Node.js $(node --version) is too old: $dir needs Node.js 20 or later"
    # npm writes node_modules/.package-lock.json last, so it is missing after an interrupted install.
    local stamp="$dir/node_modules/.package-lock.json"
    if [[ -f "$stamp" && ! "$dir/package-lock.json" -nt "$stamp" ]]; then
        log "$dir/node_modules is up to date with its lockfile (node $(node --version))"
        return 0
    fi
    log "installing $dir's packages from its lockfile: npm ci --prefix $dir"
    npm ci --prefix "$dir" --no-audit --no-fund \
        || die "npm ci --prefix $dir failed"
}

# PyPI tools run from tests/python/.venv: openapi-spec-validator (tests/integration/openapi_validator.rs)
# and Schemathesis, the fuzz run against /api.json (tests/integration/fuzz.rs).
ensure_python_tools() {
    local dir=tests/python venv=tests/python/.venv
    need python3 "install Python 3 with venv (Debian: python3-venv)"
    local stamp="$venv/.installed"
    if [[ -f "$stamp" && ! "$dir/requirements.txt" -nt "$stamp" ]]; then
        log "$venv is up to date with $dir/requirements.txt"
        return 0
    fi
    log "installing $dir/requirements.txt into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$dir/requirements.txt" \
        || die "pip install -r $dir/requirements.txt failed"
    touch "$stamp"
}

ensure_chromium
ensure_python_tools
for dir in "${NODE_DIRS[@]}"; do
    ensure_node_packages "$dir"
done

if [[ "${TEST_SKIP_SERVICES:-0}" == 1 ]]; then
    log "TEST_SKIP_SERVICES=1: not checking local services"
else
    ensure_postgres
    ensure_redis
    # No S3 server to start: the test harness (tests/integration/common) runs s3s-fs, a real S3-protocol
    # server that verifies SigV4, in process on an ephemeral port for every test server.
fi

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
log "TEST_DATABASE_URL=$TEST_DATABASE_URL"
log "TEST_REDIS_URL=$TEST_REDIS_URL"

need cargo "install the Rust toolchain (rustup)"
if cargo nextest --version >/dev/null 2>&1; then
    log "running: cargo nextest run --all-targets $*"
    exec cargo nextest run --all-targets "$@"
else
    log "cargo-nextest not installed; running: cargo test --all-targets $*"
    exec cargo test --all-targets "$@"
fi
