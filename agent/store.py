"""The agent's SQLite store (sqlite-utils): devices, readings, boot clock offsets, sync log, meta.

One file, `airwatt.db` in the data dir, WAL mode with synchronous=FULL so a commit survives a power cut.
Plain columns and ISO-free REAL Unix times, so the file reads well in `sqlite3` and Datasette.
Schema changes are migration functions applied in order; `meta.schema_version` says how many ran.

The device keys, which sign every upload, are NOT in that file (it is opened in Datasette and handed to data
people): they live in `keys.db` beside it, attached to the connections `open_db` makes as schema `keys`.
The data dir is created 0700, and both files (with their -wal/-shm, which SQLite creates with the file's
mode) are 0600.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from airwatt.protocol import fields

from .reading import METRIC_COLUMNS

DB_NAME = "airwatt.db"
KEYS_NAME = "keys.db"
_METRIC_TYPES = {row[1]: (int if row[4] == "int" else float) for row in fields.METRICS}
BUSY_TIMEOUT_MS = 10000


def _m1_initial(db: sqlite_utils.Database) -> None:
    db["devices"].create(
        {
            "id": str,
            "key": str,
            "name": str,
            "site": str,
            "lat": float,
            "lon": float,
            "sensors": str,
            "interval_s": int,
            "firmware": str,
            "first_seen": float,
            "last_seen": float,
            "last_status": str,
            "created": float,
        },
        pk="id",
        not_null={"key"},
        defaults={"interval_s": 60},
    )
    columns: dict[str, Any] = {
        "id": int,
        "device": str,
        "seq": int,
        "boot": str,
        "sensor": str,
        "t": float,
        "t_source": str,
        "ticks": int,
        "received": float,
        "flags": str,
    }
    columns.update({name: _METRIC_TYPES[name] for name in METRIC_COLUMNS})
    columns["synced_at"] = float
    db["readings"].create(
        columns, pk="id", not_null={"device", "seq", "boot", "sensor", "t_source", "ticks", "received", "flags"}
    )
    # UNIQUE(device, seq) makes ingest idempotent: ON CONFLICT DO NOTHING skips a replayed reading.
    db["readings"].create_index(["device", "seq"], index_name="readings_device_seq", unique=True)
    db["readings"].create_index(["device", "t"], index_name="readings_device_t")
    # The sync worker's queue: only unsynced rows are in this index, so it stays small however old the file.
    db.execute("CREATE INDEX readings_unsynced ON readings(id) WHERE synced_at IS NULL")
    db["boots"].create({"device": str, "boot": str, "offset": float, "learnt": float}, pk=("device", "boot"))
    db["sync_log"].create(
        {"id": int, "at": float, "ok": int, "status": int, "count": int, "detail": str}, pk="id"
    )


def _m2_rollups(db: sqlite_utils.Database) -> None:
    """Hourly and daily rollups and per-device counters (agent/rollup.py), filled by the roller from id 0."""
    for table in ("rollup_hour", "rollup_day"):
        db.execute(
            "CREATE TABLE %s (device TEXT NOT NULL, metric TEXT NOT NULL, start INTEGER NOT NULL, n INTEGER NOT NULL,"
            " min REAL, max REAL, sum REAL NOT NULL, PRIMARY KEY (device, metric, start)) WITHOUT ROWID" % table
        )
    db.execute(
        "CREATE TABLE rollup_state (device TEXT PRIMARY KEY, readings INTEGER NOT NULL DEFAULT 0,"
        " e_seq INTEGER, e_t REAL, e_wh INTEGER)"
    )


def _m3_alerts(db: sqlite_utils.Database) -> None:
    """Alerts (agent/alerts.py): one row per alert from when it fires until it clears, kept as a history."""
    db.execute(
        "CREATE TABLE alerts (id INTEGER PRIMARY KEY, rule TEXT NOT NULL, device TEXT NOT NULL DEFAULT '',"
        " since REAL NOT NULL, value REAL, threshold REAL, acked_at REAL, cleared_at REAL)"
    )
    db.execute("CREATE INDEX alerts_open ON alerts(rule, device) WHERE cleared_at IS NULL")


def _m4_keys_apart(db: sqlite_utils.Database) -> None:
    """Device keys leave the readings database: open_db has already copied them into keys.db (committed on
    their own, so no crash can lose one); drop the column, with secure_delete on so the old bytes are zeroed."""
    unsafe = db.execute(
        "SELECT count(*) FROM devices d LEFT JOIN keys.device_keys k ON k.device = d.id WHERE k.key IS NOT d.key"
    ).fetchone()[0]
    if unsafe:
        raise RuntimeError("%d device keys are not yet in %s: not removing them from %s" % (unsafe, KEYS_NAME, DB_NAME))
    db.execute("PRAGMA main.secure_delete = ON")
    db.execute("ALTER TABLE devices DROP COLUMN key")


def _m5_reading_instance(db: sqlite_utils.Database) -> None:
    """Protocol v2 sensor instances: which sensor of its kind a reading came from (0: the only or first one)."""
    db.execute("ALTER TABLE readings ADD COLUMN instance INTEGER NOT NULL DEFAULT 0")


def _m6_device_settings(db: sqlite_utils.Database) -> None:
    """The settings the agent gives each board, and what the board acknowledged (agent/device_settings.py)."""
    db["device_settings"].create(
        {
            "device": str,
            "rev": int,
            "settings": str,
            "frc": int,
            "frc_rev": int,
            "changed": str,
            "applied_rev": int,
            "applied_at": float,
            "error": str,
            "frc_target": int,
            "frc_correction": int,
            "frc_at": float,
        },
        pk="device",
        not_null={"rev", "settings", "changed"},
        foreign_keys=[("device", "devices", "id")],
    )


def _m7_boot_ids(db: sqlite_utils.Database) -> None:
    """The board's boot id (8 hex characters) leaves every reading row: readings.boot_id is the integer id of
    its (device, boot) in boot_ids, 1-2 bytes a row instead of 9. Existing rows keep their boot, by id. The table
    is copied into a new one in id order (not altered in place, which leaves every page part empty), and its
    indexes are made again as they were."""
    db.execute("CREATE TABLE boot_ids (id INTEGER PRIMARY KEY, device TEXT NOT NULL, boot TEXT NOT NULL,"
               " UNIQUE (device, boot))")
    db.execute("INSERT INTO boot_ids(device, boot) SELECT DISTINCT device, boot FROM readings ORDER BY device, boot")
    table_sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'readings'").fetchone()[0]
    indexes = [r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings'"
                                        " AND sql IS NOT NULL")]
    old = '"boot" TEXT NOT NULL'
    if table_sql.count(old) != 1:
        raise RuntimeError("readings has no column %s to move into boot_ids: %s" % (old, table_sql))
    columns = [c[1] for c in db.execute("PRAGMA table_info(readings)").fetchall()]
    db.execute(table_sql.replace('"readings"', '"readings_m7"', 1).replace(old, '"boot_id" INTEGER NOT NULL'))
    db.execute('INSERT INTO readings_m7(%s) SELECT %s FROM readings r JOIN boot_ids b ON b.device = r.device'
               ' AND b.boot = r.boot ORDER BY r.id' % (
                   ", ".join('"boot_id"' if c == "boot" else '"%s"' % c for c in columns),
                   ", ".join("b.id" if c == "boot" else 'r."%s"' % c for c in columns)))
    db.execute("DROP TABLE readings")
    db.execute("ALTER TABLE readings_m7 RENAME TO readings")
    for sql in indexes:
        db.execute(sql)


def _m8_firmware(db: sqlite_utils.Database) -> None:
    """Firmware releases, their files, rollouts and each board's update (agent/firmware.py)."""
    db["firmware_releases"].create({"version": str, "size": int, "files": str, "built": float, "source": str},
                                   pk="version", not_null={"size", "files", "built"})
    db["firmware_files"].create({"version": str, "path": str, "data": bytes}, pk=("version", "path"),
                                not_null={"data"}, foreign_keys=[("version", "firmware_releases", "version")])
    db["firmware_rollouts"].create({"id": int, "version": str, "created": float, "canary": int, "probation_s": int,
                                    "halted": float, "halted_why": str}, pk="id",
                                   not_null={"version", "created", "canary", "probation_s"},
                                   foreign_keys=[("version", "firmware_releases", "version")])
    db["firmware_devices"].create({"device": str, "rollout": int, "target": str, "canary": int, "running": str,
                                   "state": str, "error": str, "updated": float}, pk="device",
                                  not_null={"rollout", "target", "canary", "state", "error", "updated"},
                                  foreign_keys=[("device", "devices", "id"), ("rollout", "firmware_rollouts", "id")])


def _m9_meters(db: sqlite_utils.Database) -> None:
    """The meters of each board (agent/meters.py), and the energy cursor of each meter (rollup.py) beside
    rollup_state's one."""
    db.execute(
        "CREATE TABLE meters (device TEXT NOT NULL, instance INTEGER NOT NULL, name TEXT NOT NULL, phase TEXT,"
        " circuit TEXT, supply INTEGER NOT NULL, PRIMARY KEY (device, instance))"
    )
    db.execute(
        "CREATE TABLE rollup_meter (device TEXT NOT NULL, instance INTEGER NOT NULL, e_seq INTEGER, e_t REAL,"
        " e_wh INTEGER, PRIMARY KEY (device, instance))"
    )


def _m10_sync_held(db: sqlite_utils.Database) -> None:
    """Refusals counted per reading and readings held back (agent/sync_store.py). IF NOT EXISTS: stores from
    before this migration have the table already (the sync worker used to create it)."""
    db.execute("CREATE TABLE IF NOT EXISTS sync_held (reading INTEGER PRIMARY KEY, tries INTEGER NOT NULL,"
               " held_until REAL, status INTEGER, error TEXT, at REAL)")


# Append new migrations at the end; never edit one that has shipped.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_initial, _m2_rollups, _m3_alerts, _m4_keys_apart, _m5_reading_instance, _m6_device_settings, _m7_boot_ids,
    _m8_firmware, _m9_meters, _m10_sync_held]


def schema_version(db: sqlite_utils.Database) -> int:
    if not db["meta"].exists():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite_utils.Database) -> int:
    """Apply pending migrations, each in its own transaction; returns the schema version."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")  # one migrator at a time, even across processes
    try:
        if not db["meta"].exists():
            db["meta"].create({"key": str, "value": str}, pk="key")
        version = schema_version(db)
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(db)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(number),))
            version = number
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with the agent's durability settings; isolation_level=None: we write BEGIN/COMMIT."""
    conn = sqlite3.connect(
        str(path),
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
        cached_statements=256,  # ingest keeps one prepared INSERT per batch size (1..MAX_READINGS)
    )
    conn.execute("PRAGMA busy_timeout = %d" % BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")  # a COMMIT is on disk before we answer 200
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def db_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / DB_NAME


def db_file(db: sqlite_utils.Database | sqlite3.Connection) -> str:
    """The real path of the file an open store reads (its "main" database)."""
    conn = getattr(db, "conn", db)
    return os.path.realpath(next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"))


def keys_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEYS_NAME


def private_file(path: Path) -> None:
    """Create path empty with mode 0600 if missing, else make it 0600 (with its -wal/-shm, if any): readable by
    the agent's user alone. SQLite gives the -wal/-shm it creates later the database file's mode."""
    try:
        # O_EXCL: an existing file is never opened here, because closing any descriptor of a database file
        # drops every POSIX lock this process holds on it, those of open SQLite connections included.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    for p in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)


def open_db(data_dir: str | Path) -> sqlite_utils.Database:
    """Open (creating and migrating if needed) the data dir's database, with the key store attached."""
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # mode: when created here; an existing dir is kept
    private_file(db_path(data_dir))
    private_file(keys_path(data_dir))
    db = sqlite_utils.Database(connect(db_path(data_dir)))
    db.execute("ATTACH DATABASE ? AS keys", (str(keys_path(data_dir)),))
    db.execute("PRAGMA keys.journal_mode = WAL")
    db.execute("PRAGMA keys.synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS keys.device_keys (device TEXT PRIMARY KEY, key TEXT NOT NULL)")
    moved = _copy_keys_out(db)
    migrate(db)
    if moved:
        db.execute("PRAGMA main.wal_checkpoint(TRUNCATE)")  # the WAL's old pages held the keys too
    return db


def _copy_keys_out(db: sqlite_utils.Database) -> bool:
    """Before _m4_keys_apart: copy the keys of a database that still holds them into keys.db, in a transaction
    that writes keys.db alone (WAL commits of several files are not atomic together)."""
    if not db["devices"].exists() or "key" not in {c.name for c in db["devices"].columns}:
        return False
    with _transaction(db):
        db.execute("INSERT OR REPLACE INTO keys.device_keys(device, key) SELECT id, key FROM main.devices")
    return True


# -- devices ---------------------------------------------------------------------------------------------


def add_device(
    db: sqlite_utils.Database,
    id: str,
    name: str | None = None,
    site: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    sensors: Iterable[str] = fields.SENSORS,
    interval_s: int = 60,
) -> str:
    """Register a device; returns its new key (hex of 32 random bytes). Raises ValueError if it exists or is
    not a valid protocol device id."""
    check_device_id(id)
    sensors = check_sensors(sensors)
    check_location(lat, lon)
    check_interval(interval_s)
    key = secrets.token_hex(32)
    with _transaction(db):
        row = db.execute(
            "SELECT k.key FROM devices d LEFT JOIN keys.device_keys k ON k.device = d.id WHERE d.id = ?", (id,)
        ).fetchone()
        if row is not None and row[0] is not None:
            raise ValueError("device %s already exists" % id)
        # A device without a key (a crash between the two files' commits) is registered afresh.
        db.execute("DELETE FROM devices WHERE id = ?", (id,))
        db.execute(
            "INSERT INTO devices(id, name, site, lat, lon, sensors, interval_s, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (id, name, site, lat, lon, json.dumps(sensors), interval_s, time.time()),
        )
        db.execute("INSERT OR REPLACE INTO keys.device_keys(device, key) VALUES (?, ?)", (id, key))
    return key


def check_location(lat: float | None, lon: float | None) -> None:
    """Raise ValueError unless lat and lon are both given (WGS84, in range) or both absent."""
    if (lat is None) != (lon is None):
        raise ValueError("give both --lat and --lon (a location needs both), or neither")
    if lat is not None and not -90 <= lat <= 90:  # also refuses NaN
        raise ValueError("lat must be within -90..90 (degrees north), not %r" % lat)
    if lon is not None and not -180 <= lon <= 180:
        raise ValueError("lon must be within -180..180 (degrees east), not %r" % lon)


def check_sensors(sensors: Iterable[str]) -> list[str]:
    """The sensor kinds as a list; ValueError unless they are one or more of the protocol's kinds."""
    sensors = list(sensors)
    bad = [s for s in sensors if s not in fields.SENSORS]
    if bad or not sensors:
        raise ValueError("sensors must be some of %s, not %s" % (",".join(fields.SENSORS), ",".join(bad) or "none"))
    return sensors


def check_interval(interval_s: int) -> None:
    if not 1 <= interval_s <= 86400:
        raise ValueError("interval must be 1..86400 seconds, not %r" % interval_s)


def set_device(db: sqlite_utils.Database, id: str, **changes: Any) -> dict:
    """Change a registered device's name, site, lat/lon (together), sensors or interval_s; None values are
    left as they are. Returns the updated row without its key. Raises ValueError for an unknown device or a
    bad value."""
    allowed = ("name", "site", "lat", "lon", "sensors", "interval_s")
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ValueError("cannot set %s on a device" % ", ".join(sorted(unknown)))
    changes = {k: v for k, v in changes.items() if v is not None}
    row = get_device(db, id)
    if row is None:
        raise ValueError("no device %s: register it with `airwatt device add %s` (or `airwatt flash`)" % (id, id))
    if "lat" in changes or "lon" in changes:
        check_location(changes.get("lat"), changes.get("lon"))
    if "interval_s" in changes:
        check_interval(changes["interval_s"])
    if "sensors" in changes:
        changes["sensors"] = json.dumps(check_sensors(changes["sensors"]))
    if changes:
        with _transaction(db):
            db.execute("UPDATE devices SET %s WHERE id = ?" % ", ".join("%s = ?" % k for k in changes),
                       [*changes.values(), id])
    row = get_device(db, id) or {}
    row.pop("key", None)
    return row


def check_device_id(id: str) -> None:
    """Raise ValueError unless `id` is a valid protocol device id."""
    if not 1 <= len(id) <= fields.DEVICE_ID_MAX or any(ch not in fields.DEVICE_ALPHABET for ch in id):
        raise ValueError(
            "device id must be 1 to %d characters of a-z, 0-9, '-' and '_': %r" % (fields.DEVICE_ID_MAX, id)
        )


def get_device(db: sqlite_utils.Database, id: str) -> dict | None:
    """The device row (its key is in the key store: `device_key`), or None."""
    found = list(db.query("SELECT * FROM devices WHERE id = ?", [id]))
    return found[0] if found else None


def device_key(db: sqlite_utils.Database, id: str) -> bytes | None:
    """The device's HMAC key as bytes, or None for an unknown device (db from open_db: the key store attached)."""
    row = db.execute(
        "SELECT k.key FROM keys.device_keys k JOIN devices d ON d.id = k.device WHERE k.device = ?", (id,)
    ).fetchone()
    return None if row is None else bytes.fromhex(row[0])


def list_devices(db: sqlite_utils.Database) -> list[dict]:
    """Every device without its key, with its count of readings stored (ever: retention does not lower it)."""
    # db.execute, not db.query: the alert evaluator passes its raw sqlite3 connection
    cur = db.execute(
        "SELECT d.id, d.name, d.site, d.lat, d.lon, d.sensors, d.interval_s, d.firmware, d.first_seen,"
        " d.last_seen, d.last_status, d.created FROM devices d ORDER BY d.id"
    )
    names = [c[0] for c in cur.description]
    devices = [dict(zip(names, row)) for row in cur.fetchall()]
    counts = reading_counts(db)
    for d in devices:
        d["readings"] = counts.get(d["id"], 0)
    return devices


def reading_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Readings stored per device: the rollups' counters plus the few stored since the roller last ran (a scan
    of that tail only, never of the whole table)."""
    counts: dict[str, int] = dict(db.execute("SELECT device, readings FROM rollup_state").fetchall())
    row = db.execute("SELECT value FROM meta WHERE key = 'rollup_upto'").fetchone()
    upto = int(row[0]) if row else 0
    # NOT INDEXED: a range of the rowid, not a scan of an index over every reading
    for device, n in db.execute("SELECT device, count(*) FROM readings NOT INDEXED WHERE id > ? GROUP BY device",
                                (upto,)):
        counts[device] = counts.get(device, 0) + n
    return counts


# -- readings --------------------------------------------------------------------------------------------


def boot_id(db: sqlite_utils.Database | sqlite3.Connection, device: str, boot: str) -> int:
    """The id of a device's boot in boot_ids (what readings.boot_id holds), added if new: in the caller's
    transaction if one is open."""
    row = db.execute("SELECT id FROM boot_ids WHERE device = ? AND boot = ?", (device, boot)).fetchone()
    if row is not None:
        return row[0]
    return db.execute("INSERT INTO boot_ids(device, boot) VALUES (?, ?)", (device, boot)).lastrowid


def insert_readings(db: sqlite_utils.Database, rows: Iterable[dict]) -> None:
    """Insert readings given as dicts (sqlite-utils insert_all), each `boot` (the board's text id) stored as its
    boot_id: for tools and tests that write readings straight into the table, not through the writer."""
    ids: dict[tuple[str, str], int] = {}
    out = []
    for r in rows:
        r = dict(r)
        if "boot" in r:
            key = (r["device"], r.pop("boot"))
            if key not in ids:
                ids[key] = boot_id(db, *key)
            r["boot_id"] = ids[key]
        out.append(r)
    db["readings"].insert_all(out)


def readings(
    db: sqlite_utils.Database, device: str, since: float | None = None, until: float | None = None
) -> list[dict]:
    """A device's readings in sequence order; since/until (Unix seconds, until exclusive) filter on t, and
    readings whose time is unknown are left out when either bound is given."""
    return list(iter_readings(db, device, since, until))


def reading_filter(device: str | None = None, since: float | None = None, until: float | None = None,
                   sensor: str | None = None, alias: str = "") -> tuple[str, list]:
    """(" WHERE ..." or "", parameters) selecting readings of `device` and `sensor` with t in [since, until);
    `alias` ("r.") names the readings table in a join."""
    where, params = [], []
    for clause, value in (("device = ?", device), ("sensor = ?", sensor), ("t >= ?", since), ("t < ?", until)):
        if value is not None:
            where.append(alias + clause)
            params.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def iter_readings(
    db: sqlite_utils.Database, device: str | None = None, since: float | None = None, until: float | None = None
) -> Iterator[dict]:
    """Stream readings (optionally of one device) in (device, seq) order without loading them all."""
    if device is None and (since is not None or until is not None):
        # Device by device: each a search of (device, t), where one query would walk (device, seq) over all.
        for (dev,) in db.execute("SELECT id FROM devices ORDER BY id").fetchall():
            yield from iter_readings(db, dev, since, until)
        return
    where, params = reading_filter(device, since, until, alias="r.")
    # the boot's own id (text) joined back in, as `boot`
    cur = db.execute("SELECT r.*, b.boot AS boot FROM readings r LEFT JOIN boot_ids b ON b.id = r.boot_id%s"
                     " ORDER BY r.device, r.seq" % where, params)
    names = [c[0] for c in cur.description]
    for row in cur:
        yield dict(zip(names, row))


def get_meta(db: sqlite_utils.Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta(db: sqlite_utils.Database, key: str, value: str) -> None:
    with _transaction(db):
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


# -- helpers ---------------------------------------------------------------------------------------------


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (rolls back on error)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.conn = db.conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, err: object, tb: object) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def transaction(db: sqlite_utils.Database) -> _transaction:
    """Context manager for one write transaction on a store connection."""
    return _transaction(db)


def tune_gc() -> None:
    """For a long-running agent process, after its start-up: each upload allocates thousands of short-lived objects
    (parsed JSON, pydantic models, row tuples), and with Python's default thresholds the cyclic collector then runs
    over a thousand times a second, rescanning every long-lived object of the app; measured, that was a quarter
    of the ingest CPU. Freeze what start-up made and collect the young generation far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


def data_dir_default() -> str:
    """--data-dir's default: $AIRWATT_DATA_DIR, else ./airwatt-data."""
    return os.environ.get("AIRWATT_DATA_DIR") or "airwatt-data"
