"""The agent's SQLite store: schema, migrations, durability settings, device and reading queries."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from airwatt.agent import ingest, store, sync_store, writer
from airwatt.protocol import fields
from airwatt.protocol.models import parse_batch

from agent_helpers import body


def _ingest(db, device, seqs, received=None, **kw):
    """Store a batch through the ingest writer's own code path (one transaction)."""
    job = ingest.job_from_batch(parse_batch(body(device, seqs, **kw)), received or time.time())
    with store.transaction(db):
        return writer.write_job(db.conn, job, writer.Known())


def test_schema_has_the_contract_tables_and_plain_columns(data_dir):
    db = store.open_db(data_dir)
    assert set(db.table_names()) >= {"devices", "readings", "boots", "sync_log", "meta"}
    cols = {c.name: c.type for c in db["readings"].columns}
    for name in ("id", "device", "seq", "boot_id", "sensor", "t", "t_source", "ticks", "received", "flags",
                 "synced_at"):
        assert name in cols
    assert "boot" not in cols and cols["boot_id"] == "INTEGER"  # the boot's text is in boot_ids, once per boot
    assert db["boot_ids"].pks == ["id"]
    # One column per metric of the protocol's field table, typed from it.
    for _, name, _, _, kind, *_ in fields.METRICS:
        assert cols[name] == ("INTEGER" if kind == "int" else "REAL")
    indexes = {i.name: (i.columns, i.unique) for i in db["readings"].indexes}
    assert indexes["readings_device_seq"] == (["device", "seq"], 1)
    assert indexes["readings_device_t"] == (["device", "t"], 0)
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'readings_unsynced'").fetchone()[0]
    assert "WHERE synced_at IS NULL" in sql
    assert db["boots"].pks == ["device", "boot"]
    assert {c.name for c in db["devices"].columns} == {  # the key is in keys.db
        "id", "name", "site", "lat", "lon", "sensors", "interval_s", "firmware", "first_seen", "last_seen",
        "last_status", "created",
    }


def test_wal_and_full_sync(data_dir):
    db = store.open_db(data_dir)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # WAL is a property of the file: a plain sqlite3 connection sees it too.
    plain = sqlite3.connect(store.db_path(data_dir))
    assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    plain.close()


def test_migrations_run_once_in_order_and_record_the_version(data_dir, monkeypatch):
    db = store.open_db(data_dir)
    shipped = len(store.MIGRATIONS)
    assert store.schema_version(db) == shipped
    store.add_device(db, "keep-me")
    db.close()
    ran = []

    def m_next(db):
        ran.append(shipped + 1)
        db["readings"].add_column("note", str)

    def m_after(db):
        ran.append(shipped + 2)
        db.execute("CREATE INDEX readings_note ON readings(note)")

    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS + [m_next, m_after])
    db = store.open_db(data_dir)
    assert ran == [shipped + 1, shipped + 2] and store.schema_version(db) == shipped + 2
    assert "note" in {c.name for c in db["readings"].columns}
    assert store.get_device(db, "keep-me") is not None  # data survives
    db.close()
    db = store.open_db(data_dir)  # reopening applies nothing again
    assert ran == [shipped + 1, shipped + 2]
    db.close()


def test_a_failing_migration_leaves_the_file_as_it_was(data_dir, monkeypatch):
    store.open_db(data_dir).close()

    def broken(db):
        db["readings"].add_column("half", str)
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS + [broken])
    with pytest.raises(RuntimeError):
        store.open_db(data_dir)
    monkeypatch.undo()
    db = store.open_db(data_dir)
    assert store.schema_version(db) == len(store.MIGRATIONS)
    assert "half" not in {c.name for c in db["readings"].columns}


def test_add_device_makes_a_32_byte_key_and_refuses_bad_input(data_dir):
    db = store.open_db(data_dir)
    key = store.add_device(db, "hall-01", name="Hall", site="City Hall", lat=16.4, lon=102.8, sensors=["pm"],
                           interval_s=30)
    assert len(bytes.fromhex(key)) == 32
    assert store.add_device(db, "hall-02") != key
    dev = store.get_device(db, "hall-01")
    assert (dev["name"], dev["site"], dev["lat"], dev["lon"], dev["interval_s"]) == (
        "Hall", "City Hall", 16.4, 102.8, 30)
    assert json.loads(dev["sensors"]) == ["pm"]
    assert store.device_key(db, "hall-01") == bytes.fromhex(key)
    assert store.device_key(db, "nope") is None and store.get_device(db, "nope") is None
    for bad in (
        dict(id="hall-01"),  # exists
        dict(id="Hall"),  # not in the protocol's device alphabet
        dict(id="x" * 33),
        dict(id=""),
        dict(id="ok", sensors=["pm", "radon"]),
        dict(id="ok", sensors=[]),
        dict(id="ok", lat=91),
        dict(id="ok", lon=-181),
        dict(id="ok", interval_s=0),
    ):
        with pytest.raises(ValueError):
            store.add_device(db, **bad)
    assert [d["id"] for d in store.list_devices(db)] == ["hall-01", "hall-02"]


def test_list_devices_never_shows_keys_and_counts_readings(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a")
    store.add_device(db, "b")
    _ingest(db, "a", [1, 2, 3])
    listed = store.list_devices(db)
    assert all("key" not in d for d in listed)
    assert [(d["id"], d["readings"]) for d in listed] == [("a", 3), ("b", 0)]


def test_readings_filter_by_time_and_order_by_seq(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a")
    store.add_device(db, "b")
    _ingest(db, "a", range(1, 11), t0=1_790_000_000)  # t = t0 + seq
    _ingest(db, "b", [1], t0=1_790_000_000)
    got = store.readings(db, "a")
    assert [r["seq"] for r in got] == list(range(1, 11))
    assert [r["seq"] for r in store.readings(db, "a", since=1_790_000_003, until=1_790_000_006)] == [3, 4, 5]
    assert [r["seq"] for r in store.readings(db, "a", since=1_790_000_009)] == [9, 10]
    assert store.readings(db, "nope") == []


def test_pending_mark_synced_and_sync_state(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a", site="City Hall", lat=16.4, lon=102.8)
    store.add_device(db, "b")
    _ingest(db, "b", [1, 2], received=1000.0)
    _ingest(db, "a", [1, 2, 3], received=2000.0)
    todo = sync_store.pending(db, 10)
    assert [(r["device"], r["seq"]) for r in todo] == [("b", 1), ("b", 2), ("a", 1), ("a", 2), ("a", 3)]
    assert (todo[2]["site"], todo[2]["lat"], todo[2]["lon"]) == ("City Hall", 16.4, 102.8)
    assert [r["seq"] for r in sync_store.pending(db, 2)] == [1, 2]
    assert sync_store.mark_synced(db, [todo[0]["id"], todo[1]["id"]], 3000.0) == 2
    assert sync_store.mark_synced(db, [todo[0]["id"]], 3001.0) == 0  # already synced: the first time stands
    assert [r["device"] for r in sync_store.pending(db, 10)] == ["a", "a", "a"]
    state = sync_store.sync_state(db)
    assert (state["pending"], state["synced"], state["oldest_pending_received"], state["last_sync_ok"]) == (
        3, 2, 2000.0, None)
    sync_store.log_sync(db, False, 503, 3, "platform busy")
    sync_store.log_sync(db, True, 201, 3)
    sync_store.log_sync(db, False, None, 3, "timeout")
    state = sync_store.sync_state(db)
    assert state["last_sync_ok"] is not None and time.time() - 5 < state["last_sync_ok"] <= time.time()
    assert [(e["status"], e["detail"]) for e in state["last_errors"]] == [(None, "timeout"), (503, "platform busy")]
    assert float(store.get_meta(db, "last_sync_ok")) == state["last_sync_ok"]


def test_mark_synced_handles_more_ids_than_sqlite_parameters(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a")
    for b in range(30):
        _ingest(db, "a", range(b * 100 + 1, b * 100 + 101))
    ids = [r["id"] for r in sync_store.pending(db, 5000)]
    assert len(ids) == 3000
    assert sync_store.mark_synced(db, ids, 1.0) == 3000
    assert sync_store.pending(db, 10) == []


def test_file_reads_well_in_plain_sqlite3(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a", site="City Hall")
    _ingest(db, "a", [1, 2, 3], t0=1_790_000_000)
    db.close()
    plain = sqlite3.connect(store.db_path(data_dir))
    row = plain.execute(
        "SELECT d.site, r.seq, datetime(r.t, 'unixepoch'), r.sensor, r.pm25, r.voltage FROM readings r"
        " JOIN devices d ON d.id = r.device WHERE r.sensor = 'pm'"
    ).fetchone()
    assert row == ("City Hall", 1, "2026-09-21 14:13:21", "pm", 27, None)
    plain.close()


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def _readings_files(data_dir) -> list:
    return [p for p in data_dir.iterdir() if p.name.startswith(store.DB_NAME)]


def test_data_dir_is_0700_and_the_databases_0600_with_their_wal_and_shm(data_dir):
    db = store.open_db(data_dir)
    key = store.add_device(db, "dev-1")
    _ingest(db, "dev-1", [1, 2, 3])
    assert _mode(data_dir) == 0o700
    files = {p.name: _mode(p) for p in data_dir.iterdir()}
    for name in (store.DB_NAME, store.KEYS_NAME):
        for suffix in ("", "-wal", "-shm"):
            assert files.get(name + suffix) == 0o600, (name + suffix, files)
    # the readings database, as Datasette would open it, holds no key: not as a column, not as bytes
    assert "key" not in {c.name for c in db["devices"].columns}
    assert all(key.encode() not in p.read_bytes() for p in _readings_files(data_dir))
    keys = sqlite3.connect(store.keys_path(data_dir))
    assert keys.execute("SELECT device, key FROM device_keys").fetchall() == [("dev-1", key)]
    keys.close()
    db.close()


def test_an_older_data_dir_is_tightened_and_its_keys_move_out_of_the_readings_database(data_dir, monkeypatch):
    """A data dir from before the key store: keys in airwatt.db, files 0644. Opening it moves each key to keys.db,
    removes it from airwatt.db (column and bytes), and the same key still opens the same device."""
    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS[:1])
    store.open_db(data_dir).close()
    old_keys = {"dev-%d" % n: "%064x" % (0xC0FFEE00 + n) for n in range(500)}
    conn = sqlite3.connect(store.db_path(data_dir))
    conn.executemany("INSERT INTO devices(id, key, sensors, created) VALUES (?, ?, '[\"pm\"]', 0)", old_keys.items())
    conn.commit()
    conn.close()
    for p in data_dir.iterdir():
        p.chmod(0o644)
    (data_dir / "airwatt.db-wal").unlink(missing_ok=True)
    assert any(old_keys["dev-1"].encode() in p.read_bytes() for p in _readings_files(data_dir))
    monkeypatch.undo()

    db = store.open_db(data_dir)
    assert store.schema_version(db) == len(store.MIGRATIONS)
    assert {d: store.device_key(db, d).hex() for d in old_keys} == old_keys
    assert "key" not in {c.name for c in db["devices"].columns}
    _ingest(db, "dev-1", [1, 2])  # readings go on as before
    db.close()
    for p in _readings_files(data_dir):
        assert all(k.encode() not in p.read_bytes() for k in old_keys.values()), p
        assert _mode(p) == 0o600, p
    assert _mode(store.keys_path(data_dir)) == 0o600
    db = store.open_db(data_dir)  # reopening changes nothing
    assert {d: store.device_key(db, d).hex() for d in old_keys} == old_keys
    db.close()


def test_a_device_left_without_a_key_can_be_added_again(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "dev-1")
    db.execute("DELETE FROM keys.device_keys WHERE device = 'dev-1'")  # as a crash between the two commits would
    assert store.device_key(db, "dev-1") is None
    key = store.add_device(db, "dev-1", site="Library")
    assert store.device_key(db, "dev-1") == bytes.fromhex(key) and store.get_device(db, "dev-1")["site"] == "Library"
    with pytest.raises(ValueError, match="already exists"):
        store.add_device(db, "dev-1")
    db.close()


def test_opening_the_store_again_in_one_process_keeps_the_other_connections_locks(data_dir):
    """The app and its sync worker each open_db in one process; other processes read the file all the while.
    Setting the files' modes must not open and close the database file: that drops the process's POSIX locks,
    a reader elsewhere then takes itself for the last one and removes the WAL, and later commits vanish."""
    a = store.open_db(data_dir)
    store.add_device(a, "dev-1")
    b = store.open_db(data_dir)
    count = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
             "print(c.execute('SELECT count(*) FROM readings').fetchone()[0]); c.close()")
    for n in range(1, 4):
        _ingest(a, "dev-1", [n])
        seen = subprocess.run([sys.executable, "-c", count, str(store.db_path(data_dir))], capture_output=True,
                              text=True, check=True).stdout
        assert int(seen) == n
    a.close()
    b.close()


def test_boot_ids_migration_keeps_every_readings_boot(tmp_path, monkeypatch):
    """A store made before migration 7 (boot text on every row) keeps each reading's boot, now by id, and its
    other values and indexes; new readings of an old boot reuse its id."""
    data_dir = tmp_path / "old"
    shipped = store.MIGRATIONS
    monkeypatch.setattr(store, "MIGRATIONS", shipped[:6])  # an agent of schema version 6
    db = store.open_db(data_dir)
    store.add_device(db, "dev-1")
    store.add_device(db, "dev-2")
    old = [("dev-1", 1, "0000aaaa", 1790000000.5), ("dev-1", 2, "0000aaaa", 1790000001.0),
           ("dev-1", 3, "0000bbbb", None), ("dev-2", 1, "0000aaaa", 1790000002.0), ("dev-2", 9, "ffff0001", 1.5)]
    with store.transaction(db):
        db.conn.executemany("INSERT INTO readings(device, seq, boot, sensor, t, t_source, ticks, received, flags, co2,"
                            " synced_at) VALUES (?, ?, ?, 'co2', ?, 'board', 5, 1790000003.0, '', 415, NULL)", old)
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings'"
                         " ORDER BY name").fetchall()
    db.close()
    monkeypatch.setattr(store, "MIGRATIONS", shipped)
    db = store.open_db(data_dir)  # migrates
    assert store.schema_version(db) == len(store.MIGRATIONS)
    got = [(r["device"], r["seq"], r["boot"], r["t"], r["co2"]) for d in ("dev-1", "dev-2")
           for r in store.readings(db, d)]
    assert got == [(d, seq, boot, t, 415) for d, seq, boot, t in old]
    assert db.execute("SELECT count(*) FROM boot_ids").fetchone()[0] == 4  # per (device, boot)
    assert "boot" not in {c.name for c in db["readings"].columns}
    assert db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings'"
                      " ORDER BY name").fetchall() == indexes
    assert [r[0] for r in db.execute("SELECT seq FROM readings INDEXED BY readings_unsynced WHERE synced_at IS NULL"
                                      " ORDER BY id")] == [1, 2, 3, 1, 9]
    _ingest(db, "dev-2", [10], boot="ffff0001")
    ids = {r["seq"]: r["boot_id"] for r in store.readings(db, "dev-2")}
    assert ids[10] == ids[9] and db.execute("SELECT count(*) FROM boot_ids").fetchone()[0] == 4
    db.close()
