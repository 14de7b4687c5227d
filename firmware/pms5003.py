# Plantower PMS5003 / PMSA003 particulate sensor over UART (9600 8N1), used in passive mode.
# Pure part: command, decode, find_frame. I/O part: PMS5003.
import errno

try:
    from asyncio import sleep_ms as _sleep_ms
    from micropython import const
    from time import ticks_diff as _ticks_diff, ticks_ms as _ticks_ms
except ImportError:  # CPython
    from .host import const, sleep_ms as _sleep_ms, ticks_diff as _ticks_diff, ticks_ms as _ticks_ms

FRAME_LEN = const(32)  # 0x42 0x4D, length 28, 13 data words, checksum word
_ACK_LEN = const(8)  # 0x42 0x4D, length 4, command, data, checksum word: the answer to mode/sleep commands
_POLL_MS = const(10)

_COMMANDS = {
    "passive": (0xE1, 0),
    "active": (0xE1, 1),
    "read": (0xE2, 0),
    "sleep": (0xE4, 0),
    "wake": (0xE4, 1),
}

_NAMES = ("pm1_cf1", "pm25_cf1", "pm10_cf1", "pm1", "pm25", "pm10", "n03", "n05", "n10", "n25", "n50", "n100")


def command(name):
    """The 7-byte command frame for "passive", "active", "read", "sleep" or "wake"."""
    if name not in _COMMANDS:
        raise ValueError("PMS5003: unknown command %r" % (name,))
    cmd, data = _COMMANDS[name]
    s = 0x42 + 0x4D + cmd + data
    return bytes((0x42, 0x4D, cmd, 0, data, s >> 8, s & 0xFF))


def decode(frame):
    """Check and decode a 32-byte data frame: pm1/pm25/pm10 (atmospheric), *_cf1 and counts per 0.1 L."""
    if len(frame) != FRAME_LEN:
        raise ValueError("PMS5003: frame of %d bytes, expected 32" % len(frame))
    if frame[0] != 0x42 or frame[1] != 0x4D:
        raise ValueError("PMS5003: bad start bytes 0x%02x 0x%02x" % (frame[0], frame[1]))
    if frame[2] != 0 or frame[3] != 28:
        raise ValueError("PMS5003: bad length field %d" % ((frame[2] << 8) | frame[3]))
    s = 0
    for i in range(30):
        s += frame[i]
    if s != (frame[30] << 8) | frame[31]:
        raise ValueError("PMS5003: bad checksum")
    d = {}
    for i in range(12):
        d[_NAMES[i]] = (frame[4 + 2 * i] << 8) | frame[5 + 2 * i]
    return d


def find_frame(buf):
    """Find the next data frame in `buf`, skipping garbage and command acknowledgements.

    Returns (frame or None, bytes consumed). The frame is a slice of `buf` (not yet checksum-checked: decode()
    does that). With None, the consumed bytes are garbage or acks and any partial frame is left in place.
    """
    n = len(buf)
    i = 0
    while i < n - 1:
        if buf[i] == 0x42 and buf[i + 1] == 0x4D:
            if n - i < 4:
                return None, i  # header split: wait for the length field
            length = (buf[i + 2] << 8) | buf[i + 3]
            if length == 28:
                if n - i < FRAME_LEN:
                    return None, i
                return buf[i:i + FRAME_LEN], i + FRAME_LEN
            if length == 4:
                if n - i < _ACK_LEN:
                    return None, i
                i += _ACK_LEN  # acknowledgement of a command: not a reading
                continue
        i += 1
    # Keep a trailing 0x42: it may be the first half of a header.
    if n and i < n and buf[n - 1] == 0x42:
        return None, n - 1
    return None, n


class PMS5003:
    """Passive-mode PMS5003. read() -> (values, flags), or None while asleep or warming up."""

    KIND = "pm"

    def __init__(self, uart, warmup_ms=30000, timeout_ms=1500, clock_ms=None):
        self.uart = uart
        self.warmup_ms = warmup_ms
        self.timeout_ms = timeout_ms
        self._clock = clock_ms or _ticks_ms
        self._buf = bytearray(2 * FRAME_LEN)
        self._mv = memoryview(self._buf)
        self._cmd = {}
        for name in _COMMANDS:
            self._cmd[name] = command(name)
        self._woke_at = None  # None: asleep (or not started)
        self.period_ms = 0  # how often it is read (the sampler sets it): a long period sleeps it between readings
        self.humid = None  # () -> True when the air is too humid for optical counts: readings get the humid flag

    def _drain(self):
        while self.uart.any():
            self.uart.readinto(self._buf)

    async def start(self):
        self._drain()
        await self.wake()

    async def wake(self):
        """Wake the sensor; readings count only warmup_ms later, once the fan has settled."""
        self.uart.write(self._cmd["wake"])
        # The mode is set again after every wake: a sensor that lost power comes back in active mode.
        self.uart.write(self._cmd["passive"])
        self._woke_at = self._clock()

    async def sleep(self):
        """Stop fan and laser (the laser lasts ~8000 h); the next read() wakes it again."""
        self.uart.write(self._cmd["sleep"])
        self._woke_at = None

    async def read(self):
        if self._woke_at is None:
            await self.wake()
            return None
        if _ticks_diff(self._clock(), self._woke_at) < self.warmup_ms:
            return None
        d = decode(await self._request())
        # Fog and mist scatter the laser like particles: flagged, never "corrected".
        flags = ["humid"] if self.humid is not None and self.humid() else []
        if self.warmup_ms and self.period_ms > 2 * self.warmup_ms + 2000:
            # Read rarely: fan and laser sleep until the sampler asks again, its warm-up early (a second of
            # polling on each side to spare). A sleep command lost on the wire only keeps it awake.
            try:
                await self.sleep()
            except OSError:
                pass
        return {"pm1": d["pm1"], "pm25": d["pm25"], "pm10": d["pm10"]}, flags

    async def _request(self):
        """Send a passive read and return the first data frame (a memoryview slice of the buffer)."""
        self._drain()
        self.uart.write(self._cmd["read"])
        fill = 0
        seen = 0
        waited = 0
        mv = self._mv
        while True:
            avail = self.uart.any()
            while avail:
                if fill == len(self._buf):
                    # Full of garbage with no frame: keep the tail, which may start a frame.
                    mv[:FRAME_LEN] = mv[FRAME_LEN:]
                    fill = FRAME_LEN
                n = self.uart.readinto(mv[fill:fill + min(avail, len(self._buf) - fill)])
                n = n or 0
                fill += n
                seen += n
                frame, used = find_frame(mv[:fill])
                if frame is not None:
                    return frame
                if used:
                    mv[:fill - used] = mv[used:fill]
                    fill -= used
                avail = self.uart.any()
            if waited >= self.timeout_ms:
                if seen == 0:
                    raise OSError(errno.ETIMEDOUT)
                raise ValueError("PMS5003: no valid frame in %d bytes received" % seen)
            await _sleep_ms(_POLL_MS)
            waited += _POLL_MS
