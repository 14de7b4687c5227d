"""POST /v1/batches, /healthz and /metrics of the agent's app over real HTTP on 127.0.0.1, with a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

import aiohttp

from airwatt.agent import ingest, store, sync_store
from airwatt.agent import writer as writer_mod
from airwatt.agent.app import INGEST_KEY
from airwatt.protocol import fields, wire
from airwatt.protocol.models import Answer

from agent_helpers import BOOT, T0, body, dump, headers, reading
from samples import VALUES


# each reading with its boot's text id, from boot_ids
READINGS = "SELECT r.*, b.boot FROM readings r JOIN boot_ids b ON b.id = r.boot_id ORDER BY r.device, r.seq"


def rows(data_dir, sql=READINGS, params=()):
    conn = sqlite3.connect(store.db_path(data_dir))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


async def post(client, device, key, data, **kw):
    return await client.post("/v1/batches", data=data, headers=headers(device, key, data), **kw)


async def test_batch_is_stored_and_answered(client, devices, data_dir):
    data = body("dev-1", range(1, 7))
    before = time.time()
    resp = await post(client, "dev-1", devices["dev-1"], data)
    assert resp.status == 200
    answer = Answer.model_validate(await resp.json())
    assert answer.stored_seq == 6
    assert before - 1 <= answer.server_time <= time.time() + 1
    got = rows(data_dir)
    assert [r["seq"] for r in got] == [1, 2, 3, 4, 5, 6]
    first = got[0]  # seq 1: sensor pm (seq % 3 == 1)
    assert (first["device"], first["boot"], first["sensor"], first["t"], first["t_source"]) == (
        "dev-1", BOOT, "pm", T0 + 1, "board")
    assert (first["pm1"], first["pm25"], first["pm10"], first["voltage"], first["co2"]) == (8, 27, 41, None, None)
    energy = got[2]  # seq 3
    assert energy["sensor"] == "energy"
    assert [energy[k] for k in VALUES["energy"]] == list(VALUES["energy"].values())
    assert all(r["synced_at"] is None and r["flags"] == "" and before - 1 <= r["received"] for r in got)


async def test_replay_is_idempotent_and_overlap_adds_only_new(client, devices, data_dir):
    key = devices["dev-1"]
    first = body("dev-1", range(1, 6))
    for _ in range(3):
        resp = await post(client, "dev-1", key, first)
        assert resp.status == 200
        assert (await resp.json())["stored_seq"] == 5
    overlap = body("dev-1", range(3, 9))
    resp = await post(client, "dev-1", key, overlap)
    assert (await resp.json())["stored_seq"] == 8
    got = rows(data_dir)
    assert [r["seq"] for r in got] == list(range(1, 9))
    stats = client.server.app[INGEST_KEY].stats
    assert (stats.batches_accepted, stats.readings_accepted, stats.readings_received) == (4, 8, 21)
    # A replay of old seqs after newer ones answers with the device's highest seq, not the batch's.
    resp = await post(client, "dev-1", key, first)
    assert (await resp.json())["stored_seq"] == 8


async def test_unknown_device_and_bad_signature_get_the_same_bare_401(client, devices, data_dir):
    data = body("dev-1", [1])
    before = dump(store.db_path(data_dir))
    answers = []
    for hdrs in (
        headers("dev-9", devices["dev-1"], data),  # unknown device
        headers("dev-1", devices["dev-2"], data),  # signed with another device's key
        {"X-AirWatt-Device": "dev-1", "X-AirWatt-Signature": "zz"},  # not hex
        {"X-AirWatt-Device": "dev-1", "X-AirWatt-Signature": "\u00e9" * 64},  # not ASCII
        {"X-AirWatt-Device": "dev-1"},  # no signature
        {},  # no headers
    ):
        resp = await client.post("/v1/batches", data=data, headers=hdrs)
        answers.append((resp.status, await resp.text()))
    assert set(answers) == {(401, '{"error": "unauthorized"}')}
    assert dump(store.db_path(data_dir)) == before
    rejected = client.server.app[INGEST_KEY].stats.rejected
    assert (rejected["unknown_device"], rejected["bad_signature"]) == (2, 4)


async def test_signature_is_case_insensitive_hex(client, devices):
    data = body("dev-1", [1])
    hdrs = headers("dev-1", devices["dev-1"], data)
    hdrs["X-AirWatt-Signature"] = hdrs["X-AirWatt-Signature"].upper()
    assert (await client.post("/v1/batches", data=data, headers=hdrs)).status == 200


async def test_invalid_body_is_400_naming_reading_and_field(client, devices, data_dir):
    key = devices["dev-1"]
    before = dump(store.db_path(data_dir))
    good = body("dev-1", [1, 2], sensor="pm")
    cases = [
        (good.replace(b'"pm25":27', b'"pm25":1001', 1), "readings[0].values.pm25"),
        (good.replace(b'"seq":2', b'"seq":1', 1), "readings[1].seq"),
        (good.replace(b'"pm10":41', b'"co2":41', 1), "readings[0].values.co2"),
        (good.replace(b'"v":1', b'"v":2'), "v"),
        (good[:-1], ""),  # not JSON
        (b"\xff\xfe", ""),
    ]
    for data, path in cases:
        resp = await post(client, "dev-1", key, data)
        assert resp.status == 400, data
        answer = await resp.json()
        assert answer["path"] == path and answer["error"], answer
    assert dump(store.db_path(data_dir)) == before


async def test_header_device_differs_from_body_device_is_400(client, devices, data_dir):
    data = body("dev-2", [1])
    resp = await post(client, "dev-1", devices["dev-1"], data)  # dev-1's key: authentic, but names dev-2
    assert resp.status == 400
    assert (await resp.json())["path"] == "device"
    assert rows(data_dir) == []


async def test_oversize_is_413_by_length_and_by_streamed_size(client, devices, data_dir):
    key = devices["dev-1"]
    big = b" " * (fields.MAX_BODY_BYTES + 1)
    resp = await post(client, "dev-1", key, big)
    assert resp.status == 413

    async def chunks():  # no Content-Length: chunked transfer encoding, caught while reading
        for _ in range(fields.MAX_BODY_BYTES // 1000 + 2):
            yield b" " * 1000

    resp = await client.post("/v1/batches", data=chunks(), headers=headers("dev-1", key, b""))
    assert resp.status == 413
    # Exactly the limit is fine (a valid body padded with JSON whitespace).
    data = body("dev-1", [1])
    data = data + b" " * (fields.MAX_BODY_BYTES - len(data))
    assert (await post(client, "dev-1", key, data)).status == 200
    assert client.server.app[INGEST_KEY].stats.rejected["too_large"] == 2


async def test_ticks_only_readings_get_time_from_the_batch_boot(client, devices, data_dir):
    key = devices["dev-1"]
    # Readings at ticks 10 s and 70 s, sent at ticks 100 s: they were taken 90 s and 30 s ago.
    readings = [reading(1, t=None, ticks=10_000), reading(2, t=None, ticks=70_000)]
    before = time.time()
    resp = await post(client, "dev-1", key, body("dev-1", [1, 2], readings=readings, sent_ticks=100_000))
    after = time.time()
    assert resp.status == 200
    got = rows(data_dir)
    assert [r["t_source"] for r in got] == ["ticks", "ticks"]
    assert before - 90 - 0.01 <= got[0]["t"] <= after - 90 + 0.01
    assert abs((got[1]["t"] - got[0]["t"]) - 60) < 0.0011  # times are kept to the ms
    (boot,) = rows(data_dir, "SELECT * FROM boots")
    assert (boot["device"], boot["boot"]) == ("dev-1", BOOT)
    assert abs(boot["offset"] - (got[0]["t"] - 10)) < 0.0006


async def test_readings_of_an_unknown_boot_wait_for_it_and_a_known_boot_times_them(client, devices, data_dir):
    key = devices["dev-1"]
    old, new, older = "000000aa", "000000bb", "000000cc"
    # After a reboot (boot `new`), the board sends readings from boot `old`, which the agent never heard from.
    readings = [reading(1, t=None, ticks=5_000, boot=old), reading(2, t=None, ticks=1_000, boot=new)]
    await post(client, "dev-1", key, body("dev-1", [1, 2], boot=new, readings=readings, sent_ticks=2_000))
    got = rows(data_dir)
    assert [(r["t"] is None, r["t_source"]) for r in got] == [(True, "unknown"), (False, "ticks")]
    # A late retry of a batch from boot `old` teaches its clock: the earlier unknown reading is timed too.
    before = time.time()
    late = [reading(3, t=None, ticks=8_000, boot=old)]
    await post(client, "dev-1", key, body("dev-1", [3], boot=old, readings=late, sent_ticks=9_000))
    got = {r["seq"]: r for r in rows(data_dir)}
    assert got[1]["t_source"] == got[3]["t_source"] == "ticks"
    assert abs((got[3]["t"] - got[1]["t"]) - 3.0) < 0.0011
    assert before - 9 - 0.01 <= got[3]["t"] - 8 <= time.time() - 9 + 0.01
    # Readings of a boot the agent knows, sent in a later boot's batch, are timed from that boot's offset.
    more = [reading(4, t=None, ticks=6_000, boot=new), reading(5, t=None, ticks=100, boot=older)]
    await post(client, "dev-1", key, body("dev-1", [4, 5], boot=older, readings=more, sent_ticks=200))
    got = {r["seq"]: r for r in rows(data_dir)}
    assert got[4]["t_source"] == "ticks" and abs(got[4]["t"] - got[2]["t"] - 5.0) < 0.0011
    assert got[5]["t_source"] == "ticks"


async def test_later_estimate_does_not_move_a_learnt_offset_but_an_earlier_one_does(client, devices, data_dir):
    key = devices["dev-1"]
    await post(client, "dev-1", key, body("dev-1", [1], sent_ticks=10_000))
    (first,) = rows(data_dir, "SELECT * FROM boots")
    # A replay of an old body (same sent_ticks, later arrival) must not shift the boot's clock.
    await asyncio.sleep(0.05)
    await post(client, "dev-1", key, body("dev-1", [1], sent_ticks=10_000))
    assert rows(data_dir, "SELECT * FROM boots")[0]["offset"] == first["offset"]
    # A batch whose ticks say the board's clock started later than thought (less delay) refines it.
    await post(client, "dev-1", key, body("dev-1", [2], sent_ticks=40_000))
    assert rows(data_dir, "SELECT * FROM boots")[0]["offset"] < first["offset"]


async def test_device_firmware_last_seen_and_status_are_recorded(client, devices, data_dir):
    status = wire.encode_status(1234, 70000, -71, 9, 3, {"pm": 1, "co2": 4}, "agent")
    before = time.time()
    await post(client, "dev-2", devices["dev-2"], body("dev-2", [1], sensor="co2", status=status))
    db = store.open_db(data_dir)
    dev = store.get_device(db, "dev-2")
    assert dev["firmware"] == "0.1.0"
    assert before <= dev["first_seen"] == dev["last_seen"] <= time.time()
    assert json.loads(dev["last_status"]) == json.loads(status)
    # A batch without status keeps the last one; last_seen moves, first_seen does not.
    readings = [reading(2, sensor="co2", t=T0)]
    data = wire.batch_body("dev-2", "0.2.0", BOOT, 5000, readings)
    await post(client, "dev-2", devices["dev-2"], data)
    dev2 = store.get_device(db, "dev-2")
    assert dev2["firmware"] == "0.2.0" and dev2["first_seen"] == dev["first_seen"]
    assert dev2["last_seen"] >= dev["last_seen"] and dev2["last_status"] == dev["last_status"]
    db.close()


async def test_healthz(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "db": "ok", "schema_version": len(store.MIGRATIONS), "protocol": 1}


async def test_healthz_503_when_the_database_is_gone(client, data_dir):
    store.db_path(data_dir).rename(data_dir / "moved.db")
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert (await resp.json())["ok"] is False


_SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"\})? -?[0-9.e+]+$')


async def test_metrics_text(client, devices, data_dir):
    key = devices["dev-1"]
    await post(client, "dev-1", key, body("dev-1", range(1, 11)))
    await post(client, "dev-1", key, body("dev-1", range(1, 11)))  # replay: accepted, nothing new
    await post(client, "dev-1", devices["dev-2"], body("dev-1", [11]))  # bad signature
    db = store.open_db(data_dir)
    oldest = db.execute("SELECT min(received) FROM readings").fetchone()[0]
    sync_store.mark_synced(db, [1, 2, 3], time.time())
    sync_store.log_sync(db, True, 201, 3)
    db.close()
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "version=0.0.4" in resp.headers["Content-Type"]
    text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        assert _SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples["airwatt_batches_accepted_total"] == 2
    assert samples["airwatt_readings_accepted_total"] == 10
    assert samples["airwatt_readings_received_total"] == 20
    assert samples['airwatt_batches_rejected_total{reason="bad_signature"}'] == 1
    assert samples['airwatt_batches_rejected_total{reason="invalid"}'] == 0
    assert samples["airwatt_readings_pending_sync"] == 7
    assert 0 <= samples["airwatt_sync_lag_seconds"] <= time.time() - oldest + 1
    assert time.time() - 10 < samples["airwatt_last_sync_success_timestamp_seconds"] <= time.time()
    assert time.time() - 10 < samples['airwatt_device_last_seen_timestamp_seconds{device="dev-1"}'] <= time.time()
    assert 'device="dev-2"' not in text  # never heard from


async def test_fifty_concurrent_uploaders_share_commits_and_store_everything_once(tmp_path):
    data_dir = tmp_path / "data"
    db = store.open_db(data_dir)
    keys = {"up-%02d" % i: bytes.fromhex(store.add_device(db, "up-%02d" % i)) for i in range(50)}
    db.close()
    from aiohttp.test_utils import TestClient, TestServer

    from airwatt.agent.app import make_app

    async with TestClient(TestServer(make_app(data_dir), host="127.0.0.1")) as client:
        async def uploader(device):
            answers = []
            for b in range(4):
                seqs = range(b * 50 + 1, b * 50 + 51)
                # Every uploader also replays its previous batch once: idempotency under concurrency.
                for s in ([seqs] if b == 0 else [range(seqs.start - 50, seqs.start), seqs]):
                    resp = await post(client, device, keys[device], body(device, s))
                    assert resp.status == 200
                    answers.append((await resp.json())["stored_seq"])
            return answers

        results = await asyncio.gather(*(uploader(d) for d in keys))
        stats = client.server.app[INGEST_KEY].stats
    assert all(r == [50, 50, 100, 100, 150, 150, 200] for r in results)
    got = rows(data_dir, "SELECT device, count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi"
                         " FROM readings GROUP BY device")
    assert len(got) == 50 and all((r["n"], r["d"], r["lo"], r["hi"]) == (200, 200, 1, 200) for r in got)
    assert stats.readings_accepted == 50 * 200 and stats.batches_accepted == 50 * 7
    assert stats.commits < stats.batches_accepted  # concurrent uploads shared commits


def _job(device, seqs, **kw):
    from airwatt.protocol.models import parse_batch

    return ingest.job_from_batch(parse_batch(body(device, seqs, **kw)), time.time())


async def test_writer_commits_queued_batches_in_one_transaction(data_dir, devices):
    stats = ingest.Stats()
    writer = writer_mod.Writer(store.db_path(data_dir), stats)
    pending = [asyncio.ensure_future(writer.submit(_job("dev-1", range(b * 10 + 1, b * 10 + 11)))) for b in range(20)]
    await asyncio.sleep(0.05)  # all twenty queued before the writer starts: it must take them in one go
    assert not any(p.done() for p in pending)
    await writer.start()
    results = await asyncio.gather(*pending)
    await writer.stop()
    assert stats.commits == 1
    assert [r[0] for r in results] == [10 * (b + 1) for b in range(20)]
    assert [r[1] for r in results] == [10] * 20
    assert len(rows(data_dir)) == 200


async def test_one_failing_batch_does_not_sink_the_others_in_its_group(data_dir, devices):
    stats = ingest.Stats()
    writer = writer_mod.Writer(store.db_path(data_dir), stats)
    bad = _job("dev-2", [1])
    bad.rows[0] = bad.rows[0][:3] + (None,) + bad.rows[0][4:]  # sensor NULL: the store refuses the row
    jobs = [_job("dev-1", [1, 2]), bad, _job("dev-1", [3])]
    pending = [asyncio.ensure_future(writer.submit(j)) for j in jobs]
    await asyncio.sleep(0.05)
    await writer.start()
    results = await asyncio.gather(*pending, return_exceptions=True)
    await writer.stop()
    assert results[0] == (2, 2) and results[2] == (3, 1)
    assert isinstance(results[1], writer_mod.WriteFailed)
    assert [(r["device"], r["seq"]) for r in rows(data_dir)] == [("dev-1", 1), ("dev-1", 2), ("dev-1", 3)]
    db = store.open_db(data_dir)
    assert store.get_device(db, "dev-2")["last_seen"] is None  # the failed batch left no trace
    assert db.execute("SELECT count(*) FROM boots WHERE device = 'dev-2'").fetchone()[0] == 0
    db.close()


async def test_client_hanging_up_does_not_lose_a_batch(client, devices, data_dir):
    """A board that times out and retries: the first attempt's commit stands, the retry is a harmless replay."""
    data = body("dev-1", range(1, 51))
    try:
        await post(client, "dev-1", devices["dev-1"], data, timeout=aiohttp.ClientTimeout(total=0.0001))
    except asyncio.TimeoutError:
        pass
    resp = await post(client, "dev-1", devices["dev-1"], data)
    assert (await resp.json())["stored_seq"] == 50
    assert len(rows(data_dir)) == 50


# -- hypothesis battery: malformed uploads against a real `airwatt serve` process leave the database unchanged --

import http.client  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from airwatt.agent.bench import serve  # noqa: E402
from airwatt.protocol.check import ProtocolError  # noqa: E402
from airwatt.protocol.models import parse_batch  # noqa: E402

BATTERY = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
BASES = [
    body("dev-1", range(1, 4)),
    body("dev-1", [7], sensor="energy", t0=None),
    body("dev-1", range(10, 30), sensor="co2"),
]
JUNK = [None, True, False, 0, -1, 1.5, 2**63, 1e308, "", "x", "\u00e9", [], {}, [1], {"a": 1}, "0a1b2c3d"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("battery")
    db = store.open_db(data_dir)
    keys = {d: bytes.fromhex(store.add_device(db, d)) for d in ("dev-1", "dev-2")}
    db.close()
    proc, url = serve.start_agent(data_dir)
    port = int(url.rsplit(":", 1)[1])
    before = dump(store.db_path(data_dir))
    yield {"port": port, "keys": keys, "db": store.db_path(data_dir), "before": before}
    serve.stop_agent(proc)


def send(served, data, hdrs):
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=10)
    try:
        conn.request("POST", "/v1/batches", body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def expect_400(served, data, device="dev-1"):
    """data must be refused by the protocol's reference parser (or name another device); then the agent must
    answer 400 with the same path and the database must not change."""
    try:
        batch = parse_batch(data)
    except ProtocolError as err:
        path = err.path
    else:
        assume(batch.device != device)  # a mutation that is still a valid batch for this device proves nothing
        path = "device"
    status, answer = send(served, data, headers(device, served["keys"][device], data))
    assert status == 400, (status, answer, data)
    assert json.loads(answer)["path"] == path
    assert dump(served["db"]) == served["before"]


@BATTERY
@given(base=st.sampled_from(BASES), data=st.data())
def test_battery_byte_mutations_are_400(served, base, data):
    pos = data.draw(st.integers(0, len(base) - 1))
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    byte = bytes([data.draw(st.integers(0, 255))])
    mutated = {
        "replace": base[:pos] + byte + base[pos + 1:],
        "insert": base[:pos] + byte + base[pos:],
        "delete": base[:pos] + base[pos + 1:],
        "truncate": base[:pos],
    }[kind]
    expect_400(served, mutated)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@BATTERY
@given(base=st.sampled_from(BASES), data=st.data())
def test_battery_field_mutations_are_400(served, base, data):
    doc = json.loads(base)
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    action = data.draw(st.sampled_from(["junk", "delete", "extra", "big", "negative"]))
    leaf = path[-1]
    if action == "junk":
        parent[leaf] = data.draw(st.sampled_from(JUNK))
    elif action == "delete":
        del parent[leaf]
    elif action == "extra":
        target = parent if isinstance(parent, dict) else doc
        target[data.draw(st.sampled_from(["extra", "sig", "pm2", "t0"]))] = 1
    elif action == "big":
        parent[leaf] = data.draw(st.sampled_from([10**6, 4294967296, 2**53, 9e15, 1e-9]))
    else:
        parent[leaf] = -data.draw(st.integers(1, 10**6))
    expect_400(served, json.dumps(doc, separators=(",", ":")).encode())


@BATTERY
@given(base=st.sampled_from(BASES), data=st.data())
def test_battery_auth_and_size_failures(served, base, data):
    kind = data.draw(st.sampled_from(["flip", "short", "wrong_key", "unknown", "oversize"]))
    hdrs = headers("dev-1", served["keys"]["dev-1"], base)
    payload, want = base, 401
    sig = hdrs["X-AirWatt-Signature"]
    if kind == "flip":
        i = data.draw(st.integers(0, len(sig) - 1))
        hdrs["X-AirWatt-Signature"] = sig[:i] + ("0" if sig[i] != "0" else "1") + sig[i + 1:]
    elif kind == "short":
        hdrs["X-AirWatt-Signature"] = sig[: data.draw(st.integers(0, len(sig) - 1))]
    elif kind == "wrong_key":
        hdrs = headers("dev-1", served["keys"]["dev-2"], base)
    elif kind == "unknown":
        hdrs = headers(data.draw(st.sampled_from(["dev-3", "DEV-1", "", "x" * 40])), served["keys"]["dev-1"], base)
    else:
        pad = data.draw(st.integers(fields.MAX_BODY_BYTES - len(base) + 1, fields.MAX_BODY_BYTES * 2))
        payload, want = base + b" " * pad, 413
        hdrs = headers("dev-1", served["keys"]["dev-1"], payload)
    status, answer = send(served, payload, hdrs)
    assert status == want, (kind, status, answer)
    if want == 401:
        assert answer == b'{"error": "unauthorized"}'
    assert dump(served["db"]) == served["before"]


def test_battery_control_a_valid_upload_does_change_the_database(served):
    """The battery's "unchanged" check can fail: a valid upload does change the dump (run last)."""
    data = body("dev-2", [1], sensor="pm")
    status, _ = send(served, data, headers("dev-2", served["keys"]["dev-2"], data))
    assert status == 200
    assert dump(served["db"]) != served["before"]


async def test_a_dead_writer_process_is_replaced_and_ingest_goes_on(client, devices, data_dir):
    import os
    import signal

    writer = client.server.app[INGEST_KEY].writer
    key = devices["dev-1"]
    assert (await post(client, "dev-1", key, body("dev-1", range(1, 6)))).status == 200
    old = writer._proc.pid
    os.kill(old, signal.SIGKILL)
    for _ in range(400):  # the agent notices the closed pipe, answers 503 meanwhile, and starts a new writer
        resp = await client.get("/healthz")
        if resp.status == 200 and writer._proc is not None and writer._proc.pid != old:
            break
        await asyncio.sleep(0.05)
    assert writer._proc.pid != old and resp.status == 200
    resp = await post(client, "dev-1", key, body("dev-1", range(6, 11)))
    assert resp.status == 200 and (await resp.json())["stored_seq"] == 10
    assert [r["seq"] for r in rows(data_dir)] == list(range(1, 11))


async def test_busy_agent_answers_503_with_retry_after_and_stores_nothing(client, devices, data_dir, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_QUEUED", 0)  # as if 2,000 batches were already waiting for the writer
    before = dump(store.db_path(data_dir))
    resp = await post(client, "dev-1", devices["dev-1"], body("dev-1", [1]))
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert dump(store.db_path(data_dir)) == before
    assert client.server.app[INGEST_KEY].stats.rejected["busy"] == 1


async def test_deeply_nested_and_non_utf8_bodies_are_400_with_a_reason(client, devices, data_dir):
    key = devices["dev-1"]
    good = body("dev-1", range(1, 4))
    cases = [
        (b"[" * 16000 + b"]" * 16000, "deeper than 8 levels"),  # 32 KB, signed: once a RecursionError and a 500
        (b"\xef\xbb\xbf" + good, "byte order mark"),
        (good.decode().encode("utf-16"), "UTF-16"),
        (good.decode().encode("utf-16-be"), "UTF-16"),
        (good.replace(b'"fw":"0.1.0"', b'"fw":"0.1.\xe9"'), "not valid UTF-8"),
    ]
    for data, why in cases:
        assert len(data) <= fields.MAX_BODY_BYTES
        resp = await post(client, "dev-1", key, data)
        answer = await resp.json()
        assert resp.status == 400 and why in answer["error"] and answer["path"] == "", (why, answer)
    assert rows(data_dir) == []
    resp = await post(client, "dev-1", key, good)  # the same batch as plain UTF-8 is stored
    assert resp.status == 200 and [r["seq"] for r in rows(data_dir)] == [1, 2, 3]


def v2_body(device: str, first: int, n: int, sent_ticks: int = 900000) -> bytes:
    """A v2 batch as the new firmware builds it: three meters (instances 0, 1, 2), PM and CO2, packed."""
    from airwatt.protocol import v2

    rows = []
    for i in range(n):
        seq, ticks = first + i, 1000 + i * 3000
        kind = ("energy", "energy", "energy", "pm", "co2")[i % 5]
        if kind == "energy":
            v = {"voltage": 2300 + i, "current": 1000 + i, "power": 2300, "energy_wh": 5000 + i, "frequency": 500,
                 "pf": 100}
            rows.append((seq, T0 + ticks // 1000, ticks, BOOT, kind, i % 5, v, []))
        elif kind == "pm":
            rows.append((seq, T0 + ticks // 1000, ticks, BOOT, kind, 0, {"pm1": 1, "pm25": 2, "pm10": 3}, []))
        else:
            rows.append((seq, None if i < 5 else T0 + ticks // 1000, ticks, BOOT, kind, 0,
                         {"co2": 700, "temperature": 2500, "humidity": 5000}, ["retried"]))
    return wire.batch_body_v2(device, "0.2.0", BOOT, sent_ticks, first, n, v2.pack(rows))


async def test_a_v1_board_and_a_v2_board_upload_to_the_same_agent(client, devices, data_dir):
    v1 = body("dev-1", range(1, 7))
    resp = await post(client, "dev-1", devices["dev-1"], v1)
    assert resp.status == 200 and (await resp.json())["v"] == 1  # each board answered in its own version
    v2 = v2_body("dev-2", 1, 300)
    assert len(v2) <= 16 * 300
    resp = await post(client, "dev-2", devices["dev-2"], v2)
    answer = await resp.json()
    assert resp.status == 200 and answer["v"] == 2 and answer["stored_seq"] == 300, answer
    Answer.model_validate(answer)
    resp = await post(client, "dev-2", devices["dev-2"], v2)  # a replay stores nothing twice
    assert resp.status == 200 and (await resp.json())["stored_seq"] == 300
    got = rows(data_dir)
    assert [r["seq"] for r in got if r["device"] == "dev-1"] == list(range(1, 7))
    two = [r for r in got if r["device"] == "dev-2"]
    assert [r["seq"] for r in two] == list(range(1, 301))
    meters = [(r["instance"], r["energy_wh"]) for r in two[:5] if r["sensor"] == "energy"]
    assert meters == [(0, 5000), (1, 5001), (2, 5002)]
    assert two[0]["voltage"] == 230.0 and two[4]["temperature"] == 25.0 and two[4]["t_source"] != "board"
    assert two[4]["flags"] == "retried" and all(r["instance"] == 0 for r in got if r["device"] == "dev-1")


async def test_a_broken_v2_batch_is_refused_with_its_path(client, devices, data_dir):
    v2 = json.loads(v2_body("dev-2", 1, 10))
    v2["n"] = 11
    data = json.dumps(v2).encode()
    resp = await post(client, "dev-2", devices["dev-2"], data)
    assert resp.status == 400 and (await resp.json())["path"] == "n"
    v2["n"], v2["data"] = 10, v2["data"][:-8] + "AAAAAAA="
    data = json.dumps(v2).encode()
    resp = await post(client, "dev-2", devices["dev-2"], data)
    assert resp.status == 400 and (await resp.json())["path"] == "data"
    assert rows(data_dir) == []
