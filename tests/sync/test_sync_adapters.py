"""Adapters against the Smart Data Model facts and the generic API contract (pure functions, no I/O)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from airwatt.agent.adapters import http_json, iso_time, make_adapter, ngsi_ld
from airwatt.emulator.platform import check_entity
from airwatt.protocol import fields

import sdm
from samples import VALUES

ROW = {"id": 7, "device": "kk-hall-01", "seq": 42, "boot": "0a1b2c3d", "t": 1790000000.0, "t_source": "board",
       "ticks": 5000, "received": 1790000100.0, "flags": "", "lat": 16.4419, "lon": 102.836, "site": "City Hall"}


def row(sensor: str, **extra) -> dict:
    r = dict(ROW, sensor=sensor)
    r.update({m[1]: None for m in fields.METRICS})
    r.update(VALUES[sensor])
    r.update(extra)
    return r


def test_air_pm_entity_is_air_quality_observed_with_lon_lat_and_device():
    ent = ngsi_ld.entity(row("pm"))
    assert ent["id"] == "urn:ngsi-ld:AirQualityObserved:kk-hall-01:42"
    assert ent["type"] == "AirQualityObserved"
    assert ent["location"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [102.836, 16.4419]}}
    assert ent["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:kk-hall-01"}  # its schema: a URI
    assert ent["dateObserved"] == {"type": "Property", "value": {"@type": "DateTime", "@value": "2026-09-21T14:13:20Z"}}
    for name, value in (("pm1", 8), ("pm25", 27), ("pm10", 41)):
        assert ent[name] == {"type": "Property", "value": value, "unitCode": "GQ", "observedAt": "2026-09-21T14:13:20Z"}
    assert "co2" not in ent and "airwattFlags" not in ent
    assert ent["@context"][-1] == "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
    assert any("dataModel.Environment" in c for c in ent["@context"])


def test_co2_entity_has_relative_humidity_as_a_fraction():
    ent = ngsi_ld.entity(row("co2"))
    assert ent["type"] == "AirQualityObserved"
    assert ent["relativeHumidity"]["value"] == 0.5512  # 55.12 %RH, not 55.12 and not 0.5511999999999999
    assert ent["relativeHumidity"]["unitCode"] == "C62"
    assert ent["co2"]["value"] == 812 and ent["co2"]["unitCode"] == "59"  # ppm
    assert ent["temperature"]["value"] == 26.55 and ent["temperature"]["unitCode"] == "CEL"
    assert ngsi_ld.entity(row("co2", humidity=100.0))["relativeHumidity"]["value"] == 1.0
    assert ngsi_ld.entity(row("co2", humidity=0.0))["relativeHumidity"]["value"] == 0.0


def test_energy_entity_is_single_phase_ac_measurement_in_kwh():
    ent = ngsi_ld.entity(row("energy"))
    assert ent["id"] == "urn:ngsi-ld:ACMeasurement:kk-hall-01:42"
    assert ent["type"] == "ACMeasurement"
    assert ent["phaseType"] == {"type": "Property", "value": "singlePhase"}
    assert ent["refDevice"] == {"type": "Relationship", "object": ["urn:ngsi-ld:Device:kk-hall-01"]}  # an array
    assert ent["totalActivePower"]["value"] == 287.5 and ent["totalActivePower"]["unitCode"] == "WTT"
    assert ent["totalActiveEnergyImport"]["value"] == 123.456 and ent["totalActiveEnergyImport"]["unitCode"] == "KWH"
    assert ent["totalPowerFactor"]["value"] == 0.97 and ent["totalPowerFactor"]["unitCode"] == "C62"
    assert ent["frequency"]["value"] == 50.0 and ent["frequency"]["unitCode"] == "HTZ"
    assert ent["phaseVoltage"]["value"] == {"L1": 229.8} and ent["phaseVoltage"]["unitCode"] == "VLT"
    assert ent["current"]["value"] == {"L1": 1.254} and ent["current"]["unitCode"] == "AMP"
    assert ent["activePower"]["value"] == {"L1": 287.5}
    assert ent["powerFactor"]["value"] == {"L1": 0.97}
    assert all(ent[k]["observedAt"] == "2026-09-21T14:13:20Z" for k in ("frequency", "current", "totalActivePower"))
    assert any("dataModel.Energy" in c for c in ent["@context"])


def test_missing_metric_is_left_out_and_flags_are_visible():
    ent = ngsi_ld.entity(row("energy", pf=None, flags="alarm,out_of_range"))
    assert "totalPowerFactor" not in ent and "powerFactor" not in ent
    assert ent["airwattFlags"]["value"] == ["alarm", "out_of_range"]


def test_unknown_time_uses_receive_time_and_says_so():
    ent = ngsi_ld.entity(row("pm", t=None, t_source="unknown"))
    assert ent["dateObserved"]["value"]["@value"] == iso_time(ROW["received"]) == "2026-09-21T14:15:00Z"
    assert ent["airwattFlags"]["value"] == ["time_unknown"]
    assert http_json.item(row("pm", t=None))["time"] is None


def test_fractional_time_keeps_milliseconds():
    assert iso_time(1790000000.25) == "2026-09-21T14:13:20.250Z"


def test_device_without_location_is_unencodable_not_sent():
    prepared = ngsi_ld.prepare("http://x/ngsi-ld/v1/entityOperations/upsert", [row("pm", lat=None), row("co2", id=8)])
    assert prepared.unencodable.keys() == {7}
    assert "lat/lon" in prepared.unencodable[7]
    assert prepared.row_ids == [8]
    assert [e["id"] for e in json.loads(prepared.body)] == ["urn:ngsi-ld:AirQualityObserved:kk-hall-01:42"]


def test_every_entity_passes_the_platforms_model_check():
    for sensor in ("energy", "pm", "co2"):
        assert check_entity(ngsi_ld.entity(row(sensor)), ld=True) is None
    bad = ngsi_ld.entity(row("co2"))
    bad["relativeHumidity"]["value"] = 55.12
    assert "fraction" in check_entity(bad, ld=True)
    swapped = ngsi_ld.entity(row("pm", lat=102.836, lon=16.4419))  # [lat, lon] slips past only if in range
    assert swapped["location"]["value"]["coordinates"] == [16.4419, 102.836]


def test_every_entity_validates_against_the_official_smart_data_models_schema():
    for sensor in ("energy", "pm", "co2"):
        ent = ngsi_ld.entity(row(sensor, flags="retried"))
        assert sdm.errors(ent) == [], sensor
    # The check has teeth: the mistakes it exists for are caught, each at its path.
    single = ngsi_ld.entity(row("energy"))
    single["refDevice"]["object"] = "urn:ngsi-ld:Device:kk-hall-01"
    assert any(e.startswith("refDevice:") for e in sdm.errors(single))
    percent = ngsi_ld.entity(row("co2"))
    percent["relativeHumidity"]["value"] = 55.12
    assert any(e.startswith("relativeHumidity:") for e in sdm.errors(percent))
    no_time = ngsi_ld.entity(row("pm"))
    no_time["dateObserved"]["value"]["@value"] = "yesterday"
    assert any(e.startswith("dateObserved:") for e in sdm.errors(no_time))
    three = ngsi_ld.entity(row("energy"))
    three["phaseType"]["value"] = "3-phase"
    assert any(e.startswith("phaseType:") for e in sdm.errors(three))


def test_upsert_request_is_ld_json_replace_mode():
    adapter = make_adapter("ngsi-ld", "http://127.0.0.1:1026/ngsi-ld/v1/", tenant="khonkaen")
    prepared = adapter.prepare([row("pm"), row("energy", id=8, seq=43)])
    assert prepared.url == "http://127.0.0.1:1026/ngsi-ld/v1/entityOperations/upsert"  # no options: replace
    assert prepared.headers["Content-Type"] == "application/ld+json"
    assert prepared.headers["NGSILD-Tenant"] == "khonkaen"
    body = json.loads(prepared.body)
    assert [e["id"] for e in body] == prepared.keys
    assert all("@context" in e for e in body)
    assert make_adapter("ngsi-ld", "http://h:1026").prepare([row("pm")]).url == "http://h:1026/ngsi-ld/v1/entityOperations/upsert"


def test_ngsi_answers_map_to_readings():
    prepared = ngsi_ld.prepare("http://x/u", [row("pm"), row("co2", id=8, seq=43), row("energy", id=9, seq=44)])
    k = prepared.keys
    assert ngsi_ld.interpret(prepared, 201, json.dumps([k[0]]).encode()).confirmed == [7, 8, 9]  # 201 lists created only
    assert ngsi_ld.interpret(prepared, 204, b"").confirmed == [7, 8, 9]
    partial = {"success": [k[0]], "errors": [
        {"entityId": k[1], "error": {"type": "x/BadRequestData", "title": "Bad", "detail": "no", "status": 400}}]}
    out = ngsi_ld.interpret(prepared, 207, json.dumps(partial).encode())
    assert out.confirmed == [7]
    assert out.failed[8] == (400, "Bad: no")
    assert out.failed[9][0] is None  # in neither list: not confirmed
    assert ngsi_ld.interpret(prepared, 207, b"<html>").confirmed == []


def test_http_json_item_and_deterministic_idempotency_key():
    item = http_json.item(row("co2", flags="stuck"))
    assert item["id"] == "kk-hall-01:42"
    assert item["values"] == {"co2": 812, "temperature": 26.55, "humidity": 55.12}  # the table's units, as stored
    assert item["time"] == "2026-09-21T14:13:20Z" and item["flags"] == ["stuck"]
    assert (item["lat"], item["lon"]) == (16.4419, 102.836)
    a = http_json.prepare("http://x/readings", [row("pm"), row("co2", id=8, seq=43)])
    b = http_json.prepare("http://x/readings", [row("pm"), row("co2", id=8, seq=43)])
    c = http_json.prepare("http://x/readings", [row("pm")])
    assert a.headers["Idempotency-Key"] == b.headers["Idempotency-Key"] != c.headers["Idempotency-Key"]
    assert re.fullmatch(r"airwatt-v1-[0-9a-f]{48}", a.headers["Idempotency-Key"])
    assert make_adapter("http-json", "http://h/api/").prepare([row("pm")]).url == "http://h/api/readings"
    authed = make_adapter("http-json", "http://h/api", token="s3cret").prepare([row("pm")])
    assert authed.headers["Authorization"] == "Bearer s3cret" and "NGSILD-Tenant" not in authed.headers


def test_http_json_answers_map_to_readings():
    prepared = http_json.prepare("http://x/readings", [row("pm"), row("co2", id=8, seq=43), row("energy", id=9, seq=44)])
    assert http_json.interpret(prepared, 200, b"").confirmed == [7, 8, 9]
    answer = {"results": [{"id": "kk-hall-01:42", "ok": True},
                          {"id": "kk-hall-01:43", "ok": False, "status": 400, "error": "bad value"}]}
    out = http_json.interpret(prepared, 207, json.dumps(answer).encode())
    assert out.confirmed == [7]
    assert out.failed == {8: (400, "bad value"), 9: (None, "not in the answer's results")}


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="ngsi-ld, http-json, sensorthings, mqtt"):
        make_adapter("amqp", "http://x")
    with pytest.raises(ValueError, match="mqtt://HOST:PORT/PREFIX"):
        make_adapter("mqtt", "http://x")
    with pytest.raises(ValueError, match="starts with http"):
        make_adapter("sensorthings", "mqtt://x/y")


def test_readme_documents_every_metric_with_its_unit():
    text = (Path(http_json.__file__).parent / "README.md").read_text()
    for sensor, metric, unit, *_ in fields.METRICS:
        assert re.search(r"\|\s*`?%s`?\s*\|\s*%s\s*\|\s*`?%s`?\s*\|" % (sensor, re.escape(metric), re.escape(unit)), text), metric
    assert "Idempotency-Key" in text and "207" in text


def test_answers_that_are_not_the_apis_confirm_nothing():
    ng = ngsi_ld.prepare("http://x/u", [row("pm")])
    with pytest.raises(ValueError):
        ngsi_ld.interpret(ng, 200, b"<html>login</html>")
    with pytest.raises(ValueError):
        ngsi_ld.interpret(ng, 201, b'{"ok": true}')
    assert ngsi_ld.interpret(ng, 201, b"").confirmed == [7]
    hj = http_json.prepare("http://x/readings", [row("pm")])
    with pytest.raises(ValueError):
        http_json.interpret(hj, 200, b"<html>login</html>")
    assert http_json.interpret(hj, 200, b'{"stored": 1}').confirmed == [7]


def _metric_strategy(sensor: str):
    from hypothesis import strategies as st

    parts = {}
    for _, name, _, _, kind, lo, hi, decimals in fields.metrics(sensor):
        if kind == "int":
            value = st.integers(lo, hi)
        else:
            value = st.integers(round(lo * 10**decimals), round(hi * 10**decimals)).map(
                lambda q, d=decimals: round(q / 10**d, d))
        parts[name] = st.none() | value
    return st.fixed_dictionaries(parts)


def test_any_valid_reading_becomes_a_model_valid_entity_and_item():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    readings = st.sampled_from(fields.SENSORS).flatmap(lambda s: st.tuples(st.just(s), _metric_strategy(s)))

    @settings(max_examples=300, deadline=None)
    @given(readings, st.integers(1, fields.MAX_SEQ), st.none() | st.integers(fields.MIN_WALL_TIME, fields.MAX_WALL_TIME - 1),
           st.floats(-90, 90), st.floats(-180, 180), st.lists(st.sampled_from(fields.FLAGS), unique=True))
    def check(reading, seq, t, lat, lon, flags):
        sensor, values = reading
        r = row(sensor, seq=seq, t=t, lat=lat, lon=lon, flags=",".join(flags), **values)
        ent = ngsi_ld.entity(r)
        assert check_entity(ent, ld=True) is None
        assert sdm.errors(ent) == []
        assert ent["id"].endswith(":kk-hall-01:%d" % seq)
        assert ent["location"]["value"]["coordinates"] == [lon, lat]
        if values.get("humidity") is not None:
            assert 0 <= ent["relativeHumidity"]["value"] <= 1
            assert abs(ent["relativeHumidity"]["value"] * 100 - values["humidity"]) < 1e-9
        if values.get("energy_wh") is not None:
            assert abs(ent["totalActiveEnergyImport"]["value"] * 1000 - values["energy_wh"]) < 1e-6
        assert (ent.get("airwattFlags", {}).get("value") or []) == flags + (["time_unknown"] if t is None else [])
        it = http_json.item(r)
        assert it["values"] == {k: v for k, v in values.items() if v is not None}
        assert json.loads(json.dumps(it)) == it

    check()


def test_entity_text_is_exactly_the_entity():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    readings = st.sampled_from(fields.SENSORS).flatmap(lambda s: st.tuples(st.just(s), _metric_strategy(s)))
    sites = st.none() | st.text(max_size=20)

    @settings(max_examples=300, deadline=None)
    @given(readings, st.integers(1, fields.MAX_SEQ), st.none() | st.floats(fields.MIN_WALL_TIME, fields.MAX_WALL_TIME),
           st.floats(-90, 90), st.floats(-180, 180), sites, st.lists(st.sampled_from(fields.FLAGS), unique=True))
    def check(reading, seq, t, lat, lon, site, flags):
        sensor, values = reading
        r = row(sensor, seq=seq, t=t, lat=lat, lon=lon, site=site, flags=",".join(flags), **values)
        text = ngsi_ld.entity_json(r)
        assert json.loads(text) == ngsi_ld.entity(r)
        assert text == json.dumps(ngsi_ld.entity(r), separators=(",", ":"), ensure_ascii=False)

    check()
    odd = row("pm", device='we"ird')  # outside the protocol's alphabet: the safe path, still exact
    assert json.loads(ngsi_ld.entity_json(odd))["id"] == 'urn:ngsi-ld:AirQualityObserved:we"ird:42'



def test_item_text_is_exactly_the_item():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    readings = st.sampled_from(fields.SENSORS).flatmap(lambda s: st.tuples(st.just(s), _metric_strategy(s)))
    sites = st.none() | st.text(max_size=20)
    coords = st.none() | st.floats(-90, 90)

    @settings(max_examples=300, deadline=None)
    @given(readings, st.integers(1, fields.MAX_SEQ), st.none() | st.floats(fields.MIN_WALL_TIME, fields.MAX_WALL_TIME),
           coords, coords, sites, st.lists(st.sampled_from(fields.FLAGS), unique=True),
           st.sampled_from(["board", "ticks", None, 'o"dd']))
    def check(reading, seq, t, lat, lon, site, flags, t_source):
        sensor, values = reading
        r = row(sensor, seq=seq, t=t, lat=lat, lon=lon, site=site, flags=",".join(flags), t_source=t_source, **values)
        assert http_json.item_json(r) == json.dumps(http_json.item(r), separators=(",", ":"), ensure_ascii=False)

    check()
    odd = row("pm", device='we"ird', pm25=float("nan"))  # the safe path, still exact
    assert http_json.item_json(odd) == json.dumps(http_json.item(odd), separators=(",", ":"), ensure_ascii=False)

def _phase_rows(first_id: int = 20, **per_phase) -> list[dict]:
    """One round of a three-phase board: meters 1, 2, 3 as L1, L2, L3, read in turn 80 ms apart."""
    out = []
    loads = {"L1": (231.2, 4.317, 951.3, 40012, 0.95), "L2": (228.9, 3.051, 601.9, 30555, 0.86),
             "L3": (230.4, 6.127, 1306.7, 51234, 0.93)}
    for k, (phase, (v, i, p, e, pf)) in enumerate(loads.items()):
        r = row("energy", id=first_id + k, seq=100 + k, ticks=5000 + 80 * k, t=1790000000.0 + k * 0.08,
                instance=k + 1, meter_name=phase, meter_phase=phase, meter_circuit=None,
                voltage=v, current=i, power=p, energy_wh=e, frequency=50.0, pf=pf)
        r.update(per_phase.get(phase, {}))
        out.append(r)
    return out


def test_the_generic_adapters_say_which_meter_took_a_reading():
    """http-json, SensorThings and MQTT carry each reading whole: with several meters on a board, each says
    which phase or sub-circuit it is from (a lone meter's readings say nothing more than before)."""
    from airwatt.agent.adapters import mqtt, sensorthings
    circuit = row("energy", id=23, seq=103, ticks=5240, instance=4, meter_name="aircon", meter_phase=None,
                  meter_circuit="aircon", power=812.4, energy_wh=9100)
    lone = row("energy", meter_name=None, meter_phase=None, meter_circuit=None)
    want = [{"instance": 1, "phase": "L1"}, {"instance": 2, "phase": "L2"}, {"instance": 3, "phase": "L3"},
            {"instance": 4, "circuit": "aircon"}, None]
    for r, m in zip(_phase_rows() + [circuit, lone], want):
        item = http_json.item(r)
        assert item.get("meter") == m and ("meter" in item) == (m is not None)
        assert http_json.item_json(r) == json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        assert all(obs[1][2].get("meter") == m for obs in sensorthings.observations(r))
        assert mqtt.iota_measures(r).get("meter") == m


def test_three_phase_round_is_one_schema_valid_entity_whose_totals_are_the_sums():
    rows = _phase_rows()
    circuit = row("energy", id=23, seq=103, ticks=5240, instance=4, meter_name="aircon", meter_phase=None,
                  meter_circuit="aircon", power=812.4, energy_wh=9100)
    prepared = ngsi_ld.prepare("http://x", rows + [circuit])
    ents = json.loads(prepared.body)
    assert len(ents) == 2 and prepared.row_ids == [20, 21, 22, 23]
    three, ac = ents
    assert prepared.keys == [three["id"]] * 3 + [ac["id"]]
    assert three["id"] == "urn:ngsi-ld:ACMeasurement:kk-hall-01:100"
    assert three["phaseType"]["value"] == "threePhase"
    assert three["phaseVoltage"]["value"] == {"L1": 231.2, "L2": 228.9, "L3": 230.4}
    assert three["activePower"]["value"] == {"L1": 951.3, "L2": 601.9, "L3": 1306.7}
    assert three["current"]["value"] == {"L1": 4.317, "L2": 3.051, "L3": 6.127}
    assert three["powerFactor"]["value"] == {"L1": 0.95, "L2": 0.86, "L3": 0.93}
    # totals equal the sum of the phases within the table's resolution (0.1 W, 1 Wh)
    assert abs(three["totalActivePower"]["value"] - (951.3 + 601.9 + 1306.7)) < 0.05
    assert three["totalActivePower"]["value"] == 2859.9
    assert three["totalActiveEnergyImport"]["value"] == 121.801  # (40012 + 30555 + 51234) Wh
    assert three["activeEnergyImport"]["value"] == {"L1": 40.012, "L2": 30.555, "L3": 51.234}
    assert 0 < three["totalPowerFactor"]["value"] <= 1
    assert sdm.errors(three) == [] and check_entity(three, ld=True) is None
    # the sub-circuit is an entity of its own, named by its circuit
    assert ac["id"] == "urn:ngsi-ld:ACMeasurement:kk-hall-01:aircon:103" and ac["name"]["value"] == "aircon"
    assert ac["phaseType"]["value"] == "singlePhase" and sdm.errors(ac) == []
    # the check has teeth for threePhase too: a phase value out of the model's range is caught at its path
    bad = json.loads(json.dumps(three))
    bad["activePower"]["value"]["L2"] = -5
    assert any(e.startswith("activePower/L2") for e in sdm.errors(bad))


def test_three_phase_missing_meter_and_the_207_answer_cover_every_reading_of_a_round():
    rows = _phase_rows()
    partial = [rows[0], rows[2]]  # L2's meter did not answer this round
    ent = json.loads(ngsi_ld.prepare("http://x", partial).body)[0]
    assert set(ent["activePower"]["value"]) == {"L1", "L3"}
    assert ent["totalActivePower"]["value"] == round(951.3 + 1306.7, 1)
    assert ent["airwattFlags"]["value"] == ["missing_L2"] and sdm.errors(ent) == []
    # two rounds: the second starts when a phase repeats or ROUND_MS has passed
    later = _phase_rows(first_id=30, L1={"seq": 200, "ticks": 15000}, L2={"seq": 201, "ticks": 15080},
                        L3={"seq": 202, "ticks": 15160})
    prepared = ngsi_ld.prepare("http://x", rows + later)
    ids = [e["id"] for e in json.loads(prepared.body)]
    assert ids == ["urn:ngsi-ld:ACMeasurement:kk-hall-01:100", "urn:ngsi-ld:ACMeasurement:kk-hall-01:200"]
    answer = json.dumps({"success": [ids[1]], "errors": [{"entityId": ids[0], "error": {"status": 400,
                                                                                            "title": "bad"}}]})
    outcome = ngsi_ld.interpret(prepared, 207, answer.encode())
    assert sorted(outcome.confirmed) == [30, 31, 32] and sorted(outcome.failed) == [20, 21, 22]
