"""Helpers for the sync tests (imported by name: tests/sync is on sys.path while they run)."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airwatt.agent import reading, store
from airwatt.emulator.platform import Platform
from samples import values

# Processes a test started (agents, servers): conftest kills what is left when the test ends.
STARTED: list[subprocess.Popen] = []
T0 = 1790000000.0  # 2026-09-21T...Z, a whole second
SITE = {"kk-hall-01": (16.4419, 102.8360, "Khon Kaen City Hall"), "kk-school-02": (16.4300, 102.8200, "School 2")}


def add_readings(db, device: str, n: int, start_seq: int = 1, t0: float = T0) -> list[int]:
    """Insert n readings (energy, pm, co2 in turn) straight into the store's table; returns their ids."""
    now = time.time()
    rows = []
    for seq in range(start_seq, start_seq + n):
        sensor = ("energy", "pm", "co2")[seq % 3]
        row = {"device": device, "seq": seq, "boot": "0a1b2c3d", "sensor": sensor, "t": t0 + seq * 60,
               "t_source": "board", "ticks": seq * 60000, "received": now, "flags": ""}
        row.update(values(sensor, seq))
        rows.append(row)
    with store.transaction(db):
        boot = store.boot_id(db, device, rows[0]["boot"]) if rows else None
        rows = [{("boot_id" if k == "boot" else k): (boot if k == "boot" else v) for k, v in r.items()} for r in rows]
        cols = list(rows[0]) + [m for m in reading.METRIC_COLUMNS if m not in rows[0]]
        db.conn.executemany(
            "INSERT INTO readings(%s) VALUES (%s)" % (",".join(cols), ",".join("?" * len(cols))),
            [[r.get(c) for c in cols] for r in rows],
        )
    return [r[0] for r in db.execute(
        "SELECT id FROM readings WHERE device = ? AND seq >= ? AND seq < ? ORDER BY id",
        (device, start_seq, start_seq + n))]


def platform_records(db_path: str | Path, api: str) -> dict[str, tuple[dict, int]]:
    """id -> (body, writes) of what the platform accepted."""
    conn = sqlite3.connect(str(db_path))
    try:
        rows = conn.execute("SELECT id, body, writes FROM records WHERE api = ?", (api,)).fetchall()
    finally:
        conn.close()
    return {r[0]: (json.loads(r[1]), r[2]) for r in rows}


def platform_requests(plat: Platform) -> list[dict]:
    cur = plat.conn.execute("SELECT at, api, status, fault, ids FROM requests ORDER BY id")
    return [{"at": r[0], "api": r[1], "status": r[2], "fault": r[3], "ids": json.loads(r[4])} for r in cur]


def unsynced(db) -> list[int]:
    return [r[0] for r in db.execute("SELECT id FROM readings WHERE synced_at IS NULL ORDER BY id")]


def start_sync(data_dir: Path, url: str, kind: str, *extra: str, runner: str = "worker") -> subprocess.Popen:
    """The sync worker alone (python -m airwatt.agent.sync; `extra` adds or overrides its options) or inside the
    whole agent (airwatt serve); its output goes to a log beside the data dir (`logs`)."""
    if runner == "serve":
        cmd = [sys.executable, "-m", "airwatt.agent.cli", "serve", "--data-dir", str(data_dir), "--host",
               "127.0.0.1", "--port", "0", "--platform-url", url, "--platform-kind", kind]
    else:
        cmd = [sys.executable, "-m", "airwatt.agent.sync", "--data-dir", str(data_dir), "--platform-url", url,
               "--platform-kind", kind, "--backoff-base", "0.05", *extra]
    log = open(data_dir.parent / ("%s-%d.log" % (runner, time.monotonic_ns())), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    STARTED.append(proc)
    return proc


def logs(data_dir: Path) -> str:
    """The tail of every log start_sync wrote for this data dir."""
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(data_dir.parent.glob("*.log")))


def synced_ids(data_dir: Path) -> set[int]:
    """The store ids of the readings marked synced."""
    conn = sqlite3.connect(store.db_path(data_dir), timeout=10)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM readings WHERE synced_at IS NOT NULL")}
    finally:
        conn.close()


def synced_count(data_dir: Path) -> int:
    return len(synced_ids(data_dir))


def shared_server(server_class: type, name: str):
    """A fixture: one real server (emulator/real_servers.py) for the whole test module, stopped at its end."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        started = server_class(tmp_path_factory.mktemp(name))
        started.start()
        yield started
        started.stop()

    return server


_NAMES = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A name no other test of the module uses (its server is shared, and so may be a previous run's)."""
    return "%s%d-%d" % (prefix, os.getpid() % 1000, next(_NAMES))
