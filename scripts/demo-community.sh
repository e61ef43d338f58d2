#!/usr/bin/env bash
# A plain-HTTP walk through the community model against a running alterego (default
# http://127.0.0.1:3511; set B=... for another). Registers four users, so run it against a
# fresh database or expect 409 EmailTaken.
set -euo pipefail
B=${B:-http://127.0.0.1:3511}
j() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
reg() { curl -sf "$B/account/register" -H 'content-type: application/json' -H "x-forwarded-for: 10.0.0.$2" -d "{\"email\":\"$1@example.org\",\"name\":\"$1\",\"password\":\"correct horse\"}" | j "['accessToken']"; }
call() { local m=$1 p=$2 t=$3; shift 3; curl -s -X "$m" "$B$p" -H "authorization: Bearer $t" -H 'content-type: application/json' "$@"; echo; }
OWNER=$(reg owner 1); A=$(reg ann 2); Bt=$(reg ben 3); C=$(reg cat 4)
SPACE=$(call POST /spaces/ "$OWNER" -d '{"name":"Curl Club"}'); SID=$(echo "$SPACE" | j "['id']")
echo "space: $(echo "$SPACE" | j "['name']") memberCount=$(echo "$SPACE" | j "['memberCount']")"
CH=$(call POST /spaces/$SID/channels/ "$OWNER" -d '{"name":"staff","type":"TEXT"}' | j "['id']")
call POST /spaces/$SID/channels/ "$OWNER" -d "{\"name\":\"staff-docs\",\"type\":\"DOCUMENT\",\"parentId\":\"$CH\"}" | j "['name']"
MOD=$(call POST /spaces/$SID/roles/ "$OWNER" -d '{"name":"Moderators"}' | j "['id']")
call PATCH /spaces/$SID/roles/$MOD "$OWNER" -d '{"permissions":"2048","position":1,"color":"#3a7"}' | j "['permissions']"
CODE=$(call POST /spaces/$SID/invites/ "$OWNER" -d '{"maxUses":3}' | j "['id']")
for T in "$A" "$Bt" "$C"; do call POST /spaces/join/$CODE "$T" | j "['memberCount']"; done
ANN=$(call GET /users/me "$A" | j "['id']"); BEN=$(call GET /users/me "$Bt" | j "['id']"); CAT=$(call GET /users/me "$C" | j "['id']")
call POST /spaces/$SID/members/$ANN/roles/$MOD "$OWNER" | j "['roleIds']"
EVERYONE=$(call GET /spaces/$SID/roles/ "$OWNER" | j "[-1]['id']")
call PUT /spaces/$SID/channels/$CH/overrides/$EVERYONE "$OWNER" -d '{"targetType":"ROLE","allow":"0","deny":"4096"}' | j "['deny']"
call PUT /spaces/$SID/channels/$CH/overrides/$MOD "$OWNER" -d '{"targetType":"ROLE","allow":"4096","deny":"0"}' | j "['allow']"
echo "ben sees: $(call GET /spaces/$SID/channels "$Bt" | j "")"
echo "ann sees: $(call GET /spaces/$SID/channels "$A" | python3 -c 'import json,sys; print([c["name"] for c in json.load(sys.stdin)])')"
echo "ann kicks ben: $(call DELETE /spaces/$SID/members/$BEN "$A")"
echo "ann kicks owner: $(call DELETE /spaces/$SID/members/$(call GET /users/me "$OWNER" | j "['id']") "$A")"
echo "ann bans cat: $(call POST /spaces/$SID/bans/ "$A" -d "{\"userId\":\"$CAT\",\"reason\":\"spam\"}" | j "['reason']")"
CODE2=$(call POST /spaces/$SID/invites/ "$OWNER" | j "['id']")
echo "cat rejoins: $(call POST /spaces/join/$CODE2 "$C")"
echo "final memberCount: $(call GET /spaces/$SID "$OWNER" | j "['memberCount']")"
