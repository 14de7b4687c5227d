"""--platform-kind sensorthings against a real SensorThings API server: django-ogc-sensorthings 1.2.0 in its own
process (emulator/sensorthings_server, SQLite), one server for the module; each test has boards of its own.

The server makes its own Observation ids (a client @iot.id is ignored), so nothing at the server stops a second
copy of a reading: exactly-once rests on the agent's look-up before any resend. Every test ends by counting, in
the server, each reading's Observations by parameters/device and parameters/seq.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import aiohttp

from airwatt.agent import meters, store, sync, sync_store
from airwatt.agent.adapters import make_adapter, sensorthings
from airwatt.protocol import fields
from airwatt.emulator.real_servers import SensorThingsServer
from sync_helpers import add_readings, logs, shared_server, start_sync, synced_count, unique_name

sta = shared_server(SensorThingsServer, "sensorthings")


def boards(n: int) -> list[str]:
    """Board ids no other test of the module uses (the server is shared)."""
    return ["%s-%d" % (unique_name("st"), i) for i in range(n)]


def make_store(data_dir: Path, devices: list[str], n: int, start_seq: int = 1) -> dict[tuple[str, str], list[int]]:
    """A store with n readings per board; returns the Observations they make: (device, metric) -> seqs."""
    db = store.open_db(data_dir)
    (data_dir / "airwatt.toml").write_text("[platform]\ntimeout_s = 5.0\npoll_s = 0.1\nbatch_size = 50\n")
    for i, device in enumerate(devices):
        store.add_device(db, device, site="Site %s" % device, lat=16.44 + i / 100, lon=102.83)
        add_readings(db, device, n, start_seq)
    expected: dict[tuple[str, str], list[int]] = {}
    for row in db.execute("SELECT * FROM readings").fetchall():
        row = dict(zip([c[0] for c in db.execute("SELECT * FROM readings LIMIT 0").description], row))
        for metric in (m[1] for m in fields.metrics(row["sensor"])):
            if row.get(metric) is not None:
                expected.setdefault((row["device"], metric), []).append(row["seq"])
    db.conn.close()
    return expected


def check_exactly_once(sta: SensorThingsServer, expected: dict[tuple[str, str], list[int]]) -> None:
    """Each reading's Observations are in the server once: per Datastream, and counted by $filter on parameters."""
    devices = sorted({d for d, _ in expected})
    for device in devices:
        streams = sta.datastreams(device)
        assert sorted(streams) == sorted(m for d, m in expected if d == device)
        for metric, ds in streams.items():
            assert sorted(sta.seqs(ds)) == sorted(expected[(device, metric)]), (device, metric)
        total = sum(len(s) for (d, _), s in expected.items() if d == device)
        assert sta.count("Observations", "parameters/device eq '%s'" % device) == total
        assert sta.count("Things", "properties/device eq '%s'" % device) == 1
    # Each reading, by its (device, seq): as many Observations as it has metrics, for a sample of readings.
    per_reading: dict[tuple[str, int], int] = {}
    for (device, _), seqs in expected.items():
        for seq in seqs:
            per_reading[(device, seq)] = per_reading.get((device, seq), 0) + 1
    for (device, seq), n in list(per_reading.items())[:: max(1, len(per_reading) // 5)]:
        where = "parameters/device eq '%s' and parameters/seq eq %d" % (device, seq)
        assert sta.count("Observations", where) == n, (device, seq)


def wait_synced(data_dir: Path, proc: subprocess.Popen, at_least: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while (n := synced_count(data_dir)) < at_least:
        assert proc.poll() is None, "the agent exited: %s" % logs(data_dir)
        assert time.monotonic() < deadline, "no progress: %s" % logs(data_dir)
        time.sleep(0.02)
    return n


async def drain(data_dir: Path, url: str, **kw) -> object:
    """Run the worker in this process until nothing is pending; returns the adapter's SensorThings client."""
    db = store.open_db(data_dir)
    adapter = make_adapter("sensorthings", url)
    try:
        async with aiohttp.ClientSession() as session:
            await sync.run_worker(db, adapter, session, batch_size=kw.get("batch_size", 100), timeout_s=10,
                                  poll_s=0.1, backoff_base_s=0.05, stop_when_drained=True)
    finally:
        db.conn.close()
    return adapter.send.__self__


def test_kill_9_of_the_agent_and_a_server_crash_leave_each_reading_once(sta, tmp_path: Path):
    devices = boards(2)
    data_dir = tmp_path / "agent"
    expected = make_store(data_dir, devices, 500)
    total = 1000
    proc = start_sync(data_dir, sta.url, "sensorthings", "--backoff-base", "0.1")
    first = wait_synced(data_dir, proc, 200)
    os.kill(proc.pid, signal.SIGKILL)  # mid-sync: batches in flight, answered ones not yet marked
    proc.wait(10)
    assert synced_count(data_dir) < total
    proc = start_sync(data_dir, sta.url, "sensorthings", "--backoff-base", "0.1", "--exit-when-drained")
    second = wait_synced(data_dir, proc, first + 200)
    sta.stop(kill=True)  # the server dies mid-request: some batches written, their answers lost, others not
    time.sleep(1.0)  # the agent retries against a closed port, backing off
    assert proc.poll() is None
    sta.start()
    assert proc.wait(120) == 0, logs(data_dir)
    assert synced_count(data_dir) == total
    assert second < total
    check_exactly_once(sta, expected)


async def test_a_batch_at_the_server_but_never_marked_is_looked_up_not_sent_twice(sta, tmp_path: Path):
    """The instant a kill -9 can hit, made certain: the server has the batch, the agent's store has no mark
    (a copy of the store taken before the drain), and a new agent process (a new adapter) resends."""
    devices = boards(2)
    expected = make_store(tmp_path / "a", devices, 120)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = await drain(tmp_path / "a", sta.url)
    assert first.lookups == 0  # nothing could be at the server yet: no look-up on the common path
    check_exactly_once(sta, expected)
    db = store.open_db(tmp_path / "b")
    add_readings(db, devices[0], 30, start_seq=121)  # and new readings after them
    db.conn.close()
    for seq in range(121, 151):
        sensor = ("energy", "pm", "co2")[seq % 3]
        for metric in (m[1] for m in fields.metrics(sensor)):
            expected[(devices[0], metric)].append(seq)
    second = await drain(tmp_path / "b", sta.url)
    assert synced_count(tmp_path / "b") == 270
    check_exactly_once(sta, expected)
    assert second.lookups > 0


async def test_a_three_phase_board_s_observations_say_their_meter(sta, tmp_path: Path):
    """Several meters on one board share its Datastreams; each Observation's parameters say which meter."""
    device = boards(1)[0]
    expected = make_store(tmp_path, [device], 9)  # energy at seqs 3, 6, 9: meters 1, 2, 3 (L1, L2, L3)
    db = store.open_db(tmp_path)
    meters.set_meters(db, device, meters.parse(meters.THREE_PHASE))
    with db.conn:
        db.execute("UPDATE readings SET instance = seq / 3 WHERE sensor = 'energy'")
    db.conn.close()
    await drain(tmp_path, sta.url)
    check_exactly_once(sta, expected)
    for seq, want in ((3, {"instance": 1, "phase": "L1"}), (6, {"instance": 2, "phase": "L2"}),
                      (4, None)):
        where = "parameters/device eq '%s' and parameters/seq eq %d" % (device, seq)
        got = sta.get("Observations?$select=parameters&$filter=%s" % urllib.parse.quote(where))["value"]
        assert got and all(o["parameters"].get("meter") == want for o in got), (seq, got)


async def test_an_error_row_in_the_201_refuses_that_reading_only(sta, tmp_path: Path):
    """A 201 whose dataArray answer has "error" rows (the server fails a whole Datastream group for one bad
    row): the group is split until the bad reading is alone; it is refused and, after 3 refusals, held back
    (listed on the sync page); every other reading is in the server once."""
    devices = boards(1)
    data_dir = tmp_path / "agent"
    expected = make_store(data_dir, devices, 60)
    db = store.open_db(data_dir)
    # A value the server cannot store (SQLite keeps text in an INTEGER column): its co2 row fails its group.
    bad = db.execute("SELECT id, seq FROM readings WHERE sensor = 'co2' AND seq = 32").fetchone()
    with store.transaction(db):
        db.execute("UPDATE readings SET co2 = 'n/a' WHERE id = ?", (bad[0],))
    db.conn.close()
    expected[(devices[0], "co2")].remove(32)
    await drain(data_dir, sta.url, batch_size=100)
    db = store.open_db(data_dir)
    try:
        held = sync_store.held_readings(db)
        assert [(h["reading"], h["tries"], h["status"]) for h in held] == [(bad[0], 3, 422)]
        assert "error" in held[0]["error"]
        assert [r[0] for r in db.execute("SELECT id FROM readings WHERE synced_at IS NULL")] == [bad[0]]
    finally:
        db.conn.close()
    check_exactly_once(sta, expected)  # its temperature and humidity went through once, in their own groups


async def test_provisioning_is_idempotent_across_agents_and_restarts(sta, tmp_path: Path):
    """Two agents with the same board start at once (each its own store, other readings), then one restarts:
    one Thing, one Datastream per metric, shared Sensors and ObservedProperties, each reading once."""
    devices = boards(1)
    expected = make_store(tmp_path / "a", devices, 30)
    more = make_store(tmp_path / "b", devices, 30, start_seq=31)
    for key, seqs in more.items():
        expected.setdefault(key, []).extend(seqs)
    await asyncio.gather(drain(tmp_path / "a", sta.url), drain(tmp_path / "b", sta.url))
    db = store.open_db(tmp_path / "a")
    add_readings(db, devices[0], 3, start_seq=61)
    db.conn.close()
    for seq in range(61, 64):
        sensor = ("energy", "pm", "co2")[seq % 3]
        for metric in (m[1] for m in fields.metrics(sensor)):
            expected[(devices[0], metric)].append(seq)
    await drain(tmp_path / "a", sta.url)  # a restart: a new adapter finds everything it needs
    check_exactly_once(sta, expected)
    for sensor in fields.SENSORS:
        assert sta.count("Sensors", "properties/sensor eq '%s'" % sensor) == 1
    for metric in ("co2", "pm25", "energy_wh"):
        assert sta.count("ObservedProperties", "properties/metric eq '%s'" % metric) == 1
    ds = sta.get("Datastreams('%s')" % sta.datastreams(devices[0])["humidity"])
    assert ds["unitOfMeasurement"]["symbol"] == "%" and ds["properties"]["metric"] == "humidity"


def test_mapping_of_a_reading():
    row = {"id": 1, "device": "d", "seq": 7, "sensor": "co2", "t": None, "received": 1790000000.5, "flags": "stuck",
           "co2": 812, "temperature": 26.55, "humidity": None, "lat": 1.0, "lon": 2.0}
    assert sensorthings.observations(row) == [
        ("co2", ["2026-09-21T14:13:20.500Z", 812, {"device": "d", "seq": 7, "flags": ["stuck", "time_unknown"]}]),
        ("temperature", ["2026-09-21T14:13:20.500Z", 26.55, {"device": "d", "seq": 7,
                                                             "flags": ["stuck", "time_unknown"]}]),
    ]
    prepared = sensorthings.prepare("http://h/v1.1/", [row, {**row, "id": 2, "lat": None}])
    assert prepared.row_ids == [1] and prepared.keys == ["d:7"] and 2 in prepared.unencodable
    assert sensorthings.unit(fields.metric("co2", "co2"))["symbol"] == "[ppm]"
    assert sensorthings.base_url("http://h/x/v1.1") == "http://h/x/v1.1/"
    assert sensorthings.entity_id("http://h/v1.1/Things('01a2-ff')") == "01a2-ff"


class AnswerDropper:
    """A TCP relay on loopback between the agent and the real server that lets the server do the first
    `drops` CreateObservations but cuts the connection instead of passing their answers back: the server has
    the Observations, the agent never hears so (a lost answer, as after a timeout or a proxy's 502)."""

    def __init__(self, port: int, drops: int):
        self.port, self.drops, self.dropped = port, drops, 0
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return "http://127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        doomed = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if b"POST /sensorthings/v1.1/CreateObservations" in data and self.dropped < self.drops:
                    self.dropped += 1
                    doomed.set()  # this request's answer will not reach the agent
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if doomed.is_set():
                    await asyncio.sleep(0.2)  # let the server finish its answer (and its commit)
                    break
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()


async def test_an_answer_lost_on_the_way_back_is_looked_up_not_sent_twice(sta, tmp_path: Path):
    """The same process resends after a dropped connection (the server had written the batch): the look-up
    finds the Observations, so the resend adds none."""
    devices = boards(1)
    data_dir = tmp_path / "agent"
    expected = make_store(data_dir, devices, 90)
    dropper = AnswerDropper(sta.port, drops=2)
    async with dropper as relay:
        client = await drain(data_dir, relay + "/sensorthings/v1.1", batch_size=30)
    assert dropper.dropped == 2 and synced_count(data_dir) == 90
    check_exactly_once(sta, expected)
    assert client.lookups > 0
