"""MQTT adapter: each reading is one QoS 1 message to a broker; synced once the broker acknowledged it (PUBACK).

Platform URL: `mqtt://[USER:PASSWORD@]HOST[:PORT]/PREFIX[?client_id=ID&apikey=KEY]`. Topics (agent/adapters/README.md):

- `PREFIX/<device>/<sensor>`: one message per reading, the generic API's reading object (http_json.item: id
  `<device>:<seq>`, device, seq, sensor, time, values, flags, site, lat, lon). A resend after a lost PUBACK, a
  dropped connection or an agent crash carries the same id: receivers drop duplicates by (device, seq).
- `PREFIX/<device>/status`, retained: the board's last reading the broker acknowledged (last_seq, last_time)
  and where it is, so a dashboard that subscribes late sees every board at once.
- With `apikey=KEY`: readings go instead to `/KEY/<device>/attrs`, the measures topic of FIWARE's IoT Agent
  for JSON, as a flat object of attributes (metric names, plus TimeInstant, device, seq, sensor, flags), so
  an IoT Agent turns them into NGSI entities; the status topic stays under PREFIX.

The session is persistent (clean_session off, a stable client id: `airwatt-<hostname>` unless client_id is
given), so the broker keeps this agent's subscriptions and QoS 1 state across reconnects. A connection that
fails is dropped; the next batch connects anew, after the sync worker's backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt

from airwatt.agent.adapters import http_json
from airwatt.agent.adapters.base import Adapter, Outcome, Prepared, SendError, flag_list, iso_time, meter
from airwatt.protocol import fields

DEFAULT_PORT = 1883
# QoS 1 messages awaiting PUBACK at once. aiomqtt scans all its pending calls on each publish (O(n) each): a
# whole batch of 1000 at once costs ~200 us per message; 64 at a time keeps the broker busy for a fraction.
MAX_INFLIGHT = 64
# aiomqtt warns "There are N pending publish calls" past 10: a whole batch in flight is the point here.
_QUIET = logging.getLogger("airwatt.sync.mqtt")
_QUIET.setLevel(logging.ERROR)
_METRICS = {sensor: tuple(m[1] for m in fields.metrics(sensor)) for sensor in fields.SENSORS}


def parse_url(url: str) -> dict:
    """host, port, prefix, username, password, client_id, apikey of an mqtt:// platform URL."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError("an MQTT platform URL looks like mqtt://HOST:PORT/PREFIX, not %r" % url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"client_id", "apikey"}
    if unknown:
        raise ValueError("unknown MQTT URL parameter(s) %s: only client_id and apikey" % ", ".join(sorted(unknown)))
    prefix = unquote(parts.path).strip("/")
    if not prefix or "+" in prefix or "#" in url:
        raise ValueError("the MQTT URL needs a topic prefix without wildcards: mqtt://HOST:PORT/PREFIX")
    return {
        "host": parts.hostname, "port": parts.port or DEFAULT_PORT, "prefix": prefix,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "client_id": query.get("client_id") or "airwatt-" + socket.gethostname(),
        "apikey": query.get("apikey"),
    }


def reading_topic(prefix: str, row: Mapping) -> str:
    return "%s/%s/%s" % (prefix, row["device"], row["sensor"])


def status_topic(prefix: str, device: str) -> str:
    return "%s/%s/status" % (prefix, device)


def iota_topic(apikey: str, device: str) -> str:
    return "/%s/%s/attrs" % (apikey, device)


def iota_measures(row: Mapping) -> dict:
    """A reading as IoT Agent JSON measures: its metrics as attributes, with the time as TimeInstant."""
    t = row.get("t")
    out: dict = {"TimeInstant": iso_time(t if t is not None else row["received"]),
                 "device": row["device"], "seq": row["seq"], "sensor": row["sensor"]}
    for metric in _METRICS.get(row["sensor"], ()):
        if row.get(metric) is not None:
            out[metric] = row[metric]
    flags = flag_list(row)
    if flags:
        out["flags"] = flags
    m = meter(row)
    if m is not None:  # one of a board's several meters
        out["meter"] = m
    return out


def status(row: Mapping) -> dict:
    t = row.get("t")
    return {"device": row["device"], "last_seq": row["seq"], "last_sensor": row["sensor"],
            "last_time": iso_time(t) if t is not None else None, "site": row.get("site"),
            "lat": row.get("lat"), "lon": row.get("lon")}


def messages(settings: Mapping, rows: Sequence[Mapping]) -> list[tuple[str, bytes]]:
    """The batch's messages, (topic, payload) in `rows` order."""
    apikey, prefix = settings["apikey"], settings["prefix"]
    if apikey:
        return [(iota_topic(apikey, row["device"]),
                 json.dumps(iota_measures(row), separators=(",", ":"), ensure_ascii=False).encode()) for row in rows]
    return [(reading_topic(prefix, row), http_json.item_json(row).encode()) for row in rows]


def prepare(settings: Mapping, rows: Sequence[Mapping]) -> Prepared:
    return Prepared("PUBLISH", "mqtt://%s:%d/%s" % (settings["host"], settings["port"], settings["prefix"]), {}, b"",
                    [r["id"] for r in rows], [http_json.item_id(r) for r in rows], {}, rows)


def interpret(prepared: Prepared, status: int, body: bytes) -> Outcome:
    raise ValueError("the mqtt adapter has no HTTP answers to interpret")


class Publisher:
    """One broker connection, opened on first use and after any failure."""

    def __init__(self, settings: Mapping):
        self.settings = settings
        self.client: aiomqtt.Client | None = None
        self._connecting: asyncio.Lock | None = None
        # device -> (seq, payload) of its newest confirmed reading's status. Batches in flight together finish in
        # any order, and a retained status must never step back to an older reading; a status whose publish
        # failed (or went out on a connection since lost) is due again on the next send, and at close.
        self._status: dict[str, tuple[int, str]] = {}
        self._status_due: set[str] = set()

    async def _connected(self, timeout_s: float) -> aiomqtt.Client:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self.client is None:
                s = self.settings
                client = aiomqtt.Client(
                    s["host"], s["port"], username=s["username"], password=s["password"],
                    identifier=s["client_id"], clean_session=False, timeout=timeout_s, keepalive=30,
                    max_inflight_messages=MAX_INFLIGHT, max_concurrent_outgoing_calls=MAX_INFLIGHT, logger=_QUIET,
                )
                try:
                    await client.__aenter__()
                except aiomqtt.MqttError as err:
                    raise SendError("cannot connect to the MQTT broker %s:%d: %s" % (s["host"], s["port"], err))
                self.client = client
                self._status_due.update(self._status)  # a broker that lost its state gets them again
            return self.client

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._publish_due(2.0)  # the last batch's status, if its publish failed
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def send(self, session: object, prepared: Prepared, timeout_s: float) -> Outcome:
        """Publish every message of the batch at QoS 1 at once; each reading whose PUBACK came is confirmed.
        Then the retained status of each board in the batch."""
        client = await self._connected(timeout_s)
        results = await asyncio.gather(
            *(client.publish(topic, payload, qos=1, timeout=timeout_s)
              for topic, payload in messages(self.settings, prepared.rows)),
            return_exceptions=True,
        )
        outcome = Outcome()
        for rid, result in zip(prepared.row_ids, results):
            if isinstance(result, BaseException):
                outcome.failed[rid] = (None, "no PUBACK: %s" % (str(result) or type(result).__name__))
            else:
                outcome.confirmed.append(rid)
        if outcome.failed:
            await self.close()  # a missing PUBACK: the connection is suspect; the next batch reconnects
            if not outcome.confirmed:
                raise SendError("MQTT broker: %s" % next(iter(outcome.failed.values()))[1])
        return outcome

    async def publish_status(self, rows: Sequence[Mapping], confirmed: set[int], timeout_s: float) -> None:
        for row in rows:
            device = row["device"]
            if row["id"] in confirmed and row["seq"] > self._status.get(device, (0, ""))[0]:
                self._status[device] = (row["seq"], json.dumps(status(row), separators=(",", ":")))
                self._status_due.add(device)
        await self._publish_due(timeout_s)

    async def _publish_due(self, timeout_s: float) -> None:
        due, client = sorted(self._status_due), self.client
        if not due or client is None:
            return
        self._status_due.difference_update(due)
        prefix = self.settings["prefix"]
        results = await asyncio.gather(*(
            client.publish(status_topic(prefix, device), self._status[device][1], qos=1, retain=True,
                           timeout=timeout_s)
            for device in due
        ), return_exceptions=True)
        self._status_due.update(d for d, r in zip(due, results) if isinstance(r, BaseException))


def make(url: str, token: str | None = None) -> Adapter:
    """The mqtt adapter for mqtt://HOST:PORT/PREFIX (token, when set, is the password if the URL has none)."""
    settings = parse_url(url)
    if token and not settings["password"]:
        settings["username"] = settings["username"] or "airwatt"
        settings["password"] = token
    publisher = Publisher(settings)

    async def send(session: object, prepared: Prepared, timeout_s: float) -> Outcome:
        outcome = await publisher.send(session, prepared, timeout_s)
        await publisher.publish_status(prepared.rows, set(outcome.confirmed), timeout_s)
        return outcome

    return Adapter("mqtt", url, lambda rows: prepare(settings, rows), interpret, send=send, close=publisher.close)
