"""Packed readings: integer quanta of the field table in varints, seq implicit, ticks and energy as deltas.

Runs on MicroPython and CPython. The board's flash log (firmware/clog.py) keeps readings as frames of this
form. A frame is one boot's readings with consecutive seqs:

    0  u8   magic 0xA2
    1  u8   count of readings
    2  u16  length L of what follows up to the CRC (little endian)
    4  4 B  boot id (the 8 hex digits as 4 bytes)
       uv   wall0 + 1: Unix ms at uptime 0 (t = (wall0 + ticks) // 1000), 0 when the clock was not set
       uv   ticks of the first reading (ms since boot)
       readings, each:
         u8  kind index (bits 0-1) | the first 4 flags (bits 2-5, fields.FLAGS order) | some metric absent
             (bit 6) | extension byte follows (bit 7)
         [u8 extension: flags 5-8 (bits 0-3) | instance (bits 4-7; 15: an instance byte follows)]
         [u8 instance 15..255]  [u8 bitmask of the metrics present, table order]
         uv  ticks - previous reading's ticks (0 for the first)
         per present metric in table order: uv (quanta - table minimum), except energy_wh: zigzag delta from
         the previous energy_wh of the same instance in the frame (absolute for the first)
    4+L u32 CRC-32 of bytes 0 .. 4+L

Seqs are not stored: the frame's first seq is known from where it lies (file name), the rest follow.
"""

from binascii import crc32

# Names, not the module: a board frees the field table once its modules have taken what they use (board.py).
from .fields import FLAGS, MAX_INSTANCE, SENSORS, metrics

MAGIC = 0xA2
HEAD = 4  # magic, count, length
_INSTANCE_BYTE = 15  # in the extension's high nibble: the instance does not fit there, a byte of its own follows


def _tables():
    if len(FLAGS) > 8:
        raise ImportError("a packed reading holds 8 flags: fields.FLAGS has %d" % len(FLAGS))
    bits = {}
    for i in range(len(FLAGS)):
        bits[FLAGS[i]] = 1 << i
    kinds = []
    for k in SENSORS:
        rows = []
        for r in metrics(k):
            s = 10 ** r[7]
            rows.append((r[1], int(round(r[5] * s)), int(round(r[6] * s)), r[7], r[1] == "energy_wh"))
        kinds.append(tuple(rows))
    return bits, tuple(kinds)


# KINDS per kind: ((name, quanta minimum, quanta maximum, decimals, is_counter), ...), in fields.SENSORS order.
_FLAG_BIT, KINDS = _tables()
del _tables, metrics


def put_uv(buf, i, x):
    """Write unsigned varint x at buf[i]; returns the index after it (IndexError when it does not fit)."""
    while x >= 0x80:
        buf[i] = (x & 0x7F) | 0x80
        x >>= 7
        i += 1
    buf[i] = x
    return i + 1


def get_uv(buf, i):
    """(value, next index) of the unsigned varint at buf[i]."""
    x = 0
    s = 0
    while True:
        b = buf[i]
        i += 1
        x |= (b & 0x7F) << s
        if b < 0x80:
            return x, i
        s += 7
        if s > 63:
            raise ValueError("varint too long")


def zz(x):
    return x * 2 if x >= 0 else -x * 2 - 1


def unzz(x):
    return x >> 1 if not x & 1 else -((x + 1) >> 1)


def quanta(x, decimals):
    """A value as its integer number of quanta, exactly as wire.render rounds it."""
    if decimals == 0:
        return int(round(x))
    return int(round(x * 10 ** decimals))


class Packer:
    """Builds one frame in a preallocated buffer; add() refuses (False) what needs a new frame."""

    def __init__(self, size=120, buf=None):
        self.size = size  # whole frame, head and CRC included: small enough for a LittleFS inline file
        self.buf = bytearray(size) if buf is None else buf  # the readings (given: a view of the frame's output)
        self._rec = bytearray(48)
        self._e = {}  # instance -> previous energy_wh quanta in this frame
        self.clear()

    def clear(self):
        self.count = 0
        self.n = 0  # bytes of readings
        self.boot = None
        self.lo = self.hi = 0  # the wall0 range every reading of this frame agrees with
        self.t0 = self.last = 0
        self._e.clear()

    def add(self, boot, t, ticks, kind, values, flags, instance=0, q=False):
        """Add one reading: values by metric name (numbers, or integer quanta when q); flags a list. False when it does not fit this frame (full, another boot, another clock): commit the
        frame, clear() and add again. Raises ValueError for what no frame can hold."""
        k = SENSORS.index(kind) if kind in SENSORS else -1
        if k < 0:
            raise ValueError("unknown sensor %s" % kind)
        if not 0 <= instance <= MAX_INSTANCE:
            raise ValueError("instance %d is not 0..%d" % (instance, MAX_INSTANCE))
        if t is None:
            lo = hi = -1
        else:
            lo = t * 1000 - ticks
            hi = lo + 999
            if lo < 0:
                raise ValueError("t %d before ticks %d" % (t, ticks))
        if self.count:
            if boot != self.boot or ticks < self.last or self.count == 255:
                return False
            if lo < 0 or self.lo < 0:
                if lo != self.lo:
                    return False
            elif lo > self.hi or hi < self.lo:
                return False
        rows = KINDS[k]
        rec = self._rec
        mask = 0
        fl = 0
        for f in flags:
            fl |= _FLAG_BIT[f]
        for j in range(len(rows)):
            name = rows[j][0]
            if name in values and values[name] is not None:
                x = values[name] if q else quanta(values[name], rows[j][3])
                if x < rows[j][1] or x > rows[j][2]:
                    fl |= _FLAG_BIT["out_of_range"]
                else:
                    mask |= 1 << j
        for name in values:
            ok = False
            for row in rows:
                if row[0] == name:
                    ok = True
            if not ok:
                raise ValueError("sensor %s has no metric %s" % (kind, name))
        full = (1 << len(rows)) - 1
        ext = fl >> 4 | (instance if instance < _INSTANCE_BYTE else _INSTANCE_BYTE) << 4
        rec[0] = k | (fl & 0xF) << 2 | (0x40 if mask != full else 0) | (0x80 if ext else 0)
        i = 1
        if ext:
            rec[i] = ext
            i += 1
            if instance >= _INSTANCE_BYTE:
                rec[i] = instance
                i += 1
        if mask != full:
            rec[i] = mask
            i += 1
        i = put_uv(rec, i, ticks - self.last if self.count else 0)
        e = None
        for j in range(len(rows)):
            if mask & (1 << j):
                row = rows[j]
                x = values[row[0]] if q else quanta(values[row[0]], row[3])
                if row[4]:
                    e = x
                    i = put_uv(rec, i, zz(x - self._e.get(instance, 0)))
                else:
                    i = put_uv(rec, i, x - row[1])
        head = 0 if self.count else self._head_len(boot, hi, ticks)
        if HEAD + head + self._ctx_len() + self.n + i + 4 > self.size:
            return False
        if not self.count:
            self.boot = boot
            self.lo, self.hi = lo, hi
            self.t0 = ticks
        elif lo >= 0:
            self.lo = lo if lo > self.lo else self.lo
            self.hi = hi if hi < self.hi else self.hi
        if self.buf is not None:  # None: streamed, the record left in rec[:rlen] (firmware/clog.py)
            self.buf[self.n:self.n + i] = memoryview(rec)[:i]  # readings first; the head goes in front at frame()
        self.rlen = i
        self.n += i
        self.count += 1
        self.last = ticks
        if e is not None:
            self._e[instance] = e
        return True

    def _head_len(self, boot, hi, ticks):
        # An upper bound: wall0 is chosen at frame() within [lo, hi], so its varint is at most hi's.
        return 4 + _uv_len(hi + 1) + _uv_len(ticks)

    def _ctx_len(self):
        return self._head_len(self.boot, self.hi, self.t0) if self.count else 0

    def head(self, out):
        """Write the frame's head (what goes before its readings) into out; returns its length."""
        out[0] = MAGIC
        out[1] = self.count
        b = self.boot
        for j in range(4):
            out[4 + j] = int(b[2 * j:2 * j + 2], 16)
        i = put_uv(out, 8, self.lo + 1)
        i = put_uv(out, i, self.t0)
        out[2] = (i + self.n - HEAD) & 0xFF
        out[3] = (i + self.n - HEAD) >> 8
        return i

    def frame(self, out):
        """Write the frame into bytearray out (at least self.size bytes); returns its length."""
        i = self.head(out)
        out[i:i + self.n] = memoryview(self.buf)[:self.n]  # may overlap (a view of out): a memmove
        i += self.n
        c = crc32(memoryview(out)[:i]) & 0xFFFFFFFF
        for j in range(4):
            out[i + j] = (c >> (8 * j)) & 0xFF
        return i + 4


def _uv_len(x):
    n = 1
    while x >= 0x80:
        x >>= 7
        n += 1
    return n


def frame_ok(buf, n):
    """True when buf[:n] is exactly one frame with a good CRC."""
    if n < HEAD + 4 + 2 or buf[0] != MAGIC:
        return False
    L = buf[2] | buf[3] << 8
    if HEAD + L + 4 != n:
        return False
    c = buf[n - 4] | buf[n - 3] << 8 | buf[n - 2] << 16 | buf[n - 1] << 24
    return crc32(memoryview(buf)[:n - 4]) & 0xFFFFFFFF == c


def unpack(buf, first_seq, out, skip_to=0, max_count=255):
    """Append the frame's readings (as readings() gives them) to list out; returns how many were appended."""
    n = len(out)
    out.extend(readings(buf, first_seq, skip_to, max_count))
    return len(out) - n


def readings(buf, first_seq, skip_to=0, max_count=255):
    """The frame's readings with seq >= skip_to, at most max_count, one at a time (a board re-packing them for
    an upload holds one reading in RAM, not a frame's worth), as tuples
    (seq, t, ticks, boot, kind, instance, {metric: quanta}, flags list)."""
    count = buf[1]
    boot = "%02x%02x%02x%02x" % (buf[4], buf[5], buf[6], buf[7])
    w, i = get_uv(buf, 8)
    ticks, i = get_uv(buf, i)
    energy = {}
    got = 0
    for r in range(count):
        h = buf[i]
        i += 1
        rows = KINDS[h & 3]
        inst = 0
        fl = h >> 2 & 0xF
        if h & 0x80:
            ext = buf[i]
            i += 1
            fl |= (ext & 0xF) << 4
            inst = ext >> 4
            if inst == _INSTANCE_BYTE:
                inst = buf[i]
                i += 1
        mask = (1 << len(rows)) - 1
        if h & 0x40:
            mask = buf[i]
            i += 1
        d, i = get_uv(buf, i)
        ticks += d
        vals = {}
        for j in range(len(rows)):
            if mask & (1 << j):
                row = rows[j]
                x, i = get_uv(buf, i)
                if row[4]:
                    x = unzz(x) + energy.get(inst, 0)
                    energy[inst] = x
                else:
                    x += row[1]
                vals[row[0]] = x
        seq = first_seq + r
        if seq >= skip_to and got < max_count:
            flags = [f for f in FLAGS if fl & _FLAG_BIT[f]]
            got += 1
            yield seq, (w - 1 + ticks) // 1000 if w else None, ticks, boot, SENSORS[h & 3], inst, vals, flags
    if i != len(buf) - 4 and len(buf) == HEAD + (buf[2] | buf[3] << 8) + 4:
        raise ValueError("frame has bytes after its readings")

