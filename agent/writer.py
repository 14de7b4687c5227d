"""The ingest writer: a process of its own that group-commits batches to SQLite.

A durable commit costs a disk flush, so the writer takes every batch that queued up while its previous commit
ran, writes them all in ONE transaction, commits once (WAL, synchronous=FULL), and only then reports back: the
requests waiting on those batches answer 200 after their rows are on disk. Concurrent uploads share a flush.

It is a separate process, not a thread, so SQLite's work runs on its own core instead of taking turns with the
event loop for the GIL (the loop parses and checks uploads). Data flow, all in order:

    event loop --[(id, job) ...]--> pipe --> writer process: BEGIN; write_job...; COMMIT
    event loop <--[(id, result) ...]-- pipe <-- writer process, after COMMIT

If the agent is killed, the writer sees its pipe close and exits; whatever it committed is stored, and the
boards resend whatever was not acknowledged (idempotent by device + seq). If the writer dies, the batches in
flight fail (503, the boards retry) and a new writer is started.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import sqlite3
import struct
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from airwatt.protocol import fields

from . import store
from .reading import BOOT, COLUMNS, SEQ, T_SOURCE, TICKS, with_time

log = logging.getLogger("airwatt.writer")

MAX_GROUP = 1000  # batches in one transaction at most

# Idempotent by (device, seq): a reading stored before is skipped. ON CONFLICT names that one constraint, unlike
# INSERT OR IGNORE, which would also silently skip a row breaking NOT NULL and so claim it stored.
_ON_CONFLICT = " ON CONFLICT(device, seq) DO NOTHING"
INSERT = "INSERT INTO readings(%s) VALUES (%s)" % (
    ",".join('"%s"' % c for c in COLUMNS),
    ",".join("?" * len(COLUMNS)),
) + _ON_CONFLICT
_ROW = "(%s)" % ",".join("?" * len(COLUMNS))


@functools.lru_cache(maxsize=fields.MAX_READINGS)
def insert_rows(n: int) -> str:
    """An idempotent INSERT of n rows in one statement (n <= MAX_READINGS: 2,100 parameters, well under SQLite's
    32,766); one statement per batch is far cheaper than executemany's one step per row."""
    return "INSERT INTO readings(%s) VALUES %s%s" % (",".join('"%s"' % c for c in COLUMNS), ",".join([_ROW] * n),
                                                     _ON_CONFLICT)


@dataclass
class Job:
    """One authenticated, valid batch, ready for the writer. rows: full `readings` rows in COLUMNS order, but
    with the boot's own id (text) where boot_id goes (the writer looks it up), and t and t_source None for a
    reading without board time (the writer times it from its boot's clock offset)."""

    device: str
    boot: str
    firmware: str
    sent_ticks: int
    status: str | None
    received: float
    rows: list[tuple]


class WriteFailed(Exception):
    """The store could not commit (disk full, I/O error, writer died): nothing of the batch was acknowledged."""


class Known:
    """What the writer knows of the store, so most batches need no SELECT: per device the highest seq stored,
    per (device, boot) the learnt clock offset (None: not learnt) and its boot_ids id. A transaction's changes
    are staged and kept only when it commits. Only the writer inserts readings and boots, so this cannot go
    stale."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.offset: dict[tuple[str, str], float | None] = {}
        self.ids: dict[tuple[str, str], int] = {}
        self._seq: dict[str, int] = {}
        self._offset: dict[tuple[str, str], float | None] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def boot_id(self, conn: sqlite3.Connection, device: str, boot: str) -> int:
        key = (device, boot)
        got = self.ids.get(key) or self._ids.get(key)
        if got is None:
            got = self._ids[key] = store.boot_id(conn, device, boot)
        return got

    def max_seq(self, conn: sqlite3.Connection, device: str) -> int:
        if device in self._seq:
            return self._seq[device]
        if device not in self.seq:
            # Not staged: nothing in this transaction touched the device, so the store holds committed state.
            row = conn.execute("SELECT max(seq) FROM readings WHERE device = ?", (device,)).fetchone()
            self.seq[device] = row[0] or 0
        return self.seq[device]

    def boot_offset(self, conn: sqlite3.Connection, device: str, boot: str) -> float | None:
        key = (device, boot)
        if key in self._offset:
            return self._offset[key]
        if key not in self.offset:
            row = conn.execute('SELECT "offset" FROM boots WHERE device = ? AND boot = ?', key).fetchone()
            self.offset[key] = None if row is None else row[0]
        return self.offset[key]

    def stage_seq(self, device: str, seq: int) -> None:
        self._seq[device] = seq

    def stage_offset(self, device: str, boot: str, offset: float) -> None:
        self._offset[(device, boot)] = offset

    def committed(self) -> None:
        self.seq.update(self._seq)
        self.offset.update(self._offset)
        self.ids.update(self._ids)
        self.rolled_back()

    def rolled_back(self) -> None:
        self._seq.clear()
        self._offset.clear()
        self._ids.clear()


def write_job(conn: sqlite3.Connection, job: Job, known: Known) -> tuple[int, int]:
    """Write one batch inside the caller's transaction; returns (stored_seq, readings newly inserted)."""
    # What the board's clock read at boot, in server time: server_now - sent_ticks. Network delay only ever makes
    # this estimate later, so keep the smallest seen for the boot (also ignores replays of old bodies).
    offset = job.received - job.sent_ticks / 1000.0
    learnt = known.boot_offset(conn, job.device, job.boot)
    new_boot = learnt is None
    if new_boot:
        conn.execute(
            'INSERT INTO boots(device, boot, "offset", learnt) VALUES (?, ?, ?, ?)',
            (job.device, job.boot, offset, job.received),
        )
        known.stage_offset(job.device, job.boot, offset)
    elif offset < learnt:
        conn.execute(
            'UPDATE boots SET "offset" = ?, learnt = ? WHERE device = ? AND boot = ?',
            (offset, job.received, job.device, job.boot),
        )
        known.stage_offset(job.device, job.boot, offset)
    else:
        offset = learnt
    rows = []
    batch_boot = known.boot_id(conn, job.device, job.boot)
    for row in job.rows:
        boot = row[BOOT]
        if row[T_SOURCE] is None:  # no board time: from its boot's offset if known
            off = offset if boot == job.boot else known.boot_offset(conn, job.device, boot)
            if off is None:
                row = with_time(row, None, "unknown")
            else:
                # to the millisecond (the board's tick): the offset's microseconds are network noise
                row = with_time(row, round(off + row[TICKS] / 1000.0, 3), "ticks")
        # stored by the id of its boot (boot_ids), not its text
        bid = batch_boot if boot == job.boot else known.boot_id(conn, job.device, boot)
        row = row[:BOOT] + (bid,) + row[BOOT + 1 :]
        rows.append(row)
    before = conn.total_changes
    conn.execute(insert_rows(len(rows)), list(chain.from_iterable(rows)))
    inserted = conn.total_changes - before
    if new_boot:
        # Readings of this boot stored earlier without a time (sent after a reboot, before the agent had heard
        # from that boot) can be timed now.
        conn.execute(
            "UPDATE readings SET t = round(? + ticks / 1000.0, 3), t_source = 'ticks'"
            " WHERE device = ? AND boot_id = ? AND t IS NULL",
            (offset, job.device, batch_boot),
        )
    conn.execute(
        "UPDATE devices SET firmware = ?, last_seen = ?, first_seen = coalesce(first_seen, ?),"
        " last_status = coalesce(?, last_status) WHERE id = ?",
        (job.firmware, job.received, job.received, job.status, job.device),
    )
    stored = max(known.max_seq(conn, job.device), job.rows[-1][SEQ])  # seqs rise within a batch
    known.stage_seq(job.device, stored)
    return stored, inserted


def write_jobs(conn: sqlite3.Connection, known: Known, jobs: list[Job]) -> list[tuple[int, int]]:
    """Write jobs in ONE transaction and commit; all or nothing."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = [write_job(conn, job, known) for job in jobs]
        conn.execute("COMMIT")
    except BaseException:
        known.rolled_back()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    known.committed()
    return results


def write_group(conn: sqlite3.Connection, known: Known, jobs: list[Job]) -> list[Any]:
    """One commit for the group; if anything in it fails, each batch alone, so a bad one sinks only itself.
    Returns per job (stored_seq, inserted) or an error message (str)."""
    try:
        return write_jobs(conn, known, jobs)
    except Exception:
        log.exception("group of %d batches failed; writing them one by one", len(jobs))
    results: list[Any] = []
    for job in jobs:
        try:
            results.extend(write_jobs(conn, known, [job]))
        except Exception as err:
            log.exception("batch from %s not stored", job.device)
            results.append("%s: %s" % (type(err).__name__, err))
    return results


def writer_main(db_file: str, jobs_in: Any, results_out: Any) -> None:
    """The writer process: receive lists of (id, job), write everything received so far as one group, commit,
    send back [(id, result)]. Ends when the pipe closes (the agent is gone) or None arrives (orderly stop)."""
    # Ctrl-C or a SIGTERM to the whole process group must not cut a group short: the agent stops its writer
    # itself, after the last batch, and if the agent dies the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = store.connect(db_file)
    known = Known()
    store.tune_gc()
    try:
        stop = False
        while not stop:
            try:
                first = jobs_in.recv()
            except EOFError:  # the agent is gone
                break
            if first is None:
                break
            group = list(first)
            # Take whatever else arrived meanwhile: that is the group commit.
            while len(group) < MAX_GROUP and jobs_in.poll(0):
                try:
                    more = jobs_in.recv()
                except EOFError:
                    stop = True
                    break
                if more is None:
                    stop = True
                    break
                group.extend(more)
            results = write_group(conn, known, [job for _id, job in group])
            try:
                results_out.send([(ident, result) for (ident, _job), result in zip(group, results)])
            except (BrokenPipeError, OSError):
                break
    finally:
        conn.close()


class _Results(asyncio.Protocol):
    """Reads the writer's framed answers (multiprocessing's framing: 4-byte big-endian length, then a pickle)."""

    def __init__(self, writer: "Writer") -> None:
        self.writer = writer
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (size,) = struct.unpack("!i", self.buf[:4])
            if len(self.buf) < 4 + size:
                break
            frame = bytes(self.buf[4 : 4 + size])
            del self.buf[: 4 + size]
            self.writer._answered(pickle.loads(frame))

    def connection_lost(self, exc: Exception | None) -> None:
        self.writer._ended()


class Writer:
    """The agent's side of the writer process: submit(job) resolves after the job's transaction committed.

    Everything here runs on the event loop's thread: jobs submitted in one loop iteration go to the writer as one
    pickled frame through a non-blocking pipe transport, answers come back through another; no threads, so no
    contention for the GIL on this side."""

    def __init__(self, db_file: str | Path, stats: Any) -> None:
        self.db_file = str(db_file)
        self.stats = stats  # .commits is counted here
        self.queued = 0  # batches submitted and not answered
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._outbox: list[tuple[int, Job]] = []
        self._flush_scheduled = False
        self._proc: Any = None
        self._jobs: Any = None  # write transport to the writer
        self._results: Any = None  # read transport from the writer
        self._ended_evt: asyncio.Event | None = None
        self._stopping = False
        self._restart: asyncio.Task | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs an event loop
        jobs_r, jobs_w = ctx.Pipe(duplex=False)
        results_r, results_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=writer_main, args=(self.db_file, jobs_r, results_w), name="airwatt-writer",
                                 daemon=True)
        self._proc.start()
        jobs_r.close()
        results_w.close()
        self._ended_evt = asyncio.Event()
        jobs_fd, results_fd = os.dup(jobs_w.fileno()), os.dup(results_r.fileno())
        jobs_w.close()
        results_r.close()
        self._jobs, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, os.fdopen(jobs_fd, "wb", 0))
        self._results, _ = await loop.connect_read_pipe(lambda: _Results(self), os.fdopen(results_fd, "rb", 0))
        self._schedule_flush()  # jobs submitted before the start go now, as one group

    async def stop(self) -> None:
        """Finish every submitted job, then end the writer process."""
        if self._proc is None:
            return
        self._stopping = True
        self._flush()
        self._send(None)
        if self._ended_evt is not None:
            await self._ended_evt.wait()
        await asyncio.get_running_loop().run_in_executor(None, self._proc.join, 10)
        self._proc = None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    async def submit(self, job: Job) -> tuple[int, int]:
        """Queue a job; returns (stored_seq, newly inserted) once its transaction is committed."""
        fut = asyncio.get_running_loop().create_future()
        ident = next(self._ids)
        self._waiting[ident] = fut
        self._outbox.append((ident, job))
        self._schedule_flush()
        self.queued += 1
        try:
            return await asyncio.shield(fut)  # a client hanging up does not undo its commit
        finally:
            self.queued -= 1

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._jobs is not None:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._outbox and self._jobs is not None:
            items, self._outbox = self._outbox, []
            self._send(items)

    def _send(self, obj: Any) -> None:
        if self._jobs is None or self._jobs.is_closing():
            if obj:
                self._fail([ident for ident, _job in obj], "writer process is gone")
            return
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self._jobs.write(struct.pack("!i", len(data)) + data)  # buffered by the transport: never blocks

    def _answered(self, answers: list) -> None:
        self.stats.commits += 1
        for ident, result in answers:
            fut = self._waiting.pop(ident, None)
            if fut is None or fut.done():
                continue
            if isinstance(result, str):
                fut.set_exception(WriteFailed(result))
            else:
                fut.set_result(tuple(result))

    def _ended(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None
        if self._ended_evt is not None:
            self._ended_evt.set()
        if self._stopping:
            return
        proc = self._proc
        log.error("ingest writer process ended unexpectedly (exit code %s); starting a new one",
                  proc.exitcode if proc is not None else None)
        self._outbox.clear()
        self._fail(list(self._waiting), "writer process died")
        self._restart = asyncio.get_running_loop().create_task(self.start())  # keep a reference: not GC'd

    def _fail(self, idents: list[int], why: str) -> None:
        for ident in idents:
            fut = self._waiting.pop(ident, None)
            if fut is not None and not fut.done():
                fut.set_exception(WriteFailed(why))
