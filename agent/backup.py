"""`airwatt backup --to FILE` and `airwatt restore --from FILE`, both safe while the agent serves uploads.

Backup: `VACUUM INTO` a temporary file beside FILE, then rename; the device keys (keys.db, kept apart from the
readings) go the same way into FILE.keys. Both files are 0600, like the store: the keys sign every upload. VACUUM INTO reads one snapshot (a read
transaction: in WAL mode writers carry on), so the copy holds whole group commits only, and comes out compact.
Restore: SQLite's online backup API copies FILE into the live database under one write lock: the agent's
connections see the old or the restored store, never a mix; uploads wait for the lock (busy timeout) and then
go on into the restored store. Readings stored after the backup was taken are not in it; boards delete what
the agent acknowledged, so they are gone unless the city platform has them.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from . import store


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


def backup(data_dir: str | Path, to: str | Path) -> dict:
    """Copy the data dir's database to `to` (which must not exist); returns what was copied."""
    src_path = store.db_path(data_dir)
    if not src_path.exists():
        raise BackupError("no database in %s" % data_dir)
    to = Path(to)
    if to.exists():
        raise BackupError("%s exists: remove it or choose another file name" % to)
    keys_to = keys_file(to)
    _vacuum_into(store.keys_path(data_dir), keys_to)  # first: a backup with readings but no keys never shows
    _vacuum_into(src_path, to, check)
    info = check(to)
    info["bytes"] = to.stat().st_size
    info["keys"] = keys_to
    return info


def keys_file(backup_file: str | Path) -> Path:
    """Where the backup of the device keys sits beside a backup file."""
    backup_file = Path(backup_file)
    return backup_file.with_name(backup_file.name + ".keys")


def _vacuum_into(src: Path, to: Path, checked=None) -> None:
    tmp = to.with_name(to.name + ".part")
    if tmp.exists():
        tmp.unlink()  # left by a backup that was cut short
    store.private_file(tmp)  # VACUUM INTO takes an empty file: created 0600 here
    conn = store.connect(src)
    try:
        conn.execute("VACUUM INTO ?", (str(tmp),))
    finally:
        conn.close()
    if checked is not None:
        checked(tmp)
    os.replace(tmp, to)


def check(path: str | Path) -> dict:
    """Open a backup read-only and check it: SQLite's quick_check, an AirWatt schema this agent knows."""
    path = Path(path)
    if not path.is_file():
        raise BackupError("%s is not a file" % path)
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            readings = conn.execute("SELECT max(id) FROM readings").fetchone()[0] or 0
            devices = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
            keys_inside = "key" in {row[1] for row in conn.execute("PRAGMA table_info(devices)")}
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise BackupError("%s is not an AirWatt database: %s" % (path, err)) from None
    if ok != "ok":
        raise BackupError("%s is damaged: %s" % (path, ok))
    if version is None or int(version[0]) > len(store.MIGRATIONS):
        raise BackupError("%s has schema version %s; this agent knows up to %d: upgrade AirWatt first"
                          % (path, version and version[0], len(store.MIGRATIONS)))
    return {"schema_version": int(version[0]), "last_reading_id": readings, "devices": devices,
            "page_size": page_size, "keys_inside": keys_inside}


def restore(data_dir: str | Path, from_: str | Path) -> dict:
    """Replace the data dir's database (live or not) with the backup `from_`, and the device keys with the
    backup's FILE.keys when there is one, then migrate."""
    info = check(from_)
    keys_from = keys_file(from_)
    if keys_from.exists():
        _copy_into(keys_from, store.keys_path(data_dir))
        info["keys"] = "restored from %s" % keys_from
    elif info["keys_inside"]:
        info["keys"] = "moved out of the backup's own database (an older agent's)"
    else:
        info["keys"] = "kept: no %s beside the backup" % keys_from.name
    _copy_into(Path(from_), store.db_path(data_dir), info["page_size"])
    db = store.open_db(data_dir)  # WAL again, and any migration this agent has beyond the backup's
    info["schema_version_now"] = store.schema_version(db)
    db.close()
    return info


def _copy_into(from_: Path, live: Path, page_size: int | None = None) -> None:
    """SQLite's online backup of from_ into the live database file (created 0600 when missing)."""
    live.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    store.private_file(live)
    dst = store.connect(live)
    src = sqlite3.connect(from_.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        if page_size is not None and dst.execute("PRAGMA page_size").fetchone()[0] != page_size:
            raise BackupError("%s has %d-byte pages, the live store another size: stop the agent, move %s "
                              "away and restore again" % (from_, page_size, live))
        src.backup(dst)  # one step: one write lock for the whole copy, readers see before or after
    finally:
        src.close()
        dst.close()
