"""`airwatt backup --to FILE` and `airwatt restore --from FILE`, both safe while the agent serves uploads.

Backup: `VACUUM INTO` a temporary file beside FILE, then rename. VACUUM INTO reads one snapshot (a read
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
    tmp = to.with_name(to.name + ".part")
    if tmp.exists():
        tmp.unlink()  # left by a backup that was cut short
    conn = store.connect(src_path)
    try:
        conn.execute("VACUUM INTO ?", (str(tmp),))
    finally:
        conn.close()
    info = check(tmp)
    os.replace(tmp, to)
    info["bytes"] = to.stat().st_size
    return info


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
            "page_size": page_size}


def restore(data_dir: str | Path, from_: str | Path) -> dict:
    """Replace the data dir's database (live or not) with the backup `from_`, then migrate it."""
    info = check(from_)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    dst = store.connect(store.db_path(data_dir))
    src = sqlite3.connect(Path(from_).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        if dst.execute("PRAGMA page_size").fetchone()[0] != info["page_size"]:
            raise BackupError("%s has %d-byte pages, the live store another size: stop the agent, move %s "
                              "away and restore again" % (from_, info["page_size"], store.db_path(data_dir)))
        src.backup(dst)  # one step: one write lock for the whole copy, readers see before or after
    finally:
        src.close()
        dst.close()
    db = store.open_db(data_dir)  # WAL again, and any migration this agent has beyond the backup's
    info["schema_version_now"] = store.schema_version(db)
    db.close()
    return info
