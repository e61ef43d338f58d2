"""Schemathesis hooks for tests/integration/fuzz.rs.

Random UUIDs for path parameters would make nearly every request a 404 before it reaches a handler.
So about two in three valid cases (not the invalid ones, which must stay invalid) get the ids of the
space the test populated, for every path parameter, query parameter and top-level field of a JSON
body that has a pool of them. The pools come from the JSON file named by ALTEREGO_FUZZ_IDS:

    {"space": {name: [id, ...]}, "dm": {...}, "spare": {...}, "spare_dm": {...}, "within": {child: parent}}

Paths under /dm/ take "dm" pools first; operations that delete or cut off take "spare" ("spare_dm"
under /dm/). A child's pool is an object keyed by its parent's id (`messageId` within
`channelId`), so a message id is always one of the chosen channel's messages.
The choices are a hash of the generated values, not random draws, so a run's seed reproduces them.
"""

import json
import os
import zlib

import schemathesis

with open(os.environ["ALTEREGO_FUZZ_IDS"], encoding="utf-8") as f:
    IDS = json.load(f)
WITHIN = IDS.get("within", {})


def _hash(text):
    return zlib.crc32(text.encode())


def _destructive(operation):
    """Whether the operation deletes or cuts off what it names: a DELETE, blocking, banning, a
    permission override (which can deny the member the channel)."""
    path, method = operation.path, operation.method.upper()
    return (
        method == "DELETE"
        or path.endswith("/block")
        or path.endswith("/bans/")
        or (method == "PUT" and "/overrides/" in path)
    )


def _ids(pool):
    """Every id in a pool: a list, or an object of lists."""
    lists = pool.values() if isinstance(pool, dict) else [pool]
    return {value for values in lists for value in values if isinstance(value, str)}


def _spares(operation):
    """The spare pools a destructive operation takes, or None for any other operation."""
    if not _destructive(operation):
        return None
    return IDS["spare_dm"] if operation.path.startswith("/dm/") else IDS["spare"]


def _pools(operation):
    pools = dict(IDS["space"])
    if operation.path.startswith("/dm/"):
        pools.update(IDS["dm"])
    pools.update(_spares(operation) or {})
    return pools


# The ids every non-destructive operation relies on.
KEPT = set().union(*(_ids(pool) for scope in ("space", "dm") for pool in IDS[scope].values())) - set().union(
    *(_ids(pool) for scope in ("spare", "spare_dm") for pool in IDS[scope].values())
)


def _protect(values, spares):
    """Gives a destructive operation a spare id wherever it names a kept one.

    Schemathesis also reuses ids it saw in responses, so a kept id can reach a destructive
    operation without this hook choosing it.
    """
    for name in sorted(values, key=lambda n: n in WITHIN):
        value, pool = values[name], spares.get(name)
        if isinstance(pool, dict):
            pool = pool.get(str(values.get(WITHIN.get(name))))
        if pool and isinstance(value, str) and value in KEPT:
            values[name] = pool[_hash(f"{value}/{name}") % len(pool)]


def _swap(values, pools):
    """Replaces, in place, the values that have a pool, in two of three cases."""
    digest = _hash(json.dumps(values, sort_keys=True, default=str))
    if digest % 3 == 0:
        return
    # Parents first, so that a child's pool is looked up under the id chosen for its parent.
    for name in sorted(values, key=lambda n: n in WITHIN):
        pool = pools.get(name)
        if isinstance(pool, dict):
            pool = pool.get(str(values.get(WITHIN[name])))
        if pool:
            values[name] = pool[_hash(f"{digest}/{name}") % len(pool)]


@schemathesis.hook
def map_case(context, case):
    spares = _spares(case.operation)
    containers = [c for c in (case.path_parameters, case.query, case.body) if isinstance(c, dict) and c]
    if case.meta is None or case.meta.generation.mode.is_positive:
        pools = _pools(case.operation)
        for values in containers:
            _swap(values, pools)
    if spares is not None:
        for values in containers:
            _protect(values, spares)
    return case
