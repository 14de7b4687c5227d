"""Retention: raw readings go keep_synced_days after they were synced, never before, never unsynced ones; the
rollups and counters stay; the file stops growing."""

from __future__ import annotations

import pytest

from airwatt.agent import config, retention, rollup, store, sync_store

DAY = 86400.0
T0 = 1_790_000_000.0


def _insert(db, device: str, first_seq: int, n: int, t: float, step: float) -> None:
    rows = [{"device": device, "seq": first_seq + k, "boot": "0a1b2c3d", "sensor": "energy", "t": t + k * step,
             "t_source": "board", "ticks": k, "received": t + k * step + 2, "flags": "",
             "energy_wh": int(1000 + (first_seq + k) * 5), "power": 300.0, "voltage": 229.5} for k in range(n)]
    with store.transaction(db):
        store.insert_readings(db, rows)


def test_only_synced_rolled_up_and_old_enough_readings_go(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a")
    _insert(db, "a", 1, 300, T0, 600)  # seqs 1..300 over 50 hours
    ids = [r["id"] for r in store.readings(db, "a")]
    sync_store.mark_synced(db, ids[:100], T0 + 10 * 3600)  # synced early
    sync_store.mark_synced(db, ids[150:200], T0 + 40 * 3600)  # synced later
    rollup.catch_up(db.conn)
    _insert(db, "a", 301, 10, T0 + 51 * 3600, 60)  # not rolled up yet
    sync_store.mark_synced(db, [r["id"] for r in store.readings(db, "a")][300:], T0 + 52 * 3600)
    days_before = rollup.daily_wh(db, 0, 2e9, "a")
    hours_before = db.execute("select * from rollup_hour order by 1, 2, 3").fetchall()
    now = T0 + 60 * 3600
    # keep 24 h after sync: the first 100 (synced 50 h ago) go; 150..199 (synced 20 h ago) and unsynced stay
    assert retention.prune(db.conn, 24 * 3600, now, chunk=7) == 100
    left = [r["seq"] for r in store.readings(db, "a")]
    assert left == list(range(101, 311))
    # keep 1 h: the later synced go too, but never an unsynced reading nor one the roller has not taken in
    assert retention.prune(db.conn, 3600, now) == 50
    left = store.readings(db, "a")
    assert [r["seq"] for r in left] == list(range(101, 151)) + list(range(201, 311))
    assert all(r["synced_at"] is None for r in left if r["seq"] <= 300)
    assert retention.prune(db.conn, 3600, now) == 0
    # rollups and counters are kept for good
    assert rollup.daily_wh(db, 0, 2e9, "a") == days_before
    assert db.execute("select * from rollup_hour order by 1, 2, 3").fetchall() == hours_before
    assert store.reading_counts(db) == {"a": 310}
    db.close()


def test_the_file_stops_growing_under_retention(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a")
    pages = []
    for day in range(14):
        t = T0 + day * DAY
        _insert(db, "a", day * 2000 + 1, 2000, t, DAY / 2000)
        pending = [r["id"] for r in sync_store.pending(db, 5000)]
        sync_store.mark_synced(db, pending, t + DAY - 60)
        rollup.catch_up(db.conn)
        retention.prune(db.conn, 3 * DAY, t + DAY)
        pages.append(db.execute("PRAGMA page_count").fetchone()[0])
    # about 3-4 days of raw readings stay; the rollups grow by a few rows a day
    assert len(store.readings(db, "a")) <= 4 * 2000
    assert pages[-1] <= pages[5] * 1.1, pages
    db.close()


def test_retention_is_configured_in_airwatt_toml(tmp_path):
    (tmp_path / "airwatt.toml").write_text("[store]\nkeep_synced_days = 30\n")
    assert config.load_config(tmp_path).store.keep_synced_days == 30
    (tmp_path / "airwatt.toml").write_text("[store]\nkeep_synced_days = 0\n")
    with pytest.raises(config.ConfigError, match="store.keep_synced_days"):
        config.load_config(tmp_path)
    assert config.load_config(tmp_path / "none").store.keep_synced_days == 90


def test_stats_prints_bytes_per_reading_and_what_retention_kept(data_dir, capsys):
    from airwatt.agent.cli import main

    db = store.open_db(data_dir)
    store.add_device(db, "a")
    _insert(db, "a", 1, 3000, T0, 60)
    sync_store.mark_synced(db, [r["id"] for r in store.readings(db, "a")][:1000], T0 + DAY)
    rollup.catch_up(db.conn)
    assert retention.prune(db.conn, DAY, T0 + 3 * DAY) == 1000
    db.close()
    assert main(["stats", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "readings kept:    2000 of 3000 stored" in out
    per_reading = float(out.split("bytes per reading: ")[1].split()[0])
    assert 20 < per_reading < 400
