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
import functools
import hashlib
import hmac
import json
import logging
import operator
import queue
import secrets
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
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
# Idempotent by (device, seq): a reading stored before is skipped. ON CONFLICT names that one constraint, unlike
# INSERT OR IGNORE, which would also silently skip a row breaking NOT NULL and so claim it stored.
_ON_CONFLICT = " ON CONFLICT(device, seq) DO NOTHING"
_INSERT = "INSERT INTO readings(%s) VALUES (%s)" % (
    ",".join('"%s"' % c for c in _COLUMNS),
    ",".join("?" * len(_COLUMNS)),
) + _ON_CONFLICT

_ROW = "(%s)" % ",".join("?" * len(_COLUMNS))


@functools.lru_cache(maxsize=fields.MAX_READINGS)
def _insert_rows(n: int) -> str:
    """An idempotent INSERT of n rows in one statement (n <= MAX_READINGS: 2,100 parameters, well under SQLite's
    32,766)."""
    return "INSERT INTO readings(%s) VALUES %s%s" % (
        ",".join('"%s"' % c for c in _COLUMNS),
        ",".join([_ROW] * n),
        _ON_CONFLICT,
    )


@dataclass
class Job:
    """One authenticated, valid batch, ready for the writer. rows: full `readings` rows in _COLUMNS order, with
    t and t_source None for a reading without board time (the writer times it from its boot's clock offset)."""

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


def _metric_getters() -> dict[str, object]:
    """Per sensor kind, a function from a values model's __dict__ to the tuple of ALL metric columns (its own
    metrics in place, None elsewhere). Metrics of one sensor are contiguous in the field table."""
    out = {}
    for sensor in fields.SENSORS:
        names = [row[1] for row in fields.metrics(sensor)]
        start = store.METRIC_COLUMNS.index(names[0])
        assert store.METRIC_COLUMNS[start : start + len(names)] == tuple(names)
        before, after = (None,) * start, (None,) * (len(store.METRIC_COLUMNS) - start - len(names))
        get = operator.itemgetter(*names)
        single = len(names) == 1

        def extract(values: dict, get=get, before=before, after=after, single=single) -> tuple:
            got = get(values)
            return before + ((got,) if single else got) + after

        out[sensor] = extract
    return out


_EXTRACT = _metric_getters()


def job_from_batch(batch: Batch, received: float) -> Job:
    """The rows to insert, built on the event loop's thread so the writer thread does little Python."""
    device = batch.device
    rows = []
    for r in batch.readings:
        t = r.t
        head = (device, r.seq, r.boot, r.sensor, t, "board" if t is not None else None, r.ticks, received)
        rows.append(head + (",".join(r.flags),) + _EXTRACT[r.sensor](r.values.__dict__))
    status = None
    if batch.status is not None:
        status = json.dumps(batch.status.model_dump(), sort_keys=True, separators=(",", ":"))
    return Job(device, batch.boot, batch.fw, batch.sent_ticks, status, received, rows)


class Known:
    """What the writer knows of the store, so most batches need no SELECT: per device the highest seq stored,
    per (device, boot) the learnt clock offset (None: not learnt). A transaction's changes are staged and kept
    only when it commits. Only the writer thread touches this, and only the writer inserts readings."""

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
            self.seq[device] = conn.execute("SELECT max(seq) FROM readings WHERE device = ?", (device,)).fetchone()[0] or 0
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
    # One multi-row INSERT per batch: one sqlite3_step (one release of the GIL) instead of one per row, which
    # keeps the writer thread from queueing behind the event loop for the GIL 50 times a batch.
    conn.execute(_insert_rows(len(rows)), list(chain.from_iterable(rows)))
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
        known = Known()
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
                try:
                    results = self._write(conn, known, [job for job, _f, _l in group])
                except Exception:
                    # Something in the group failed: write each batch alone so one bad batch sinks only itself.
                    log.exception("group of %d batches failed; writing them one by one", len(group))
                    results = []
                    for job, _f, _l in group:
                        try:
                            results.extend(self._write(conn, known, [job]))
                        except Exception as err:
                            log.exception("batch from %s not stored", job.device)
                            results.append(WriteFailed(str(err)))
                for (_job, fut, loop), result in zip(group, results):
                    loop.call_soon_threadsafe(_resolve, fut, result)
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, known: Known, jobs: list[Job]) -> list[tuple[int, int]]:
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
        self.stats.commits += 1
        return results


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
