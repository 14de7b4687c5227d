"""An emulated city platform: NGSI-LD batch upsert and the generic HTTP JSON batch API, with faults on demand.

It keeps what it accepted in its own SQLite file (table `records`: api, id, body JSON, writes = how many
times that id was written), so tests can check the EFFECT of a sync: every reading present exactly once.

    POST /ngsi-ld/v1/entityOperations/upsert   NGSI-LD (application/ld+json, @context in every entity)
    POST /readings                             generic JSON batch API (agent/adapters/README.md)
    GET  /ngsi-ld/v1/entities/{id}             one stored entity
    POST /_faults   {"5xx": 2, "429": 1, ...} or {"schedule": ["ok", "drop", ...]}, plus settings
                    "retry_after" (s), "retry_after_date" (bool), "timeout_s", "partial_fail" (how many of a
                    batch fail in a "partial" answer), "latency_s" (added to every answer), "reject": [ids],
                    "reject_whole" (a refused entity fails the whole request with 400 instead of a 207),
                    "sink" (confirm everything without parsing or storing: to bench the agent alone)
    GET  /_faults   what is still scheduled;  GET /_stats   counters;  POST /_reset  forget faults and data

Fault kinds, each consumed by one data request, in order:
    5xx      500, nothing written          503       503 with Retry-After, nothing written
    429      429 with Retry-After (seconds, or an HTTP date with "retry_after_date"), nothing written
    400      400 for the whole request, nothing written
    timeout  written, then no answer for `timeout_s` (the client's timeout fires: a lost answer)
    drop     written, then the connection is closed without an answer
    partial  207: the first `partial_fail` entities fail with a 503 error, the others are written
    ok       a normal answer (useful in a schedule)
Entities the Smart Data Model check refuses (no dateObserved, location not a [lon, lat] Point,
relativeHumidity outside 0..1, ...) or listed in "reject" fail with a 400 error entry in a 207 answer.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import hashlib
import json
import re
import sqlite3
import sys
import time
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

FAULT_KINDS = ("5xx", "503", "429", "400", "timeout", "drop", "partial", "ok")
NGSI_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
REQUIRED = {
    "AirQualityObserved": ("dateObserved", "location"),
    "ACMeasurement": ("dateObserved", "location", "phaseType"),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    api TEXT NOT NULL, id TEXT NOT NULL, type TEXT, body TEXT NOT NULL,
    writes INTEGER NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL, PRIMARY KEY (api, id));
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, at REAL, api TEXT, status INTEGER, fault TEXT, ids TEXT);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, body_hash TEXT, status INTEGER, answer TEXT, at REAL);
"""


class Platform:
    """State of one emulated platform: its database, the fault schedule and counters."""

    def __init__(self, db_path: str | Path, faults: dict | None = None) -> None:
        self.db_path = str(db_path)
        self.conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        # A fake: its own durability is not under test. OFF still keeps every write across a kill of this
        # process (the OS holds it); only a power cut could lose one. NORMAL cost a third of its storing time.
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.executescript(_SCHEMA)
        self.schedule: collections.deque[str] = collections.deque()
        self.retry_after = 1.0
        self.retry_after_date = False
        self.timeout_s = 30.0
        self.partial_fail = 1
        self.latency_s = 0.0
        self.reject: set[str] = set()
        self.reject_whole = False  # True: a refused entity fails the whole request with 400 (no 207)
        self.sink = False  # True: confirm every request without parsing or storing (benches the agent alone)
        self.stats: collections.Counter[str] = collections.Counter()
        self.stalled = 0
        if faults:
            self.set_faults(faults)

    # -- faults -------------------------------------------------------------------------------------------

    def set_faults(self, spec: dict) -> None:
        """Append faults ({"kind": count, ...} or {"schedule": [...]}) and change settings."""
        if not isinstance(spec, dict):
            raise ValueError("faults must be a JSON object")
        for key, value in spec.items():
            if key in FAULT_KINDS:
                if not isinstance(value, int) or value < 0:
                    raise ValueError("fault count %s must be a whole number >= 0" % key)
                self.schedule.extend([key] * value)
            elif key == "schedule":
                bad = [k for k in value if k not in FAULT_KINDS]
                if bad:
                    raise ValueError("unknown fault kinds %s (known: %s)" % (bad, ", ".join(FAULT_KINDS)))
                self.schedule.extend(value)
            elif key in ("retry_after", "timeout_s", "latency_s"):
                setattr(self, key, float(value))
            elif key == "partial_fail":
                self.partial_fail = int(value)
            elif key in ("retry_after_date", "reject_whole", "sink"):
                setattr(self, key, bool(value))
            elif key == "reject":
                self.reject = set(value)
            elif key == "clear":
                if value:
                    self.schedule.clear()
            else:
                raise ValueError("unknown fault key %r" % key)

    @staticmethod
    def check_faults(spec: dict | None) -> None:
        """Raise ValueError if `spec` would be refused by set_faults (checked on a throwaway schedule)."""
        if spec is None:
            return
        probe = Platform.__new__(Platform)
        probe.schedule = collections.deque()
        probe.set_faults(spec)

    def next_fault(self) -> str:
        return self.schedule.popleft() if self.schedule else "ok"

    def retry_after_header(self) -> str:
        if self.retry_after_date:
            return formatdate(time.time() + self.retry_after, usegmt=True)
        return "%g" % self.retry_after

    # -- storage ------------------------------------------------------------------------------------------

    def store(self, api: str, items: list[tuple], merge: bool = False) -> list[bool]:
        """Write (id, type, body) or (id, type, body, body's JSON text) items in one transaction; returns per
        item whether it was new."""
        now = time.time()
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            old: dict[str, str | None] = {}
            keys = [item[0] for item in items]
            # Which ids exist (for 201's list of created ones); the old bodies only when merging into them.
            what = "id, body" if merge else "id, NULL"
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                cur.execute(
                    "SELECT %s FROM records WHERE api = ? AND id IN (%s)" % (what, ",".join("?" * len(chunk))),
                    [api, *chunk],
                )
                old.update(cur.fetchall())
            created, rows = [], []
            for key, kind, body, *given in items:
                text = given[0] if given else None
                if key in old and merge:
                    merged = json.loads(old[key])
                    merged.update(body)
                    body, text = merged, None
                created.append(key not in old)
                if text is None:
                    text = json.dumps(body, separators=(",", ":"))
                old[key] = text  # the same id twice in one batch: the second updates the first
                rows.append((api, key, kind, text, now, now))
            cur.executemany(
                "INSERT INTO records(api, id, type, body, writes, first_at, last_at) VALUES (?,?,?,?,1,?,?)"
                " ON CONFLICT(api, id) DO UPDATE SET body = excluded.body, type = excluded.type,"
                " writes = writes + 1, last_at = excluded.last_at",
                rows,
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return created

    def log_request(self, api: str, status: int, fault: str, ids: list[str]) -> None:
        self.stats["requests"] += 1
        self.stats["status_%d" % status] += 1
        self.stats["fault_" + fault] += 1
        self.conn.execute(
            "INSERT INTO requests(at, api, status, fault, ids) VALUES (?,?,?,?,?)",
            (time.time(), api, status, fault, json.dumps(ids)),
        )

    def counts(self) -> dict:
        rows = self.conn.execute(
            "SELECT api, count(*), coalesce(sum(writes), 0) FROM records GROUP BY api"
        ).fetchall()
        return {api: {"records": n, "writes": w} for api, n, w in rows}


PLATFORM = web.AppKey("airwatt_platform", Platform)


# -- checks -----------------------------------------------------------------------------------------------


def check_entity(ent: object, ld: bool) -> str | None:
    """Why the platform refuses this entity (NGSI-LD + the Smart Data Model's required facts), or None."""
    if not isinstance(ent, dict):
        return "an entity must be a JSON object"
    eid, etype = ent.get("id"), ent.get("type")
    if not isinstance(eid, str) or not eid.startswith("urn:"):
        return "id must be a URN"
    if not isinstance(etype, str) or not etype:
        return "type is required"
    if ld and "@context" not in ent:
        return "application/ld+json needs @context in every entity"
    if not ld and "@context" in ent:
        return "application/json must not carry @context (use a Link header)"
    for name in REQUIRED.get(etype, ()):
        if name not in ent:
            return "%s requires %s" % (etype, name)
    for name, attr in ent.items():
        if name in ("id", "type", "@context"):
            continue
        if not isinstance(attr, dict) or attr.get("type") not in ("Property", "GeoProperty", "Relationship"):
            return "%s is not a normalized attribute" % name
        if attr["type"] == "Relationship" and not isinstance(attr.get("object"), (str, list)):
            return "%s: a Relationship needs an object" % name
    loc = ent.get("location")
    if loc is not None:
        value = loc.get("value") if loc.get("type") == "GeoProperty" else None
        coords = value.get("coordinates") if isinstance(value, dict) and value.get("type") == "Point" else None
        if not (isinstance(coords, list) and len(coords) == 2 and all(isinstance(c, (int, float)) for c in coords)):
            return "location must be a GeoProperty holding a GeoJSON Point"
        if not (-180 <= coords[0] <= 180 and -90 <= coords[1] <= 90):
            return "location coordinates must be [lon, lat]"
    rh = ent.get("relativeHumidity")
    if rh is not None and not (isinstance(rh.get("value"), (int, float)) and 0 <= rh["value"] <= 1):
        return "relativeHumidity must be a fraction 0..1"
    return None


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def parse_array(text: str) -> tuple[list, list[str]]:
    """A JSON array's elements and each element's own text (so an entity is stored as sent, not re-encoded:
    that was a third of the platform's time). Raises ValueError as json.loads does for bad JSON."""
    ws = _WS.match
    i = ws(text, 0).end()
    if text[i : i + 1] != "[":
        raise ValueError("not a JSON array")
    values: list = []
    texts: list[str] = []
    i = ws(text, i + 1).end()
    if text[i : i + 1] != "]":
        while True:
            value, end = _DECODER.raw_decode(text, i)
            values.append(value)
            texts.append(text[i:end])
            i = ws(text, end).end()
            sep = text[i : i + 1]
            if sep == "]":
                break
            if sep != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = ws(text, i + 1).end()
    if ws(text, i + 1).end() != len(text):
        raise json.JSONDecodeError("Extra data", text, i + 1)
    return values, texts


_READINGS_START = re.compile(r'[ \t\n\r]*\{[ \t\n\r]*"readings"[ \t\n\r]*:')


def parse_readings(text: str) -> tuple[dict, list[str]]:
    """A body that is exactly {"readings": [...]}, with each item's own text (stored as sent, not re-encoded);
    ValueError for any other text (the caller then parses it the plain way)."""
    start = _READINGS_START.match(text)
    end = len(text.rstrip(" \t\n\r")) - 1
    if start is None or end < start.end() or text[end] != "}":
        raise ValueError("not {\"readings\": [...]}")
    items, texts = parse_array(text[start.end() : end])
    return {"readings": items}, texts


def _without_context(ent: dict, text: str, cache: list) -> str | None:
    """The entity's text without its trailing "@context" member (what the platform stores), or None when the
    text is not laid out that way (then the caller re-encodes the parsed entity)."""
    ctx = ent["@context"]
    if cache and cache[0] == ctx:
        tail = cache[1]
    else:
        tail = ',"@context":%s}' % json.dumps(ctx, separators=(",", ":"), ensure_ascii=False)
        cache[:] = [ctx, tail]
    if text.endswith(tail) and text.count('"@context"') == 1:
        return text[: -len(tail)] + "}"
    return None


def _problem(kind: str, title: str, detail: str, status: int) -> dict:
    return {"type": NGSI_ERRORS + kind, "title": title, "detail": detail, "status": status}


# -- handlers ---------------------------------------------------------------------------------------------


async def _before_write(request: web.Request, api: str, sunk_status: int) -> tuple[str, web.Response | None]:
    """A write request's turn in the fault schedule, and the answer given without writing, if any: injected faults,
    and the bench's sink mode (read, confirm, keep nothing)."""
    platform = request.app[PLATFORM]
    fault = platform.next_fault()
    return fault, await _answer_early(request, platform, fault, api, sunk_status)


async def _answer_early(request: web.Request, platform: Platform, fault: str, api: str,
                        sunk_status: int) -> web.Response | None:
    if platform.latency_s:
        await asyncio.sleep(platform.latency_s)
    if fault == "5xx":
        platform.log_request(api, 500, fault, [])
        return web.json_response(_problem("InternalError", "Injected fault", "try again later", 500), status=500)
    if fault in ("429", "503"):
        status = int(fault)
        platform.log_request(api, status, fault, [])
        return web.json_response(
            _problem("TooManyRequests" if status == 429 else "ServiceUnavailable", "Injected fault", "slow down", status),
            status=status,
            headers={"Retry-After": platform.retry_after_header()},
        )
    if fault == "400":
        platform.log_request(api, 400, fault, [])
        return web.json_response(_problem("BadRequestData", "Injected fault", "whole request refused", 400), status=400)
    if platform.sink:
        await _body(request)
        platform.stats["sunk"] += 1
        return web.Response(status=sunk_status)
    return None


async def _after_write(platform: Platform, fault: str, request: web.Request) -> bool:
    """Faults that lose the answer of a request whose write went through; True: the connection is gone."""
    if fault == "timeout":
        platform.stalled += 1
        try:
            await asyncio.sleep(platform.timeout_s)
        finally:
            platform.stalled -= 1
    elif fault == "drop":
        if request.transport is not None:
            request.transport.abort()  # RST, no answer: the client cannot tell whether the write happened
        return True
    return False


async def _body(request: web.Request) -> bytes:
    """The request body; a client that went away mid-body (killed, timed out) ends the request quietly."""
    try:
        return await request.read()
    except (ConnectionResetError, asyncio.IncompleteReadError) as err:
        raise web.HTTPBadRequest(text="request body cut off") from err


async def upsert(request: web.Request) -> web.StreamResponse:
    platform = request.app[PLATFORM]
    fault, early = await _before_write(request, "ngsi-ld", 204)
    if early is not None:
        return early
    ctype = request.content_type
    if ctype not in ("application/ld+json", "application/json"):
        platform.log_request("ngsi-ld", 415, fault, [])
        return web.json_response(_problem("InvalidRequest", "Unsupported Media Type", ctype, 415), status=415)
    raw = await _body(request)
    texts: list[str | None] | None = None
    try:
        try:
            entities, texts = parse_array(raw.decode("utf-8"))
        except ValueError:
            entities = json.loads(raw)  # not a UTF-8 JSON array: the plain parser answers (and says why)
    except ValueError as err:
        platform.log_request("ngsi-ld", 400, fault, [])
        return web.json_response(_problem("InvalidRequest", "Invalid JSON", str(err), 400), status=400)
    if not isinstance(entities, list) or not entities:
        platform.log_request("ngsi-ld", 400, fault, [])
        return web.json_response(
            _problem("BadRequestData", "Bad request", "the body must be a non-empty JSON array", 400), status=400
        )
    ld = ctype == "application/ld+json"
    merge = request.query.get("options") == "update"
    good: list[tuple] = []
    errors = []
    fail_left = platform.partial_fail if fault == "partial" else 0
    context_tail: list = []
    for n, ent in enumerate(entities):
        why = check_entity(ent, ld)
        eid = ent.get("id") if isinstance(ent, dict) else None
        if why is None and eid in platform.reject:
            why = "refused by the platform's rules"
        if why is not None:
            errors.append({"entityId": eid, "error": _problem("BadRequestData", "Bad entity", why, 400)})
        elif fail_left > 0:
            fail_left -= 1
            errors.append(
                {"entityId": eid, "error": _problem("InternalError", "Injected partial failure", "retry", 503)}
            )
        else:
            text = None
            if texts is not None and not merge:
                text = _without_context(ent, texts[n], context_tail) if "@context" in ent else texts[n]
            if text is None:
                good.append((eid, ent["type"], {k: v for k, v in ent.items() if k != "@context"}))
            else:
                good.append((eid, ent["type"], ent, text))
    if platform.reject_whole and any(e["error"]["status"] == 400 for e in errors):
        platform.log_request("ngsi-ld", 400, fault, [])
        first = next(e for e in errors if e["error"]["status"] == 400)
        detail = "%s: %s" % (first["entityId"], first["error"]["detail"])
        return web.json_response(_problem("BadRequestData", "Bad entity in batch", detail, 400), status=400)
    created = platform.store("ngsi-ld", good, merge=merge) if good else []
    ids = [g[0] for g in good]
    if errors:
        status, answer = 207, {"success": ids, "errors": errors}
    elif any(created):
        status, answer = 201, [key for key, new in zip(ids, created) if new]
    else:
        status, answer = 204, None
    platform.log_request("ngsi-ld", status, fault, ids)
    await _after_write(platform, fault, request)
    if answer is None:
        return web.Response(status=204)
    return web.json_response(answer, status=status)


def check_item(item: object) -> str | None:
    if not isinstance(item, dict):
        return "an item must be a JSON object"
    if not isinstance(item.get("device"), str) or not isinstance(item.get("seq"), int):
        return "device (string) and seq (integer) are required"
    if item.get("id") != "%s:%d" % (item["device"], item["seq"]):
        return "id must be <device>:<seq>"
    if not isinstance(item.get("values"), dict):
        return "values must be an object"
    return None


async def readings(request: web.Request) -> web.StreamResponse:
    platform = request.app[PLATFORM]
    fault, early = await _before_write(request, "http-json", 200)
    if early is not None:
        return early
    raw = await _body(request)
    key = request.headers.get("Idempotency-Key")
    body_hash = hashlib.sha256(raw).hexdigest()
    if key:
        seen = platform.conn.execute(
            "SELECT body_hash, status, answer FROM idempotency WHERE key = ?", (key,)
        ).fetchone()
        if seen is not None:
            if seen[0] != body_hash:
                platform.log_request("http-json", 422, fault, [])
                return web.json_response({"error": "Idempotency-Key reused with another body"}, status=422)
            # A replay: answer as the first time, write nothing (the first request's effect stands).
            platform.log_request("http-json", seen[1], "replay", [])
            platform.stats["replays"] += 1
            await _after_write(platform, fault, request)
            return web.Response(
                status=seen[1], text=seen[2], content_type="application/json", headers={"Idempotent-Replayed": "true"}
            )
    texts: list[str] | None = None
    try:
        try:
            doc, texts = parse_readings(raw.decode("utf-8"))
        except ValueError:
            doc = json.loads(raw)  # laid out otherwise (or bad): the plain parser answers (and says why)
    except ValueError as err:
        platform.log_request("http-json", 400, fault, [])
        return web.json_response({"error": "invalid JSON: %s" % err}, status=400)
    items = doc.get("readings") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        platform.log_request("http-json", 400, fault, [])
        return web.json_response({"error": "body must be {\"readings\": [...]} with at least one item"}, status=400)
    results, good = [], []
    fail_left = platform.partial_fail if fault == "partial" else 0
    for n, it in enumerate(items):
        why = check_item(it)
        iid = it.get("id") if isinstance(it, dict) else None
        if why is None and iid in platform.reject:
            why = "refused by the platform's rules"
        if why is not None:
            results.append({"id": iid, "ok": False, "status": 400, "error": why})
        elif fail_left > 0:
            fail_left -= 1
            results.append({"id": iid, "ok": False, "status": 503, "error": "injected partial failure"})
        else:
            good.append((iid, it.get("sensor"), it) + ((texts[n],) if texts is not None else ()))
            results.append({"id": iid, "ok": True})
    if good:
        platform.store("http-json", good)
    status = 200 if all(r["ok"] for r in results) else 207
    text = json.dumps({"results": results}, separators=(",", ":"))
    # Only a fully applied answer is replayable: a partial one must let the client retry the failed items.
    if key and status == 200:
        platform.conn.execute(
            "INSERT OR REPLACE INTO idempotency(key, body_hash, status, answer, at) VALUES (?,?,?,?,?)",
            (key, body_hash, status, text, time.time()),
        )
    platform.log_request("http-json", status, fault, [g[0] for g in good])
    await _after_write(platform, fault, request)
    return web.Response(status=status, text=text, content_type="application/json")


async def get_entity(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    row = platform.conn.execute(
        "SELECT body FROM records WHERE api = 'ngsi-ld' AND id = ?", (request.match_info["id"],)
    ).fetchone()
    if row is None:
        return web.json_response(_problem("ResourceNotFound", "Not found", request.match_info["id"], 404), status=404)
    return web.Response(text=row[0], content_type="application/json")


async def post_faults(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    try:
        platform.set_faults(await request.json())
    except (ValueError, TypeError) as err:
        return web.json_response({"error": str(err)}, status=400)
    return web.json_response({"schedule": list(platform.schedule)})


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response({"schedule": list(request.app[PLATFORM].schedule)})


async def get_stats(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    return web.json_response({"stats": dict(platform.stats), "stalled": platform.stalled, "data": platform.counts()})


async def post_reset(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    platform.schedule.clear()
    platform.reject = set()
    platform.reject_whole = False
    platform.stats.clear()
    platform.conn.executescript("DELETE FROM records; DELETE FROM requests; DELETE FROM idempotency;")
    return web.json_response({"ok": True})


def make_app(db_path: str | Path, faults: dict | None = None) -> web.Application:
    """The emulated platform as an aiohttp app storing into `db_path`."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    platform = Platform(db_path, faults)
    app[PLATFORM] = platform
    app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", upsert)
    app.router.add_get("/ngsi-ld/v1/entities/{id}", get_entity)
    app.router.add_post("/readings", readings)
    app.router.add_post("/_faults", post_faults)
    app.router.add_get("/_faults", get_faults)
    app.router.add_get("/_stats", get_stats)
    app.router.add_post("/_reset", post_reset)

    async def close(app: web.Application) -> None:
        platform.conn.close()

    app.on_cleanup.append(close)
    return app


async def start_platform(
    host: str, port: int, db_path: str | Path, faults: dict | None = None
) -> tuple[web.AppRunner, str]:
    """Start the platform in the running loop; returns (runner, base URL). Stop with `await runner.cleanup()`."""
    runner = web.AppRunner(make_app(db_path, faults), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_port = site._server.sockets[0].getsockname()[1]  # port 0 picks a free one
    return runner, "http://%s:%d" % (host, real_port)


def run_platform(
    host: str, port: int, db_path: str | Path, faults: dict | None = None, port_file: str | Path | None = None
) -> None:
    """Run the platform until interrupted (the `airwatt platform` verb). Writes its URL to port_file if given."""

    async def main() -> None:
        runner, url = await start_platform(host, port, db_path, faults)
        # Each batch parses into thousands of short-lived dicts: with the default thresholds the cyclic
        # collector ran hundreds of times a second over the long-lived app (as on the agent: store.tune_gc).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
        print("emulated city platform on %s (data: %s)" % (url, db_path), flush=True)
        if port_file:
            tmp = Path(str(port_file) + ".tmp")
            tmp.write_text(url)
            tmp.replace(port_file)  # atomic: a reader never sees half a URL
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def cli(args: argparse.Namespace) -> int:
    """`airwatt platform --port P --data-dir D [--faults JSON] [--port-file F]`."""
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        faults = json.loads(args.faults) if args.faults else None
        Platform.check_faults(faults)
    except ValueError as err:
        print("airwatt platform: bad --faults: %s" % err, file=sys.stderr)
        return 2
    run_platform(args.host, args.port, data_dir / "platform.db", faults, args.port_file)
    return 0


def add_platform_arguments(cmd: argparse.ArgumentParser) -> None:
    """Options of the emulated platform (`airwatt platform`, `python -m airwatt.emulator.platform`)."""
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=1026, help="port (default 1026, Orion's; 0 = any free)")
    cmd.add_argument("--data-dir", default="airwatt-platform", help="folder for platform.db")
    cmd.add_argument("--faults", help='fault schedule at start, JSON, e.g. \'{"5xx": 2, "429": 1}\'')
    cmd.add_argument("--port-file", help="write the platform's URL to this file once it listens")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`airwatt platform`, on the `airwatt` command's subparsers."""
    cmd = subparsers.add_parser("platform", help="run the emulated city platform (NGSI-LD + HTTP JSON, faults)")
    add_platform_arguments(cmd)
    cmd.set_defaults(func=cli)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m airwatt.emulator.platform", description=__doc__.split("\n")[0])
    add_platform_arguments(parser)
    raise SystemExit(cli(parser.parse_args()))
