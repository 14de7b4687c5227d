"""The sync worker: sends pending readings to the city platform and marks them synced once it confirms.

Exactly-once effect, whatever crashes: a reading is marked synced only AFTER the platform confirmed it, and
every upstream write is idempotent (deterministic ids + upsert for NGSI-LD, an Idempotency-Key derived from
the batch for the generic API). A kill -9 between the platform's write and our mark resends the same ids,
which rewrites the same entities: nothing lost, nothing doubled.

One round (`sync_once`): take the oldest pending readings, send them in batches (up to `parallel` requests
at once), then in ONE store transaction mark the confirmed ones and log every request in `sync_log` (the
operators' "last errors"); count refusals. While all goes well the loop (`run_worker`) pipelines rounds
(`sync_pipelined`: a sliding window of requests in flight, marks in group commits while others travel);
after any failure it sends one
batch at a time and waits: Retry-After when the platform gave one (429/503, seconds or an HTTP date), else
exponential backoff with jitter. "Retry now" (sync_store.request_retry, from the pages or `airwatt sync retry`
in any process; in the serving process it also sets the SYNC_NOW event the worker waits on) cuts any wait
short and releases held readings.

A reading the platform keeps refusing must not block the others. Policy:
- a 400/422 for a whole batch of several readings halves the batch (bisection: the good part syncs, the
  refused reading ends up alone);
- a refusal naming the reading (4xx in a 207 answer, or 400 for a batch of one) counts one strike in table
  `sync_held` (agent/sync_store.py); after HOLD_AFTER strikes the reading is held back for HOLD_S seconds, then tried once more
  per HOLD_S (a success clears its strikes).
  Held readings stay in the store, unsynced and visible (`held_readings`); "retry now" releases them.
- a reading the adapter cannot express is held at once, with the reason.
Readings of a device without a location are not taken at all when the platform needs one (NGSI-LD): they wait
in the store, unsynced, and go out once `airwatt device set ID --lat .. --lon ..` gives it one; the log says so
once per device per hour (LOCATION_NOTICE_S).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email.utils
import functools
import json
import logging
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import sqlite_utils
from aiohttp import web

from airwatt.agent import store, sync_store
from airwatt.agent.adapters import KINDS, Adapter, Outcome, Prepared, SendError, make_adapter
from airwatt.agent.commands import add_data_dir, add_verb, add_verbs, iso, open_existing
from airwatt.agent.config import ConfigError, PlatformConfig, load_config

log = logging.getLogger("airwatt.sync")

RETRY_AFTER_MAX_S = 3600.0  # never sleep longer than this on a platform's say-so
LOCATION_NOTICE_S = 3600.0  # how often the log repeats that a device without a location holds readings back
LOCATION_CHECK_S = 60.0  # how often the worker looks for such devices

# The worker's database calls run on one thread of their own: they never stall the event loop (ingest shares
# it), and closing the connection there waits for the call in flight, even when the worker was cancelled.
_DB_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airwatt-sync-db")


async def _db_call(fn: Callable, *args: object) -> object:
    return await asyncio.get_running_loop().run_in_executor(_DB_THREAD, fn, *args)


@dataclass
class SyncResult:
    """What one round did. `sent` readings went out; `synced` were confirmed and marked."""

    sent: int = 0
    synced: int = 0
    failed: int = 0  # not confirmed, stay pending (retried)
    refused: int = 0  # refused by the platform (strikes towards holding back)
    held: int = 0  # newly held back
    skipped: int = 0  # could not be expressed for this platform (held at once, not sent)
    status: int | None = None
    error: str = ""
    retry_after: float | None = None
    bisect: bool = False  # a whole batch was refused or too large: try halves
    bisect_size: int = 0  # the size of that batch
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.synced == self.sent


@dataclass
class SyncState:
    """Live state of the worker, for the pages (app key SYNC_STATE)."""

    enabled: bool = False
    kind: str | None = None
    url: str | None = None
    failures: int = 0
    batch_limit: int = 0
    next_attempt_at: float | None = None
    last_attempt_at: float | None = None
    last_result: dict = field(default_factory=dict)


SYNC_NOW = web.AppKey("airwatt_sync_now", asyncio.Event)  # set by sync_store.request_retry in this process
SYNC_STATE = web.AppKey("airwatt_sync_state", SyncState)


def _take(db: sqlite_utils.Database, limit: int, now: float, after: int | None = None,
          located: bool = False) -> tuple[list[dict], bool]:
    """The next batch, and whether any reading has strikes (then confirmed ones must clear theirs)."""
    return sync_store.pending_unheld(db, limit, now, after, located), sync_store.has_strikes(db)


@dataclass
class _Attempt:
    """One request of a round and what it settled."""

    result: SyncResult
    confirmed: list[int] = field(default_factory=list)
    refusals: dict[int, tuple[int | None, str]] = field(default_factory=dict)
    unencodable: dict[int, str] = field(default_factory=dict)


def _record(db: sqlite_utils.Database, attempts: list[_Attempt], had_strikes: bool) -> int:
    """A round's database writes: mark every confirmed reading and log every request in one transaction,
    then count refusals (rare: their own transaction). Returns how many readings are newly held back."""
    now = time.time()
    confirmed = [rid for a in attempts for rid in a.confirmed]
    entries = [(a.result.ok, a.result.status, a.result.sent, a.result.error) for a in attempts]
    sync_store.record_sync(db, confirmed, now, entries)
    held = 0
    if confirmed and had_strikes:
        sync_store.clear_strikes(db, confirmed)
    refusals = {rid: f for a in attempts for rid, f in a.refusals.items()}
    if refusals:
        held += sync_store.strike(db, refusals, now, hold_at_once=False)
    unencodable = {rid: (None, why) for a in attempts for rid, why in a.unencodable.items()}
    if unencodable:
        held += sync_store.strike(db, unencodable, now, hold_at_once=True)
    sync_store.prune_log(db, len(entries))
    return held


# -- one round --------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _refusal(status: int | None) -> bool:
    """A per-reading or whole-request status that blames the content (not the moment, not our setup)."""
    return status is not None and status in (400, 422)


def _short(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "")


async def _attempt(adapter: Adapter, session: aiohttp.ClientSession, rows: list[dict], timeout_s: float) -> _Attempt:
    """Send one batch and read the platform's answer (no database work)."""
    prepared = adapter.prepare(rows)
    result = SyncResult(sent=len(prepared.row_ids), skipped=len(prepared.unencodable))
    attempt = _Attempt(result, unencodable=prepared.unencodable)
    if prepared.unencodable:
        result.error = "cannot express %d reading(s): %s" % (
            len(prepared.unencodable), next(iter(prepared.unencodable.values())))
    if not prepared.row_ids:
        return attempt
    if adapter.send is not None:
        return await _attempt_own(adapter, session, prepared, timeout_s, attempt)
    try:
        async with session.request(
            prepared.method, prepared.url, data=prepared.body, headers=prepared.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,  # a redirect (to a login page, say) must never read as a confirmation
        ) as resp:
            result.status = resp.status
            body = await resp.read()
            retry_after = resp.headers.get("Retry-After")
    except asyncio.TimeoutError:
        result.error = "timeout: no answer within %g s" % timeout_s
    except aiohttp.ClientError as err:
        result.error = "connection: %s" % (str(err) or type(err).__name__)
    else:
        status = result.status
        if 200 <= status < 300:
            try:
                outcome = adapter.interpret(prepared, status, body)
            except Exception as err:  # a broken answer confirms nothing
                result.error = "HTTP %d with an unreadable answer: %s" % (status, err)
            else:
                _apply_outcome(attempt, prepared, outcome, "HTTP %d" % status)
        else:
            _apply_failure(attempt, prepared, status, body, retry_after)
    return _counted(attempt)


async def _attempt_own(
    adapter: Adapter, session: aiohttp.ClientSession, prepared: Prepared, timeout_s: float, attempt: _Attempt
) -> _Attempt:
    """One batch through an adapter's own `send` (SensorThings, MQTT): the same outcomes as an HTTP answer."""
    result = attempt.result
    try:
        outcome = await adapter.send(session, prepared, timeout_s)
    except asyncio.TimeoutError:
        result.error = "timeout: no answer within %g s" % timeout_s
    except aiohttp.ClientError as err:
        result.error = "connection: %s" % (str(err) or type(err).__name__)
    except SendError as err:
        result.status = err.status
        if err.status is None:
            result.error = str(err)
        else:
            _apply_failure(attempt, prepared, err.status, err.body or str(err).encode(), err.retry_after)
    else:
        _apply_outcome(attempt, prepared, outcome, adapter.kind)
    return _counted(attempt)


def _apply_outcome(attempt: _Attempt, prepared: Prepared, outcome: Outcome, what: str) -> None:
    result = attempt.result
    attempt.confirmed = outcome.confirmed
    attempt.refusals = {rid: f for rid, f in outcome.failed.items() if _refusal(f[0])}
    if outcome.failed:
        keys = dict(zip(prepared.row_ids, prepared.keys))
        sample = "; ".join(
            "%s: %s%s" % (keys[rid], "%s " % st if st else "", why)
            for rid, (st, why) in list(outcome.failed.items())[:3]
        )
        result.error = "%s: %d of %d failed: %s" % (what, len(outcome.failed), result.sent, sample)


def _apply_failure(attempt: _Attempt, prepared: Prepared, status: int, body: bytes, retry_after: str | None) -> None:
    """A whole request answered with a non-2xx status."""
    result = attempt.result
    result.retry_after = parse_retry_after(retry_after)
    result.error = "HTTP %d: %s" % (status, _short(body))
    if (status == 413 or _refusal(status)) and result.sent > 1:
        result.bisect = True
    elif status == 413 or _refusal(status):  # even alone it is refused (or too large): a strike
        attempt.refusals = {prepared.row_ids[0]: (status, _short(body))}


def _counted(attempt: _Attempt) -> _Attempt:
    result = attempt.result
    result.synced = len(attempt.confirmed)
    result.failed = result.sent - result.synced
    result.refused = len(attempt.refusals)
    return attempt


def _whole(adapter: Adapter, rows: list[dict]) -> list[dict]:
    """A full batch less the last rows the adapter keeps for the next one (Adapter.tail), never all of them."""
    k = adapter.tail(rows) if adapter.tail is not None else 0
    return rows[:-k] if 0 < k < len(rows) else rows


async def _send_round(
    adapter: Adapter, session: aiohttp.ClientSession, rows: list[dict], limit: int, timeout_s: float
) -> list[_Attempt]:
    """Send rows in requests of at most `limit`, all at once (the platform works on one while the next is
    built); the last rows of a request that the adapter keeps together with the next ones go in the next."""
    chunks = []
    while rows:
        chunk = rows[:limit] if len(rows) <= limit else _whole(adapter, rows[:limit])
        chunks.append(chunk)
        rows = rows[len(chunk):]
    return list(await asyncio.gather(*(_attempt(adapter, session, c, timeout_s) for c in chunks)))


def _summary(attempts: list[_Attempt], into: SyncResult | None = None) -> SyncResult:
    result = into or SyncResult()
    last_status = None
    for a in attempts:
        r = a.result
        result.sent += r.sent
        result.synced += r.synced
        result.failed += r.failed
        result.refused += r.refused
        result.skipped += r.skipped
        last_status = r.status
        if r.error and not result.error:
            result.error, result.status = r.error, r.status
        if r.retry_after is not None:
            result.retry_after = max(result.retry_after or 0.0, r.retry_after)
        if r.bisect and not result.bisect:
            result.bisect, result.bisect_size = True, r.sent
    if not result.error:
        result.status = last_status
    return result


def _finish(result: SyncResult, started: float) -> SyncResult:
    result.elapsed = time.monotonic() - started
    if result.error:
        log.warning("sync: %d sent, %d synced: %s", result.sent, result.synced, result.error)
    return result


async def sync_once(
    db: sqlite_utils.Database,
    adapter: Adapter,
    session: aiohttp.ClientSession,
    limit: int,
    timeout_s: float = 10.0,
    parallel: int = 1,
) -> SyncResult:
    """One round: send the oldest pending readings, `limit` per request and up to `parallel` requests at
    once, then record the outcome (marks + sync_log) in one transaction."""
    started = time.monotonic()
    rows, had_strikes = await _db_call(_take, db, limit * parallel, time.time(), None, adapter.needs_location)
    if not rows:
        return SyncResult()
    if len(rows) == limit * parallel:  # more may follow: a round the next rows complete waits for them
        rows = _whole(adapter, rows)
    attempts = await _send_round(adapter, session, rows, limit, timeout_s)
    held = await _db_call(_record, db, attempts, had_strikes)
    return _finish(_summary(attempts, SyncResult(held=held)), started)


async def sync_pipelined(
    db: sqlite_utils.Database,
    adapter: Adapter,
    session: aiohttp.ClientSession,
    limit: int,
    timeout_s: float = 10.0,
    parallel: int = 4,
) -> SyncResult:
    """Drain while every request succeeds, with up to `parallel` requests in flight (a sliding window over
    consecutive batches: the next batch goes out as soon as one is answered, so the platform always has
    work). Answered batches are marked in group commits on the DB thread while others travel. At the first
    failure no new batch goes out; the ones in flight are awaited and everything is recorded. Returns the
    totals (like sync_once's result)."""
    started = time.monotonic()
    inflight: collections.deque[asyncio.Future] = collections.deque()
    answered: list[_Attempt] = []  # not yet recorded
    every: list[_Attempt] = []
    recording: asyncio.Future | None = None
    strikes = exhausted = stop = False
    last_id: int | None = None
    held = 0
    try:
        while True:
            while not (exhausted or stop) and len(inflight) < parallel:
                rows, had = await _db_call(_take, db, limit, time.time(), last_id, adapter.needs_location)
                strikes = strikes or had
                if not rows:
                    exhausted = True
                    break
                if len(rows) == limit:
                    rows = _whole(adapter, rows)
                last_id = rows[-1]["id"]  # the next batch starts after it: these are in flight or confirmed
                inflight.append(asyncio.ensure_future(_attempt(adapter, session, rows, timeout_s)))
            if not inflight:
                break
            attempt = await inflight.popleft()
            every.append(attempt)
            answered.append(attempt)
            r = attempt.result
            stop = stop or bool(r.error or r.failed or not r.synced)
            if recording is None or recording.done():  # group commit: all answered since the last one
                if recording is not None:
                    held += recording.result()
                recording = asyncio.ensure_future(_db_call(_record, db, answered, strikes))
                answered = []
        if recording is not None:
            held += await recording
        if answered:
            held += await _db_call(_record, db, answered, strikes)
    finally:
        for future in inflight:
            future.cancel()  # cancelled mid-drain: what was not confirmed is not marked; a resend is harmless
    return _finish(_summary(every, SyncResult(held=held)), started)


# -- the loop ---------------------------------------------------------------------------------------------


class LocationNotices:
    """Says in the log, once per device per LOCATION_NOTICE_S, that a device without a location holds its
    readings in the store, and the command that fixes it (the worker looks every LOCATION_CHECK_S)."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say or log.warning
        self.told: dict[str, float] = {}  # device -> when the log last said so
        self.checked = float("-inf")

    def check(self, db: sqlite_utils.Database, now: float) -> list[str]:
        """Look (at most every LOCATION_CHECK_S) and log what is due; returns the devices logged."""
        if now - self.checked < LOCATION_CHECK_S:
            return []
        self.checked = now
        said = []
        for device, count in sync_store.waiting_for_location(db).items():
            if now - self.told.get(device, float("-inf")) >= LOCATION_NOTICE_S:
                self.told[device] = now
                said.append(device)
                self.say("sync: device %s has no location, so %d reading(s) wait in the store (NGSI-LD needs one):"
                         " airwatt device set %s --lat LAT --lon LON" % (device, count, device))
        return said




def backoff_delay(failures: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with 'equal jitter': half the step fixed, half random, so a fleet of agents coming
    back after a platform outage spreads out instead of knocking together."""
    step = min(max_s, base_s * 2 ** max(failures - 1, 0))
    return step / 2 + rand() * step / 2


async def _wait(wake: asyncio.Event, seconds: float, db: sqlite_utils.Database, slice_s: float) -> None:
    """Sleep up to `seconds`, cut short by the wake event or (checked every slice_s) a "retry now" said in meta."""
    deadline = time.monotonic() + seconds
    while not wake.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            await asyncio.wait_for(wake.wait(), min(left, slice_s))
        except asyncio.TimeoutError:
            if await _db_call(sync_store.take_retry, db):
                wake.set()


async def run_worker(
    db: sqlite_utils.Database,
    adapter: Adapter,
    session: aiohttp.ClientSession,
    *,
    batch_size: int = 100,
    timeout_s: float = 10.0,
    poll_s: float = 2.0,
    backoff_base_s: float = 1.0,
    backoff_max_s: float = 300.0,
    wake: asyncio.Event | None = None,
    state: SyncState | None = None,
    parallel: int = 4,
    stop_when_drained: bool = False,
) -> None:
    """Sync until cancelled (or, with stop_when_drained, until nothing is pending). While all goes well,
    `parallel` requests of `batch_size` go out at once; after any trouble, one at a time until it clears."""
    wake = wake or asyncio.Event()
    state = state or SyncState()
    state.enabled, state.kind, state.url = True, adapter.kind, adapter.url
    failures = 0
    limit = batch_size
    suspect = 0  # readings left in the last batch refused whole: one of them is to blame
    notices = LocationNotices() if adapter.needs_location else None
    while True:
        woken = wake.is_set()
        if await _db_call(sync_store.take_retry, db) or woken:  # both looked at: one "retry now" acts once
            wake.clear()
            released = await _db_call(sync_store.release_held, db)
            failures, limit, suspect = 0, batch_size, 0
            log.info("sync: retry now (%d held readings released)", released)
        state.failures, state.batch_limit, state.next_attempt_at = failures, limit, None
        state.last_attempt_at = time.time()
        try:
            if notices is not None:
                await _db_call(notices.check, db, time.monotonic())
            if failures == 0 and suspect == 0 and limit == batch_size:
                result = await sync_pipelined(db, adapter, session, limit, timeout_s, parallel)
            else:
                result = await sync_once(db, adapter, session, limit, timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # e.g. the database is busy for longer than its timeout: try again later
            log.exception("sync round failed")
            result = SyncResult(error="agent: %s" % err)
            result.sent = -1
        if result.sent or result.skipped:
            state.last_result = asdict(result)
        if result.sent == 0 and result.skipped:
            delay = 0.0  # those are held now: go on with the others
        elif result.sent == 0:
            failures = 0
            if stop_when_drained:
                return
            delay = poll_s
        elif result.bisect:
            # Binary search: send the first half; the batch size grows back only past the suspect readings.
            suspect = result.bisect_size
            limit = max(1, result.bisect_size // 2)
            delay = 0.0
        elif result.synced and not result.failed:
            failures = 0
            suspect = max(0, suspect - result.synced)
            if not suspect:
                limit = min(batch_size, limit * 2)
            delay = 0.0
        elif result.synced and result.failed == result.refused:
            # Progress, and the rest was refused (not a passing failure): strikes handle those.
            failures, delay = 0, 0.0
        else:
            failures += 1
            delay = backoff_delay(failures, backoff_base_s, backoff_max_s)
            if result.retry_after is not None:
                # Honour the platform's Retry-After; a little jitter on top, never less.
                delay = result.retry_after + random.random() * min(1.0, result.retry_after * 0.1)
        if delay > 0:
            state.next_attempt_at = time.time() + delay
            await _wait(wake, delay, db, max(poll_s, 1.0))


# -- aiohttp integration ----------------------------------------------------------------------------------


def setup_sync(app: web.Application, data_dir: str | Path, platform: PlatformConfig) -> None:
    """Install the sync worker on an aiohttp app: SYNC_STATE, SYNC_NOW (set by sync_store.request_retry for the
    store in `data_dir` while the app runs), and a background task with its own database connection to it.
    `platform` is the agent's [platform] config (url, kind, token, tenant, batch_size, timeout_s, poll_s,
    backoff_max_s); no url: no sync (the keys are still set)."""
    app[SYNC_NOW] = asyncio.Event()
    app[SYNC_STATE] = SyncState()
    app.cleanup_ctx.append(functools.partial(_wake_on_retry, data_dir=data_dir))
    url = platform.url
    if not url:
        return

    async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
        db = await _db_call(store.open_db, data_dir)
        adapter = make_adapter(platform.kind, url, platform.token, platform.tenant)
        session = aiohttp.ClientSession()
        task = asyncio.create_task(
            run_worker(
                db, adapter, session,
                batch_size=platform.batch_size, timeout_s=platform.timeout_s, poll_s=platform.poll_s,
                backoff_max_s=platform.backoff_max_s, wake=app[SYNC_NOW], state=app[SYNC_STATE],
            ),
            name="airwatt-sync",
        )
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if adapter.close is not None:
            await adapter.close()
        await session.close()
        await _db_call(db.conn.close)

    app.cleanup_ctx.append(worker_ctx)


async def _wake_on_retry(app: web.Application, data_dir: str | Path) -> AsyncIterator[None]:
    """While the app runs, a "retry now" said in this process (sync_store.request_retry) sets SYNC_NOW."""
    loop, event = asyncio.get_running_loop(), app[SYNC_NOW]

    def wake() -> None:
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:  # said from a thread without a loop
            here = False
        if here:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)  # an asyncio.Event is set from its own loop only

    stop = sync_store.on_retry(data_dir, wake)
    yield
    stop()


# -- standalone process: python -m airwatt.agent.sync --data-dir D [--platform-url U ...] ----------------


async def _main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(
            args.data_dir,
            {"platform.url": args.platform_url, "platform.kind": args.platform_kind,
             "platform.batch_size": args.batch_size},
        ).platform
    except ConfigError as err:
        print("airwatt sync: %s" % err, file=sys.stderr)
        return 2
    if not cfg.url:
        print("airwatt sync: no platform URL: give --platform-url or [platform] url in airwatt.toml", file=sys.stderr)
        return 2
    db = store.open_db(args.data_dir)
    adapter = make_adapter(cfg.kind, cfg.url, cfg.token, cfg.tenant)
    store.tune_gc()  # a long-running worker: every batch makes thousands of short-lived objects
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(
            run_worker(
                db, adapter, session, batch_size=cfg.batch_size, timeout_s=cfg.timeout_s, poll_s=cfg.poll_s,
                backoff_base_s=args.backoff_base, backoff_max_s=cfg.backoff_max_s,
                stop_when_drained=args.exit_when_drained,
            )
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread (embedded): no handlers
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if adapter.close is not None:
            await adapter.close()
    await _db_call(db.conn.close)
    return 0


def run_cli(args: argparse.Namespace) -> int:
    """The worker alone (`airwatt sync run`, `python -m airwatt.agent.sync`), until SIGTERM/SIGINT or drained."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))


def retry_cli(args: argparse.Namespace) -> int:
    """`airwatt sync retry`: ask the running worker (in any process) to retry now and release held readings."""
    db = store.open_db(args.data_dir)
    try:
        sync_store.request_retry(db)
        held = len(sync_store.held_readings(db))
    finally:
        db.conn.close()
    print("retry requested: the sync worker retries at its next check (within a few seconds); %d held reading(s)"
          " will be released" % held)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airwatt.agent.sync", description="run the sync worker alone")
    add_run_arguments(parser)
    return run_cli(parser.parse_args(argv))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the worker alone (`airwatt sync run`, `python -m airwatt.agent.sync`)."""
    add_data_dir(parser)
    parser.add_argument("--platform-url", help="city platform base URL (overrides airwatt.toml)")
    parser.add_argument("--platform-kind", choices=KINDS, help="city platform API")
    parser.add_argument("--batch-size", type=int, help="readings per request (overrides airwatt.toml)")
    parser.add_argument("--backoff-base", type=float, default=1.0, help="first backoff step, seconds (default 1)")
    parser.add_argument("--exit-when-drained", action="store_true", help="stop once nothing is pending")


# -- airwatt sync status -------------------------------------------------------------------------------------


def _sync_status(args: argparse.Namespace) -> int:
    db = open_existing(args.data_dir)
    state = sync_store.sync_state(db, errors=args.errors)
    if args.format == "json":
        json.dump(state, sys.stdout, indent=1)
        print()
        return 0
    oldest = state["oldest_pending_received"]
    print("pending:    %d" % state["pending"])
    print("synced:     %d" % state["synced"])
    lag = "none" if oldest is None else "%.0f s (oldest pending received %s)" % (time.time() - oldest, iso(oldest))
    print("lag:        %s" % lag)
    print("last sync:  %s" % (iso(state["last_sync_ok"]) or "never"))
    if state["last_errors"]:
        print("last errors:")
        for e in state["last_errors"]:
            print("  %s  status %s  %d readings  %s" % (iso(e["at"]), e["status"], e["count"] or 0, e["detail"] or ""))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`airwatt sync status|run|retry`, on the `airwatt` command's subparsers."""
    sync = add_verbs(subparsers, "sync", "sync to the city platform")
    status = add_verb(sync, "status", "pending and synced readings, last sync, last errors", _sync_status)
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.add_argument("--errors", type=int, default=5, help="how many recent errors to show")
    run = sync.add_parser("run", help="run the sync worker alone (without serve)")
    add_run_arguments(run)
    run.set_defaults(func=run_cli)
    add_verb(sync, "retry", "retry now: wake the sync worker and release held readings", retry_cli)


if __name__ == "__main__":
    raise SystemExit(main())
