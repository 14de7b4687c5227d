"""Alerts: rules over the store with thresholds an operator sets in airwatt.toml ([alerts], agent/config.py).

Rules (defaults): CO2 over 1000 ppm for 15 min; the 24-h PM2.5 Thai AQI orange or worse; a board offline for
more than 3 reading intervals; a board's flash buffer more than 50% full; the sync lag over 1 h (only when a
platform is configured); a board with a meter that sent no energy reading for 10 intervals (with several meters, any one of them).

The agent evaluates them every `every_s` seconds (each query bounded by the window it looks at). An alert is a
row of the `alerts` table from when it fires until it clears (kept as a history). Open alerts show on the
fleet page, as JSON at GET /alerts, and in /metrics (`airwatt_alert_active`), so Prometheus Alertmanager can
route them; an optional webhook gets a POST when alerts fire and when they clear. An operator acknowledges one
with the operator token (POST /alerts/ack): it stays open, marked acknowledged, until it clears.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import aqi, meters, rollup, store
from .dbthread import DbThread

log = logging.getLogger("airwatt.alerts")

RULES = ("co2", "pm25_aqi", "offline", "buffer", "sync_lag", "meter_missing")


@dataclass(frozen=True)
class Firing:
    rule: str
    device: str  # '' for the whole agent (sync lag)
    value: float
    threshold: float


def _status(d: dict) -> dict:
    try:
        st = json.loads(d["last_status"]) if d["last_status"] else {}
    except ValueError:
        st = {}
    return st if isinstance(st, dict) else {}


def evaluate(db: Any, now: float, cfg: Any, platform: bool) -> list[Firing]:
    """The alerts that hold at `now` (cfg: config.AlertsConfig; platform: whether sync is configured)."""
    out: list[Firing] = []
    for d in store.list_devices(db):
        dev, interval = d["id"], d["interval_s"] or 60
        try:
            sensors = set(json.loads(d["sensors"] or "[]"))
        except ValueError:
            sensors = set()
        if d["last_seen"] is not None and now - d["last_seen"] > cfg.offline_intervals * interval:
            out.append(Firing("offline", dev, now - d["last_seen"], cfg.offline_intervals * interval))
        depth = _status(d).get("buffer_depth")
        if isinstance(depth, int) and depth > cfg.buffer_fraction * cfg.buffer_capacity:
            out.append(Firing("buffer", dev, depth, cfg.buffer_fraction * cfg.buffer_capacity))
        if "co2" in sensors:
            start = now - cfg.co2_minutes * 60
            n, low, first = db.execute(
                "SELECT count(co2), min(co2), min(t) FROM readings WHERE device = ? AND t > ? AND t <= ?"
                " AND co2 IS NOT NULL AND " + rollup.GOOD_FLAGS_SQL, (dev, start, now)).fetchone()
            # over the threshold all the time: every reading of the window above it, and readings from its start
            if n >= 2 and low > cfg.co2_ppm and first <= start + 2 * interval:
                out.append(Firing("co2", dev, low, cfg.co2_ppm))
        if "pm" in sensors:
            first_h, last_h = aqi.clock_hours(now)
            hours = rollup.hours(db, dev, ("pm25",), first_h, last_h + 1)["pm25"]
            mean, _n = aqi.mean_of_hours([h[4] for h in hours])
            if mean is not None:
                sub = aqi.sub_index("pm25", mean)
                if sub.level >= cfg.pm25_aqi_level:
                    out.append(Firing("pm25_aqi", dev, sub.aqi, aqi.LEVELS[cfg.pm25_aqi_level][0]))
        window = cfg.meter_missing_intervals * interval
        online = d["last_seen"] is not None and now - d["last_seen"] <= cfg.offline_intervals * interval
        if "energy" in sensors and online and d["first_seen"] is not None and d["first_seen"] < now - window:
            heard = dict(db.execute("SELECT instance, count(*) FROM readings WHERE device = ? AND t > ? AND t <= ?"
                                    " AND sensor = 'energy' GROUP BY instance", (dev, now - window, now)).fetchall())
            # a board with several meters: each one on its own (value: how many are silent)
            listed = [m["instance"] for m in meters.of_device(db, dev)]
            silent = [i for i in listed if not heard.get(i)] if listed else ([] if heard else [0])
            if silent:
                out.append(Firing("meter_missing", dev, len(silent) if listed else 0, window))
    if platform:
        oldest = db.execute("SELECT min(received) FROM readings INDEXED BY readings_unsynced"
                            " WHERE synced_at IS NULL").fetchone()[0]
        if oldest is not None and now - oldest > cfg.sync_lag_s:
            out.append(Firing("sync_lag", "", now - oldest, cfg.sync_lag_s))
    return out


def refresh(conn: sqlite3.Connection, firing: list[Firing], now: float) -> tuple[list[dict], list[dict]]:
    """Bring the alerts table in line with what fires now; returns (alerts newly fired, alerts cleared)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        open_ = {(r[1], r[2]): r[0] for r in conn.execute(
            "SELECT id, rule, device FROM alerts WHERE cleared_at IS NULL").fetchall()}
        now_keys = {(f.rule, f.device): f for f in firing}
        fired, cleared = [], []
        for key, f in now_keys.items():
            if key in open_:
                conn.execute("UPDATE alerts SET value = ? WHERE id = ?", (f.value, open_[key]))
            else:
                cur = conn.execute("INSERT INTO alerts(rule, device, since, value, threshold) VALUES (?, ?, ?, ?, ?)",
                                   (f.rule, f.device, now, f.value, f.threshold))
                fired.append(cur.lastrowid)
        for key, ident in open_.items():
            if key not in now_keys:
                conn.execute("UPDATE alerts SET cleared_at = ? WHERE id = ?", (now, ident))
                cleared.append(ident)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return _rows(conn, fired), _rows(conn, cleared)


def _rows(conn: Any, ids: list[int]) -> list[dict]:
    if not ids:
        return []
    cur = conn.execute("SELECT * FROM alerts WHERE id IN (%s) ORDER BY id" % ",".join("?" * len(ids)), ids)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def open_alerts(db: Any) -> list[dict]:
    """The alerts open now, oldest first."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alerts'").fetchone():
        return []
    cur = db.execute("SELECT * FROM alerts WHERE cleared_at IS NULL ORDER BY since, id")
    names = [c[0] for c in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def acknowledge(conn: sqlite3.Connection, ident: int, now: float) -> bool:
    """Mark an open alert acknowledged (the first time stands); False when it is not open."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT acked_at FROM alerts WHERE id = ? AND cleared_at IS NULL", (ident,)).fetchone()
        if row is not None and row[0] is None:
            conn.execute("UPDATE alerts SET acked_at = ? WHERE id = ?", (now, ident))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return row is not None


# -- in the agent --------------------------------------------------------------------------------------------

EVALUATOR_KEY = web.AppKey("airwatt_alerts", object)


class Evaluator:
    """Evaluates the rules every cfg.every_s seconds on its own connection and thread; sends the webhook."""

    def __init__(self, db_file: str, cfg: Any, platform: bool) -> None:
        self.db_file, self.cfg, self.platform = db_file, cfg, platform
        self.thread = DbThread(lambda: store.connect(db_file), "airwatt-alerts")
        self.task: asyncio.Task | None = None
        self.webhook_failures = 0

    def _run(self, fn: Any, *args: Any) -> Any:
        return self.thread.call(fn, *args)

    def _evaluate(self, now: float) -> tuple[list[dict], list[dict]]:
        conn = self.thread.connection()
        return refresh(conn, evaluate(conn, now, self.cfg, self.platform), now)

    def _ack(self, ident: int, now: float) -> bool:
        return acknowledge(self.thread.connection(), ident, now)

    async def run_ack(self, ident: int) -> bool:
        return await self._run(self._ack, ident, time.time())

    async def once(self) -> tuple[list[dict], list[dict]]:
        fired, cleared = await self._run(self._evaluate, time.time())
        if self.cfg.webhook_url and (fired or cleared):
            await self._post(fired, cleared)
        return fired, cleared

    async def _post(self, fired: list[dict], cleared: list[dict]) -> None:
        import aiohttp

        body = {"source": "airwatt", "firing": fired, "resolved": cleared}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.post(self.cfg.webhook_url, json=body) as resp:
                    if resp.status >= 300:
                        raise RuntimeError("answered %d" % resp.status)
        except Exception as err:  # the alert stays on the pages, /alerts and /metrics
            self.webhook_failures += 1
            log.warning("alert webhook %s failed: %s", self.cfg.webhook_url, err)

    async def start(self, _app: Any = None) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.once()
            except sqlite3.Error as err:
                log.warning("alerts not evaluated: %s", err)
            await asyncio.sleep(self.cfg.every_s)

    async def stop(self, _app: Any = None) -> None:
        await self.thread.close(self.task)


def setup_alerts(app: web.Application, db_file: str, cfg: Any, platform: bool) -> Evaluator:
    """The evaluation task, and EVALUATOR_KEY for the pages (agent/web/pages.py serves GET /alerts and
    POST /alerts/ack)."""
    ev = Evaluator(db_file, cfg, platform)
    app[EVALUATOR_KEY] = ev
    app.on_startup.append(ev.start)
    app.on_cleanup.append(ev.stop)
    return ev
