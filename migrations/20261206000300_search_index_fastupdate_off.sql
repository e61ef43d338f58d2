-- The full-text index without a pending list (measured, BENCHMARKS.md "Full-text index"):
-- with group-committed sends the per-insert GIN cost is the same either way (PostgreSQL CPU per
-- send 189–190 µs with the pending list, 192–195 µs without), but every search had to scan the
-- list of rows not yet merged: searches right after heavy sends ran at 599–709 requests/s with
-- it and 973–1,004 without.
ALTER INDEX messages_search_idx SET (fastupdate = off);
