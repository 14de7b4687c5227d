"""GET /metrics in the Prometheus text exposition format (version 0.0.4).

Counters come from this process (they restart at zero, as Prometheus counters may); gauges are read from the
store on a fresh read-only connection in a worker thread, so a large table never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import sqlite_utils

from . import sync_store
from .ingest import Stats

REJECT_REASONS = ("too_large", "unknown_device", "bad_signature", "invalid", "device_mismatch", "busy", "store_failed")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def read_gauges(db_file: str | Path) -> dict:
    """Store figures for /metrics (runs in a worker thread on its own connection)."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_file, uri=True, timeout=5)
    try:
        pending, oldest, last_ok = sync_store.backlog(sqlite_utils.Database(conn))
        stored = conn.execute("SELECT max(id) FROM readings").fetchone()[0] or 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'rollup_upto'").fetchone()
        rolled = int(row[0]) if row else 0
        seen = conn.execute("SELECT id, last_seen FROM devices ORDER BY id").fetchall()
        has_alerts = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alerts'").fetchone()
        alerts = conn.execute("SELECT rule, device, acked_at IS NOT NULL, since FROM alerts WHERE cleared_at IS NULL"
                              " ORDER BY rule, device").fetchall() if has_alerts else []
    finally:
        conn.close()
    return {"pending": pending, "oldest_pending": oldest, "stored": stored, "last_sync_ok": last_ok, "seen": seen,
            "alerts": alerts, "rollup_behind": max(stored - rolled, 0)}


def render(stats: Stats, gauges: dict, now: float) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append("# HELP %s %s" % (name, help_))
        lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            lines.append("%s%s %s" % (name, labels, repr(float(value)) if isinstance(value, float) else value))

    metric("airwatt_batches_accepted_total", "counter", "Upload batches answered 200.", [("", stats.batches_accepted)])
    metric(
        "airwatt_readings_accepted_total",
        "counter",
        "Readings newly stored (replays not counted again).",
        [("", stats.readings_accepted)],
    )
    metric(
        "airwatt_readings_received_total",
        "counter",
        "Readings in accepted batches, replays included.",
        [("", stats.readings_received)],
    )
    reasons = sorted(set(REJECT_REASONS) | set(stats.rejected))
    metric(
        "airwatt_batches_rejected_total",
        "counter",
        "Upload batches refused, by reason.",
        [('{reason="%s"}' % _label(r), stats.rejected.get(r, 0)) for r in reasons],
    )
    metric("airwatt_ingest_commits_total", "counter", "Group commits of the ingest writer.", [("", stats.commits)])
    metric("airwatt_readings_stored", "gauge", "Highest reading row id in the store.", [("", gauges["stored"])])
    metric(
        "airwatt_readings_pending_sync",
        "gauge",
        "Readings not yet confirmed by the platform.",
        [("", gauges["pending"])],
    )
    lag = 0.0 if gauges["oldest_pending"] is None else max(0.0, now - gauges["oldest_pending"])
    metric(
        "airwatt_sync_lag_seconds",
        "gauge",
        "Age of the oldest reading waiting for sync (0 when none).",
        [("", lag)],
    )
    if gauges["last_sync_ok"] is not None:
        metric(
            "airwatt_last_sync_success_timestamp_seconds",
            "gauge",
            "Unix time of the last sync the platform confirmed.",
            [("", gauges["last_sync_ok"])],
        )
    metric(
        "airwatt_device_last_seen_timestamp_seconds",
        "gauge",
        "Unix time of each device's last accepted upload (devices never heard from are left out).",
        [('{device="%s"}' % _label(dev), seen) for dev, seen in gauges["seen"] if seen is not None],
    )
    metric(
        "airwatt_rollup_behind_readings",
        "gauge",
        "Readings stored but not yet in the hourly/daily rollups (the pages lag by these).",
        [("", gauges.get("rollup_behind", 0))],
    )
    metric(
        "airwatt_alert_active",
        "gauge",
        "1 for each open alert (see GET /alerts); acked=\"1\" once an operator acknowledged it.",
        [('{rule="%s",device="%s",acked="%d"}' % (_label(rule), _label(dev), acked), 1)
         for rule, dev, acked, _since in gauges.get("alerts", [])],
    )
    return "\n".join(lines) + "\n"


async def metrics_text(stats: Stats, db_file: str | Path) -> str:
    gauges = await asyncio.get_running_loop().run_in_executor(None, read_gauges, db_file)
    return render(stats, gauges, time.time())
