# MicroPython-side test helpers: fake sensors at the driver contract (start, read) and a stand-in store with the
# log's contract (clog.Log), for tests of the sampler and uplink. Runs on the VM.
import asyncio

from protocol import wire


class FakeDriver:
    """A driver whose read() plays a script: a dict (values), None (no value yet), or an exception instance."""

    def __init__(self, kind, script, repeat_last=True, flags=()):
        self.KIND = kind
        self.script = list(script)
        self.repeat_last = repeat_last
        self.flags = list(flags)
        self.starts = 0
        self.reads = 0

    async def start(self):
        self.starts += 1
        await asyncio.sleep_ms(0)

    async def read(self):
        self.reads += 1
        await asyncio.sleep_ms(0)
        if len(self.script) > 1 or not self.repeat_last:
            step = self.script.pop(0)
        else:
            step = self.script[0]
        if isinstance(step, Exception):
            raise step
        if step is None:
            return None
        return dict(step), list(self.flags)


class HangingDriver:
    KIND = "co2"

    async def start(self):
        pass

    async def read(self):
        await asyncio.sleep_ms(1000000)


class ListStore:
    """The log's contract in RAM (next_seq, add, tick, flush, pending, ack, depth, dropped, uncommitted), strict
    like the real one; readings kept as the canonical v1 JSON the uplink sends."""

    uncommitted = 0  # every reading committed at once

    def __init__(self, capacity=1000):
        self.capacity = capacity
        self.records = []  # (seq, payload), unacked, oldest first
        self.next_seq = 1
        self.acked = 0
        self.dropped = 0
        self.acks = []

    def append(self, seq, payload):
        if seq != self.next_seq:
            raise ValueError("seq %d is not next_seq %d" % (seq, self.next_seq))
        if not isinstance(payload, (bytes, bytearray)):
            raise ValueError("payload must be bytes")
        if len(self.records) >= self.capacity:
            self.records.pop(0)
            self.dropped += 1
        self.records.append((seq, bytes(payload)))
        self.next_seq = seq + 1

    def add(self, seq, boot, t, ticks, kind, values, flags):
        self.append(seq, wire.encode_reading(seq, t, ticks, boot, kind, values, flags))

    def tick(self, now_ms):
        pass

    def flush(self):
        pass

    def pending(self, max_count, max_bytes):
        out = []
        size = 0
        for seq, payload in self.records:
            if len(out) >= max_count or (out and size + len(payload) > max_bytes):
                break
            out.append((seq, payload))
            size += len(payload)
        return out

    def ack(self, seq):
        self.acks.append(seq)
        if seq > self.acked:
            self.acked = seq
        while self.records and self.records[0][0] <= seq:
            self.records.pop(0)

    @property
    def depth(self):
        return len(self.records)


class ManualTicks:
    """A ticks_ms source the test moves by hand; wraps like the port's own ticks (ticks_add)."""

    def __init__(self, start=0):
        import time
        self._add = time.ticks_add
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, ms):
        self.now = self._add(self.now, ms)
