#!/usr/bin/env bash
# The TypeScript client check (issue 16), against a LIVE alterego server:
#
#   ALTEREGO_URL=http://127.0.0.1:3511 ./check.sh [generate|build|calls|all]
#
#   generate  openapi-typescript $ALTEREGO_URL/api.json -o src/api.d.ts
#   build     tsc --strict -p .   (src/calls.ts against the generated types, into dist/;
#                                  noEmitOnError: nothing is emitted when a call does not compile)
#   calls     node dist/calls.js  (the calls against the server; non-zero on any unexpected status)
#   all       the three in order (the default), stopping at the first failure
#
# The packages come from the committed lockfile: `npm ci --prefix clients/typescript-check`
# (./scripts/test.sh runs it). tests/integration/ts_client.rs runs the same three steps against
# a test server.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

die() { printf 'check.sh: %s\n' "$*" >&2; exit 1; }

[[ -d node_modules ]] || die "node_modules is missing: run npm ci --prefix clients/typescript-check (./scripts/test.sh does)"

generate() {
    [[ -n "${ALTEREGO_URL:-}" ]] || die "set ALTEREGO_URL to the base URL of a running server (e.g. http://127.0.0.1:3511)"
    rm -f src/api.d.ts
    ./node_modules/.bin/openapi-typescript "${ALTEREGO_URL%/}/api.json" -o src/api.d.ts
}

build() {
    [[ -f src/api.d.ts ]] || die "src/api.d.ts is missing: run the generate step first"
    rm -rf dist
    ./node_modules/.bin/tsc --strict -p .
}

calls() {
    [[ -n "${ALTEREGO_URL:-}" ]] || die "set ALTEREGO_URL to the base URL of a running server (e.g. http://127.0.0.1:3511)"
    [[ -f dist/calls.js ]] || die "dist/calls.js is missing: run the build step first"
    node dist/calls.js
}

case "${1:-all}" in
    generate) generate ;;
    build) build ;;
    calls) calls ;;
    all)
        generate
        build
        calls
        ;;
    *) die "unknown step '$1' (generate, build, calls or all)" ;;
esac
