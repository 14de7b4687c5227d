"""`airwatt backup` and `airwatt restore` run as commands while a real agent process serves signed uploads."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time

import aiohttp
import pytest

from airwatt.agent import backup, store
from airwatt.agent.bench import serve

from agent_helpers import body, headers

BATCH = 20
BOARDS = ("bk-1", "bk-2", "bk-3")


class Uploader:
    """Boards uploading batch after batch; records when each batch's 200 arrived."""

    def __init__(self, url: str, keys: dict[str, bytes]) -> None:
        self.url, self.keys = url, keys
        self.acked: dict[str, list[tuple[int, float]]] = {d: [] for d in keys}  # (last seq, monotonic time)
        self.stop = asyncio.Event()
        self.refused = 0

    async def board(self, session: aiohttp.ClientSession, device: str) -> None:
        n = 0
        while not self.stop.is_set():
            seqs = range(n * BATCH + 1, (n + 1) * BATCH + 1)
            data = body(device, seqs)
            async with session.post(self.url + "/v1/batches", data=data, headers=headers(device, self.keys[device],
                                                                                          data)) as r:
                await r.read()
                if r.status != 200:  # a 503 while the store is locked: the board retries the same batch
                    self.refused += 1
                    await asyncio.sleep(0.05)
                    continue
            self.acked[device].append((seqs[-1], time.monotonic()))
            n += 1
            await asyncio.sleep(0.01)

    def last(self, device: str, before: float | None = None) -> int:
        return max([s for s, at in self.acked[device] if before is None or at < before] or [0])


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "airwatt.agent.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def _seqs(db_file, device: str) -> list[int]:
    conn = sqlite3.connect(db_file)
    try:
        return [r[0] for r in conn.execute("select seq from readings where device = ? order by seq", (device,))]
    finally:
        conn.close()


async def _wait_for(up: Uploader, batches: int) -> None:
    while min(len(v) for v in up.acked.values()) < batches:
        await asyncio.sleep(0.05)


def test_backup_and_restore_while_the_agent_serves_uploads(tmp_path):
    data_dir, copy = tmp_path / "data", tmp_path / "copy.db"
    db = store.open_db(data_dir)
    keys = {d: bytes.fromhex(store.add_device(db, d, site="City Hall")) for d in BOARDS}
    db.close()
    proc, url = serve.start_agent(data_dir)
    db_file = store.db_path(data_dir)

    async def scenario() -> dict:
        up = Uploader(url, keys)
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(up.board(session, d)) for d in BOARDS]
            await _wait_for(up, 5)
            began = time.monotonic()
            out = await _cli("backup", "--data-dir", str(data_dir), "--to", str(copy))
            in_backup = {d: _seqs(copy, d) for d in BOARDS}
            acked_before_backup = {d: up.last(d, began) for d in BOARDS}
            await _wait_for(up, max(len(v) for v in up.acked.values()) + 5)
            restore_began = time.monotonic()
            await _cli("restore", "--data-dir", str(data_dir), "--from", str(copy))
            restored = time.monotonic()
            acked_before_restore = {d: up.last(d, restore_began) for d in BOARDS}
            counts = len(up.acked[BOARDS[0]])
            await _wait_for(up, counts + 5)  # uploads go on into the restored store
            up.stop.set()
            await asyncio.gather(*tasks)
            async with session.get(url + "/healthz") as r:
                health = r.status
            async with session.get(url + "/fleet?lang=en") as r:
                fleet = r.status, await r.text()
        after = {d: [s for s, at in up.acked[d] if at > restored] for d in BOARDS}
        return {"out": out, "in_backup": in_backup, "before": acked_before_backup, "after": after,
                "before_restore": acked_before_restore, "health": health, "fleet": fleet, "refused": up.refused}

    try:
        r = asyncio.run(scenario())
    finally:
        serve.stop_agent(proc)
    assert "-> %s" % copy in r["out"]
    assert backup.check(copy)["schema_version"] == len(store.MIGRATIONS)
    for d in BOARDS:
        got = r["in_backup"][d]
        # a consistent copy: whole batches (group commits), from seq 1 with no hole, everything acked before
        assert got == list(range(1, len(got) + 1)) and len(got) % BATCH == 0
        assert len(got) >= r["before"][d] > 0
        live = _seqs(db_file, d)
        # the restore replaced the store: the backup's readings, then only what was uploaded after it
        assert live[: len(got)] == got
        newer = set(live[len(got):])
        assert not newer & set(range(len(got) + 1, r["before_restore"][d] - BATCH * 2))
        for last in r["after"][d]:
            assert set(range(last - BATCH + 1, last + 1)) <= newer, (d, last)
        assert r["after"][d]
    assert r["health"] == 200 and r["fleet"][0] == 200 and "bk-1" in r["fleet"][1]
    conn = sqlite3.connect(db_file)
    assert conn.execute("pragma quick_check").fetchone()[0] == "ok"
    conn.close()


def test_backup_and_restore_refuse_what_they_cannot_do(tmp_path, capsys):
    from airwatt.agent.cli import main

    data_dir = tmp_path / "d"
    store.open_db(data_dir).close()
    (tmp_path / "exists.db").write_text("x")
    assert main(["backup", "--data-dir", str(data_dir), "--to", str(tmp_path / "exists.db")]) == 1
    assert "exists: remove it" in capsys.readouterr().err
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    assert main(["restore", "--data-dir", str(data_dir), "--from", str(tmp_path / "junk.db")]) == 1
    assert "not an AirWatt database" in capsys.readouterr().err
    with pytest.raises(backup.BackupError, match="no database"):
        backup.backup(tmp_path / "empty", tmp_path / "b.db")


def test_a_backup_brings_the_device_keys_to_a_new_machine(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    db = store.open_db(old)
    keys = {d: store.add_device(db, d) for d in ("hall-01", "school-01")}
    db.close()
    info = backup.backup(old, tmp_path / "b.db")
    assert info["keys"] == tmp_path / "b.db.keys"
    for f in (tmp_path / "b.db", tmp_path / "b.db.keys"):  # the keys sign every upload: private like the store
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert b"hall-01" in (tmp_path / "b.db.keys").read_bytes()
    restored = backup.restore(new, tmp_path / "b.db")
    assert restored["keys"].startswith("restored from")
    db = store.open_db(new)
    assert {d: store.device_key(db, d).hex() for d in keys} == keys  # the boards' uploads verify again
    db.close()
    # Without the keys file, the live keys stay as they are, and restore says so.
    (tmp_path / "b.db.keys").unlink()
    assert backup.restore(new, tmp_path / "b.db")["keys"].startswith("kept")
    db = store.open_db(new)
    assert store.device_key(db, "hall-01").hex() == keys["hall-01"]
    db.close()
