"""A bounded store: raw readings are deleted `keep_synced_days` after the platform confirmed them.

Only a reading that is synced (synced_at set) long enough ago AND already taken into the rollups (id at or
below the roller's watermark) is ever deleted; an unsynced reading stays however old it is. The rollups, the
per-device counters, the devices, boots and sync log are kept for good. Freed pages go back to SQLite's free
list and are reused by new readings, so the file stops growing once the oldest readings start to go.

Each pass deletes in chunks, each its own short transaction, so an upload never waits long for the lock.
"""

from __future__ import annotations

import sqlite3
import time

CHUNK = 20_000


def _cut_id(conn: sqlite3.Connection, cutoff: float, top: int) -> int:
    """The highest id (<= top) whose reading was received before `cutoff`: ids rise with receive time (one
    writer, a group at a time), and a reading synced before the cutoff was received before it too."""
    lo_row = conn.execute("SELECT min(id) FROM readings").fetchone()
    lo = lo_row[0] if lo_row and lo_row[0] is not None else None
    if lo is None or lo > top:
        return 0
    first = conn.execute("SELECT received FROM readings WHERE id = ?", (lo,)).fetchone()[0]
    if first >= cutoff:
        return 0
    hi = top
    # binary search on ids: readings deleted leave holes, so look at the first id at or after the probe
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = conn.execute("SELECT received FROM readings WHERE id >= ? ORDER BY id LIMIT 1", (mid,)).fetchone()
        if row is not None and row[0] < cutoff:
            lo = mid
        else:
            hi = mid - 1
    return lo


def prune(conn: sqlite3.Connection, keep_s: float, now: float | None = None, chunk: int = CHUNK) -> int:
    """Delete the raw readings synced more than keep_s seconds ago and already rolled up; returns how many."""
    cutoff = (time.time() if now is None else now) - keep_s
    row = conn.execute("SELECT value FROM meta WHERE key = 'rollup_upto'").fetchone()
    upto = int(row[0]) if row else 0
    top = _cut_id(conn, cutoff, upto)
    deleted = 0
    while top:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings NOT INDEXED WHERE id <= ?"
                " AND synced_at IS NOT NULL AND synced_at < ? LIMIT ?)", (top, cutoff, chunk))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        deleted += cur.rowcount
        if cur.rowcount < chunk:
            break
    return deleted


def db_bytes(conn: sqlite3.Connection) -> dict[str, int]:
    """Bytes on disk per table and index (SQLite's dbstat), without the free pages."""
    try:
        return dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    except sqlite3.OperationalError:  # an SQLite built without dbstat: the whole file minus its free pages
        pages, free, size = (conn.execute("PRAGMA %s" % p).fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return {"(all)": (pages - free) * size}
