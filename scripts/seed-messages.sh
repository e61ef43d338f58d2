#!/usr/bin/env bash
# Seeds COUNT messages into one channel directly in PostgreSQL (benchmark setup only: the REST
# API would take hours at its rate limits). Ids are UUIDv7 whose millisecond equals the
# message timestamp, one millisecond apart, ending now; content draws from a small vocabulary so
# that searches of different selectivity exist ("alpha" ≈ 1/20 of messages, "item7" ≈ 1/1000,
# "number 123456" one message).
#
#   scripts/seed-messages.sh DATABASE_URL CHANNEL_ID AUTHOR_ID COUNT
set -euo pipefail
db=$1 channel=$2 author=$3 count=$4
psql "$db" -v ON_ERROR_STOP=1 -q -v channel="$channel" -v author="$author" -v count="$count" <<'SQL'
\timing on
WITH params AS (SELECT (extract(epoch FROM now()) * 1000)::bigint - :count AS start_ms),
rows AS (
    SELECT g, p.start_ms + g AS ms FROM params p, generate_series(1, :count) g
),
ids AS (
    SELECT g, ms,
           set_byte(set_byte(overlay(uuid_send(gen_random_uuid()) PLACING substring(int8send(ms) FROM 3) FROM 1 FOR 6),
                             6, (get_byte(uuid_send(gen_random_uuid()), 6) & 15) | 112),
                    8, (get_byte(uuid_send(gen_random_uuid()), 8) & 63) | 128) AS b
    FROM rows
)
INSERT INTO messages (id, channel_id, author_id, timestamp, content)
SELECT encode(b, 'hex')::uuid, :'channel'::uuid, :'author'::uuid, to_timestamp(ms / 1000.0),
       (ARRAY['alpha','bravo','charlie','delta','echo','foxtrot','golf','hotel','india','juliet',
              'kilo','lima','mike','november','oscar','papa','quebec','romeo','sierra','tango'])[1 + g % 20]
       || ' item' || (g % 1000) || ' number ' || g || ' lorem ipsum dolor sit amet'
FROM ids;
UPDATE channels SET last_updated = now() WHERE id = :'channel'::uuid;
ANALYZE messages;
SQL
