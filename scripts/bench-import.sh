#!/usr/bin/env bash
# Benchmark of `alterego import-mikoto` (BENCHMARKS.md): builds a Mikoto database with
# 10,000 users and 1,000,000 messages with SQL (generate_series), imports it into an empty
# alterego database, and prints the report, the wall time, rows/s and the importer's peak RSS.
#
#   scripts/bench-import.sh [path to the alterego binary]   (default: target/release/alterego)
#
# Environment: PGURL (default postgres://postgres@127.0.0.1:5432), USERS (10000),
# MESSAGES (1000000), BATCH (5000). The two databases, mikoto_import_bench and alterego_import_bench, are
# dropped and recreated on each run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${1:-${CARGO_TARGET_DIR:-target}/release/alterego}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
USERS=${USERS:-10000}
MESSAGES=${MESSAGES:-1000000}
BATCH=${BATCH:-5000}
SPACES=$(( USERS / 200 > 0 ? USERS / 200 : 1 ))
SRC="$PGURL/mikoto_import_bench"
DST="$PGURL/alterego_import_bench"

[[ -x "$BIN" ]] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }
log() { printf '[bench-import %s] %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }

for db in mikoto_import_bench alterego_import_bench; do
    psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done

log "creating Mikoto's schema from tests/data/mikoto-db-schema.json"
python3 - tests/data/mikoto-db-schema.json <<'PY' | psql -q -v ON_ERROR_STOP=1 "$SRC"
import json, sys
schema = json.load(open(sys.argv[1]))
q = lambda n: '"' + n.replace('"', '""') + '"'
later = []
for name, labels in schema["enums"].items():
    print(f"CREATE TYPE {q(name)} AS ENUM ({', '.join(repr(l) for l in labels)});")
for table, t in schema["tables"].items():
    parts = []
    for c in t["columns"]:
        ty = q(c["type"]) if c["type"] in schema["enums"] else c["type"]
        col = f"{q(c['c'])} {ty}" + ("" if c["nullable"] else " NOT NULL")
        if c["default"]:
            col += f" DEFAULT {c['default']}"
        parts.append(col)
    for k in t["constraints"]:
        cols = ", ".join(q(x) for x in k["columns"])
        if k["kind"] in ("PRIMARY KEY", "UNIQUE"):
            parts.append(f"CONSTRAINT {q(k['name'])} {k['kind']} ({cols})")
        else:
            r = k["references"]
            later.append(f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(k['name'])} FOREIGN KEY ({cols}) "
                         f"REFERENCES {q(r['table'])} ({', '.join(q(x) for x in r['columns'])}) ON DELETE {k['onDelete']};")
    print(f"CREATE TABLE {q(table)} ({', '.join(parts)});")
    later += [i + ";" for i in t["indexes"]]
print("\n".join(later))
PY

log "seeding $USERS users and $MESSAGES messages"
# Every account shares one bcrypt hash (cost 10) of "benchmark password".
psql -q -v ON_ERROR_STOP=1 "$SRC" <<SQL
CREATE TEMP TABLE u AS SELECT n, gen_random_uuid() AS id FROM generate_series(1, $USERS) n;
INSERT INTO "User" (id, name) SELECT id, 'user ' || n FROM u;
INSERT INTO "Account" (id, email, passhash)
    SELECT id, 'user' || n || '@example.org', '\$2b\$10\$Zp0hB0Z5aH8F6Jw0KQm0Zu2mX1oQf0m8V7C3WZ3y8eYk3o5N4r6lW' FROM u;
-- Spaces of 200 members, 3 roles and 10 channels each.
CREATE TEMP TABLE s AS SELECT n, gen_random_uuid() AS id FROM generate_series(1, $SPACES) n;
INSERT INTO "Space" (id, name, "ownerId") SELECT s.id, 'space ' || s.n, u.id FROM s JOIN u ON u.n = (s.n - 1) * 200 + 1;
INSERT INTO "SpaceUser" (id, "spaceId", "userId") SELECT gen_random_uuid(), s.id, u.id FROM s JOIN u ON (u.n - 1) / 200 = s.n - 1;
INSERT INTO "Role" (id, name, permissions, position, "spaceId")
    SELECT gen_random_uuid(), r.name, r.perm, r.pos, s.id FROM s,
    (VALUES ('@everyone', '0', -1), ('Mods', '2560', 1), ('Admins', '1', 2)) AS r (name, perm, pos);
CREATE TEMP TABLE c AS SELECT gen_random_uuid() AS id, s.id AS space, k, row_number() OVER () AS n FROM s, generate_series(0, 9) k;
INSERT INTO "Channel" (id, "spaceId", name, "order") SELECT id, space, 'channel ' || k, k FROM c;
-- Messages: three per millisecond (equal timestamps), round-robin over channels and users.
INSERT INTO "Message" (id, content, timestamp, "authorId", "channelId")
    SELECT gen_random_uuid(), 'message number ' || i || ' with some ordinary text in it',
           timestamp '2025-01-01' + (i / 3) * interval '1 millisecond',
           ua.a[1 + i % $USERS], ca.a[1 + i % ($SPACES * 10)]
    FROM generate_series(0, $MESSAGES - 1) i,
         (SELECT array_agg(id ORDER BY n) AS a FROM u) ua, (SELECT array_agg(id ORDER BY n) AS a FROM c) ca;
-- One attachment per 20 messages.
INSERT INTO "MessageAttachment" (id, "messageId", url, filename, "contentType", size)
    SELECT gen_random_uuid(), id, 'attachment/' || md5(id::text) || '.png', 'a.png', 'image/png', 1000
    FROM "Message" TABLESAMPLE BERNOULLI (5);
ANALYZE;
SQL
psql -At "$SRC" -c "SELECT format('%s users, %s messages, %s attachments', (SELECT count(*) FROM \"User\"), (SELECT count(*) FROM \"Message\"), (SELECT count(*) FROM \"MessageAttachment\"))" >&2

log "importing with $BIN (batch $BATCH)"
start=$(date +%s%N)
DATABASE_URL=$DST RUST_LOG=warn /usr/bin/time -v "$BIN" import-mikoto --source "$SRC" --batch-size "$BATCH" \
    >/tmp/bench-import.report 2>/tmp/bench-import.stderr
end=$(date +%s%N)
cat /tmp/bench-import.report
grep -E "Maximum resident set size|Elapsed \(wall clock\)|User time|System time" /tmp/bench-import.stderr
rows=$(psql -At "$DST" -c "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM accounts) + (SELECT count(*) FROM members) + (SELECT count(*) FROM roles) + (SELECT count(*) FROM channels) + (SELECT count(*) FROM messages) + (SELECT count(*) FROM message_attachments) + (SELECT count(*) FROM imported_message_ids)")
python3 -c "import sys; r, s = int(sys.argv[1]), float(sys.argv[2]); print(f'{r} rows written in {s:.1f} s: {r / s:,.0f} rows/s')" "$rows" "$(( (end - start) / 1000000 ))e-3"
