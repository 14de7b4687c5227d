"""Every query behind the pages, the export and /metrics searches an index over the range it shows: none scans
the readings or the rollups whole (the plans SQLite chooses, by EXPLAIN QUERY PLAN)."""

from __future__ import annotations

import io
import re
import sqlite3
import time

import sqlite_utils

from airwatt.agent import carbon, commands, rollup, store
from airwatt.agent.web import city, downloads, pages
from pages_fixture import fill

BIG = ("readings", "rollup_hour", "rollup_day")


def test_page_queries_never_scan_a_big_table(tmp_path):
    data_dir = tmp_path / "d"
    db = store.open_db(data_dir)
    now = float(int(time.time()))
    fill(db, now)
    rollup.catch_up(db.conn)
    db.close()
    conn = sqlite3.connect(store.db_path(data_dir))
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    rdb = sqlite_utils.Database(conn)
    pages.fleet_rows(rdb, None, now)
    pages.device_data(rdb, "hall-01", now - 86400, now, now - 7 * 86400)
    pages.device_data(rdb, "hall-01", now - 30 * 86400, now, now - 30 * 86400)
    pages.air_data(rdb, now)
    pages.carbon_data(rdb, now - 31 * 86400, now, carbon.FACTORS)
    rollup.carbon_months(rdb, now - 366 * 86400, now, carbon.FACTORS)
    commands.export_csv(rdb, io.StringIO(), now - 3600, now)  # the one pass over a range of the rowid
    pages.sync_data(rdb)
    list(commands.export_rows(rdb, now - 3600, now))
    city.city_data(rdb, now, carbon.FACTORS)
    pages.first_reading(rdb, "hall-01", now - 86400, now)
    downloads.footprint(rdb, carbon.local_day(now)[:7], carbon.FACTORS)
    downloads._csv_chunk(rdb, store.get_device(rdb, "hall-01"), "pm", now - 86400, now)
    downloads._json_chunk(rdb, "hall-01", None, now - 3600, now)
    conn.set_trace_callback(None)
    statements = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(statements) > 10
    for sql in statements:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
        # a plan names a table by its alias ("SCAN r USING INDEX ...")
        names = {alias: table for table, alias in re.findall(r"(?i)\b(?:from|join)\s+(\w+)\s+(?:as\s+)?(\w+)", sql)}
        # the partial index of unsynced readings holds only the sync queue: walking it is fine
        scans = [p for p in plan if p.startswith("SCAN") and names.get(p.split()[1], p.split()[1]) in BIG
                 and "INDEX readings_unsynced" not in p]
        assert not scans, (sql, plan)
    conn.close()
