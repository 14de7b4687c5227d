"""The store's side of sync: what is pending, what the platform confirmed (record), refusals counted per
reading (strikes) and readings held back, and "retry now". The sync worker, the pages, `airwatt sync` and
/metrics read and write sync state only through here; the tables themselves are created by store.MIGRATIONS.

"Retry now" is said one way, `request_retry`: recorded in meta (by the pages or `airwatt sync retry`, from any
process) and taken once by the worker (`take_retry`). It also calls the listeners this process registered for
that store (`on_retry`: the serving app wakes its worker so it acts at once, not at its next look at meta).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import sqlite_utils

from airwatt.agent import store

HOLD_AFTER = 3  # refusals of one reading before it is held back
HOLD_S = 3600.0  # how long a held reading waits before it is tried again (unless "retry now")
LOG_KEEP = 20000  # sync_log rows kept (older ones pruned)

_LOCATED = " AND d.lat IS NOT NULL AND d.lon IS NOT NULL"


# -- pending ----------------------------------------------------------------------------------------------


def pending(db: sqlite_utils.Database, limit: int, located: bool = False, after: int | None = None) -> list[dict]:
    """Unsynced readings, oldest (lowest id) first, with the device's lat, lon, site and name joined; with
    `located`, only those of devices that have a location; with `after`, only ids above it (the worker's next
    batch while the previous one is still being marked)."""
    where = "r.synced_at IS NULL" + ("" if after is None else " AND r.id > :after") + (_LOCATED if located else "")
    return list(db.query(
        "SELECT r.*, d.lat AS lat, d.lon AS lon, d.site AS site, d.name AS device_name,"
        " m.name AS meter_name, m.phase AS meter_phase, m.circuit AS meter_circuit"
        " FROM readings r INDEXED BY readings_unsynced JOIN devices d ON d.id = r.device"
        " LEFT JOIN meters m ON m.device = r.device AND m.instance = r.instance"
        " WHERE %s ORDER BY r.id LIMIT :limit" % where, {"after": after, "limit": limit}))


def waiting_for_location(db: sqlite_utils.Database) -> dict[str, int]:
    """Devices without a location that have unsynced readings: device -> how many."""
    return dict(db.execute(
        "SELECT r.device, count(*) FROM readings r INDEXED BY readings_unsynced WHERE r.synced_at IS NULL"
        " AND r.device IN (SELECT id FROM devices WHERE lat IS NULL OR lon IS NULL) GROUP BY r.device"
        " ORDER BY r.device"
    ).fetchall())


def backlog(db: sqlite_utils.Database) -> tuple[int, float | None, float | None]:
    """(readings pending, the oldest pending one's receive time, the last sync the platform confirmed)."""
    count, oldest = db.execute(
        "SELECT count(*), min(received) FROM readings INDEXED BY readings_unsynced WHERE synced_at IS NULL"
    ).fetchone()
    last_ok = store.get_meta(db, "last_sync_ok")
    return count, oldest, float(last_ok) if last_ok is not None else None


def sync_state(db: sqlite_utils.Database, errors: int = 5) -> dict:
    """Pending and synced counts, oldest pending reading's receive time, last successful sync, last errors."""
    count, oldest, last_ok = backlog(db)
    return {
        "pending": count,
        "synced": sum(store.reading_counts(db).values()) - count,
        "oldest_pending_received": oldest,
        "last_sync_ok": last_ok,
        "last_errors": list(db.query("SELECT * FROM sync_log WHERE ok = 0 ORDER BY id DESC LIMIT ?", [errors])),
    }


def recent_log(db: sqlite_utils.Database, limit: int = 10) -> list[dict]:
    """The last `limit` sync requests, newest first."""
    return list(db.query("SELECT at, ok, status, count, detail FROM sync_log ORDER BY id DESC LIMIT ?", [limit]))


# -- record -----------------------------------------------------------------------------------------------


def record_sync(
    db: sqlite_utils.Database, ids: Iterable[int], at: float, attempts: Iterable[tuple[bool, int | None, int, str]]
) -> int:
    """mark_synced + log_sync of one sync round in ONE durable transaction (one fsync per round, not two per
    request): marks `ids` synced at `at` and logs each (ok, status, count, detail) attempt; returns rows marked."""
    runs, singles = _id_runs(ids)
    changed = 0
    # whole seconds on the readings (retention counts days): SQLite keeps an integral REAL in 4 bytes, not 8
    marked = float(int(at))
    with store.transaction(db):
        for first, last in runs:  # every id from first to last is in `ids`: BETWEEN is the same set as IN
            cur = db.execute(
                "UPDATE readings SET synced_at = ? WHERE id BETWEEN ? AND ? AND synced_at IS NULL",
                (marked, first, last)
            )
            changed += cur.rowcount
        for chunk in _chunks(singles):
            cur = db.execute(
                "UPDATE readings SET synced_at = ? WHERE synced_at IS NULL AND id IN (%s)"
                % ",".join("?" * len(chunk)),
                [marked, *chunk],
            )
            changed += cur.rowcount
        any_ok = False
        for ok, status, count, detail in attempts:
            any_ok = any_ok or ok
            db.execute(
                "INSERT INTO sync_log(at, ok, status, count, detail) VALUES (?, ?, ?, ?, ?)",
                (at, int(bool(ok)), status, count, detail),
            )
        if any_ok:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_sync_ok', ?)", (repr(at),))
    return changed


def mark_synced(db: sqlite_utils.Database, ids: Iterable[int], at: float) -> int:
    """Mark readings synced (the platform confirmed them) in one durable transaction; returns rows changed."""
    return record_sync(db, ids, at, ())


def log_sync(db: sqlite_utils.Database, ok: bool, status: int | None, count: int, detail: str = "") -> None:
    """Record a sync attempt; a successful one also sets meta.last_sync_ok."""
    record_sync(db, (), time.time(), [(ok, status, count, detail)])


def prune_log(db: sqlite_utils.Database, logged: int) -> None:
    """Keep the last LOG_KEEP sync_log rows (looked at once per thousand rows `logged`)."""
    last = db.execute("SELECT max(id) FROM sync_log").fetchone()[0] or 0
    if last > LOG_KEEP and last % 1000 < logged:
        with store.transaction(db):
            db.execute("DELETE FROM sync_log WHERE id <= ?", (last - LOG_KEEP,))


def _chunks(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _id_runs(ids: Iterable[int], shortest: int = 8) -> tuple[list[tuple[int, int]], list[int]]:
    """Split ids into runs of consecutive integers (first, last) at least `shortest` long, and the rest.
    Confirmed batches are mostly such runs (pending readings oldest first): one range update each instead
    of an IN list of a thousand parameters."""
    ordered = sorted(set(ids))
    runs: list[tuple[int, int]] = []
    singles: list[int] = []
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            if i - start >= shortest:
                runs.append((ordered[start], ordered[i - 1]))
            else:
                singles.extend(ordered[start:i])
            start = i
    return runs, singles


# -- strikes and held readings ----------------------------------------------------------------------------


def has_strikes(db: sqlite_utils.Database) -> bool:
    """Whether any reading has strikes (then confirmed ones must clear theirs)."""
    return db.execute("SELECT 1 FROM sync_held LIMIT 1").fetchone() is not None


def pending_unheld(db: sqlite_utils.Database, limit: int, now: float, after: int | None = None,
                   located: bool = False) -> list[dict]:
    """pending() minus the readings currently held back, oldest first."""
    held = {r[0] for r in db.execute("SELECT reading FROM sync_held WHERE held_until > ?", (now,))}
    if not held:
        return pending(db, limit, located, after)
    # At most len(held) of the first limit + len(held) pending rows are held, so `limit` others remain.
    return [r for r in pending(db, limit + len(held), located, after) if r["id"] not in held][:limit]


def strike(db: sqlite_utils.Database, refusals: dict[int, tuple[int | None, str]], now: float,
           hold_at_once: bool) -> int:
    """Count one refusal (status, error) per reading; returns how many are now held back."""
    held = 0
    with store.transaction(db):
        for rid, (status, error) in refusals.items():
            row = db.execute("SELECT tries FROM sync_held WHERE reading = ?", (rid,)).fetchone()
            tries = (row[0] if row else 0) + 1
            until = now + HOLD_S if hold_at_once or tries >= HOLD_AFTER else None
            held += until is not None
            db.execute(
                "INSERT OR REPLACE INTO sync_held(reading, tries, held_until, status, error, at) VALUES (?,?,?,?,?,?)",
                (rid, tries, until, status, error[:500], now),
            )
    return held


def clear_strikes(db: sqlite_utils.Database, ids: list[int]) -> None:
    """Forget the strikes of readings the platform has now confirmed."""
    with store.transaction(db):
        for chunk in _chunks(ids):
            db.execute("DELETE FROM sync_held WHERE reading IN (%s)" % ",".join("?" * len(chunk)), chunk)


def held_readings(db: sqlite_utils.Database, now: float | None = None) -> list[dict]:
    """Readings held back now, with the platform's last refusal."""
    return list(db.query(
        "SELECT h.reading, r.device, r.seq, r.sensor, h.tries, h.held_until, h.status, h.error, h.at"
        " FROM sync_held h CROSS JOIN readings r ON r.id = h.reading"
        " WHERE h.held_until > ? AND r.synced_at IS NULL ORDER BY h.reading",
        [time.time() if now is None else now],
    ))


def held_groups(db: sqlite_utils.Database, now: float, limit: int = 50) -> list[dict]:
    """Held readings grouped by device and refusal, for the operators' sync page: a platform that refuses a
    device's readings refuses them by the hundred, for one reason. CROSS JOIN: the held readings are the outer
    loop, each a search of readings by id (the planner would walk an index over every reading instead)."""
    return list(db.query(
        "select r.device, h.status, h.error, count(*) as count, min(r.seq) as first, max(r.seq) as last,"
        " group_concat(distinct r.sensor) as sensors, max(h.tries) as tries, max(h.held_until) as held_until"
        " from sync_held h cross join readings r on r.id = h.reading"
        " where h.held_until > ? and r.synced_at is null group by r.device, h.status, h.error"
        " order by r.device, min(h.reading) limit ?", [now, limit]))


def release_held(db: sqlite_utils.Database) -> int:
    """Forget every strike and hold ("retry now"); returns how many readings were held."""
    with store.transaction(db):
        n = db.execute("SELECT count(*) FROM sync_held WHERE held_until > ?", (time.time(),)).fetchone()[0]
        db.execute("DELETE FROM sync_held")
    return n


# -- retry now --------------------------------------------------------------------------------------------


# listeners of this process, by the real path of the store's database file
_retry_listeners: dict[str, list[Callable[[], None]]] = {}


def on_retry(data_dir: str | Path, listener: Callable[[], None]) -> Callable[[], None]:
    """Call `listener` whenever this process says "retry now" for the store in `data_dir`; returns the function
    that stops it. Another process's "retry now" reaches a worker only through meta (`take_retry`)."""
    listeners = _retry_listeners.setdefault(os.path.realpath(store.db_path(data_dir)), [])
    listeners.append(listener)
    return lambda: listeners.remove(listener)


def request_retry(db: sqlite_utils.Database, at: float | None = None) -> None:
    """Say "retry now": recorded in meta, so a worker in any process (or one started later) takes it, and told
    at once to this process's listeners (on_retry)."""
    store.set_meta(db, "sync_retry_requested", repr(time.time() if at is None else at))
    for listener in list(_retry_listeners.get(store.db_file(db), ())):
        listener()


def retry_requested_at(db: sqlite_utils.Database) -> str | None:
    """When "retry now" was last said (meta's text), or None."""
    return store.get_meta(db, "sync_retry_requested")


def take_retry(db: sqlite_utils.Database) -> bool:
    """True once per "retry now" recorded by request_retry; marks it handled."""
    requested = retry_requested_at(db)
    if requested is None or requested == store.get_meta(db, "sync_retry_handled"):
        return False
    store.set_meta(db, "sync_retry_handled", requested)
    return True
