"""Schemathesis hooks for tests/integration/fuzz.rs.

Random UUIDs for path parameters would make nearly every request a 404 before it reaches a handler.
So about two in three valid cases (not the invalid ones, which must stay invalid) get the ids of the
space the test populated, for every path parameter and top-level field of a JSON body that has a
pool of them. The pools come from the JSON file named by ALTEREGO_FUZZ_IDS:

    {"space": {name: [id, ...]}, "dm": {name: [id, ...]}, "within": {child: parent}}

Paths under /dm/ take "dm" pools first. A child's pool is an object keyed by its parent's id
(`messageId` within `channelId`), so a message id is always one of the chosen channel's messages.
The choices are a hash of the generated values, not random draws, so a run's seed reproduces them.
"""

import json
import os
import zlib

import schemathesis

with open(os.environ["ALTEREGO_FUZZ_IDS"], encoding="utf-8") as f:
    IDS = json.load(f)
WITHIN = IDS.get("within", {})


def _pools(path):
    pools = dict(IDS["space"])
    if path.startswith("/dm/"):
        pools.update(IDS["dm"])
    return pools


def _hash(text):
    return zlib.crc32(text.encode())


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
    if case.meta is not None and not case.meta.generation.mode.is_positive:
        return case
    pools = _pools(case.operation.path)
    if case.path_parameters:
        _swap(case.path_parameters, pools)
    if isinstance(case.body, dict):
        _swap(case.body, pools)
    return case
