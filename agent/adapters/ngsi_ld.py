"""NGSI-LD adapter: FIWARE Smart Data Models in normalized form, sent by batch upsert.

One entity per reading, with an id made of the device and its sequence number, so a resend (after a crash,
a timeout, a lost answer) rewrites the same entity instead of adding one:

- air readings (sensor `pm` or `co2`) -> `AirQualityObserved` (dataModel.Environment):
  pm1, pm25, pm10 (µg/m3, GQ), co2 (ppm, 59), temperature (°C, CEL), relativeHumidity as a FRACTION 0..1 (C62);
- energy readings -> `ACMeasurement` (dataModel.Energy), phaseType singlePhase: totalActivePower (W, WTT),
  totalActiveEnergyImport (kWh, KWH, from the meter's cumulative Wh counter), totalPowerFactor (C62),
  frequency (Hz, HTZ) and the L1 phase objects phaseVoltage, current, activePower, powerFactor.

A board with several meters (agent/meters.py; store rows carry meter_name, meter_phase, meter_circuit): the
readings of its phase meters taken in one round (same boot, within ROUND_MS of the round's first) become ONE
ACMeasurement, phaseType threePhase, id made of the device and the round's first seq: phaseVoltage, current,
activePower, powerFactor and activeEnergyImport keyed L1/L2/L3, totalActivePower the sum of the phases' power,
totalActiveEnergyImport the sum of their counters (kWh), totalPowerFactor total power over the sum of V x I. Each
of the round's readings maps to that entity. A phase missing from a round (its meter failed) is left out and
named in airwattFlags ("missing_L2"). A round is not split between two requests: the worker leaves a full
batch's unfinished last round for the next batch (round_tail). A sub-circuit meter's
readings become ACMeasurements of their own (singlePhase, `name` the circuit, id with the circuit in it).

Every entity has dateObserved, location (GeoJSON Point, [lon, lat]), refDevice (Relationship to
urn:ngsi-ld:Device:<device>; ACMeasurement's schema wants an array of URIs, AirQualityObserved's a single one), `observedAt` on each measured property, and `airwattFlags` when the reading
carries quality flags (or `time_unknown`: the store never learnt its wall time, so dateObserved is the time the
agent received it, an upper bound).

Upsert mode: the default, *replace* (no `options`). The entity is the whole observation, rebuilt from the same
row every time, so replacing makes the platform's copy a pure function of the last write: a resend leaves one
identical entity, and a mapping fixed in a later agent version cannot leave stale attributes behind, which
`options=update` (merge) would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from airwatt.agent.adapters.base import Outcome, Prepared, flag_list, iso_time
from airwatt.protocol import fields

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
ENVIRONMENT_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld"
ENERGY_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Energy/master/context.jsonld"
# One context list for every entity (the core context last, as the NGSI-LD spec places it).
CONTEXT = [ENVIRONMENT_CONTEXT, ENERGY_CONTEXT, CORE_CONTEXT]
CONTENT_TYPE = "application/ld+json"
UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert"

AIR_TYPE = "AirQualityObserved"
ENERGY_TYPE = "ACMeasurement"


def _unit(sensor: str, metric: str) -> str:
    return fields.metric(sensor, metric)[3]


# (store column, NGSI-LD attribute, scale, UN/CEFACT code) per sensor kind; units come from the field table
# except where the model wants another unit than the board's (humidity % -> fraction, Wh -> kWh).
AIR_ATTRIBUTES = {
    "pm": (
        ("pm1", "pm1", 1, _unit("pm", "pm1")),
        ("pm25", "pm25", 1, _unit("pm", "pm25")),
        ("pm10", "pm10", 1, _unit("pm", "pm10")),
    ),
    "co2": (
        ("co2", "co2", 1, _unit("co2", "co2")),
        ("temperature", "temperature", 1, _unit("co2", "temperature")),
        ("humidity", "relativeHumidity", 0.01, "C62"),  # the model's relativeHumidity is a fraction 0..1
    ),
}
ENERGY_TOTALS = (
    ("power", "totalActivePower", 1, _unit("energy", "power")),
    ("energy_wh", "totalActiveEnergyImport", 0.001, "KWH"),
    ("pf", "totalPowerFactor", 1, _unit("energy", "pf")),
    ("frequency", "frequency", 1, _unit("energy", "frequency")),
)
ENERGY_PHASE = (
    ("voltage", "phaseVoltage", _unit("energy", "voltage")),
    ("current", "current", _unit("energy", "current")),
    ("power", "activePower", _unit("energy", "power")),
    ("pf", "powerFactor", _unit("energy", "pf")),
)


ROUND_MS = 5000  # a board reads its meters in turn: a round's readings lie well within this of each other
PHASES = ("L1", "L2", "L3")


def endpoint(base_url: str) -> str:
    """The upsert URL for a base URL given with or without its `/ngsi-ld/v1` part."""
    base = base_url.rstrip("/")
    if base.endswith("/ngsi-ld/v1"):
        base = base[: -len("/ngsi-ld/v1")]
    return base + UPSERT_PATH


def entity_type(sensor: str) -> str:
    return ENERGY_TYPE if sensor == "energy" else AIR_TYPE


def entity_id(row: Mapping) -> str:
    if row.get("meter_circuit"):
        return "urn:ngsi-ld:%s:%s:%s:%d" % (ENERGY_TYPE, row["device"], row["meter_circuit"], row["seq"])
    return "urn:ngsi-ld:%s:%s:%d" % (entity_type(row["sensor"]), row["device"], row["seq"])


def device_urn(device: str) -> str:
    return "urn:ngsi-ld:Device:" + device


def _scaled(value: float, scale: float, decimals: int) -> float | int:
    if scale == 1:
        return value
    # Round away binary noise (55.12 / 100 = 0.5511999999999999) to the resolution the value really has.
    return round(value * scale, decimals)


def _decimals(sensor: str, metric: str, scale: float) -> int:
    extra = {1: 0, 0.01: 2, 0.001: 3}[scale]
    return fields.metric(sensor, metric)[7] + extra


# The same tables with each scaled value's decimals worked out once: (column, attribute, scale, unit, decimals).
_AIR = {
    sensor: tuple((c, n, k, u, _decimals(sensor, c, k)) for c, n, k, u in rows) for sensor, rows in AIR_ATTRIBUTES.items()
}
_TOTALS = tuple((c, n, k, u, _decimals("energy", c, k)) for c, n, k, u in ENERGY_TOTALS)


def unencodable(row: Mapping) -> str | None:
    """Why this reading cannot become a valid Smart Data Model entity, or None."""
    if row.get("lat") is None or row.get("lon") is None:
        return "device %s has no lat/lon: location is required by the Smart Data Model" % row["device"]
    if row["sensor"] not in ("energy", "pm", "co2"):
        return "unknown sensor kind %r" % row["sensor"]
    return None


def entity(row: Mapping) -> dict:
    """The normalized NGSI-LD entity of one reading (a store row with the device's lat/lon joined)."""
    sensor = row["sensor"]
    when = iso_time(row["t"] if row.get("t") is not None else row["received"])
    ent: dict = {"id": entity_id(row), "type": entity_type(sensor)}
    ent["dateObserved"] = {"type": "Property", "value": {"@type": "DateTime", "@value": when}}
    ent["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [row["lon"], row["lat"]]}}
    urn = device_urn(row["device"])
    ent["refDevice"] = {"type": "Relationship", "object": [urn] if sensor == "energy" else urn}
    if row.get("site"):
        ent["areaServed"] = {"type": "Property", "value": row["site"]}
    if sensor == "energy":
        if row.get("meter_circuit"):
            ent["name"] = {"type": "Property", "value": row["meter_circuit"]}
        ent["phaseType"] = {"type": "Property", "value": "singlePhase"}
        for column, name, scale, unit, decimals in _TOTALS:
            value = row.get(column)
            if value is not None:
                value = _scaled(value, scale, decimals)
                ent[name] = {"type": "Property", "value": value, "unitCode": unit, "observedAt": when}
        for column, name, unit in ENERGY_PHASE:
            value = row.get(column)
            if value is not None:
                ent[name] = {"type": "Property", "value": {"L1": value}, "unitCode": unit, "observedAt": when}
    else:
        for column, name, scale, unit, decimals in _AIR[sensor]:
            value = row.get(column)
            if value is not None:
                value = _scaled(value, scale, decimals)
                ent[name] = {"type": "Property", "value": value, "unitCode": unit, "observedAt": when}
    flags = flag_list(row)
    if flags:
        ent["airwattFlags"] = {"type": "Property", "value": flags, "observedAt": when}
    ent["@context"] = CONTEXT
    return ent


# -- the same entity as JSON text, built directly (the hot path: a dict, then json.dumps, costs 3-4 times more).
# test_sync_adapters checks json.loads(entity_json(row)) == entity(row) over generated readings.

_CONTEXT_JSON = json.dumps(CONTEXT, separators=(",", ":"))
_SAFE_DEVICE = frozenset(fields.DEVICE_ALPHABET)


# Per attribute: the text before the value and the text between the value and observedAt's time.
_TOTAL_PARTS = tuple(
    (c, k, d, '"%s":{"type":"Property","value":' % n, ',"unitCode":"%s","observedAt":"' % u) for c, n, k, u, d in _TOTALS
)
_PHASE_PARTS = tuple(
    (c, '"%s":{"type":"Property","value":{"L1":' % n, '},"unitCode":"%s","observedAt":"' % u) for c, n, u in ENERGY_PHASE
)
_AIR_PARTS = {
    sensor: tuple((c, k, d, '"%s":{"type":"Property","value":' % n, ',"unitCode":"%s","observedAt":"' % u)
                  for c, n, k, u, d in attrs)
    for sensor, attrs in _AIR.items()
}
_TAIL = '"@context":%s}' % _CONTEXT_JSON
# (device, lon, lat, site, energy) -> the entity's device part (location, refDevice, areaServed) as text, or None
# when the device id needs the slow, escaping path. A site has a handful of devices: built once, not per reading.
_HEADS: dict[tuple, str | None] = {}


def _device_part(device: str, lon: float, lat: float, site: str | None, energy: bool) -> str | None:
    # Equal keys must give equal text: int 1 and float 1.0 are told apart by type; 0.0 and -0.0 are not told
    # apart by a dict, so a zero coordinate is never cached.
    key = (device, type(lon), lon, type(lat), lat, site, energy) if lon and lat else None
    text = _HEADS.get(key)
    if text is not None:
        return text
    if not _SAFE_DEVICE.issuperset(device):  # the protocol's alphabet; anything else takes the slow, safe path
        text = None
    else:
        urn = '"urn:ngsi-ld:Device:%s"' % device
        text = (
            '"location":{"type":"GeoProperty","value":{"type":"Point","coordinates":[%r,%r]}}' % (lon, lat)
            + ',"refDevice":{"type":"Relationship","object":%s}' % ("[%s]" % urn if energy else urn)
            + (',"areaServed":{"type":"Property","value":%s}' % json.dumps(site, ensure_ascii=False) if site else "")
        )
    if key is not None and text is not None:
        if len(_HEADS) > 4096:
            _HEADS.clear()
        _HEADS[key] = text
    return text


def entity_json(row: Mapping) -> str:
    """json.dumps(entity(row)) with compact separators, built as text (repr renders int and float as JSON does)."""
    return _entity_text(row, entity_id(row))


def _entity_text(row: Mapping, eid: str) -> str:
    sensor = row["sensor"]
    device_part = None if row.get("meter_circuit") else _device_part(
        row["device"], row["lon"], row["lat"], row.get("site"), sensor == "energy")
    if device_part is None:
        return json.dumps(entity(row), separators=(",", ":"), ensure_ascii=False)
    t = row.get("t")
    when = iso_time(t if t is not None else row["received"])
    close = when + '"}'
    parts = [
        '{"id":"%s","type":"%s","dateObserved":{"type":"Property","value":{"@type":"DateTime","@value":"%s"}}'
        % (eid, ENERGY_TYPE if sensor == "energy" else AIR_TYPE, when),
        device_part,
    ]
    append = parts.append
    if sensor == "energy":
        append('"phaseType":{"type":"Property","value":"singlePhase"}')
        for column, scale, decimals, before, between in _TOTAL_PARTS:
            value = row.get(column)
            if value is not None:
                append(before + repr(value if scale == 1 else round(value * scale, decimals)) + between + close)
        for column, before, between in _PHASE_PARTS:
            value = row.get(column)
            if value is not None:
                append(before + repr(value) + between + close)
    else:
        for column, scale, decimals, before, between in _AIR_PARTS[sensor]:
            value = row.get(column)
            if value is not None:
                append(before + repr(value if scale == 1 else round(value * scale, decimals)) + between + close)
    flags = flag_list(row) if row.get("flags") or t is None else None
    if flags:
        append('"airwattFlags":{"type":"Property","value":%s,"observedAt":"%s"}'
               % (json.dumps(flags, separators=(",", ":")), when))
    append(_TAIL)
    return ",".join(parts)


def _boot(row: Mapping) -> object:
    """The boot a row was read in: stored rows carry its id, rows built by hand its text."""
    return row["boot_id"] if "boot_id" in row else row["boot"]


def rounds(rows: Sequence[Mapping]) -> list[list[Mapping]]:
    """The phase meters' readings among `rows` grouped into rounds: per device and boot, in the board's reading
    order (ticks), a round is the readings within ROUND_MS of its first, one per phase."""
    phased = sorted((r for r in rows if r.get("meter_phase") in PHASES),
                    key=lambda r: (r["device"], _boot(r), r["ticks"], r["seq"]))
    out: list[list[Mapping]] = []
    for r in phased:
        last = out[-1] if out else None
        if (last is None or last[0]["device"] != r["device"] or _boot(last[0]) != _boot(r)
                or r["ticks"] - last[0]["ticks"] > ROUND_MS
                or any(x["meter_phase"] == r["meter_phase"] for x in last)):
            out.append([r])
        else:
            last.append(r)
    return out


def round_tail(rows: Sequence[Mapping]) -> int:
    """How many of a full batch's last rows are a round of phase readings (as rounds() groups them) that the next
    rows may complete: the sync worker sends them with the next batch, so that a round is one entity (not two,
    each missing phases)."""
    if not rows or rows[-1].get("meter_phase") not in PHASES:
        return 0
    last = next(g for g in rounds(rows) if any(r is rows[-1] for r in g))
    return 0 if len(last) == len(PHASES) else len(last)


def three_phase_id(group: Sequence[Mapping]) -> str:
    return "urn:ngsi-ld:%s:%s:%d" % (ENERGY_TYPE, group[0]["device"], min(r["seq"] for r in group))


def three_phase_entity(group: Sequence[Mapping]) -> dict:
    """The threePhase ACMeasurement of one round of phase readings (rows of one device and boot)."""
    first = min(group, key=lambda r: r["seq"])
    by = {r["meter_phase"]: r for r in group}
    times = [r["t"] for r in group if r.get("t") is not None]
    when = iso_time(min(times) if times else max(r["received"] for r in group))
    ent: dict = {"id": three_phase_id(group), "type": ENERGY_TYPE}
    ent["dateObserved"] = {"type": "Property", "value": {"@type": "DateTime", "@value": when}}
    ent["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [first["lon"], first["lat"]]}}
    ent["refDevice"] = {"type": "Relationship", "object": [device_urn(first["device"])]}
    if first.get("site"):
        ent["areaServed"] = {"type": "Property", "value": first["site"]}
    ent["phaseType"] = {"type": "Property", "value": "threePhase"}

    def prop(value: object, unit: str) -> dict:
        return {"type": "Property", "value": value, "unitCode": unit, "observedAt": when}

    def phases(column: str, scale: float = 1, decimals: int = 9) -> dict:
        return {p: round(by[p][column] * scale, decimals) for p in PHASES
                if p in by and by[p].get(column) is not None}

    power = phases("power")
    if power:
        # the sum at the table's resolution (0.1 W): binary noise would otherwise show as 1234.5000000001
        ent["totalActivePower"] = prop(round(sum(power.values()), fields.metric("energy", "power")[7]),
                                       _unit("energy", "power"))
    counters = phases("energy_wh", 0.001, 3)
    if counters:
        total_wh = sum(by[p]["energy_wh"] for p in counters)
        ent["totalActiveEnergyImport"] = prop(round(total_wh / 1000, 3), "KWH")
    va = sum(by[p]["voltage"] * by[p]["current"] for p in PHASES
             if p in by and by[p].get("voltage") is not None and by[p].get("current") is not None)
    if power and va > 0 and len(power) == len([p for p in PHASES if p in by and by[p].get("current") is not None]):
        ent["totalPowerFactor"] = prop(round(min(1.0, sum(power.values()) / va), 2), _unit("energy", "pf"))
    freq = [by[p]["frequency"] for p in PHASES if p in by and by[p].get("frequency") is not None]
    if freq:
        ent["frequency"] = prop(freq[0], _unit("energy", "frequency"))
    for column, name, unit in ENERGY_PHASE:
        values = phases(column)
        if values:
            ent[name] = prop(values, unit)
    if counters:
        ent["activeEnergyImport"] = prop(counters, "KWH")
    flags = sorted({f for r in group for f in flag_list(r)} | {"missing_" + p for p in PHASES if p not in by})
    if flags:
        ent["airwattFlags"] = {"type": "Property", "value": flags, "observedAt": when}
    ent["@context"] = CONTEXT
    return ent


def prepare(url: str, rows: Sequence[Mapping], headers: Mapping[str, str] | None = None) -> Prepared:
    """One upsert request for the readings that can be expressed; the others are returned as unencodable."""
    texts, row_ids, keys, bad = [], [], [], {}
    grouped: dict[int, tuple[str, list[Mapping]]] = {}
    for group in rounds([r for r in rows if not unencodable(r)]):
        eid = three_phase_id(group)
        for r in group:
            grouped[r["id"]] = (eid, group)
    sent: set[str] = set()
    for row in rows:
        why = unencodable(row)
        if why:
            bad[row["id"]] = why
            continue
        if row["id"] in grouped:
            eid, group = grouped[row["id"]]
            if eid not in sent:  # one entity per round; each of its readings maps to it
                sent.add(eid)
                texts.append(json.dumps(three_phase_entity(group), separators=(",", ":"), ensure_ascii=False))
        else:
            eid = entity_id(row)
            texts.append(_entity_text(row, eid))
        row_ids.append(row["id"])
        keys.append(eid)
    body = ("[%s]" % ",".join(texts)).encode()
    all_headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json"}
    all_headers.update(headers or {})
    return Prepared("POST", url, all_headers, body, row_ids, keys, bad)


def interpret(prepared: Prepared, status: int, body: bytes) -> Outcome:
    """Outcome of a 2xx answer. 201 (created ids listed; updated ones are not) and 204 (all updated) confirm
    the whole batch; 207 confirms exactly the ids in `success` and fails the ones in `errors` (and any id in
    neither). Raises ValueError for an answer that is not an upsert's (nothing is confirmed then)."""
    if status == 204:
        return Outcome(confirmed=list(prepared.row_ids))
    if status in (200, 201):
        # The answer lists the created ids; anything else (an HTML page from a proxy, say) confirms nothing.
        try:
            listed = json.loads(body) if body.strip() else []
        except ValueError:
            listed = None
        if not isinstance(listed, list):
            raise ValueError("HTTP %d without the JSON array of created ids an upsert answers" % status)
        return Outcome(confirmed=list(prepared.row_ids))
    if status != 207:
        raise ValueError("interpret() takes a 2xx answer, not %d" % status)
    try:
        answer = json.loads(body)
        success = answer.get("success") or []
        errors = answer.get("errors") or []
    except (ValueError, AttributeError):
        detail = "207 with an unreadable body: nothing confirmed"
        return Outcome(failed={rid: (None, detail) for rid in prepared.row_ids})
    by_key: dict[str, list[int]] = {}  # a threePhase entity stands for each reading of its round
    for key, rid in zip(prepared.keys, prepared.row_ids):
        by_key.setdefault(key, []).append(rid)
    confirmed_keys = {key for key in success if isinstance(key, str)}
    outcome = Outcome()
    for err in errors:
        if not isinstance(err, dict):
            continue
        rids = by_key.get(err.get("entityId"))
        if rids is None:
            continue
        problem = err.get("error") if isinstance(err.get("error"), dict) else {}
        err_status = problem.get("status") if isinstance(problem.get("status"), int) else None
        detail = "%s: %s" % (problem.get("title") or problem.get("type") or "error", problem.get("detail") or "")
        for rid in rids:
            outcome.failed[rid] = (err_status, detail.strip(": "))
        confirmed_keys.discard(err.get("entityId"))  # both lists naming an id: trust the error
    for key, rids in by_key.items():
        for rid in rids:
            if key in confirmed_keys:
                outcome.confirmed.append(rid)
            elif rid not in outcome.failed:
                outcome.failed[rid] = (None, "not in the 207 answer's success list")
    return outcome
