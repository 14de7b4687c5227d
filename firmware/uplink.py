# Uplink: uploads the store's pending readings, oldest first, to the site agent (POST /v1/batches) with a small
# HTTP/1.1 client over asyncio streams (no aiohttp on MicroPython). The acknowledged cursor moves only after a
# 200 whose answer passes the protocol check. Failures back off exponentially with jitter; 429/503 Retry-After
# is honoured; a 400 keeps the readings (nothing is ever dropped here).
import asyncio
import gc
import json
import random
from binascii import unhexlify

from protocol import check, fields, wire
FIRMWARE = "0.1.0"  # the firmware's version: in every batch (fw) and the boot message
MAX_BODY = 8192  # bytes: the ESP32's heap also holds the body's copies while it is signed and sent
_MAX_ANSWER = 4096  # an answer larger than this is not ours
_MAX_HEADERS = 32
_BASE_MS = 2000
_CAP_MS = 300000
_AUTH_MS = 600000  # 401: nothing will change until someone fixes the key; retry rarely, say it loudly
_REJECT_BASE_MS = 30000  # 400: keep the readings, retry slowly (an agent upgrade may accept them)
_RETRY_AFTER_CAP_S = 3600


class HTTPError(Exception):
    pass


def _jitter(ms):
    # "Equal jitter": half fixed, half random, so a fleet that failed together does not retry together.
    half = ms // 2
    return half + random.getrandbits(24) % (half + 1)


class Uplink:
    def __init__(self, cfg, store, clock, boot, status=None, online=None, sampler_=None, log=print, on_clock=None):
        self.host = cfg["host"]
        self.port = cfg["port"]
        self.path = cfg["prefix"] + "/v1/batches"
        self.device = cfg["device"]
        self.key = unhexlify(cfg["key"])
        self.batch_max = cfg["batch_max"]
        self.upload_ms = cfg["upload_s"] * 1000
        self.timeout_ms = cfg["http_timeout_s"] * 1000
        self.store = store
        self.clock = clock
        self.boot = boot
        self.status = status  # () -> encoded status bytes, sent with each upload
        self.online = online  # () -> bool: Wi-Fi is up
        self.sampler = sampler_  # takes the agent's settings.intervals
        self.log = log
        self.on_clock = on_clock  # (unix seconds) -> None: also set the RTC once the agent gave the time
        self.failures = 0  # consecutive failed uploads, drives the backoff
        self.last = None  # outcome of the last attempt, for the console and tests
        self.uploads = 0
        self.sent = 0  # readings acknowledged by the agent since boot
        self.progress = clock.ms()
        self._deadline = 0

    # -- one upload --------------------------------------------------------------------------------------------

    def _batch(self):
        """(body, first seq, last seq) of the next batch, or None when nothing is pending."""
        gc.collect()  # the body needs contiguous RAM: collect first rather than fail in a fragmented heap
        status = self.status() if self.status else None
        room = MAX_BODY - 96 - len(self.device) - len(FIRMWARE) - (len(status) if status else 0)
        n = self.batch_max
        while True:
            recs = self.store.pending(n, room)
            if not recs:
                return None
            try:
                body = wire.batch_body(self.device, FIRMWARE, self.boot, self.clock.ms(), [r[1] for r in recs],
                                       status)
                return body, recs[0][0], recs[-1][0]
            except ValueError:
                if len(recs) == 1:
                    raise
                n = len(recs) // 2

    def _left(self):
        left = self._deadline - self.clock.ms()
        if left <= 0:
            raise asyncio.TimeoutError()
        return left if left < self.timeout_ms else self.timeout_ms

    async def _step(self, aw):
        return await asyncio.wait_for_ms(aw, self._left())

    async def _post(self, body, signature):
        """POST the body; returns (status code, retry-after seconds or None, answer body bytes)."""
        # Every step has its own timeout, and all of them together at most three times that.
        self._deadline = self.clock.ms() + 3 * self.timeout_ms
        reader, writer = await self._step(asyncio.open_connection(self.host, self.port))
        try:
            head = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    "X-AirWatt-Device: %s\r\nX-AirWatt-Signature: %s\r\nConnection: close\r\n\r\n"
                    % (self.path, self.host, self.port, len(body), self.device, signature))
            writer.write(head.encode())
            writer.write(body)
            await self._step(writer.drain())
            line = await self._step(reader.readline())
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise HTTPError("bad status line %r" % line[:40] if line else "connection closed without an answer")
            code = int(parts[1])
            length = None
            retry_after = None
            for _ in range(_MAX_HEADERS):
                line = await self._step(reader.readline())
                if line in (b"\r\n", b"\n"):
                    break
                if not line:
                    raise HTTPError("connection closed in the headers")
                colon = line.find(b":")
                if colon <= 0:
                    continue
                name = line[:colon].strip().lower()
                if name == b"content-length":
                    length = int(line[colon + 1:].strip())
                elif name == b"retry-after":
                    try:
                        retry_after = int(line[colon + 1:].strip())
                    except ValueError:
                        retry_after = None  # an HTTP-date: fall back to our own backoff
            else:
                raise HTTPError("too many headers")
            if length is None:
                data = await self._step(reader.read(_MAX_ANSWER))
            elif length > _MAX_ANSWER:
                raise HTTPError("answer of %d bytes is too long" % length)
            elif length:
                data = await self._step(reader.readexactly(length))
            else:
                data = b""
            return code, retry_after, data
        finally:
            try:
                writer.close()
                await asyncio.wait_for_ms(writer.wait_closed(), 1000)
            except Exception:
                pass

    def _backoff(self, base=_BASE_MS):
        self.failures += 1
        ms = base << (self.failures - 1 if self.failures < 16 else 15)
        return _jitter(ms if ms < _CAP_MS else _CAP_MS)

    def _answer(self, data, first, last):
        """Apply a 200's answer; returns the number of readings acknowledged, or raises ValueError."""
        a = json.loads(data)
        check.check_answer(a)
        stored = a["stored_seq"]
        if stored > last:
            stored = last  # never acknowledge what this batch did not carry
        if stored < first:
            raise ValueError("stored_seq %d is below this batch's first seq %d" % (a["stored_seq"], first))
        self.store.ack(stored)
        if self.clock.wall() is None and self.clock.set_wall(a["server_time"], "agent"):
            if self.on_clock is not None:
                self.on_clock(a["server_time"])
            self.log("CLOCK set from the agent: %d" % a["server_time"])
        settings = a.get("settings")
        if settings:
            if "batch_max" in settings:
                self.batch_max = settings["batch_max"]
            if "intervals" in settings and self.sampler is not None:
                iv = settings["intervals"]
                for kind in iv:
                    self.sampler.set_interval(kind, iv[kind])
        return stored - first + 1

    async def upload_once(self):
        """Try one batch. Returns (outcome, ms to wait before the next attempt); never raises for I/O trouble."""
        self.progress = self.clock.ms()
        got = self._batch()
        if got is None:
            self.last = "empty"
            return self.last, self.upload_ms
        body, first, last = got
        signature = wire.sign(self.key, body)
        got = None
        self.uploads += 1
        try:
            code, retry_after, data = await self._post(body, signature)
        except asyncio.TimeoutError:
            self.last = "timeout"
            return self.last, self._backoff()
        except (OSError, HTTPError, ValueError) as e:  # refused, reset, closed early, garbage
            self.last = "error %s" % (e,)
            return self.last, self._backoff()
        finally:
            body = None
            self.progress = self.clock.ms()
        if code == 200:
            try:
                n = self._answer(data, first, last)
            except ValueError as e:  # bad JSON or an answer that fails the protocol check: nothing is acked
                self.last = "bad answer %s" % (e,)
                self.log("UPLINK bad answer to seq %d..%d: %s" % (first, last, e))
                return self.last, self._backoff()
            self.failures = 0
            self.sent += n
            self.last = "ok %d" % n
            return self.last, 0 if self.store.depth else self.upload_ms
        if code in (429, 503):
            self.last = "busy %d" % code
            if retry_after is not None and retry_after >= 0:
                self.failures += 1
                s = retry_after if retry_after < _RETRY_AFTER_CAP_S else _RETRY_AFTER_CAP_S
                return self.last, (s or 1) * 1000
            return self.last, self._backoff()
        if code == 400:
            self.last = "rejected 400"
            self.log("UPLINK 400: the agent refused seq %d..%d, kept for later: %s" % (first, last, data[:200]))
            return self.last, self._backoff(_REJECT_BASE_MS)
        if code == 401:
            self.last = "unauthorized 401"
            self.log("UPLINK 401: the agent does not accept device %s with this key: check `key` in config.json "
                     "against `airwatt device list`" % self.device)
            self.failures += 1
            return self.last, _jitter(_AUTH_MS)
        if code == 413:
            self.last = "too large 413"
            self.batch_max = self.batch_max // 2 or 1
            return self.last, 1000
        self.last = "http %d" % code
        return self.last, self._backoff()

    # -- the loop ----------------------------------------------------------------------------------------------

    async def run(self):
        wait = 0
        regular = False  # waiting the regular interval (not a backoff): a full batch may go early
        while True:
            until = self.clock.ms() + wait
            while True:
                now = self.clock.ms()
                self.progress = now
                if now >= until or (regular and self.store.depth >= self.batch_max):
                    break
                nap = until - now
                await asyncio.sleep_ms(nap if nap < 1000 else 1000)
            if self.online is not None and not self.online():
                wait, regular = 1000, False
                continue
            if not self.store.depth:
                wait, regular = self.upload_ms, True  # a full batch ends this wait early
                continue
            outcome, wait = await self.upload_once()
            regular = outcome == "empty" or outcome.startswith("ok")
