"""Durable ingest: POST /v1/batches and the group-commit writer behind it.

Every accepted batch is committed to SQLite (WAL, synchronous=FULL) before its 200 goes out. A commit costs a
disk flush, so one writer thread takes every batch that queued up while the previous commit ran, writes them
all in ONE transaction (a savepoint each), commits once, then wakes every waiting request: concurrent uploads
share the flush. SQLite work never runs on the event loop's thread except tiny indexed reads (device keys).

Order of checks: size (413) -> device + signature (401, the same bare answer for an unknown device and a bad
signature) -> body (400 naming the field) -> header/body device mismatch (400, path "device": the sender proved
it holds the header device's key, so telling it what is wrong leaks nothing) -> store -> 200.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import queue
import secrets
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils
from aiohttp import web

from airwatt.protocol import fields
from airwatt.protocol.check import ProtocolError
from airwatt.protocol.models import Batch, parse_batch

from . import store

log = logging.getLogger("airwatt.ingest")

DEVICE_HEADER = "X-AirWatt-Device"
SIGNATURE_HEADER = "X-AirWatt-Signature"
MAX_QUEUED = 2000  # batches waiting for the writer; beyond this, 503 + Retry-After (the board backs off)
MAX_GROUP = 1000  # batches in one transaction at most

_COLUMNS = ("device", "seq", "boot", "sensor", "t", "t_source", "ticks", "received", "flags") + store.METRIC_COLUMNS
_INSERT = "INSERT OR IGNORE INTO readings(%s) VALUES (%s)" % (
    ",".join('"%s"' % c for c in _COLUMNS),
    ",".join("?" * len(_COLUMNS)),
)


@dataclass
class Job:
    """One authenticated, valid batch, ready for the writer. rows: (seq, boot, sensor, t, ticks, flags, *metrics);
    t is None for a reading without board time (the writer times it from its boot's clock offset)."""

    device: str
    boot: str
    firmware: str
    sent_ticks: int
    status: str | None
    received: float
    rows: list[tuple]


@dataclass
class Stats:
    """In-process counters for /metrics."""

    batches_accepted: int = 0
    readings_accepted: int = 0  # newly stored (a replayed reading is not counted twice)
    readings_received: int = 0
    rejected: Counter = field(default_factory=Counter)  # by reason
    commits: int = 0


class WriteFailed(Exception):
    """The store could not commit (disk full, I/O error): nothing of the batch was acknowledged."""


def job_from_batch(batch: Batch, received: float) -> Job:
    rows = []
    for r in batch.readings:
        values = r.values.__dict__
        rows.append(
            (r.seq, r.boot, r.sensor, r.t, r.ticks, ",".join(r.flags))
            + tuple(values.get(name) for name in store.METRIC_COLUMNS)
        )
    status = None
    if batch.status is not None:
        status = json.dumps(batch.status.model_dump(), sort_keys=True, separators=(",", ":"))
    return Job(batch.device, batch.boot, batch.fw, batch.sent_ticks, status, received, rows)


def write_job(conn: sqlite3.Connection, job: Job) -> tuple[int, int]:
    """Write one batch inside the caller's transaction; returns (stored_seq, readings newly inserted)."""
    # What the board's clock read at boot, in server time: server_now - sent_ticks. Network delay only ever makes
    # this estimate later, so keep the smallest seen for the boot (also ignores replays of old bodies).
    offset = job.received - job.sent_ticks / 1000.0
    row = conn.execute(
        'SELECT "offset" FROM boots WHERE device = ? AND boot = ?', (job.device, job.boot)
    ).fetchone()
    new_boot = row is None
    if new_boot:
        conn.execute(
            'INSERT INTO boots(device, boot, "offset", learnt) VALUES (?, ?, ?, ?)',
            (job.device, job.boot, offset, job.received),
        )
    elif offset < row[0]:
        conn.execute(
            'UPDATE boots SET "offset" = ?, learnt = ? WHERE device = ? AND boot = ?',
            (offset, job.received, job.device, job.boot),
        )
    else:
        offset = row[0]
    offsets = {job.boot: offset}
    out = []
    for seq, boot, sensor, t, ticks, flags, *metrics in job.rows:
        if t is not None:
            t_source = "board"
        else:
            if boot not in offsets:
                known = conn.execute(
                    'SELECT "offset" FROM boots WHERE device = ? AND boot = ?', (job.device, boot)
                ).fetchone()
                offsets[boot] = None if known is None else known[0]
            off = offsets[boot]
            if off is None:
                t_source = "unknown"
            else:
                t, t_source = off + ticks / 1000.0, "ticks"
        out.append((job.device, seq, boot, sensor, t, t_source, ticks, job.received, flags, *metrics))
    before = conn.total_changes
    conn.executemany(_INSERT, out)
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
    stored = conn.execute("SELECT max(seq) FROM readings WHERE device = ?", (job.device,)).fetchone()[0]
    return stored or 0, inserted


class Writer:
    """The single writer thread: drains queued jobs, writes them in one transaction, commits once, answers."""

    def __init__(self, db_file: str | Path, stats: Stats) -> None:
        self.db_file = str(db_file)
        self.stats = stats
        self.queued = 0  # touched only on the event loop's thread
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="airwatt-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish every queued job, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None

    async def submit(self, job: Job) -> tuple[int, int]:
        """Queue a job; returns (stored_seq, newly inserted) once its transaction is committed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.queued += 1
        try:
            self._queue.put((job, fut, loop))
            return await asyncio.shield(fut)  # a client hanging up does not undo its commit
        finally:
            self.queued -= 1

    def _run(self) -> None:
        conn = store.connect(self.db_file)
        try:
            stop = False
            while not stop:
                item = self._queue.get()
                if item is None:
                    break
                group = [item]
                while len(group) < MAX_GROUP:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    group.append(item)
                self._write_group(conn, group)
        finally:
            conn.close()

    def _write_group(self, conn: sqlite3.Connection, group: list) -> None:
        results: list = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, _fut, _loop in group:
                conn.execute("SAVEPOINT batch")
                try:
                    results.append(write_job(conn, job))
                    conn.execute("RELEASE batch")
                except sqlite3.DatabaseError as err:
                    # One batch's failure must not sink the others sharing the transaction.
                    conn.execute("ROLLBACK TO batch")
                    conn.execute("RELEASE batch")
                    log.exception("batch from %s not stored", job.device)
                    results.append(WriteFailed(str(err)))
            conn.execute("COMMIT")
            self.stats.commits += 1
        except Exception as err:  # the commit itself failed: nothing in the group is stored
            log.exception("group commit of %d batches failed", len(group))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [WriteFailed(str(err))] * len(group)
        for (_job, fut, loop), result in zip(group, results):
            loop.call_soon_threadsafe(_resolve, fut, result)


def _resolve(fut: asyncio.Future, result: object) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


class Ingest:
    """What POST /v1/batches needs: the writer, a device-key cache, counters."""

    def __init__(self, db: sqlite_utils.Database, db_file: str | Path) -> None:
        self.db = db
        self.stats = Stats()
        self.writer = Writer(db_file, self.stats)
        self._keys: dict[str, bytes] = {}
        self._decoy = secrets.token_bytes(32)

    def key_for(self, device: str) -> bytes | None:
        key = self._keys.get(device)
        if key is None and 0 < len(device) <= fields.DEVICE_ID_MAX:
            key = store.device_key(self.db, device)  # indexed point read; misses are not cached
            if key is not None:
                self._keys[device] = key
        return key

    def authentic(self, device: str, body: bytes, signature: str) -> bool:
        key = self.key_for(device)
        # An unknown device costs the same HMAC as a known one, so timing does not reveal which ids exist.
        expected = hmac.new(key or self._decoy, body, hashlib.sha256).hexdigest().encode()
        try:
            given = signature.strip().lower().encode("ascii")
        except UnicodeEncodeError:
            given = b""
        return hmac.compare_digest(expected, given) and key is not None

    def reject(self, status: int, reason: str, body: dict | None = None) -> web.Response:
        self.stats.rejected[reason] += 1
        headers = {"Retry-After": "1"} if status == 503 else None
        return web.json_response(body or {"error": _REASONS.get(status, reason)}, status=status, headers=headers)


_REASONS = {401: "unauthorized", 413: "body too large", 503: "busy, retry later"}


async def _read_body(request: web.Request) -> bytes | None:
    """The body, or None when it exceeds MAX_BODY_BYTES (checked as it arrives, chunked uploads included)."""
    buf = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > fields.MAX_BODY_BYTES:
            return None


def make_handler(ingest_key: web.AppKey) -> object:
    async def post_batch(request: web.Request) -> web.Response:
        ingest: Ingest = request.app[ingest_key]
        if request.content_length is not None and request.content_length > fields.MAX_BODY_BYTES:
            return ingest.reject(413, "too_large")
        body = await _read_body(request)
        if body is None:
            return ingest.reject(413, "too_large")
        device = request.headers.get(DEVICE_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not ingest.authentic(device, body, signature):
            reason = "unknown_device" if ingest.key_for(device) is None else "bad_signature"
            return ingest.reject(401, reason)
        try:
            batch = parse_batch(body)
        except ProtocolError as err:
            return ingest.reject(400, "invalid", {"error": err.why, "path": err.path})
        if batch.device != device:
            return ingest.reject(
                400, "device_mismatch", {"error": "does not match the %s header" % DEVICE_HEADER, "path": "device"}
            )
        if ingest.writer.queued >= MAX_QUEUED:
            return ingest.reject(503, "busy")
        now = time.time()
        try:
            stored_seq, inserted = await ingest.writer.submit(job_from_batch(batch, now))
        except WriteFailed:
            return ingest.reject(503, "store_failed")
        stats = ingest.stats
        stats.batches_accepted += 1
        stats.readings_received += len(batch.readings)
        stats.readings_accepted += inserted
        return web.json_response({"v": fields.VERSION, "stored_seq": stored_seq, "server_time": int(time.time())})

    return post_batch
