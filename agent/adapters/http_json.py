"""Generic HTTP JSON adapter: `POST <url>/readings` with {"readings": [...]} and an Idempotency-Key.

The API is documented in agent/adapters/README.md (that file is the contract for a city's own ingest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from airwatt.agent.adapters.base import Outcome, Prepared, flag_list, iso_time, meter
from airwatt.protocol import fields

PATH = "/readings"
CONTENT_TYPE = "application/json"
KEY_PREFIX = "airwatt-v1-"


def endpoint(base_url: str) -> str:
    return base_url.rstrip("/") + PATH


def item_id(row: Mapping) -> str:
    """The reading's id at the platform: `<device>:<seq>` (unique per device, stable across resends)."""
    return "%s:%d" % (row["device"], row["seq"])


_METRICS = {sensor: tuple(m[1] for m in fields.metrics(sensor)) for sensor in fields.SENSORS}


def item(row: Mapping) -> dict:
    """One reading as the generic API carries it; `values` holds the field table's metrics of its sensor,
    in the table's units, and leaves out the ones the store has none for; `meter` says which of a board's
    meters took it (absent for a board's only meter)."""
    values = {}
    for name in _METRICS.get(row["sensor"], ()):
        value = row.get(name)
        if value is not None:
            values[name] = value
    t = row.get("t")
    out = {
        "id": item_id(row),
        "device": row["device"],
        "seq": row["seq"],
        "sensor": row["sensor"],
        "time": iso_time(t) if t is not None else None,
        "t": t,
        "t_source": row.get("t_source") or ("board" if t is not None else "unknown"),
        "received": iso_time(row["received"]) if row.get("received") is not None else None,
        "values": values,
        "flags": flag_list(row),
        "site": row.get("site"),
        "lat": row.get("lat"),
        "lon": row.get("lon"),
    }
    m = meter(row)
    if m is not None:  # one of a board's several meters: a phase or a sub-circuit
        out["meter"] = m
    return out


# -- the same item as JSON text, built directly (the hot path: the dict, then json.dumps, cost twice as much).
# test_sync_adapters checks item_json(row) == json.dumps(item(row)) (compact, ensure_ascii=False).

_SAFE_TEXT = frozenset(fields.DEVICE_ALPHABET)
_INF = float("inf")
_VALUE_KEYS = {sensor: tuple((m, '"%s":' % m) for m in names) for sensor, names in _METRICS.items()}
_TAILS: dict[tuple, str] = {}  # (site, lat, lon) -> their JSON members (a site has a handful of devices)


def _num(value: object) -> str | None:
    """A number as json.dumps writes it (None, which json.dumps writes as null, included); None otherwise."""
    kind = type(value)
    if kind is int or (kind is float and -_INF < value < _INF):  # type: ignore[operator]
        return repr(value)
    return "null" if value is None else None


def _tail(site: object, lat: object, lon: object) -> str | None:
    # Equal keys must give equal text: 1 and 1.0 told apart by type; 0.0 and -0.0 are equal keys: not cached.
    key = (site, type(lat), lat, type(lon), lon) if lat and lon else None
    text = _TAILS.get(key) if key is not None else None
    if text is None:
        lat_text, lon_text = _num(lat), _num(lon)
        if lat_text is None or lon_text is None or not (site is None or isinstance(site, str)):
            return None
        text = ',"site":%s,"lat":%s,"lon":%s}' % (json.dumps(site, ensure_ascii=False), lat_text, lon_text)
        if key is not None:
            if len(_TAILS) > 4096:
                _TAILS.clear()
            _TAILS[key] = text
    return text


def item_json(row: Mapping) -> str:
    """json.dumps(item(row)) with compact separators and ensure_ascii=False, built as text; anything outside
    the protocol's alphabet or not a plain finite number takes the slow, safe path."""
    device, sensor, seq = row["device"], row["sensor"], row["seq"]
    tail = _tail(row.get("site"), row.get("lat"), row.get("lon"))
    t, received = row.get("t"), row.get("received")
    t_source = row.get("t_source") or ("board" if t is not None else "unknown")
    t_text, received_text = _num(t), _num(received)
    if (tail is None or t_text is None or received_text is None or type(seq) is not int
            or meter(row) is not None
            or not _SAFE_TEXT.issuperset(device) or not _SAFE_TEXT.issuperset(sensor)
            or not isinstance(t_source, str) or not _SAFE_TEXT.issuperset(t_source)):
        return json.dumps(item(row), separators=(",", ":"), ensure_ascii=False)
    values = []
    for name, key in _VALUE_KEYS.get(sensor, ()):
        value = row.get(name)
        if value is not None:
            text = _num(value)
            if text is None:
                return json.dumps(item(row), separators=(",", ":"), ensure_ascii=False)
            values.append(key + text)
    flags = flag_list(row) if row.get("flags") or t is None else None
    return '{"id":"%s:%d","device":"%s","seq":%d,"sensor":"%s","time":%s,"t":%s,"t_source":"%s","received":%s,' \
        '"values":{%s},"flags":%s%s' % (
            device, seq, device, seq, sensor, '"%s"' % iso_time(t) if t is not None else "null", t_text, t_source,
            '"%s"' % iso_time(received) if received is not None else "null", ",".join(values),
            json.dumps(flags, separators=(",", ":"), ensure_ascii=False) if flags else "[]", tail)


def idempotency_key(body: bytes) -> str:
    """The batch's Idempotency-Key: a hash of the exact body, itself a pure function of the readings
    (device, seq, values), so the same batch always carries the same key and any other batch another one."""
    return KEY_PREFIX + hashlib.sha256(body).hexdigest()[:48]


def prepare(url: str, rows: Sequence[Mapping], headers: Mapping[str, str] | None = None) -> Prepared:
    body = ('{"readings":[%s]}' % ",".join([item_json(row) for row in rows])).encode()
    all_headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json", "Idempotency-Key": idempotency_key(body)}
    all_headers.update(headers or {})
    return Prepared("POST", url, all_headers, body, [row["id"] for row in rows], [item_id(row) for row in rows])


def interpret(prepared: Prepared, status: int, body: bytes) -> Outcome:
    """Outcome of a 2xx answer: with a `results` list, exactly the items marked ok are confirmed (and any
    item the list leaves out fails); a 200/201/204 with an empty body or a JSON object without `results`
    confirms the whole batch. Raises ValueError for any other body (nothing is confirmed then)."""
    if not 200 <= status < 300:
        raise ValueError("interpret() takes a 2xx answer, not %d" % status)
    results = None
    if body.strip():
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            # Not this API's answer (an HTML page from a proxy, say): confirm nothing.
            raise ValueError("HTTP %d with a body that is not a JSON object" % status)
        results = answer.get("results")
    if not isinstance(results, list):
        if status == 207:
            return Outcome(failed={rid: (None, "207 without a readable results list") for rid in prepared.row_ids})
        return Outcome(confirmed=list(prepared.row_ids))
    by_key = prepared.key_to_row()
    outcome = Outcome()
    seen = set()
    for res in results:
        if not isinstance(res, dict) or res.get("id") not in by_key:
            continue
        rid = by_key[res["id"]]
        seen.add(rid)
        if res.get("ok") is True:
            outcome.confirmed.append(rid)
        else:
            err_status = res.get("status") if isinstance(res.get("status"), int) else None
            outcome.failed[rid] = (err_status, str(res.get("error") or "refused"))
    for rid in prepared.row_ids:
        if rid not in seen:
            outcome.failed[rid] = (None, "not in the answer's results")
    return outcome
