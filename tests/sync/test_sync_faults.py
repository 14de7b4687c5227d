"""The sync worker against the emulated platform over real HTTP on 127.0.0.1, one fault kind at a time."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from airwatt.agent import meters, store, sync, sync_store
from airwatt.agent.adapters import http_json, make_adapter, ngsi_ld
import sdm
from serving import serve
from samples import values
from sync_helpers import T0, add_readings, platform_records, platform_requests, unsynced

KINDS = ["ngsi-ld", "http-json"]
FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.2, "poll_s": 0.05}


def key_of(kind: str, db, rid: int) -> str:
    row = db.execute("SELECT device, seq, sensor FROM readings WHERE id = ?", (rid,)).fetchone()
    r = {"device": row[0], "seq": row[1], "sensor": row[2]}
    return ngsi_ld.entity_id(r) if kind == "ngsi-ld" else http_json.item_id(r)


def sync_log(db) -> list[dict]:
    cur = db.execute("SELECT ok, status, count, detail FROM sync_log ORDER BY id")
    return [dict(zip(("ok", "status", "count", "detail"), r)) for r in cur]


async def drain(db, kind, url, session, **kw):
    args = dict(FAST, batch_size=100, timeout_s=2.0)
    args.update(kw)
    await asyncio.wait_for(
        sync.run_worker(db, make_adapter(kind, url), session, stop_when_drained=True, **args), 30
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_drain_sends_every_reading_once_as_the_adapter_builds_it(kind, db, platform, session, tmp_path):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 150) + add_readings(db, "kk-school-02", 100)
    await drain(db, kind, url, session)
    assert unsynced(db) == []
    records = platform_records(tmp_path / "platform.db", kind)
    assert set(records) == {key_of(kind, db, rid) for rid in ids}
    assert {writes for _, writes in records.values()} == {1}
    if kind == "ngsi-ld":  # what reached the platform passes the official Smart Data Models schemas
        assert {body["type"] for body, _ in records.values()} == {"ACMeasurement", "AirQualityObserved"}
        assert [sdm.errors(body) for body, _ in records.values() if sdm.errors(body)] == []
    # The platform holds exactly what the adapter built from the store's row.
    cur = db.execute(
        "SELECT r.*, d.lat, d.lon, d.site FROM readings r JOIN devices d ON d.id = r.device WHERE r.id = ?", (ids[4],))
    row = dict(zip([c[0] for c in cur.description], cur.fetchone()))
    built = ngsi_ld.entity(row) if kind == "ngsi-ld" else http_json.item(row)
    built.pop("@context", None)
    assert records[key_of(kind, db, ids[4])][0] == built
    log = sync_log(db)
    assert [e["count"] for e in log] == [100, 100, 50] and all(e["ok"] == 1 for e in log)
    assert store.get_meta(db, "last_sync_ok") is not None


async def test_5xx_is_logged_then_retried_with_growing_backoff(db, platform, session):
    url, plat = platform
    add_readings(db, "kk-hall-01", 10)
    plat.set_faults({"5xx": 3})
    result = await sync.sync_once(db, make_adapter("ngsi-ld", url), session, 100)
    assert (result.status, result.sent, result.synced) == (500, 10, 0)
    assert len(unsynced(db)) == 10
    assert sync_log(db)[-1]["ok"] == 0 and sync_log(db)[-1]["detail"].startswith("HTTP 500")
    await drain(db, "ngsi-ld", url, session, backoff_base_s=0.1, backoff_max_s=10)
    assert unsynced(db) == []
    reqs = platform_requests(plat)
    assert [r["status"] for r in reqs] == [500, 500, 500, 201]
    gaps = [b["at"] - a["at"] for a, b in zip(reqs[1:], reqs[2:])]
    # failure 1 waits 0.05..0.1 s, failure 2 waits 0.1..0.2 s (equal jitter on a doubling step)
    assert 0.05 <= gaps[0] < 1.5 and 0.1 <= gaps[1] < 1.5  # (upper bounds leave room for a busy machine)


@pytest.mark.parametrize("fault,as_date", [("429", False), ("503", True)])
async def test_retry_after_is_honoured(fault, as_date, db, platform, session):
    url, plat = platform
    add_readings(db, "kk-hall-01", 5)
    plat.set_faults({fault: 1, "retry_after": 2 if as_date else 1.2, "retry_after_date": as_date})
    await drain(db, "http-json", url, session, backoff_base_s=0.01)  # backoff alone would retry at once
    reqs = platform_requests(plat)
    assert [r["status"] for r in reqs] == [int(fault), 200]
    # An HTTP date has whole seconds: "now + 2 s" may be as little as 1 s away.
    assert reqs[1]["at"] - reqs[0]["at"] >= (1.0 if as_date else 1.2)
    assert unsynced(db) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_timeout_after_the_write_resends_harmlessly(kind, db, platform, session, tmp_path):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 30)
    plat.set_faults({"timeout": 1, "timeout_s": 1.2})
    result = await sync.sync_once(db, make_adapter(kind, url), session, 100, timeout_s=0.3)
    assert result.error.startswith("timeout") and result.synced == 0
    assert len(unsynced(db)) == 30  # written upstream, but not confirmed: not marked
    await drain(db, kind, url, session)
    assert unsynced(db) == []
    records = platform_records(tmp_path / "platform.db", kind)
    assert set(records) == {key_of(kind, db, rid) for rid in ids}
    if kind == "ngsi-ld":
        assert {w for _, w in records.values()} == {2}  # same ids upserted again: one entity each
    else:
        assert {w for _, w in records.values()} == {1}  # same Idempotency-Key: the first answer replayed
        assert plat.stats["replays"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_dropped_connection_resends_harmlessly(kind, db, platform, session, tmp_path):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 20)
    plat.set_faults({"drop": 1})
    result = await sync.sync_once(db, make_adapter(kind, url), session, 100)
    assert result.error.startswith("connection") and result.synced == 0
    assert sync_log(db)[-1]["detail"].startswith("connection")
    await drain(db, kind, url, session)
    records = platform_records(tmp_path / "platform.db", kind)
    assert set(records) == {key_of(kind, db, rid) for rid in ids} and unsynced(db) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_partial_207_marks_the_successes_and_retries_only_the_failed(kind, db, platform, session, tmp_path):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 20)
    plat.set_faults({"partial": 1, "partial_fail": 3})
    result = await sync.sync_once(db, make_adapter(kind, url), session, 100)
    assert (result.status, result.synced, result.failed, result.refused) == (207, 17, 3, 0)
    assert unsynced(db) == ids[:3]  # the emulator fails the first three
    assert "3 of 20 failed" in sync_log(db)[-1]["detail"]
    await drain(db, kind, url, session)
    reqs = platform_requests(plat)
    assert reqs[1]["ids"] == [key_of(kind, db, rid) for rid in ids[:3]]  # only the failed ones went again
    records = platform_records(tmp_path / "platform.db", kind)
    assert len(records) == 20 and {w for _, w in records.values()} == {1}


async def test_refused_reading_is_held_back_and_does_not_block_the_others(db, platform, session, tmp_path):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 250)
    bad = ids[120]
    plat.set_faults({"reject": [key_of("ngsi-ld", db, bad)]})
    await drain(db, "ngsi-ld", url, session)
    assert unsynced(db) == [bad]  # still in the store, not lost
    held = sync_store.held_readings(db)
    assert [h["reading"] for h in held] == [bad] and held[0]["status"] == 400
    assert "refused" in held[0]["error"]
    refused = [r for r in platform_requests(plat) if key_of("ngsi-ld", db, bad) not in r["ids"]]
    assert len(platform_requests(plat)) <= 3 + sync_store.HOLD_AFTER  # 3 strikes, then no more attempts
    assert len(refused) == len(platform_requests(plat))
    # The operator fixes the cause and presses "retry now": released and synced.
    plat.set_faults({"reject": []})
    assert sync_store.release_held(db) == 1
    await drain(db, "ngsi-ld", url, session)
    assert unsynced(db) == [] and len(platform_records(tmp_path / "platform.db", "ngsi-ld")) == 250


async def test_whole_batch_400_bisects_down_to_the_refused_reading(db, platform, session):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 64)
    bad = ids[37]
    plat.set_faults({"reject": [key_of("ngsi-ld", db, bad)], "reject_whole": True})
    await drain(db, "ngsi-ld", url, session, batch_size=64)
    assert unsynced(db) == [bad]
    reqs = platform_requests(plat)
    assert sum(r["status"] == 400 for r in reqs) <= 6 + sync_store.HOLD_AFTER  # log2(64) halvings + strikes
    assert [h["reading"] for h in sync_store.held_readings(db)] == [bad]


async def test_retry_now_wakes_the_worker_and_releases_held(db, platform, session):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 10)
    plat.set_faults({"reject": [key_of("http-json", db, ids[0])]})
    wake = asyncio.Event()
    state = sync.SyncState()
    task = asyncio.create_task(sync.run_worker(
        db, make_adapter("http-json", url), session, batch_size=100, timeout_s=2, poll_s=60, backoff_base_s=0.01,
        wake=wake, state=state))
    try:
        deadline = time.monotonic() + 15
        while not sync_store.held_readings(db) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert unsynced(db) == [ids[0]] and state.enabled and state.kind == "http-json"
        plat.set_faults({"reject": []})
        wake.set()  # what sync_store.request_retry does in the serving process (the app's SYNC_NOW)
        deadline = time.monotonic() + 15
        while unsynced(db) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert unsynced(db) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_readings_of_a_device_without_location_wait_for_ngsi_ld_and_go_once_it_has_one(
        db, platform, session, caplog):
    url, plat = platform
    store.add_device(db, "kk-noloc-03", name="no location")
    ids_ok = add_readings(db, "kk-hall-01", 5)
    ids_noloc = add_readings(db, "kk-noloc-03", 4)
    with caplog.at_level("WARNING", logger="airwatt.sync"):
        await drain(db, "ngsi-ld", url, session)
    assert unsynced(db) == ids_noloc
    said = [r.getMessage() for r in caplog.records if r.name == "airwatt.sync"]
    assert len(said) == 1 and "device kk-noloc-03 has no location, so 4 reading(s) wait" in said[0], said
    # They wait in the store: not sent, not refused, not held back, no error logged per round.
    assert sync_store.held_readings(db) == [] and all(e["ok"] for e in sync_log(db)) and len(ids_ok) == 5
    assert sync_store.waiting_for_location(db) == {"kk-noloc-03": 4}
    store.set_device(db, "kk-noloc-03", lat=16.45, lon=102.81)
    await drain(db, "ngsi-ld", url, session)
    assert unsynced(db) == [] and sync_store.waiting_for_location(db) == {}


@pytest.mark.parametrize("how", ["worker", "sync_once"])
async def test_a_three_phase_round_is_never_split_between_requests(how, db, platform, session, tmp_path):
    """Batches of 4 rows and rounds of 3 phase readings: each round still reaches the platform as one entity
    with its three phases (none flagged missing_*), every reading once."""
    url, plat = platform
    meters.set_meters(db, "kk-hall-01", meters.parse(meters.THREE_PHASE))
    with store.transaction(db):
        boot = store.boot_id(db, "kk-hall-01", "0a1b2c3d")
        rows = []
        for n in range(10):
            for k in range(3):  # meters 1, 2, 3 (L1, L2, L3) read in turn, 80 ms apart, every 10 s
                seq = 1 + 3 * n + k
                rows.append(dict(values("energy", seq), device="kk-hall-01", seq=seq, boot_id=boot, sensor="energy",
                                 instance=k + 1, t=T0 + 10 * n, t_source="board", ticks=10000 * n + 80 * k,
                                 received=T0 + 300, flags=""))
        db["readings"].insert_all(rows)
    if how == "worker":  # pipelined: a request of 4 rows at a time, each as soon as one is answered
        await drain(db, "ngsi-ld", url, session, batch_size=4)
    else:  # rounds of 3 requests of 4 rows, sent at once
        for _ in range(10):
            await sync.sync_once(db, make_adapter("ngsi-ld", url), session, 4, parallel=3)
    assert unsynced(db) == []
    records = platform_records(tmp_path / "platform.db", "ngsi-ld")
    assert set(records) == {"urn:ngsi-ld:ACMeasurement:kk-hall-01:%d" % (1 + 3 * n) for n in range(10)}
    for body, writes in records.values():
        assert writes == 1 and body["phaseType"]["value"] == "threePhase"
        assert not [f for f in body.get("airwattFlags", {}).get("value", []) if f.startswith("missing")], body


async def test_the_generic_api_carries_a_missing_location_as_null(db, platform, session):
    url, plat = platform
    store.add_device(db, "kk-noloc-03", name="no location")
    add_readings(db, "kk-noloc-03", 4)
    await drain(db, "http-json", url, session)
    assert unsynced(db) == []


def test_a_device_without_location_is_logged_once_per_hour_not_every_round(db):
    store.add_device(db, "kk-noloc-03")
    store.add_device(db, "kk-noloc-04")
    add_readings(db, "kk-noloc-03", 3)
    add_readings(db, "kk-hall-01", 3)  # has a location: never named
    said = []
    notices = sync.LocationNotices(said.append)
    assert notices.check(db, 1000.0) == ["kk-noloc-03"]
    assert "airwatt device set kk-noloc-03 --lat LAT --lon LON" in said[0] and "3 reading(s) wait" in said[0]
    for n, t in enumerate(range(1010, 1000 + 3600, 10)):  # a round every 10 s, new readings now and then
        if n % 60 == 0:
            add_readings(db, "kk-noloc-03", 1, start_seq=4 + n)
        notices.check(db, float(t))
    assert len(said) == 1
    add_readings(db, "kk-noloc-04", 1)  # another device: said at the next check, not an hour later
    assert notices.check(db, 1000.0 + 3600) == ["kk-noloc-03", "kk-noloc-04"]
    assert len(said) == 3


def test_retry_after_parsing():
    now = 1790000000.0
    assert sync.parse_retry_after("7", now) == 7.0
    assert sync.parse_retry_after("Mon, 21 Sep 2026 14:13:50 GMT", now) == 30.0
    assert sync.parse_retry_after("Mon, 21 Sep 2026 14:13:00 GMT", now) == 0.0  # in the past
    assert sync.parse_retry_after("-5", now) == 0.0
    assert sync.parse_retry_after("999999", now) == sync.RETRY_AFTER_MAX_S
    assert sync.parse_retry_after("soon", now) is None and sync.parse_retry_after(None) is None


def test_backoff_doubles_with_jitter_up_to_the_cap():
    lows = [sync.backoff_delay(n, 1.0, 60.0, rand=lambda: 0.0) for n in range(1, 9)]
    highs = [sync.backoff_delay(n, 1.0, 60.0, rand=lambda: 1.0) for n in range(1, 9)]
    assert lows == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert highs == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_a_redirect_or_a_foreign_200_never_marks_anything(db, session):
    async def redirect(request):
        raise web.HTTPFound("/login")

    async def login(request):
        return web.Response(text="<html>please log in</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/readings", redirect)
    app.router.add_route("*", "/login", login)
    app.router.add_post("/html/readings", login)
    async with serve(app) as base:
        add_readings(db, "kk-hall-01", 3)
        result = await sync.sync_once(db, make_adapter("http-json", base), session, 100)
        assert result.status == 302 and result.synced == 0
        result = await sync.sync_once(db, make_adapter("http-json", base + "/html"), session, 100)
        assert result.status == 200 and result.synced == 0 and "unreadable" in result.error
        assert len(unsynced(db)) == 3


async def test_413_halves_the_batch_and_a_reading_too_large_alone_is_held(db, session):
    sizes = []

    async def small_only(request):
        body = await request.read()
        items = len(json.loads(body)["readings"])
        sizes.append(items)
        if items > 8 or b'"seq":5,' in body:  # more than 8, or reading 5 at all: too large
            return web.json_response({"error": "too large"}, status=413)
        return web.json_response({"results": [{"id": i["id"], "ok": True}
                                              for i in json.loads(body)["readings"]]})

    app = web.Application()
    app.router.add_post("/readings", small_only)
    async with serve(app) as base:
        ids = add_readings(db, "kk-hall-01", 40)
        await drain(db, "http-json", base, session, batch_size=32)
        assert unsynced(db) == [ids[4]]  # seq 5 refused even alone: held after its strikes, not retried forever
        assert [h["reading"] for h in sync_store.held_readings(db)] == [ids[4]]
        # 32 and 8 go out together (the 8 pass); then halving: 16, 8, 4 (pass), 4, 2, 1 (refused alone).
        assert sorted(sizes[:2]) == [8, 32] and sizes[2:8] == [16, 8, 4, 4, 2, 1]
        assert sizes[8:10] == [1, 1] and len(sizes) < 40  # two more strikes, then held: no endless loop
