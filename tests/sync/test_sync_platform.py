"""The emulated city platform on its own: NGSI-LD upsert semantics, the generic API's idempotency, faults admin."""

from __future__ import annotations

import json

from sync_helpers import platform_records

LD = {"Content-Type": "application/ld+json"}
CTX = ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"]


def aqo(n: int, **attrs) -> dict:
    ent = {"id": "urn:ngsi-ld:AirQualityObserved:d:%d" % n, "type": "AirQualityObserved",
           "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": "2026-09-21T14:13:20Z"}},
           "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [102.8, 16.4]}}}
    ent.update({k: {"type": "Property", "value": v} for k, v in attrs.items()})
    ent["@context"] = CTX
    return ent


async def test_upsert_creates_201_then_204_replace_drops_old_attributes(platform, session, tmp_path):
    url, plat = platform
    upsert = url + "/ngsi-ld/v1/entityOperations/upsert"
    async with session.post(upsert, data=json.dumps([aqo(1, pm25=10)]), headers=LD) as resp:
        assert resp.status == 201 and await resp.json() == ["urn:ngsi-ld:AirQualityObserved:d:1"]
    async with session.post(upsert, data=json.dumps([aqo(1, pm10=20)]), headers=LD) as resp:
        assert resp.status == 204
    body, writes = platform_records(tmp_path / "platform.db", "ngsi-ld")["urn:ngsi-ld:AirQualityObserved:d:1"]
    assert writes == 2 and "pm10" in body and "pm25" not in body  # replace: the entity is the last write
    async with session.post(upsert + "?options=update", data=json.dumps([aqo(1, pm25=11)]), headers=LD) as resp:
        assert resp.status == 204
    body, _ = platform_records(tmp_path / "platform.db", "ngsi-ld")["urn:ngsi-ld:AirQualityObserved:d:1"]
    assert body["pm10"]["value"] == 20 and body["pm25"]["value"] == 11  # update: merged


async def test_upsert_refuses_bad_entities_in_a_207_and_whole_bad_requests(platform, session):
    url, plat = platform
    upsert = url + "/ngsi-ld/v1/entityOperations/upsert"
    no_ctx = aqo(3)
    del no_ctx["@context"]
    batch = [aqo(1), aqo(2, relativeHumidity=55.1), no_ctx]
    async with session.post(upsert, data=json.dumps(batch), headers=LD) as resp:
        assert resp.status == 207
        answer = await resp.json()
    assert answer["success"] == ["urn:ngsi-ld:AirQualityObserved:d:1"]
    assert [e["entityId"] for e in answer["errors"]] == ["urn:ngsi-ld:AirQualityObserved:d:2",
                                                          "urn:ngsi-ld:AirQualityObserved:d:3"]
    assert all(e["error"]["status"] == 400 for e in answer["errors"])
    async with session.post(upsert, data=b"{not json", headers=LD) as resp:
        assert resp.status == 400
    async with session.post(upsert, data=json.dumps([aqo(4)]), headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 415


async def test_generic_api_replays_a_repeated_idempotency_key(platform, session, tmp_path):
    url, plat = platform
    body = json.dumps({"readings": [{"id": "d:1", "device": "d", "seq": 1, "sensor": "pm", "values": {"pm25": 3}}]})
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k1"}
    for _ in range(2):
        async with session.post(url + "/readings", data=body, headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["results"] == [{"id": "d:1", "ok": True}]
    assert resp.headers.get("Idempotent-Replayed") == "true"
    assert platform_records(tmp_path / "platform.db", "http-json")["d:1"][1] == 1
    async with session.post(url + "/readings", data=body.replace("3", "4"), headers=headers) as resp:
        assert resp.status == 422  # same key, another body


async def test_fault_admin_validates_and_reports(platform, session):
    url, plat = platform
    async with session.post(url + "/_faults", json={"5xx": 1, "schedule": ["drop", "ok"], "retry_after": 3}) as resp:
        assert resp.status == 200 and (await resp.json())["schedule"] == ["5xx", "drop", "ok"]
    async with session.post(url + "/_faults", json={"meteor": 1}) as resp:
        assert resp.status == 400 and "meteor" in (await resp.json())["error"]
    async with session.post(url + "/_faults", json={"schedule": ["meteor"]}) as resp:
        assert resp.status == 400
    async with session.post(url + "/readings", json={"readings": []}) as resp:
        assert resp.status == 500  # the scheduled 5xx comes first, whatever the body
    async with session.get(url + "/_stats") as resp:
        stats = await resp.json()
    assert stats["stats"]["fault_5xx"] == 1 and stats["stalled"] == 0
