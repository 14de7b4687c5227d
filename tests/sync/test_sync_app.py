"""The sync worker inside the agent's aiohttp app: signed uploads in, entities out, "retry now" both ways."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestServer

from airwatt.agent import app as agent_app, sync_store
from airwatt.agent.cli import main as cli_main
from airwatt.agent import ingest, store, sync
from airwatt.agent.adapters import make_adapter
from airwatt.agent.config import Config, PlatformConfig
from airwatt.protocol import wire
from sync_helpers import add_readings, platform_records, unsynced

BOOT = "0a1b2c3d"


async def wait_for(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_uploads_reach_the_platform_through_the_agent_app(data_dir, db, platform, session, tmp_path):
    url, plat = platform
    key = bytes.fromhex(store.add_device(db, "kk-lab-04", site="Lab", lat=16.47, lon=102.82))
    config = Config(platform=PlatformConfig(url=url + "/ngsi-ld/v1", kind="ngsi-ld", poll_s=0.05))
    server = TestServer(agent_app.make_app(data_dir, config), host="127.0.0.1")
    await server.start_server()
    try:
        readings = [wire.encode_reading(seq, 1790000000 + seq * 60, seq * 60000, BOOT, "pm",
                                        {"pm1": 4, "pm25": 20 + seq, "pm10": 30}) for seq in range(1, 31)]
        body = wire.batch_body("kk-lab-04", "0.1.0", BOOT, 31 * 60000, readings)
        headers = {ingest.DEVICE_HEADER: "kk-lab-04", ingest.SIGNATURE_HEADER: wire.sign(key, body)}
        async with session.post(server.make_url("/v1/batches"), data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        await wait_for(lambda: not unsynced(db))
        records = platform_records(tmp_path / "platform.db", "ngsi-ld")
        assert sorted(records) == sorted("urn:ngsi-ld:AirQualityObserved:kk-lab-04:%d" % s for s in range(1, 31))
        ent = records["urn:ngsi-ld:AirQualityObserved:kk-lab-04:7"][0]
        assert ent["pm25"]["value"] == 27 and ent["location"]["value"]["coordinates"] == [102.82, 16.47]
        state = server.app[sync.SYNC_STATE]
        await wait_for(lambda: state.last_result)  # set once the round is over (its commit may be seen first)
        assert state.enabled and state.kind == "ngsi-ld" and state.last_result["synced"] == 30
        # "Retry now" from the pages releases a held reading at once.
        plat.set_faults({"reject": ["urn:ngsi-ld:ACMeasurement:kk-hall-01:3"]})
        ids = add_readings(db, "kk-hall-01", 5)
        await wait_for(lambda: sync_store.held_readings(db) != [])
        assert unsynced(db) == [ids[2]]
        plat.set_faults({"reject": []})
        sync_store.request_retry(db)  # what the sync page says
        assert server.app[sync.SYNC_NOW].is_set() or not sync_store.held_readings(db)  # woken, not polled
        await wait_for(lambda: not unsynced(db))
    finally:
        await server.close()


async def test_app_without_platform_url_has_no_worker_but_keeps_the_keys(data_dir, db):
    server = TestServer(agent_app.make_app(data_dir, Config()), host="127.0.0.1")
    await server.start_server()
    try:
        assert server.app[sync.SYNC_STATE].enabled is False
        sync_store.request_retry(db)  # harmless: recorded, no worker to wake
    finally:
        await server.close()


async def test_retry_now_recorded_by_another_process_is_honoured(db, platform, session):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 4)
    plat.set_faults({"reject": ["kk-hall-01:2"]})
    adapter = make_adapter("http-json", url)
    await sync.run_worker(db, adapter, session, poll_s=0.05, backoff_base_s=0.01, stop_when_drained=True)
    assert unsynced(db) == [ids[1]] and len(sync_store.held_readings(db)) == 1
    plat.set_faults({"reject": []})
    store.set_meta(db, "sync_retry_requested", repr(time.time()))  # what the sync page records
    await sync.run_worker(db, adapter, session, poll_s=0.05, backoff_base_s=0.01, stop_when_drained=True)
    assert unsynced(db) == [] and sync_store.held_readings(db) == []
    assert store.get_meta(db, "sync_retry_handled") == store.get_meta(db, "sync_retry_requested")


async def test_cli_retry_and_run_drain_a_store(data_dir, db, platform):
    url, plat = platform
    ids = add_readings(db, "kk-hall-01", 6)
    plat.set_faults({"reject": ["kk-hall-01:3"]})
    args = ["sync", "run", "--data-dir", str(data_dir), "--platform-url", url, "--platform-kind", "http-json",
            "--backoff-base", "0.01", "--exit-when-drained"]
    # The CLI runs its own event loop: give it a thread, while this loop serves the platform.
    assert await asyncio.to_thread(cli_main, args) == 0
    assert unsynced(db) == [ids[2]]
    plat.set_faults({"reject": []})
    assert await asyncio.to_thread(cli_main, ["sync", "retry", "--data-dir", str(data_dir)]) == 0
    assert await asyncio.to_thread(cli_main, args) == 0
    assert unsynced(db) == []
