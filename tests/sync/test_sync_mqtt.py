"""--platform-kind mqtt against a real broker: Debian's mosquitto in its own process (one for the module, its
own config and persistence file), read back by a real subscriber with a persistent session.

MQTT QoS 1 is at-least-once: a reading whose PUBACK was lost (agent killed, broker restarted) is published
again. Every test checks each reading reached the subscriber at least once and that every copy carries the
reading's device and seq (so a receiver drops the duplicates)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from airwatt.agent import store, sync, sync_store
from airwatt.agent.adapters import http_json, make_adapter, mqtt
from airwatt.emulator.real_servers import Mosquitto, free_port
from sync_helpers import add_readings, logs, shared_server, start_sync, synced_count, unique_name

broker = shared_server(Mosquitto, "mosquitto")


def prefix() -> str:
    """A topic prefix no other test of the module uses (the broker is shared)."""
    return unique_name("city")


def make_store(data_dir: Path, devices: list[str], n: int) -> list[dict]:
    db = store.open_db(data_dir)
    (data_dir / "airwatt.toml").write_text("[platform]\ntimeout_s = 2.0\npoll_s = 0.1\nbatch_size = 100\n")
    for i, device in enumerate(devices):
        store.add_device(db, device, site="Site %d" % i, lat=16.44 + i / 100, lon=102.83)
        add_readings(db, device, n)
    rows = sync_store.pending(db, 10 ** 6)
    db.conn.close()
    return rows


class Subscriber:
    """A dashboard: persistent session, QoS 1, reconnecting whenever the broker goes away; keeps every message."""

    def __init__(self, port: int, topic: str):
        self.port, self.topic = port, topic
        self.messages: list[tuple[str, dict]] = []
        self.identifier = "checker-%s" % topic.replace("/", "-").replace("#", "all")
        self.ready = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.identifier,
                                          clean_session=False, timeout=5) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        self.messages.append((str(message.topic), json.loads(message.payload)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def __aenter__(self) -> Subscriber:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def seen(self) -> dict[tuple[str, int], int]:
        """(device, seq) -> copies received."""
        copies: dict[tuple[str, int], int] = {}
        for topic, body in self.messages:
            if topic.endswith("/status"):
                continue
            key = (body["device"], body["seq"])
            copies[key] = copies.get(key, 0) + 1
        return copies

    async def wait_for(self, keys: set[tuple[str, int]], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not keys <= set(self.seen()):
            assert time.monotonic() < deadline, "missing: %s" % sorted(keys - set(self.seen()))[:10]
            await asyncio.sleep(0.05)


async def wait_synced(data_dir: Path, proc: subprocess.Popen, at_least: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while (n := synced_count(data_dir)) < at_least:
        assert proc.poll() is None, "the agent exited: %s" % logs(data_dir)
        assert time.monotonic() < deadline, "no progress: %s" % logs(data_dir)
        await asyncio.sleep(0.02)
    return n


async def test_kill_9_of_the_agent_and_a_broker_restart_deliver_every_reading(broker, tmp_path: Path):
    topics = prefix()
    data_dir = tmp_path / "agent"
    devices = ["%s-hall" % topics, "%s-school" % topics]
    rows = make_store(data_dir, devices, 1500)
    url = "%s/%s?client_id=agent-%s" % (broker.url, topics, topics)
    async with Subscriber(broker.port, topics + "/#") as sub:
        proc = start_sync(data_dir, url, "mqtt", "--backoff-base", "0.1")
        first = await wait_synced(data_dir, proc, 500)
        os.kill(proc.pid, signal.SIGKILL)  # mid-sync: messages published, their PUBACKs not yet marked
        proc.wait(10)
        proc = start_sync(data_dir, url, "mqtt", "--backoff-base", "0.1", "--exit-when-drained")
        second = await wait_synced(data_dir, proc, first + 500)
        broker.stop()  # the broker goes away mid-sync (it saves its queues: a subscriber's session survives)
        await asyncio.sleep(1.0)  # the agent cannot connect: it backs off
        assert proc.poll() is None
        broker.start()
        deadline = time.monotonic() + 60
        while proc.poll() is None:
            assert time.monotonic() < deadline, logs(data_dir)
            await asyncio.sleep(0.05)
        assert proc.returncode == 0, logs(data_dir)
        assert synced_count(data_dir) == len(rows) and second < len(rows)
        await sub.wait_for({(r["device"], r["seq"]) for r in rows})
    by_id = {http_json.item_id(r): r for r in rows}
    copies = sub.seen()
    assert set(copies) == {(r["device"], r["seq"]) for r in rows}  # every reading, nothing else
    for topic, body in sub.messages:
        if topic.endswith("/status"):
            continue
        row = by_id[body["id"]]  # every copy names its reading: device, seq, and the same content
        assert topic == "%s/%s/%s" % (topics, row["device"], row["sensor"])
        assert body == http_json.item(row)
    status = [body for topic, body in sub.messages if topic.endswith("/status")]
    assert {s["device"] for s in status} == set(devices)
    print("readings %d, copies received %d (duplicates: %d)"
          % (len(rows), sum(copies.values()), sum(c - 1 for c in copies.values())))
    # The status topic is retained: a dashboard subscribing now gets each board's last reading at once.
    async with Subscriber(broker.port, topics + "/+/status") as late:
        deadline = time.monotonic() + 10
        while len(late.messages) < len(devices):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert sorted((b["device"], b["last_seq"]) for _, b in late.messages) == [(d, 1500) for d in devices]


async def test_fiware_iot_agent_json_measures(broker, tmp_path: Path):
    """With apikey=KEY, readings go to /KEY/<device>/attrs as IoT Agent JSON measures (flat attributes)."""
    topics = prefix()
    data_dir = tmp_path / "agent"
    device = "%s-hall" % topics
    rows = make_store(data_dir, [device], 9)
    apikey = "key" + topics
    async with Subscriber(broker.port, "/%s/+/attrs" % apikey) as sub:
        db = store.open_db(data_dir)
        adapter = make_adapter("mqtt", "%s/%s?apikey=%s&client_id=a-%s" % (broker.url, topics, apikey, topics))
        try:
            async with aiohttp.ClientSession() as session:
                await sync.run_worker(db, adapter, session, batch_size=4, timeout_s=5, stop_when_drained=True)
        finally:
            await adapter.close()
            db.conn.close()
        await sub.wait_for({(device, r["seq"]) for r in rows})
    assert {t for t, _ in sub.messages} == {"/%s/%s/attrs" % (apikey, device)}
    co2 = next(b for _, b in sub.messages if b["sensor"] == "co2")
    row = next(r for r in rows if r["seq"] == co2["seq"])
    assert co2 == {"TimeInstant": mqtt.iso_time(row["t"]), "device": device, "seq": row["seq"], "sensor": "co2",
                   "co2": row["co2"], "temperature": 26.55, "humidity": 55.12}


async def test_a_broker_that_is_not_there_is_a_passing_failure(tmp_path: Path):
    """Nothing listens: the round fails without marking anything, and says where it tried to connect."""
    data_dir = tmp_path / "agent"
    make_store(data_dir, ["nobody-1"], 3)
    db = store.open_db(data_dir)
    port = free_port()
    adapter = make_adapter("mqtt", "mqtt://127.0.0.1:%d/city" % port)
    try:
        async with aiohttp.ClientSession() as session:
            result = await sync.sync_once(db, adapter, session, 10, timeout_s=2)
    finally:
        await adapter.close()
        db.conn.close()
    assert (result.sent, result.synced) == (3, 0)
    assert "cannot connect to the MQTT broker 127.0.0.1:%d" % port in result.error
    assert synced_count(data_dir) == 0


def test_mqtt_urls():
    assert mqtt.parse_url("mqtt://u:p%40ss@h:1884/a/b?client_id=x") == {
        "host": "h", "port": 1884, "prefix": "a/b", "username": "u", "password": "p@ss", "client_id": "x",
        "apikey": None}
    assert mqtt.parse_url("mqtt://h/city")["port"] == 1883
    for bad, why in [("mqtt://h", "topic prefix"), ("mqtt://h/a/#", "topic prefix"), ("http://h/a", "mqtt://"),
                     ("mqtt://h/a?qos=2", "unknown MQTT URL parameter")]:
        with pytest.raises(ValueError, match=why):
            mqtt.parse_url(bad)
