"""`airwatt bench pages` at a tiny size (it works; no timing is asserted), and the fast CSV export it times."""

from __future__ import annotations

import csv
import io
import sqlite3

from airwatt.agent import commands, store
from airwatt.agent.bench import pages as bench_pages

T0 = 1_790_000_000.0


def test_bench_pages_runs_at_a_tiny_size(tmp_path):
    result = bench_pages.run(boards=2, days=2, requests=1, export_days=1, data_dir=str(tmp_path), log=lambda m: None)
    text = bench_pages.format_result(result)
    for name, _path in bench_pages.pages(2, 0):
        assert "| %s |" % name in text
    assert result["1d_readings"] == 2 * int(86400 * bench_pages.RATE)
    assert result["big_readings"] == 2 * int(2 * 86400 * bench_pages.RATE)
    conn = sqlite3.connect(store.db_path(tmp_path / "store-2d"))
    # every reading synced but the last hour's; the rollups hold every reading
    unsynced_oldest = conn.execute("select min(t) from readings where synced_at is null").fetchone()[0]
    assert conn.execute("select count(*) from readings where synced_at is null and t < ?",
                        [unsynced_oldest]).fetchone()[0] == 0
    assert conn.execute("select sum(readings) from rollup_state").fetchone()[0] == result["big_readings"]
    conn.close()
    assert 0 < result["export"]["rows"] <= result["big_readings"] and result["bytes_per_reading"] > 0
    assert "goals:" in text and result["big"]["peak_rss_mb"] > 0


def test_fast_csv_export_is_what_the_csv_module_writes(tmp_path):
    # times to the millisecond as the writer stores them (SQLite writes numbers to 15 significant digits)
    db = store.open_db(tmp_path)
    store.add_device(db, "a", site='Hall "A", floor 2', lat=16.43, lon=102.83)
    store.add_device(db, "b")
    rows = [
        {"device": "a", "seq": 1, "sensor": "energy", "t": T0 + 0.123, "flags": "stuck,retried", "voltage": 229.8,
         "current": 1.234, "power": 281.5, "energy_wh": 4294967295, "frequency": 50.0, "pf": 0.97},
        {"device": "a", "seq": 2, "sensor": "pm", "t": T0 + 1234.568, "flags": "", "pm1": 0, "pm25": 27,
         "pm10": 41},
        {"device": "a", "seq": 3, "sensor": "co2", "t": None, "flags": "out_of_range", "co2": 40000,
         "temperature": -9.99, "humidity": 61.5},
        {"device": "b", "seq": 7, "sensor": "co2", "t": T0 + 0.999, "flags": "", "co2": 415,
         "temperature": 26.43, "humidity": 100.0},
    ]
    with store.transaction(db):
        db["readings"].insert_all([dict(r, boot="0a1b2c3d", t_source="board" if r["t"] else "unknown", ticks=5,
                                        received=T0) for r in rows])
    for since, jobs in ((None, 1), (T0 + 1, 1), (None, 2)):  # jobs 2: devices formatted side by side
        out = io.StringIO()
        n = commands.export_csv(db, out, since, None, jobs)
        want = io.StringIO()
        w = csv.writer(want, lineterminator="\n")
        names = [c[0] for c in commands.EXPORT_COLUMNS]
        w.writerow(names)
        for row in commands.export_rows(db, since, None):
            w.writerow(commands._csv(row[k]) for k in names)
        assert out.getvalue() == want.getvalue()
        assert n == (4 if since is None else 1)
    db.close()
