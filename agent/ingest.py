"""Durable ingest: POST /v1/batches.

Every accepted batch is committed to SQLite (WAL, synchronous=FULL) by the group-commit writer (writer.py)
before its 200 goes out. SQLite work never runs on the event loop's thread except tiny indexed reads (device
keys, cached).

Order of checks: size (413) -> device + signature (401, the same bare answer for an unknown device and a bad
signature) -> body (400 naming the field) -> header/body device mismatch (400, path "device": the sender proved
it holds the header device's key, so telling it what is wrong leaks nothing) -> store -> 200.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import operator
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils
from aiohttp import web

from airwatt.protocol import fields
from airwatt.protocol.check import ProtocolError
from airwatt.protocol.models import Batch, parse_batch

from . import device_settings, firmware, store
from .reading import METRIC_COLUMNS
from .server import read_limited
from .writer import Job, WriteFailed, Writer

log = logging.getLogger("airwatt.ingest")

DEVICE_HEADER = "X-AirWatt-Device"
SIGNATURE_HEADER = "X-AirWatt-Signature"
MAX_QUEUED = 2000  # batches waiting for the writer; beyond this, 503 + Retry-After (the board backs off)


@dataclass
class Stats:
    """In-process counters for /metrics."""

    batches_accepted: int = 0
    readings_accepted: int = 0  # newly stored (a replayed reading is not counted twice)
    readings_received: int = 0
    rejected: Counter = field(default_factory=Counter)  # by reason
    commits: int = 0


def _metric_getters() -> dict[str, object]:
    """Per sensor kind, a function from a values model's __dict__ to the tuple of ALL metric columns (its own
    metrics in place, None elsewhere). Metrics of one sensor are contiguous in the field table."""
    out = {}
    for sensor in fields.SENSORS:
        names = [row[1] for row in fields.metrics(sensor)]
        start = METRIC_COLUMNS.index(names[0])
        if METRIC_COLUMNS[start : start + len(names)] != tuple(names):
            raise RuntimeError("metrics of sensor %s are not contiguous in the field table" % sensor)
        before, after = (None,) * start, (None,) * (len(METRIC_COLUMNS) - start - len(names))
        get = operator.itemgetter(*names)
        single = len(names) == 1

        def extract(values: dict, get=get, before=before, after=after, single=single) -> tuple:
            got = get(values)
            return before + ((got,) if single else got) + after

        out[sensor] = extract
    return out


_EXTRACT = _metric_getters()


def job_from_batch(batch: Batch, received: float) -> Job:
    """The batch as full `readings` rows for the writer process (built here, where the batch is already parsed)."""
    device = batch.device
    rows = []
    # Stored to the second: a whole number in a REAL column takes 4 bytes on disk instead of 8, on every row.
    # (The boot's clock offset is learnt from Job.received, which keeps its fraction.)
    received_s = float(round(received))
    for r in batch.readings:
        t = r.t
        head = (device, r.seq, r.boot, r.sensor, t, "board" if t is not None else None, r.ticks, received_s)  # HEAD
        rows.append(head + (",".join(r.flags),) + _EXTRACT[r.sensor](r.values.__dict__) + (r.instance,))
    status = None
    if batch.status is not None:
        status = json.dumps(batch.status.model_dump(exclude_unset=True), sort_keys=True, separators=(",", ":"))
    return Job(device, batch.boot, batch.fw, batch.sent_ticks, status, received, rows)


class Ingest:
    """What POST /v1/batches needs: the writer, a device-key cache, counters."""

    def __init__(self, db: sqlite_utils.Database, db_file: str | Path, body_timeout_s: float = 30.0) -> None:
        self.db = db
        self.body_timeout_s = body_timeout_s
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


def make_handler(ingest_key: web.AppKey) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The POST /v1/batches handler, reading its Ingest from the app under ingest_key."""

    async def post_batch(request: web.Request) -> web.Response:
        ingest: Ingest = request.app[ingest_key]
        if request.content_length is not None and request.content_length > fields.MAX_BODY_BYTES:
            return ingest.reject(413, "too_large")
        body = await read_limited(request, fields.MAX_BODY_BYTES, ingest.body_timeout_s)
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
        # Each board in its own version: boards in the field keep speaking v1.
        answer = {"v": batch.v, "stored_seq": stored_seq, "server_time": int(time.time())}
        try:
            settings = device_settings.exchange(ingest.db, device, batch.status.settings if batch.status else None)
        except sqlite3.Error as err:  # the readings are stored: answer without settings, they go next time
            log.warning("settings of %s not exchanged: %s", device, err)
            settings = None
        if settings is not None:
            answer["settings"] = settings
        try:
            offer = firmware.exchange(ingest.db, device, batch.status.fw if batch.status else None)
        except sqlite3.Error as err:  # as for settings: the offer goes with a later answer
            log.warning("firmware of %s not exchanged: %s", device, err)
            offer = None
        if offer is not None:
            answer["firmware"] = offer
        return web.json_response(answer)

    return post_batch
