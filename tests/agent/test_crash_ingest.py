"""kill -9 of a real `airwatt serve` process during concurrent uploads: every batch answered 200 is stored exactly
once after restart, and no batch is ever half stored."""

from __future__ import annotations

import asyncio
import random
import sqlite3

import aiohttp

from airwatt.agent import store
from airwatt.agent.bench import serve

from agent_helpers import body, headers

DEVICES = ["crash-%d" % i for i in range(8)]
BATCH = 20
ROUNDS = 5


class Board:
    """What a board does: send the oldest unacknowledged batch until a 200 says it is stored, then the next."""

    def __init__(self, device: str, key: bytes) -> None:
        self.device, self.key = device, key
        self.next_seq = 1  # first seq of the batch in flight
        self.acked: list[range] = []
        self.tried: set[tuple[int, int]] = set()

    def batch(self) -> range:
        return range(self.next_seq, self.next_seq + BATCH)

    async def run(self, session: aiohttp.ClientSession, url: str, limit: int | None = None) -> None:
        sent = 0
        while limit is None or sent < limit:
            seqs = self.batch()
            data = body(self.device, seqs)
            self.tried.add((seqs.start, seqs.stop))
            try:
                hdrs = headers(self.device, self.key, data)
                async with session.post(url + "/v1/batches", data=data, headers=hdrs) as r:
                    status = r.status
                    answer = await r.json() if status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                return  # the agent died: this batch stays unacknowledged
            assert status == 200, status
            assert answer["stored_seq"] == seqs.stop - 1
            self.acked.append(seqs)
            self.next_seq = seqs.stop
            sent += 1


async def _round(url: str, boards: list[Board], kill_after: float | None, proc) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = [asyncio.ensure_future(b.run(session, url, None if kill_after else 3)) for b in boards]
        if kill_after is not None:
            # Kill at a random moment after uploads are flowing (the agent has answered at least one).
            acked = sum(len(b.acked) for b in boards)
            for _ in range(2000):
                if sum(len(b.acked) for b in boards) > acked:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(kill_after)
            proc.kill()  # SIGKILL: no cleanup, no flush, whatever the writer was doing
            proc.wait()
        await asyncio.gather(*tasks)


def _check(db_file, boards: list[Board]) -> int:
    conn = sqlite3.connect(db_file)  # opening recovers the WAL as SQLite would after a power cut
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT device || ':' || seq) FROM readings").fetchone()
        assert total == distinct
        for b in boards:
            have = {s for (s,) in conn.execute("SELECT seq FROM readings WHERE device = ?", (b.device,))}
            for seqs in b.acked:
                assert set(seqs) <= have, "acknowledged batch %s of %s lost" % (seqs, b.device)
            for start, stop in b.tried:
                got = len(have & set(range(start, stop)))
                assert got in (0, stop - start), "batch %d..%d of %s half stored (%d)" % (start, stop, b.device, got)
            assert have == set(range(1, len(have) + 1))  # no gaps: a board sends its batches in order
        return total
    finally:
        conn.close()


def test_kill_9_during_concurrent_ingest_loses_and_duplicates_nothing(tmp_path):
    data_dir = tmp_path / "agent"
    db = store.open_db(data_dir)
    boards = [Board(d, bytes.fromhex(store.add_device(db, d))) for d in DEVICES]
    db.close()
    rng = random.Random(4)
    acked_before_kill, interrupted, stored_unacked = [], 0, 0
    for _ in range(ROUNDS):
        proc, url = serve.start_agent(data_dir)
        asyncio.run(_round(url, boards, rng.uniform(0.0, 0.6), proc))
        acked_before_kill.append(sum(len(b.acked) for b in boards))
        _check(store.db_path(data_dir), boards)
        conn = sqlite3.connect(store.db_path(data_dir))
        for b in boards:
            if (b.next_seq, b.next_seq + BATCH) in b.tried:  # its batch was in flight when the agent died
                interrupted += 1
                stored_unacked += conn.execute(
                    "SELECT count(*) > 0 FROM readings WHERE device = ? AND seq = ?", (b.device, b.next_seq)
                ).fetchone()[0]
        conn.close()
    # Restart once more and let every board send what it still holds, then a few more batches each.
    proc, url = serve.start_agent(data_dir)
    try:
        asyncio.run(_round(url, boards, None, proc))
    finally:
        serve.stop_agent(proc)
    total = _check(store.db_path(data_dir), boards)
    assert total == sum(b.next_seq - 1 for b in boards) == sum(len(b.acked) for b in boards) * BATCH
    # The kills really interrupted uploads in flight, and uploads made progress between kills.
    assert all(later > earlier for earlier, later in zip(acked_before_kill, acked_before_kill[1:]))
    assert interrupted >= ROUNDS
    print("kills: %d, batches in flight at a kill: %d, of which committed but never answered: %d"
          % (ROUNDS, interrupted, stored_unacked))
