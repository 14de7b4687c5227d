"""The ingest writer: a process of its own that group-commits batches to SQLite.

A durable commit costs a disk flush, so the writer takes every batch that queued up while its previous commit
ran, writes them all in ONE transaction, commits once (WAL, synchronous=FULL), and only then reports back: the
requests waiting on those batches answer 200 after their rows are on disk. Concurrent uploads share a flush.

It is a separate process, not a thread, so SQLite's work runs on its own core instead of taking turns with the
event loop for the GIL (the loop parses and checks uploads). Data flow, all in order:

    event loop --submit--> queue --sender thread--> pipe --> writer process: BEGIN; write_job...; COMMIT
    event loop <--futures resolved-- reader thread <-- pipe <-- [(id, result) ...] after COMMIT

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
import queue
import sqlite3
import threading
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from airwatt.protocol import fields

from . import store

log = logging.getLogger("airwatt.writer")

MAX_GROUP = 1000  # batches in one transaction at most

COLUMNS = ("device", "seq", "boot", "sensor", "t", "t_source", "ticks", "received", "flags") + store.METRIC_COLUMNS
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
    """One authenticated, valid batch, ready for the writer. rows: full `readings` rows in COLUMNS order, with
    t and t_source None for a reading without board time (the writer times it from its boot's clock offset)."""

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
    per (device, boot) the learnt clock offset (None: not learnt). A transaction's changes are staged and kept
    only when it commits. Only the writer inserts readings and boots, so this cannot go stale."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.offset: dict[tuple[str, str], float | None] = {}
        self._seq: dict[str, int] = {}
        self._offset: dict[tuple[str, str], float | None] = {}

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
        self.rolled_back()

    def rolled_back(self) -> None:
        self._seq.clear()
        self._offset.clear()


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
    for row in job.rows:
        if row[5] is None:  # no board time: from its boot's offset if known
            off = offset if row[2] == job.boot else known.boot_offset(conn, job.device, row[2])
            if off is None:
                row = row[:5] + ("unknown",) + row[6:]
            else:
                row = row[:4] + (off + row[6] / 1000.0, "ticks") + row[6:]
        rows.append(row)
    before = conn.total_changes
    conn.execute(insert_rows(len(rows)), list(chain.from_iterable(rows)))
    inserted = conn.total_changes - before
    if new_boot:
        # Readings of this boot stored earlier without a time (sent after a reboot, before the agent had heard
        # from that boot) can be timed now.
        conn.execute(
            "UPDATE readings SET t = ? + ticks / 1000.0, t_source = 'ticks'"
            " WHERE device = ? AND boot = ? AND t IS NULL",
            (offset, job.device, job.boot),
        )
    conn.execute(
        "UPDATE devices SET firmware = ?, last_seen = ?, first_seen = coalesce(first_seen, ?),"
        " last_status = coalesce(?, last_status) WHERE id = ?",
        (job.firmware, job.received, job.received, job.status, job.device),
    )
    stored = max(known.max_seq(conn, job.device), job.rows[-1][1])  # seqs rise within a batch
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
    send back [(id, result)] and the number of commits. Ends when the pipe closes or None arrives."""
    conn = store.connect(db_file)
    known = Known()
    try:
        stop = False
        while not stop:
            try:
                group = list(jobs_in.recv())
            except EOFError:  # the agent is gone
                break
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
            if group and group[-1] is None:
                group.pop()
                stop = True
            if not group:
                continue
            results = write_group(conn, known, [job for _id, job in group])
            try:
                results_out.send([(ident, result) for (ident, _job), result in zip(group, results)])
            except (BrokenPipeError, OSError):
                break
    finally:
        conn.close()


class Writer:
    """The agent's side of the writer process: submit(job) resolves after the job's transaction committed."""

    def __init__(self, db_file: str | Path, stats: Any) -> None:
        self.db_file = str(db_file)
        self.stats = stats  # .commits is counted here
        self.queued = 0  # batches submitted and not answered; touched only on the event loop's thread
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future, asyncio.AbstractEventLoop]] = {}
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._proc: Any = None
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs threads and an event loop
        jobs_out_r, jobs_out_w = ctx.Pipe(duplex=False)
        results_r, results_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=writer_main, args=(self.db_file, jobs_out_r, results_w), name="airwatt-writer", daemon=True
        )
        self._proc.start()
        jobs_out_r.close()
        results_w.close()
        proc = self._proc
        self._threads = [
            threading.Thread(target=self._send, args=(jobs_out_w,), name="airwatt-writer-send", daemon=True),
            threading.Thread(target=self._receive, args=(results_r, proc), name="airwatt-writer-recv", daemon=True),
        ]
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        """Finish every submitted job, then end the writer process."""
        if self._proc is None:
            return
        self._stopping = True
        self._outbox.put(None)
        loop = asyncio.get_running_loop()
        for t in self._threads:
            await loop.run_in_executor(None, t.join)
        await loop.run_in_executor(None, self._proc.join, 10)
        self._proc = None

    async def submit(self, job: Job) -> tuple[int, int]:
        """Queue a job; returns (stored_seq, newly inserted) once its transaction is committed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        ident = next(self._ids)
        with self._lock:
            self._waiting[ident] = (fut, loop)
        self.queued += 1
        try:
            self._outbox.put((ident, job))
            return await asyncio.shield(fut)  # a client hanging up does not undo its commit
        finally:
            self.queued -= 1

    def _send(self, pipe: Any) -> None:
        """Sender thread: ship everything queued as one message (pickling and pipe writes off the loop)."""
        stop = False
        while not stop:
            items = [self._outbox.get()]
            while True:
                try:
                    items.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            if None in items:
                stop = True
                items = [i for i in items if i is not None]
            try:
                if items:
                    pipe.send(items)
                if stop:
                    pipe.send(None)
            except (BrokenPipeError, OSError):
                # The writer died: these batches fail (503, the boards retry); the reader thread starts a new
                # writer with a new sender.
                self._fail([ident for ident, _job in items], "writer process is gone")
                break
        pipe.close()

    def _receive(self, pipe: Any, proc: Any) -> None:
        """Reader thread: resolve the futures of committed batches; if the writer dies, fail what is in flight."""
        while True:
            try:
                answers = pipe.recv()
            except (EOFError, OSError):
                break
            self.stats.commits += 1
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            with self._lock:
                for ident, result in answers:
                    fut, loop = self._waiting.pop(ident)
                    by_loop.setdefault(loop, []).append((fut, result))
            for loop, done in by_loop.items():
                loop.call_soon_threadsafe(_resolve_all, done)
        pipe.close()
        if not self._stopping:
            log.error("ingest writer process ended unexpectedly (exit code %s); starting a new one", proc.exitcode)
            with self._lock:
                lost = list(self._waiting)
            self._fail(lost, "writer process died")
            self._restart()

    def _restart(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.join(5)
        self.start()

    def _fail(self, idents: list[int], why: str) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        with self._lock:
            for ident in idents:
                if ident in self._waiting:
                    fut, loop = self._waiting.pop(ident)
                    by_loop.setdefault(loop, []).append((fut, why))
        for loop, done in by_loop.items():
            loop.call_soon_threadsafe(_resolve_all, done)


def _resolve_all(done: list) -> None:
    for fut, result in done:
        if fut.done():
            continue
        if isinstance(result, str):
            fut.set_exception(WriteFailed(result))
        else:
            fut.set_result(tuple(result))
