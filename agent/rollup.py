"""Hourly and daily rollups of the readings, so that pages and reports cost what their range shows.

Per device, metric and hour (`rollup_hour`, Unix start of the hour) and per Thai local day (`rollup_day`, Unix
start of the day in UTC+7): the count, min, max and sum of the readings' values, and under the metric `wh` the
energy used, from the meter's cumulative counter with wraps, resets and replaced meters handled as in carbon.py
(each difference split over the hours it spans in proportion to time: summed by day this is carbon.daily_wh).
`rollup_state` keeps per device the readings stored (counted here, so no page counts the readings table) and
the last counter reading taken in (the energy cursor). Rollups are kept for good; raw readings may be deleted
(retention) once rolled up.

A board with several energy meters (agent/meters.py) has them apart: each meter's readings (instance > 0) are
aggregated under `<metric>:<instance>` (e.g. `power:2`), its energy under `wh:<instance>`, and `wh` is the sum
over the meters of the site's incoming supply only, each meter's counter followed on its own (its cursor in
`rollup_meter`): a sub-circuit's energy is inside the supply's, so it never counts twice.

Readings flagged 'stuck' or 'out_of_range' are left out of the aggregates, as the AQI and carbon leave them out;
a reading with no wall time is counted but in no hour.

The roller takes the readings stored since its watermark (meta.rollup_upto, a readings id) in id order, in
chunks, each chunk in one transaction: a crash repeats nothing and loses nothing. A counter reading that arrives
after later ones of its device (a board's old buffer) replaces the difference between its neighbours by two,
so the energy is the same as if it had come in order. The agent runs the roller every few seconds
(`run_forever`), and at start-up before it serves.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import carbon, meters, retention, store
from .dbthread import DbThread
from .reading import METRIC_COLUMNS
from .tz import THAILAND

log = logging.getLogger("airwatt.rollup")

CHUNK = 100_000  # readings per roller transaction: short enough that ingest never waits long for the lock
EVERY_S = 5.0
LOCAL = int(THAILAND.utcoffset(None).total_seconds())  # UTC+7, no daylight saving: local days start at 17:00 UTC
METRICS: tuple[str, ...] = METRIC_COLUMNS
WH = "wh"  # the energy used, from the counter differences
# readings that count in the aggregates: not flagged stuck or out_of_range
GOOD_FLAGS_SQL = ("(flags = '' OR (',' || flags || ',' NOT LIKE '%,stuck,%' AND ',' || flags || ',' NOT LIKE "
                  "'%,out_of_range,%'))")
# NOT INDEXED: a range of the rowid (the new readings), never a walk of an index over all of them
_AGG_SQL = ("SELECT device, CAST(t / 3600 AS INTEGER) * 3600 AS hour, "
            + ", ".join("count(%s), min(%s), max(%s), total(%s)" % (m, m, m, m) for m in METRICS)
            + " FROM readings NOT INDEXED WHERE id > ? AND id <= ? AND t > 0 AND instance = 0 AND " + GOOD_FLAGS_SQL
            + " GROUP BY device, hour")
# the meters of a board with several, each on its own: metric "<name>:<instance>"
_AGG_METER_SQL = ("SELECT device, instance, CAST(t / 3600 AS INTEGER) * 3600 AS hour, "
                  + ", ".join("count(%s), min(%s), max(%s), total(%s)" % (m, m, m, m) for m in METRICS)
                  + " FROM readings NOT INDEXED WHERE id > ? AND id <= ? AND t > 0 AND instance > 0 AND "
                  + GOOD_FLAGS_SQL + " GROUP BY device, instance, hour")
_MERGE = ("INSERT INTO rollup_hour(device, metric, start, n, min, max, sum) VALUES (?, ?, ?, ?, ?, ?, ?)"
          " ON CONFLICT(device, metric, start) DO UPDATE SET n = n + excluded.n, min = min(min, excluded.min),"
          " max = max(max, excluded.max), sum = sum + excluded.sum")
_MERGE_WH = ("INSERT INTO rollup_hour(device, metric, start, n, min, max, sum) VALUES (?, ?, ?, 1, NULL, NULL, ?)"
             " ON CONFLICT(device, metric, start) DO UPDATE SET n = n + 1, sum = sum + excluded.sum")
_DAY = ("INSERT OR REPLACE INTO rollup_day(device, metric, start, n, min, max, sum)"
        " SELECT device, metric, ?, sum(n), min(min), max(max), sum(sum) FROM rollup_hour"
        " WHERE device = ? AND metric = ? AND start >= ? AND start < ? GROUP BY device, metric")


def day_start(t: float) -> int:
    """Unix start of the Thai local day holding t."""
    return int((t + LOCAL) // 86400 * 86400 - LOCAL)


def watermark(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'rollup_upto'").fetchone()
    return int(row[0]) if row else 0


def catch_up(conn: sqlite3.Connection, chunk: int = CHUNK, budget_s: float | None = None) -> int:
    """Roll up every reading stored since the watermark, a chunk per transaction; returns readings taken in.
    budget_s: stop after the chunk that passes this many seconds (the rest waits for the next call)."""
    began = time.monotonic()
    done = 0
    while True:
        top = conn.execute("SELECT max(id) FROM readings").fetchone()[0] or 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            lo = watermark(conn)
            if lo >= top:
                conn.execute("COMMIT")
                return done
            hi = min(top, lo + chunk)
            done += _roll(conn, lo, hi)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rollup_upto', ?)", (str(hi),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if budget_s is not None and time.monotonic() - began > budget_s:
            return done


def _roll(conn: sqlite3.Connection, lo: int, hi: int) -> int:
    """Take readings with lo < id <= hi into the rollups (inside the caller's transaction)."""
    counts = conn.execute("SELECT device, count(*) FROM readings NOT INDEXED WHERE id > ? AND id <= ? GROUP BY device",
                          (lo, hi)).fetchall()
    conn.executemany("INSERT INTO rollup_state(device, readings) VALUES (?, ?) ON CONFLICT(device)"
                     " DO UPDATE SET readings = readings + excluded.readings", counts)
    touched: set[tuple[str, str, int]] = set()
    merges = []
    for row in conn.execute(_AGG_SQL, (lo, hi)):
        device, hour = row[0], row[1]
        for k, metric in enumerate(METRICS):
            n = row[2 + 4 * k]
            if n:
                merges.append((device, metric, hour, n, row[3 + 4 * k], row[4 + 4 * k], row[5 + 4 * k]))
                touched.add((device, metric, day_start(hour)))
    for row in conn.execute(_AGG_METER_SQL, (lo, hi)):
        device, inst, hour = row[0], row[1], row[2]
        for k, metric in enumerate(METRICS):
            n = row[3 + 4 * k]
            if n:
                name = "%s:%d" % (metric, inst)
                merges.append((device, name, hour, n, row[4 + 4 * k], row[5 + 4 * k], row[6 + 4 * k]))
                touched.add((device, name, day_start(hour)))
    conn.executemany(_MERGE, merges)
    wh: dict[tuple[str, str, int], float] = {}
    _energy(conn, lo, hi, wh)
    conn.executemany(_MERGE_WH, [(device, metric, hour, v) for (device, metric, hour), v in wh.items()])
    touched.update((device, metric, day_start(hour)) for device, metric, hour in wh)
    conn.executemany(_DAY, [(day, device, metric, day, day + 86400) for device, metric, day in touched])
    return sum(n for _d, n in counts)


def _energy(conn: sqlite3.Connection, lo: int, hi: int, wh: dict[tuple[str, str, int], float]) -> None:
    """Counter differences of the new counter readings, split over hours into wh[(device, metric, hour start)]:
    metric 'wh' for the supply's meters, 'wh:<instance>' for each meter of a board with several."""
    cursors: dict[tuple[str, int], Any] = {}
    moved: set[tuple[str, int]] = set()
    board_meters = meters.by_device(conn)

    def add(key: tuple[str, int], a: tuple, b: tuple, sign: float) -> None:
        _kind, used = carbon.classify(int(a[2]), int(b[2]), b[1] - a[1])
        if not used:
            return
        hours: dict[int, float] = {}
        carbon.split_hours(a[1], b[1], used, hours)
        device, inst = key
        names = []
        if meters.is_supply(board_meters.get(device), inst):
            names.append(WH)
        if inst:
            names.append("%s:%d" % (WH, inst))
        for name in names:
            for hour, v in hours.items():
                wh[(device, name, hour)] = wh.get((device, name, hour), 0.0) + sign * v

    rows = conn.execute("SELECT id, device, instance, seq, t, energy_wh, flags FROM readings WHERE id > ? AND"
                        " id <= ? AND sensor = 'energy' AND energy_wh IS NOT NULL ORDER BY id", (lo, hi)).fetchall()
    for rid, device, inst, seq, t, counter, flags in rows:
        if not carbon.usable(t, counter, flags):
            continue
        key = (device, inst)
        if key not in cursors:
            if inst:
                got = conn.execute("SELECT e_seq, e_t, e_wh FROM rollup_meter WHERE device = ? AND instance = ?",
                                   key).fetchone()
            else:
                got = conn.execute("SELECT e_seq, e_t, e_wh FROM rollup_state WHERE device = ?", (device,)).fetchone()
            cursors[key] = (got[0], got[1], got[2]) if got and got[0] is not None else None
        cur = cursors[key]
        x = (seq, t, counter)
        if cur is None or seq > cur[0]:
            if cur is not None:
                add(key, cur, x, 1.0)
            cursors[key] = x
            moved.add(key)
            continue
        # A late reading: it goes between the usable readings taken in before it (lower ids) on either side.
        pred = _neighbour(conn, device, inst, seq, rid, "<", "DESC")
        succ = _neighbour(conn, device, inst, seq, rid, ">", "ASC")
        if pred is not None and succ is not None:
            add(key, pred, succ, -1.0)
        if pred is not None:
            add(key, pred, x, 1.0)
        if succ is not None:
            add(key, x, succ, 1.0)
    conn.executemany("UPDATE rollup_state SET e_seq = ?, e_t = ?, e_wh = ? WHERE device = ?",
                     [cursors[k] + (k[0],) for k in moved if not k[1]])
    conn.executemany("INSERT OR REPLACE INTO rollup_meter(device, instance, e_seq, e_t, e_wh) VALUES (?, ?, ?, ?, ?)",
                     [k + cursors[k] for k in moved if k[1]])


def _neighbour(conn: sqlite3.Connection, device: str, inst: int, seq: int, rid: int, op: str, order: str
               ) -> tuple | None:
    sql = ("SELECT seq, t, energy_wh, flags FROM readings WHERE device = ? AND seq %s ? AND id < ?"
           " AND sensor = 'energy' AND instance = ? ORDER BY seq %s" % (op, order))
    for s, t, counter, flags in conn.execute(sql, (device, seq, rid, inst)):
        if carbon.usable(t, counter, flags):
            return (s, t, counter)
    return None


# -- reading the rollups ---------------------------------------------------------------------------------


def _buckets(db: Any, table: str, device: str, metrics: Iterable[str], since: float, until: float
             ) -> dict[str, list[tuple]]:
    metrics = list(metrics)
    out: dict[str, list[tuple]] = {m: [] for m in metrics}
    sql = ("SELECT metric, start, n, min, max, sum FROM %s WHERE device = ? AND metric IN (%s)"
           " AND start >= ? AND start < ? ORDER BY metric, start" % (table, ",".join("?" * len(metrics))))
    for metric, start, n, lo, hi, total in db.execute(sql, [device, *metrics, since, until]):
        out[metric].append((start, n, lo, hi, total / n if n else None))
    return out


def hours(db: Any, device: str, metrics: Iterable[str], since: float, until: float) -> dict[str, list[tuple]]:
    """Per metric, (hour start, n, min, max, mean) of one device for the hours starting in [since, until)."""
    return _buckets(db, "rollup_hour", device, metrics, since, until)


def days(db: Any, device: str, metrics: Iterable[str], since: float, until: float) -> dict[str, list[tuple]]:
    """Per metric, (local day start, n, min, max, mean) of one device for the Thai local days starting in
    [since, until): what long plots draw, 30 points a month however many readings are behind them."""
    return _buckets(db, "rollup_day", device, metrics, since, until)


def daily_wh(db: Any, since: float, until: float, device: str | None = None) -> dict[str, dict[str, float]]:
    """Per device, Wh per Thai local day ('YYYY-MM-DD') for the days starting in [since, until)."""
    # "device IN devices": a search of the primary key per device, not a scan of every metric's days
    sql = ("SELECT device, start, sum FROM rollup_day WHERE device IN (SELECT id FROM devices) AND metric = 'wh'"
           " AND start >= ? AND start < ?")
    params: list[Any] = [since, until]
    if device is not None:
        sql = "SELECT device, start, sum FROM rollup_day WHERE device = ? AND metric = 'wh' AND start >= ?" \
              " AND start < ?"
        params = [device, since, until]
    out: dict[str, dict[str, float]] = {}
    names: dict[int, str] = {}  # every device has the same days: each day's name made once
    for dev, start, total in db.execute(sql, params):
        name = names.get(start)
        if name is None:
            name = names[start] = carbon.local_day(start + 1)
        out.setdefault(dev, {})[name] = total
    return out


def reading_counts(db: Any) -> dict[str, int]:
    """Readings stored per device (ever, retention does not lower it), as of the last roller run."""
    return dict(db.execute("SELECT device, readings FROM rollup_state").fetchall())


START_BUDGET_S = 10.0  # at start-up, before serving: a store migrated with years unrolled catches up later


class Roller:
    """The agent's background roller: catches up at start-up (for up to START_BUDGET_S), then every EVERY_S
    seconds, on its own connection in its own thread; also runs the retention passes (agent/retention.py)."""

    def __init__(self, db_file: str, every: float = EVERY_S, keep_synced_s: float | None = None,
                 prune_every_s: float = 600.0) -> None:
        self.db_file = db_file
        self.every = every
        self.keep_synced_s = keep_synced_s  # None: no retention
        self.prune_every_s = prune_every_s
        self.pruned_at = 0.0
        self.thread = DbThread(lambda: store.connect(db_file), "airwatt-rollup")
        self.task: asyncio.Task | None = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await self.thread.call(fn, *args)

    def _catch_up(self, budget_s: float) -> int:
        conn = self.thread.connection()
        done = catch_up(conn, CHUNK, budget_s)
        if self.keep_synced_s is not None and time.monotonic() - self.pruned_at >= self.prune_every_s:
            self.pruned_at = time.monotonic()
            deleted = retention.prune(conn, self.keep_synced_s)
            if deleted:
                log.info("retention: %d raw readings synced over %.1f days ago deleted", deleted,
                         self.keep_synced_s / 86400)
        return done

    async def start(self, _app: Any = None) -> None:
        await self._call(self._catch_up, START_BUDGET_S)
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self._call(self._catch_up, 2.0)
            except sqlite3.Error as err:  # busy, or a full disk: try again next time
                log.warning("rollups not brought up to date: %s", err)

    async def stop(self, _app: Any = None) -> None:
        await self.thread.close(self.task)


def carbon_months(db, since: float, until: float, table: dict[int, float]) -> list[carbon.Row]:
    """Rows per site and Thai local month for the days starting in [since, until), summed by SQLite from the
    daily rollups: a row per site-month comes back to Python, however many days the months hold."""
    names, ends = [], []
    local = datetime.fromtimestamp(since, THAILAND)
    year, month = local.year, local.month
    while True:
        year2, month2 = (year + 1, 1) if month == 12 else (year, month + 1)
        names.append("%04d-%02d" % (year, month))
        ends.append(datetime(year2, month2, 1, tzinfo=THAILAND).timestamp())
        if ends[-1] >= until:
            break
        year, month = year2, month2
    # a day's month by comparing its start with the months' ends (a dozen at most), no date function per row
    case = "CASE %s ELSE ? END" % " ".join(["WHEN r.start < ? THEN ?"] * (len(names) - 1)) if names[1:] else "?"
    params: list[Any] = [x for end, name in zip(ends, names[:-1]) for x in (end, name)] + [names[-1]]
    per_month: dict[str, dict[str, float]] = {}
    for site, name, wh in db.execute(
            "SELECT coalesce(d.site, ''), %s, sum(r.sum) FROM devices d CROSS JOIN rollup_day r ON r.device = d.id"
            " AND r.metric = ? AND r.start >= ? AND r.start < ? GROUP BY 1, 2" % case, [*params, WH, since, until]):
        per_month.setdefault(site, {})[name] = wh
    return carbon.site_rows(per_month, {site: site for site in per_month}, table)


def carbon_report(db, since: float, until: float, table: dict[int, float]) -> tuple[list[carbon.Row], list[carbon.Row]]:
    """(daily rows, monthly rows) per site for the Thai local days starting in [since, until), from the daily
    rollups above: the cost follows the number of days, not the readings behind them."""
    # summed per site and day by SQLite: a row per site-day, not per device-day, comes back to Python; CROSS JOIN
    # keeps devices the outer loop (a search of rollup_day's key per device, never a scan of it)
    names: dict[int, str] = {}
    per_day: dict[str, dict[str, float]] = {}
    for site, start, wh in db.execute(
            "SELECT coalesce(d.site, ''), r.start, sum(r.sum) FROM devices d CROSS JOIN rollup_day r ON r.device = d.id"
            " AND r.metric = ? AND r.start >= ? AND r.start < ? GROUP BY 1, 2", (WH, since, until)):
        name = names.get(start)
        if name is None:
            name = names[start] = carbon.local_day(start + 1)
        per_day.setdefault(site, {})[name] = wh
    per_month = {site: carbon.monthly(days) for site, days in per_day.items()}
    same = {site: site for site in per_day}
    return carbon.site_rows(per_day, same, table), carbon.site_rows(per_month, same, table)
