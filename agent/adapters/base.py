"""The shared parts of the adapters: what a prepared request and an outcome are, and the timestamps and flags
every kind writes. Each kind's module builds on this one; agent/adapters/__init__.py picks the kind.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("ngsi-ld", "http-json", "sensorthings", "mqtt")


@dataclass(frozen=True)
class Prepared:
    """One request ready to send. `keys[i]` is the platform id of reading `row_ids[i]` (same order)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    row_ids: list[int]
    keys: list[str]
    # Readings the adapter cannot express for this platform (e.g. no location for NGSI-LD): id -> reason.
    unencodable: dict[int, str] = field(default_factory=dict)
    # The rows themselves, for adapters whose `send` builds the requests (SensorThings, MQTT).
    rows: Sequence[Mapping] = ()

    def key_to_row(self) -> dict[str, int]:
        return dict(zip(self.keys, self.row_ids))


@dataclass
class Outcome:
    """What the platform said about each reading of a request that got a 2xx answer."""

    confirmed: list[int] = field(default_factory=list)
    # Reading id -> (status, detail). Status 4xx: the platform refused this reading (counts towards holding
    # it back); 5xx or None: a passing failure, retried like any other.
    failed: dict[int, tuple[int | None, str]] = field(default_factory=dict)


class SendError(Exception):
    """A whole request failed in an adapter's own `send`: `status` is the platform's HTTP status (None: no
    answer at all, e.g. the broker is unreachable), `body` its answer, `retry_after` its Retry-After header.
    The sync worker treats it as it treats the same answer to a request it made itself."""

    def __init__(self, message: str, status: int | None = None, body: bytes = b"", retry_after: str | None = None):
        super().__init__(message)
        self.status, self.body, self.retry_after = status, body, retry_after


@dataclass(frozen=True)
class Adapter:
    """A platform kind bound to its base URL and credentials.

    Plain HTTP kinds (NGSI-LD, HTTP JSON) are two pure functions: the worker sends `prepare`'s request and
    hands the answer to `interpret`. Kinds that need more than one request per batch, state, or another
    protocol (SensorThings: provisioning and look-ups; MQTT) also give `send`, which does the whole exchange
    for one prepared batch and returns its Outcome (or raises SendError, asyncio.TimeoutError or
    aiohttp.ClientError); `close` then releases what it holds (a broker connection)."""

    kind: str
    url: str
    prepare: Callable[[Sequence[dict]], Prepared]
    interpret: Callable[[Prepared, int, bytes], Outcome]
    # The platform needs the device's location (NGSI-LD, SensorThings): readings of a device without one wait
    # in the store.
    needs_location: bool = False
    send: Callable[[Any, Prepared, float], Awaitable[Outcome]] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    # How many of a full batch's last rows belong with the next batch (NGSI-LD: a round of phase readings that
    # makes one entity); None: a batch may end anywhere.
    tail: Callable[[Sequence[Mapping]], int] | None = None


_MINUTES: dict[int, str] = {}  # minute number -> "YYYY-MM-DDTHH:MM:" (a site's boards share their minutes)


def iso_time(t: float) -> str:
    """Unix seconds -> ISO 8601 UTC ('2026-11-22T01:56:29Z', milliseconds only when t has a fraction)."""
    ms = round(t * 1000)
    secs, frac = divmod(ms, 1000)
    minute, seconds = divmod(secs, 60)  # Unix time has no leap seconds: every minute is 60 s
    prefix = _MINUTES.get(minute)
    if prefix is None:
        if len(_MINUTES) > 8192:
            _MINUTES.clear()
        prefix = _MINUTES[minute] = "%04d-%02d-%02dT%02d:%02d:" % time.gmtime(minute * 60)[:5]
    if frac:
        return "%s%02d.%03dZ" % (prefix, seconds, frac)
    return "%s%02dZ" % (prefix, seconds)


def meter(row: Mapping) -> dict | None:
    """Which of a board's meters took a reading (agent/meters.py): {"instance", and "phase" or "circuit"}; None for
    a board's only meter, which has no meters row."""
    if row.get("meter_phase"):
        return {"instance": row["instance"], "phase": row["meter_phase"]}
    if row.get("meter_circuit"):
        return {"instance": row["instance"], "circuit": row["meter_circuit"]}
    return None


def flag_list(row: dict) -> list[str]:
    """The reading's protocol flags as a list, plus `time_unknown` when the store has no wall time for it."""
    flags = [f for f in (row.get("flags") or "").split(",") if f]
    if row.get("t") is None:
        flags.append("time_unknown")
    return flags
