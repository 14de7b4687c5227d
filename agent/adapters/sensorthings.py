"""OGC SensorThings API v1.1 adapter: a Thing per board, a Datastream per metric, Observations by dataArray.

Model (what a city's SensorThings server ends up holding; see agent/adapters/README.md):

- Thing per board (properties {"system": "airwatt", "device": <id>, "site": ...}) with its Location (GeoJSON
  Point); a board without lat/lon cannot be expressed (no Location, no FeatureOfInterest): its readings are
  held back until it has one, as for NGSI-LD.
- Sensor per sensor kind (PZEM-004T, PMS5003, SCD4x) and ObservedProperty per metric, shared by all boards.
- Datastream per board and metric (properties {"system": "airwatt", "device", "metric"}), unitOfMeasurement in
  UCUM from the field table (protocol/fields.py).
- FeatureOfInterest per board (its location, properties {"system", "device"}), named by the agent in every
  Observation (see the note in _feature).
- Observation per measured metric of a reading: phenomenonTime (the board's time, else the agent's receive
  time with flag `time_unknown`), result, parameters {"device", "seq"} (+ "flags" when any).

Provisioning is idempotent: every entity is first looked up by the properties set on it; one is created only
when none exists, once per process however many batches are in flight. Two agents creating the same one at
once both wait SETTLE_S, then keep the lowest id; the other deletes its own copy.

Exactly-once effect. A server may ignore a client's @iot.id (django-ogc-sensorthings does: its ids are
UUIDv7 made by the server), so a blind resend would add a second copy. The adapter keeps, per Datastream,
the highest seq that may already be at the server (`maybe_sent`): read from the server (max of
parameters/seq) when the Datastream is first used by this process, raised BEFORE each request goes out.
Observations above it cannot be there and are sent at once (the common path costs no look-up); those at or
below it (a resend after a timeout, a 5xx, a dropped connection, a kill -9 of the agent) are first looked up
by Datastream and parameters/seq, and only the missing ones are sent.

A `CreateObservations` 201 lists a self link or "error" per row; the server creates each Datastream group
atomically, so one bad row fails its group. A failed group of several rows is looked up, then split in halves
and resent (within the same send) until the bad row is alone: its reading then counts as refused (422, like
a 4xx in NGSI-LD's 207) and the others go through.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import quote

import aiohttp

from airwatt.agent.adapters.base import Adapter, Outcome, Prepared, SendError, flag_list, iso_time, meter
from airwatt.protocol import fields

SYSTEM = "airwatt"
OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
UCUM = "http://unitsofmeasure.org/ucum.html"
# The field table's units are UCUM codes except these two (UCUM has no "%RH"; ppm is written "[ppm]").
UCUM_CODES = {"ppm": "[ppm]", "%RH": "%"}
UNIT_NAMES = {"V": "volt", "A": "ampere", "W": "watt", "Wh": "watt hour", "Hz": "hertz", "1": "ratio",
              "ug/m3": "microgram per cubic metre", "ppm": "parts per million", "Cel": "degree Celsius",
              "%RH": "percent relative humidity"}
SENSORS = {
    "energy": ("PZEM-004T v3", "Peacefair PZEM-004T v3.0 energy meter (100 A), single phase",
               "https://innovatorsguru.com/pzem-004t-v3/"),
    "pm": ("PMS5003", "Plantower PMS5003 particulate matter sensor (atmospheric values)",
           "https://www.plantower.com/en/products_33/74.html"),
    "co2": ("SCD4x", "Sensirion SCD4x CO2 sensor with temperature and relative humidity",
            "https://sensirion.com/products/catalog/SCD41"),
}
QUDT = "http://qudt.org/vocab/quantitykind/"
PROPERTIES = {  # metric -> (ObservedProperty name, definition, description)
    "voltage": ("Voltage", QUDT + "Voltage", "RMS voltage"),
    "current": ("Current", QUDT + "ElectricCurrent", "RMS current"),
    "power": ("Active power", QUDT + "ActivePower", "active power"),
    "energy_wh": ("Energy (meter counter)", QUDT + "Energy", "cumulative active energy counter of the meter (may reset)"),
    "frequency": ("Frequency", QUDT + "Frequency", "grid frequency"),
    "pf": ("Power factor", QUDT + "PowerFactor", "power factor"),
    "pm1": ("PM1", QUDT + "MassConcentration", "mass concentration of particles up to 1 um"),
    "pm25": ("PM2.5", QUDT + "MassConcentration", "mass concentration of particles up to 2.5 um"),
    "pm10": ("PM10", QUDT + "MassConcentration", "mass concentration of particles up to 10 um"),
    "co2": ("CO2", QUDT + "MoleFraction", "carbon dioxide concentration"),
    "temperature": ("Air temperature", QUDT + "Temperature", "air temperature"),
    "humidity": ("Relative humidity", QUDT + "RelativeHumidity", "relative humidity"),
}
_METRICS = {sensor: tuple(m[1] for m in fields.metrics(sensor)) for sensor in fields.SENSORS}
COMPONENTS = ["phenomenonTime", "result", "parameters", "FeatureOfInterest/id"]
SETTLE_S = 0.3  # after creating an entity, how long a concurrent agent's copy may take to show
LOOKUP_CHUNK = 200  # seqs per look-up request (keeps the URL short)
_ID_IN_LINK = re.compile(r"\('?([^')]+)'?\)\s*$")


def base_url(url: str) -> str:
    """The service root with its trailing slash (the server answers 301 or 404 without it)."""
    return url.rstrip("/") + "/"


def unit(metric_row: tuple) -> dict:
    """unitOfMeasurement of a field table row: UCUM code as symbol."""
    table_unit = metric_row[2]
    code = UCUM_CODES.get(table_unit, table_unit)
    return {"name": UNIT_NAMES.get(table_unit, code), "symbol": code, "definition": UCUM + "#" + quote(code)}


def literal(text: str) -> str:
    """An OData string literal."""
    return "'%s'" % text.replace("'", "''")


def reading_key(row: Mapping) -> str:
    return "%s:%d" % (row["device"], row["seq"])


def unencodable(row: Mapping) -> str | None:
    if row.get("lat") is None or row.get("lon") is None:
        return "device %s has no lat/lon: SensorThings needs a Location for its Observations" % row["device"]
    if row["sensor"] not in _METRICS:
        return "unknown sensor kind %r" % row["sensor"]
    return None


def observations(row: Mapping) -> list[tuple[str, list]]:
    """(metric, dataArray row) for each measured metric of a reading."""
    t = row.get("t")
    when = iso_time(t if t is not None else row["received"])
    params: dict = {"device": row["device"], "seq": row["seq"]}
    flags = flag_list(row) if row.get("flags") or t is None else None
    if flags:
        params["flags"] = flags
    m = meter(row)
    if m is not None:  # one of a board's several meters: their Observations share the device's Datastreams
        params["meter"] = m
    out = []
    for metric in _METRICS[row["sensor"]]:
        value = row.get(metric)
        if value is not None:  # a null result fails the server's whole group: a missing metric is left out
            out.append((metric, [when, value, params]))
    return out


def prepare(url: str, rows: Sequence[Mapping]) -> Prepared:
    """The batch as the send step needs it: rows kept whole (Datastream ids are only known at send time)."""
    good, bad = [], {}
    for row in rows:
        why = unencodable(row)
        if why:
            bad[row["id"]] = why
        else:
            good.append(row)
    return Prepared("POST", url + "CreateObservations", {}, b"", [r["id"] for r in good],
                    [reading_key(r) for r in good], bad, good)


def interpret(prepared: Prepared, status: int, body: bytes) -> Outcome:
    raise ValueError("the sensorthings adapter interprets its answers in send()")


def entity_id(location: str | None) -> str:
    match = _ID_IN_LINK.search(location or "")
    if not match:
        raise ValueError("no entity id in %r" % location)
    return match.group(1)


class SensorThings:
    """One SensorThings service: provisioning caches and the exactly-once bookkeeping of this process."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None):
        self.base = base_url(url)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self.maybe_sent: dict[str, int] = {}  # Datastream id -> highest seq that may be at the server
        self._ids: dict[tuple, object] = {}  # ("Things", device), ("Datastreams", device, metric), ... -> id
        self._flights: dict[tuple, asyncio.Future] = {}
        self._lock: asyncio.Lock | None = None
        self.lookups = 0  # look-up requests made (for tests and the bench)

    # -- HTTP ---------------------------------------------------------------------------------------------

    async def _call(self, session: aiohttp.ClientSession, method: str, path: str, timeout_s: float,
                    body: object = None, refusable: bool = False) -> tuple[int, Mapping, object]:
        """One request; a non-2xx answer raises SendError (with its status only where the worker may blame
        the readings: `refusable`, i.e. CreateObservations)."""
        url = path if path.startswith("http") else self.base + path
        data = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        async with session.request(method, url, data=data, headers=self.headers, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            raw = await resp.read()
            if not 200 <= resp.status < 300:
                what = "HTTP %d from %s %s: %s" % (resp.status, method, path.split("?")[0],
                                                   raw[:300].decode("utf-8", "replace"))
                if resp.status in (400, 413, 422) and not refusable:
                    # A look-up or provisioning request refused: no reading is to blame (no strikes, no halving).
                    raise SendError(what)
                raise SendError(what, resp.status, raw, resp.headers.get("Retry-After"))
            try:
                answer = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise SendError("HTTP %d from %s %s is not JSON (not a SensorThings server?)"
                                % (resp.status, method, path.split("?")[0])) from None
            return resp.status, resp.headers, answer

    async def _get_all(self, session: aiohttp.ClientSession, path: str, timeout_s: float) -> list:
        """Every entity of a collection query, following @iot.nextLink (re-escaped: some servers send it raw)."""
        out: list = []
        for _ in range(1000):
            _, _, answer = await self._call(session, "GET", path, timeout_s)
            if not isinstance(answer, dict) or not isinstance(answer.get("value"), list):
                raise SendError("GET %s: not a SensorThings collection" % path.split("?")[0])
            out.extend(answer["value"])
            link = answer.get("@iot.nextLink")
            if not link or not answer["value"]:  # an empty page with a nextLink would loop
                return out
            path = quote(link, safe=":/?&=$(),'@%+")
        raise SendError("GET %s: more than 1000 pages" % path.split("?")[0])

    # -- provisioning -------------------------------------------------------------------------------------

    async def _once(self, key: tuple, make: Callable[[], Awaitable[object]]) -> object:
        """What `make` gives, made once per process: concurrent callers (parallel batches) share one flight,
        so this agent never creates two of anything; a failed flight is tried again by the next caller."""
        if key in self._ids:
            return self._ids[key]
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = asyncio.ensure_future(make())
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        result = await asyncio.shield(flight)
        self._ids[key] = result
        return result

    async def _find_or_create(self, session: aiohttp.ClientSession, entity_set: str, match: dict, body: dict,
                              timeout_s: float) -> str:
        """The id of the entity of `entity_set` whose properties contain `match`, created with `body` when there
        is none. Two agents creating one at once: each waits SETTLE_S for the other's to show, then both keep
        the lowest id and the other deletes its own."""
        where = " and ".join("properties/%s eq %s" % (k, literal(v)) for k, v in match.items())
        query = "%s?$filter=%s&$select=id&$orderby=id%%20asc" % (entity_set, quote(where))
        found = await self._get_all(session, query, timeout_s)
        if found:
            return found[0]["@iot.id"]
        _, headers, _ = await self._call(session, "POST", entity_set, timeout_s, body)
        mine = entity_id(headers.get("Location"))
        await asyncio.sleep(SETTLE_S)
        found = await self._get_all(session, query, timeout_s)
        lowest = found[0]["@iot.id"] if found else mine
        if lowest != mine:
            await self._call(session, "DELETE", "%s(%s)" % (entity_set, literal(mine)), timeout_s)
        return lowest

    async def _shared(self, session: aiohttp.ClientSession, entity_set: str, key: str, body: dict,
                      timeout_s: float) -> str:
        field = "sensor" if entity_set == "Sensors" else "metric"
        match = {"system": SYSTEM, field: key}
        return await self._once((entity_set, key), lambda: self._find_or_create(
            session, entity_set, match, {**body, "properties": match}, timeout_s))

    async def _thing(self, session: aiohttp.ClientSession, row: Mapping, timeout_s: float) -> str:
        device, site = row["device"], row.get("site")
        body = {
            "name": row.get("device_name") or device,
            "description": "AirWatt board %s%s" % (device, " at %s" % site if site else ""),
            "properties": {"system": SYSTEM, "device": device, "site": site},
            "Locations": [{
                "name": site or device, "description": "where board %s is installed" % device,
                "encodingType": "application/geo+json",
                "location": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
            }],
        }
        return await self._once(("Things", device), lambda: self._find_or_create(
            session, "Things", {"system": SYSTEM, "device": device}, body, timeout_s))

    async def _feature(self, session: aiohttp.ClientSession, row: Mapping, timeout_s: float) -> str:
        # The agent names each board's FeatureOfInterest itself: left to the server, concurrent
        # CreateObservations race in its get_or_create of one, and after two copies every later request for
        # that location fails (django-ogc-sensorthings 1.2.0: MultipleObjectsReturned, "error" rows).
        device = row["device"]
        body = {"name": row.get("site") or device, "description": "where board %s measures" % device,
                "encodingType": "application/geo+json",
                "feature": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                "properties": {"system": SYSTEM, "device": device}}
        return await self._once(("FeaturesOfInterest", device), lambda: self._find_or_create(
            session, "FeaturesOfInterest", {"system": SYSTEM, "device": device}, body, timeout_s))

    async def _datastream(self, session: aiohttp.ClientSession, row: Mapping, metric: str, timeout_s: float) -> str:
        """The board's Datastream of `metric` (provisioned with everything it needs), its maybe_sent set."""
        return await self._once(("Datastreams", row["device"], metric),
                                lambda: self._make_datastream(session, row, metric, timeout_s))

    async def _make_datastream(self, session: aiohttp.ClientSession, row: Mapping, metric: str,
                               timeout_s: float) -> str:
        device, sensor = row["device"], row["sensor"]
        name, description, metadata = SENSORS[sensor]
        op_name, definition, op_description = PROPERTIES[metric]
        thing, sensor_id, property_id, _, existing = await asyncio.gather(
            self._thing(session, row, timeout_s),
            self._shared(session, "Sensors", sensor, {
                "name": name, "description": description, "encodingType": "text/html", "metadata": metadata},
                timeout_s),
            self._shared(session, "ObservedProperties", metric, {
                "name": op_name, "definition": definition, "description": op_description}, timeout_s),
            self._feature(session, row, timeout_s),
            self._once(("streams", device), lambda: self._device_streams(session, device, timeout_s)),
        )
        ds = existing.get(metric)
        if ds is None:  # looked up again by its properties first: another agent may have made it meanwhile
            body = {
                "name": "%s %s" % (device, metric),
                "description": "%s of board %s (%s)" % (op_description, device, name),
                "observationType": OM_MEASUREMENT,
                "unitOfMeasurement": unit(fields.metric(sensor, metric)),
                "properties": {"system": SYSTEM, "device": device, "metric": metric},
                "Thing": {"@iot.id": thing}, "Sensor": {"@iot.id": sensor_id},
                "ObservedProperty": {"@iot.id": property_id},
            }
            ds = await self._find_or_create(
                session, "Datastreams", {"system": SYSTEM, "device": device, "metric": metric}, body, timeout_s)
        self.maybe_sent[ds] = await self._max_seq(session, ds, timeout_s)
        return ds

    async def _device_streams(self, session: aiohttp.ClientSession, device: str, timeout_s: float) -> dict[str, str]:
        """metric -> id of the Datastreams a board already has (the lowest id per metric), one request per board."""
        where = "properties/system eq %s and properties/device eq %s" % (literal(SYSTEM), literal(device))
        found = await self._get_all(session, "Datastreams?$filter=%s&$select=id,properties&$orderby=id%%20asc"
                                    % quote(where), timeout_s)
        streams: dict[str, str] = {}
        for ds in found:
            metric = (ds.get("properties") or {}).get("metric")
            if isinstance(metric, str):
                streams.setdefault(metric, ds["@iot.id"])
        return streams

    async def _max_seq(self, session: aiohttp.ClientSession, ds: str, timeout_s: float) -> int:
        """The highest parameters/seq of a Datastream's Observations at the server (0: none)."""
        query = "Observations?$filter=%s&$orderby=%s&$top=1&$select=parameters" % (
            quote("Datastream/id eq %s" % ds), quote("parameters/seq desc"))
        _, _, answer = await self._call(session, "GET", query, timeout_s)
        values = answer.get("value") if isinstance(answer, dict) else None
        if not values:
            return 0
        seq = (values[0].get("parameters") or {}).get("seq")
        return seq if isinstance(seq, int) else 0

    async def _present(self, session: aiohttp.ClientSession, ds: str, seqs: list[int], timeout_s: float) -> set[int]:
        """Which of these seqs already have an Observation in Datastream ds."""
        present: set[int] = set()
        for start in range(0, len(seqs), LOOKUP_CHUNK):
            chunk = seqs[start : start + LOOKUP_CHUNK]
            # `in` with one value is a syntax error to odata-query (django-ogc-sensorthings' parser): use eq.
            seq_test = "eq %d" % chunk[0] if len(chunk) == 1 else "in (%s)" % ",".join(map(str, chunk))
            where = "Datastream/id eq %s and parameters/seq %s" % (ds, seq_test)
            query = "Observations?$filter=%s&$select=parameters&$resultFormat=dataArray&$top=%d" % (
                quote(where), 2 * len(chunk))
            self.lookups += 1
            for group in await self._get_all(session, query, timeout_s):
                for (params,) in group.get("dataArray") or ():
                    if isinstance(params, dict) and isinstance(params.get("seq"), int):
                        present.add(params["seq"])
        return present

    # -- sending ------------------------------------------------------------------------------------------

    async def send(self, session: aiohttp.ClientSession, prepared: Prepared, timeout_s: float) -> Outcome:
        """Provision what the batch needs, look up what may already be there, create the rest; the Outcome
        confirms a reading once every one of its Observations is at the server."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        # Batches pass here in the order they were sent (the lock is FIFO): a later batch must not raise the
        # marks above an earlier one's seqs before that one has decided what to look up.
        async with self._lock:
            needed = {}
            for row in prepared.rows:
                for metric, _ in observations(row):
                    if ("Datastreams", row["device"], metric) not in self._ids:
                        needed.setdefault((row["device"], metric), row)
            if needed:
                await asyncio.gather(*(self._datastream(session, row, metric, timeout_s)
                                       for (_, metric), row in needed.items()))
            # Which Observations may already be at the server, then the marks raised before anything is sent (a
            # parallel batch sees this one's seqs as maybe sent).
            per_reading: dict[int, list[tuple[str, list]]] = {}
            doubtful: dict[str, list[int]] = {}
            groups: dict[str, list[list]] = {}
            for row in prepared.rows:
                feature = self._ids[("FeaturesOfInterest", row["device"])]
                obs = per_reading[row["id"]] = []
                for metric, data in observations(row):
                    ds = self._ids[("Datastreams", row["device"], metric)]
                    obs.append((ds, data + [feature]))
                    if data[2]["seq"] <= self.maybe_sent.get(ds, 0):
                        doubtful.setdefault(ds, []).append(data[2]["seq"])
                    groups.setdefault(ds, []).append(data + [feature])
            for ds, rows in groups.items():
                self.maybe_sent[ds] = max(self.maybe_sent.get(ds, 0), max(d[2]["seq"] for d in rows))
        done: set[tuple[str, int]] = set()
        for ds, seqs in doubtful.items():
            done.update((ds, seq) for seq in await self._present(session, ds, sorted(seqs), timeout_s))
        todo = {ds: [d for d in rows if (ds, d[2]["seq"]) not in done] for ds, rows in groups.items()}
        refused = await self._create(session, {ds: rows for ds, rows in todo.items() if rows}, timeout_s, done)
        outcome = Outcome()
        for rid, obs in per_reading.items():
            keys = [(ds, data[2]["seq"]) for ds, data in obs]
            if all(k in done for k in keys):
                outcome.confirmed.append(rid)
            elif any(k in refused for k in keys):
                outcome.failed[rid] = (422, "the server answered \"error\" for this Observation")
            else:
                outcome.failed[rid] = (None, "the server answered \"error\" for this Observation's group")
        return outcome

    async def _create(self, session: aiohttp.ClientSession, groups: dict[str, list[list]], timeout_s: float,
                      done: set[tuple[str, int]], depth: int = 0) -> set[tuple[str, int]]:
        """CreateObservations for `groups` (Datastream id -> dataArray rows); adds what the server created to
        `done`, returns the Observations it refused alone."""
        if not groups:
            return set()
        body = [{"Datastream": {"@iot.id": ds}, "components": COMPONENTS, "dataArray": rows}
                for ds, rows in groups.items()]
        status, _, answer = await self._call(session, "POST", "CreateObservations", timeout_s, body, refusable=True)
        total = sum(len(rows) for rows in groups.values())
        if not isinstance(answer, list) or len(answer) != total:
            raise SendError("CreateObservations answered %d with %s entries for %d Observations"
                            % (status, len(answer) if isinstance(answer, list) else "no list of", total))
        failed: dict[str, list[list]] = {}
        answers = iter(answer)
        for ds, rows in groups.items():
            for data in rows:
                link = next(answers)
                if isinstance(link, str) and link != "error":
                    done.add((ds, data[2]["seq"]))
                else:
                    failed.setdefault(ds, []).append(data)
        if not failed:
            return set()
        if len(failed) == len(groups) and len(groups) > 1:
            return set()  # every group failed: the server is in trouble, not one row (retried with backoff)
        refused: set[tuple[str, int]] = set()
        halves: dict[str, list[list]] = {}
        for ds, rows in failed.items():
            # A group fails whole, but check: a server might have kept some rows and still said "error".
            present = await self._present(session, ds, [d[2]["seq"] for d in rows], timeout_s)
            done.update((ds, seq) for seq in present)
            rows = [d for d in rows if d[2]["seq"] not in present]
            if len(rows) == 1 or depth >= 12:
                refused.update((ds, d[2]["seq"]) for d in rows)
            elif rows:
                half = len(rows) // 2
                refused |= await self._create(session, {ds: rows[:half]}, timeout_s, done, depth + 1)
                halves[ds] = rows[half:]
        for ds, rows in halves.items():
            refused |= await self._create(session, {ds: rows}, timeout_s, done, depth + 1)
        return refused


def make(url: str, headers: Mapping[str, str] | None = None) -> Adapter:
    """The sensorthings adapter for a service root like http://HOST:PORT/.../v1.1."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("a SensorThings platform URL starts with http:// or https://, not %r" % url)
    client = SensorThings(url, headers)
    return Adapter("sensorthings", url, lambda rows: prepare(client.base, rows), interpret, send=client.send,
                   needs_location=True)
