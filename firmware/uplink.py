# Uplink: uploads the store's pending readings, oldest first, to the site agent (POST /v1/batches) with a small
# HTTP/1.1 client on a non-blocking socket (no aiohttp on MicroPython). The acknowledged cursor moves only after a
# 200 whose answer passes the protocol check; the checked answer goes back to the caller, which takes its time
# and settings. Failures back off exponentially with jitter; 429/503 Retry-After is honoured; a 400 keeps the
# readings (nothing is ever dropped here). Kept small: it lives in the heap.
import asyncio
import gc
import random
import select
import socket
import time
from binascii import b2a_base64, unhexlify
from errno import EINPROGRESS
from micropython import const

from protocol import answer, canonical
from protocol.fields import MAX_BODY_V2, MAX_READINGS_V2  # names: board.py frees the field table

_CHUNK = const(96)  # packed bytes base64-encoded at a time: a multiple of 3 (the pieces join into one text), and
# small: a 129-byte piece still finds room in a fragmented heap
_MAX_ANSWER = const(4096)  # an answer larger than this is not ours
_POLL_MS = const(2)  # how often an exchange waiting on its socket looks again
_BASE_MS = const(2000)
_CAP_MS = const(300000)
_AUTH_MS = const(600000)  # 401: nothing changes until someone fixes the key: retry rarely, say it loudly
_REJECT_MS = const(30000)  # 400: keep the readings, retry slowly (an agent upgrade may accept them)


def backoff(ms, failures, cap):
    """Exponential backoff from ms, doubled per failure up to cap, with "equal jitter" (half fixed, half random)
    so that a fleet that failed together does not retry together."""
    ms <<= failures - 1 if failures < 16 else 15
    if ms > cap:
        ms = cap
    return ms // 2 + random.getrandbits(24) % (ms // 2 + 1)


def _ready(p, s, ev, t, start):
    # True when socket s is ready for ev (select.POLLIN or POLLOUT) or has failed; raises asyncio.TimeoutError
    # once start (ticks_ms) is t[0] ms ago, or ticks_ms t[1] is past. Not a coroutine: its callers poll it every
    # _POLL_MS, so that a wait allocates nothing (asyncio's streams would bring 1.8 KB of classes into the heap,
    # asyncio.wait_for a task and coroutines for each wait).
    p.modify(s, ev)
    for _ in p.ipoll(0):
        return True
    now = time.ticks_ms()
    if time.ticks_diff(now, start) >= t[0] or time.ticks_diff(now, t[1]) >= 0:
        raise asyncio.TimeoutError()
    return False


async def _send(p, s, parts, t):
    # Write each of parts (bytes-like) to socket s as the socket takes them.
    for data in parts:
        mv = memoryview(data)
        off = 0
        start = time.ticks_ms()
        while off < len(mv):
            if not _ready(p, s, select.POLLOUT, t, start):
                await asyncio.sleep_ms(_POLL_MS)
                continue
            n = s.write(mv[off:] if off else mv)
            if n is not None:  # None: it would block after all
                off += n
                start = time.ticks_ms()


async def _recv(p, s, n, t):
    """A line (n 0) or n bytes from socket s; fewer when the peer closes first (b"" at the end)."""
    r = b""
    start = time.ticks_ms()
    while True:
        if not _ready(p, s, select.POLLIN, t, start):
            await asyncio.sleep_ms(_POLL_MS)
            continue
        got = s.read(n - len(r)) if n else s.readline()
        if got is None:
            continue
        r += got
        if not got or (r[-1] == 10 if not n else len(r) == n):
            return r
        start = time.ticks_ms()


async def exchange(timeout_ms, method, host, port, path, device, signature, body, limit, want, length=0):
    """One signed HTTP/1.1 request to the agent on a new connection (the uplink's POST, ota.py's GETs): each wait
    at most timeout_ms, all of it at most three times that (else asyncio.TimeoutError). body: None, or an iterable
    of the body's parts (length bytes in all), each written as it comes, so that the whole body need never be in
    RAM. Returns (status code, the value of header `want` as bytes or None, the answer: at most limit bytes, else
    ValueError)."""
    t = (timeout_ms, time.ticks_add(time.ticks_ms(), 3 * timeout_ms))
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != EINPROGRESS:
                raise
        ai = None  # not held while the body goes out
        p = select.poll()
        p.register(s, select.POLLOUT)
        await _send(p, s, ((
            "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%sX-AirWatt-Device: %s\r\nX-AirWatt-Signature: %s\r\n"
            "Connection: close\r\n\r\n" % (
                method, path, host, port, "" if body is None else
                "Content-Type: application/json\r\nContent-Length: %d\r\n" % length, device, signature)).encode(),), t)
        if body is not None:
            await _send(p, s, body, t)
        line = await _recv(p, s, 0, t)
        if not line.startswith(b"HTTP/1.") or len(line) < 12:
            raise ValueError("no HTTP answer: %r" % line[:40])
        code = int(line[9:12])
        length = value = None
        for _ in range(32):
            line = await _recv(p, s, 0, t)
            if not line:
                raise ValueError("closed in the headers")
            if line == b"\r\n" or line == b"\n":
                break
            i = line.find(b":")
            name = line[:i].lower()
            if name == b"content-length":
                length = int(line[i + 1:])
            elif name == want:
                value = line[i + 1:].strip()
        else:
            raise ValueError("too many headers")
        if length is None:
            data = await _recv(p, s, limit, t)  # up to the close ("Connection: close"), at most limit bytes
        elif length > limit:
            raise ValueError("answer of %d bytes" % length)
        else:
            data = await _recv(p, s, length, t) if length else b""
            if len(data) < length:
                raise ValueError("closed in the answer")
        return code, value, data
    finally:
        s.close()


class Uplink:
    """Uploads a store (clog.Log: next_seq, depth, uncommitted, flush, pending or plan_pending and stream_pending,
    ack) for one device (cfg: host, port, prefix, device, key, batch_max, upload_s, http_timeout_s, protocol) as
    firmware fw."""

    def __init__(self, cfg, store, clock, boot, fw, log=print):
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
        self.fw = fw
        self.log = log
        # Protocol v2 (packed readings, ~15 bytes each, 3 times fewer POSTs), or v1 JSON (protocol: 1), which
        # boards in the field speak and the agent still takes.
        self.v2 = cfg.get("protocol", 2) == 2
        self.v2_max = MAX_READINGS_V2  # the body's size binds first
        # A v2 body is never in RAM: its packed readings are read back from the log, and their base64 text made
        # a piece at a time, once as it is signed and again as it is sent.
        self._chunk = bytearray(_CHUNK) if self.v2 else None
        self._head = b'{"boot":"%s","data":"' % boot if self.v2 else None
        self.failures = 0  # consecutive failed uploads, drives the backoff
        self.last = None  # outcome of the last attempt, for the console and tests
        self.sent = 0  # readings acknowledged by the agent since boot
        self.progress = clock.ms()

    def _batch(self, status):
        """(body, its length, first seq, last seq) of the next batch, or None when nothing is pending; _parts(body)
        gives the body's bytes."""
        if self.store.uncommitted:
            # Readings still in the log's RAM window go out now: commit them first (never send what a power
            # cut could take back: its seqs would be reused).
            try:
                self.store.flush()
            except Exception as e:
                self.log("STORE commit failed: %r" % (e,))
        gc.collect()  # a v1 body is built whole and needs contiguous RAM: collect rather than fail in pieces
        if self.v2:
            return self._batch_v2(status)
        import v1  # protocol 1 only: a v2 board does not load the v1 encoders
        return v1.batch(self, status)

    def _batch_v2(self, status):
        # The same bytes as wire.batch_body_v2: _head, the base64 of the frames the log planned, _tail. The body is
        # only what it takes to make them again (_parts: from the log, as it is signed, then as it is sent).
        end = MAX_BODY_V2 - 110 - len(self.device) - len(self.fw) - (len(status) if status else 0)
        raw = (end - len(self._head)) * 3 // 4 // 48 * 48
        first, n, k, frames = self.store.plan_pending(raw, self.v2_max)
        if not n:
            return None
        body = (first, n, frames, self.clock.ms(), status)
        return body, len(self._head) + (k + 2) // 3 * 4 + len(self._tail(body)), first, first + n - 1

    def _tail(self, body):
        first, n, _, ticks, status = body
        return b'","device":"%s","first_seq":%d,"fw":"%s","n":%d,"sent_ticks":%d,%s%s%s"v":2}' % (
            self.device, first, self.fw, n, ticks, b'"status":' if status else b"", status or b"",
            b"," if status else b"")

    def _parts(self, body):
        """The bytes of a body from _batch, piece by piece."""
        if not isinstance(body, tuple):
            yield body  # v1: built whole
            return
        yield self._head
        buf = self._chunk
        m = 0
        for piece in self.store.stream_pending(body[0], body[2]):
            p = 0
            while p < len(piece):  # into whole chunks: base64 pieces of 3-byte multiples join into one text
                c = len(piece) - p if len(piece) - p < _CHUNK - m else _CHUNK - m
                buf[m:m + c] = piece[p:p + c]
                m += c
                p += c
                if m == _CHUNK:
                    yield b2a_base64(buf, newline=False)
                    m = 0
        if m:
            yield b2a_base64(memoryview(buf)[:m], newline=False)
        yield self._tail(body)

    async def _post(self, body, length, signature):
        """POST the body (from _batch); returns (status code, Retry-After seconds or None, answer bytes)."""
        code, retry, data = await exchange(self.timeout_ms, "POST", self.host, self.port, self.path, self.device,
                                           signature, self._parts(body), _MAX_ANSWER, b"retry-after", length)
        try:
            retry = int(retry) if retry is not None else None
        except ValueError:
            retry = None  # an HTTP-date: our own backoff instead
        return code, retry, data

    def _backoff(self, ms=_BASE_MS, cap=_CAP_MS):
        self.failures += 1
        return backoff(ms, self.failures, cap)

    async def upload_once(self, status=None):
        """Try one batch with the device status (encoded bytes, or None). Returns (outcome, ms to wait before the
        next attempt, the agent's checked answer after a 200 or None); never raises for I/O trouble."""
        self.progress = self.clock.ms()
        got = self._batch(status)
        if got is None:
            self.last = "empty"
            return self.last, self.upload_ms, None
        body, length, first, last = got
        got = None
        try:
            sig = canonical.sign(self.key, self._parts(body))
            gc.collect()  # signing left garbage in every gap: the send's longer-lived objects now go low, in one piece
            code, retry, data = await self._post(body, length, sig)
        except asyncio.TimeoutError:
            code = "timeout"
        except (OSError, ValueError, MemoryError) as e:  # refused, reset, closed early, garbage; or a heap too
            code = "error %s" % (e,)  # fragmented for this attempt: retried after a backoff, not a reset
        body = None
        self.progress = self.clock.ms()
        if code == 200:
            try:
                a = answer.parse_body(data)  # UTF-8 JSON, bounded nesting, else ProtocolError (ValueError)
                answer.check_answer(a)
                if "settings" in a:
                    from protocol import settings  # only when there are any: the board's heap is small

                    settings.check_settings(a["settings"])
                if "firmware" in a:  # a release offered (ota.py)
                    from protocol import settings

                    settings.check_offer(a["firmware"])
                stored = a["stored_seq"]
                if stored > last:
                    stored = last  # never acknowledge what this batch did not carry
                if stored < first:
                    raise ValueError("stored_seq %d is below this batch's first seq %d" % (stored, first))
            except ValueError as e:  # bad JSON or an answer that fails the protocol check: nothing is acked
                code = "bad answer %s" % (e,)
                self.log("UPLINK %s (seq %d..%d)" % (code, first, last))
            else:
                self.store.ack(stored)
                self.failures = 0
                self.sent += stored - first + 1
                self.last = "ok %d" % (stored - first + 1)
                more = self.store.depth - self.store.uncommitted
                return self.last, 0 if more > 0 else self.upload_ms, a
        elif code == 429 or code == 503:
            code = "busy %d" % code
            if retry is not None and retry >= 0:
                self.failures += 1
                self.last = code
                return code, (retry if retry < 3600 else 3600) * 1000 or 1000, None
        elif code == 400:
            self.last = "rejected 400"
            self.log("UPLINK 400: the agent refused seq %d..%d, kept for later: %s" % (first, last, data[:200]))
            return self.last, self._backoff(_REJECT_MS), None
        elif code == 401:
            self.last = "unauthorized 401"
            self.log("UPLINK 401: the agent does not accept device %s with this key: check key in config.json"
                     % self.device)
            return self.last, self._backoff(_AUTH_MS, _AUTH_MS), None
        elif code == 413:
            self.last = "too large 413"
            self.batch_max = self.batch_max // 2 or 1
            self.v2_max = self.v2_max // 2 or 1
            return self.last, 1000, None
        elif isinstance(code, int):
            code = "http %d" % code
        self.last = code
        return code, self._backoff(), None

    async def run(self, online=None, status=None, on_answer=None):
        """Upload for ever: every upload_s, at once while a backlog drains or a full batch waits; only while
        online() (when given). status() gives each batch's device status; on_answer(answer) gets each checked
        answer after its readings were acknowledged."""
        wait = 0
        regular = False  # waiting the regular interval (not a backoff): a full batch may go early
        while True:
            until = self.clock.ms() + wait
            while True:
                now = self.clock.ms()
                self.progress = now
                if now >= until or (regular and self.store.depth >= self.batch_max):
                    break
                await asyncio.sleep_ms(until - now if until - now < 1000 else 1000)
            if online is not None and not online():
                wait, regular = 1000, False
            elif not self.store.depth:
                wait, regular = self.upload_ms, True  # a full batch ends this wait early
            else:
                _, wait, a = await self.upload_once(status() if status is not None else None)
                regular = not self.failures
                if a is not None and on_answer is not None:
                    on_answer(a)
