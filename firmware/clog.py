# Compact flash log: the board's reading buffer for outages of a week, on LittleFS, built for 20 years of flash.
#
# Readings are packed (protocol/packed.py: integer quanta in varints, seq implicit, ticks and the energy counter
# as deltas; about 12 bytes a reading) into a frame in RAM. A frame is committed as its own small file
# j<first seq> when it is full (120 bytes: it stays a LittleFS inline file, so a commit is one metadata append,
# not the copy and erase of a data block that appending to a big file costs) or when its oldest reading is
# `window_s` old (60 s by default), or on flush() (a deliberate stop). Every `seg_chunks` chunk files are
# copied into one segment file s<first seq>_<count> (written as s.tmp, then renamed: a segment exists whole or
# not at all) and deleted. Seqs are contiguous across files, so file names give every reading's seq.
#
# What a power cut can cost: the readings of the frame not yet committed, at most `window_s` seconds (or one
# full frame, ~9 readings) of each sensor. kWh totals lose nothing: energy_wh is the meter's own counter, kept
# in the PZEM, and the next reading carries the total. A lost window costs the power, voltage, PM and CO2
# samples of those seconds, and their seqs are reused (they were never sent). Committed readings are never lost.
#
# `log.state` = u32 floor, u32 dropped, u32 capacity, u32 crc32, replaced atomically as in store.py, with the
# same rules: at most `capacity` readings after the floor are pending, the older ones count as dropped; files
# wholly acknowledged or dropped are deleted after the state says so. capacity=0 sizes the buffer from the
# flash when the log is created (kept in the state afterwards). A log on a flash that still holds the old
# store (store.py: seg-*.log and `state`) takes its pending readings over, keeping their seqs (migrate()).
import json
import os
import struct
from binascii import crc32

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from protocol import packed, wire

_ENOSPC = const(28)
_FRAME = const(120)  # bytes: below LittleFS's inline limit (the cache size, 128 with VfsLfs2's defaults)
_SEG_CHUNKS = const(32)  # chunk files per segment: ~3.8 KB, one flash sector
BYTES_PER_READING = const(16)  # planning figure for the default capacity (measured ~12.5 at the default mix)
KEEP_FREE = 0.15  # of the flash, left free by the default capacity: wear levelling needs free sectors


def _fsize(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class Log:
    def __init__(self, root="/data", capacity=0, window_s=60, seg_chunks=_SEG_CHUNKS, frame=_FRAME):
        if capacity < 0 or seg_chunks < 1 or window_s < 0:
            raise ValueError("capacity, window_s >= 0 and seg_chunks >= 1")
        self.root = root
        self.capacity = capacity
        self.window_ms = window_s * 1000
        self._segn = seg_chunks
        self._pk = packed.Packer(frame)
        self._fb = bytearray(frame + 8)
        self._st = bytearray(16)
        self._state = root + "/log.state"
        self._tmp = root + "/log.tmp"
        self._hint = (0, 0, 0)  # (file's first seq, byte offset, seq of the frame there)
        self.commits = 0
        self._wpk = None  # the uplink's packer, made at the first pack_pending
        self._tmpl = []
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists
        self._recover()
        self.migrate()

    # -- files

    def _chunk(self, first):
        return "%s/j%08d" % (self.root, first)

    def _seg(self, first, count):
        return "%s/s%08d_%d" % (self.root, first, count)

    def _path(self, f):
        return self._seg(f[0], f[1]) if f[2] else self._chunk(f[0])

    def _read_frame(self, f, off):
        """Length of the frame at byte off of open file f, read into self._fb; 0 at the end or when damaged."""
        fb = self._fb
        f.seek(off)
        mv = memoryview(fb)
        if f.readinto(mv[:packed.HEAD]) != packed.HEAD:
            return 0
        n = packed.HEAD + (fb[2] | fb[3] << 8) + 4
        if n > len(fb) or f.readinto(mv[packed.HEAD:n]) != n - packed.HEAD or not packed.frame_ok(fb, n):
            return 0
        return n

    def _recover(self):
        # LittleFS finishes a rename cut short by power loss only at its first write after mount; until then a
        # listing can miss a file (found by the power-cut campaign). One write first makes the listing whole.
        try:
            os.mkdir(self.root + "/fix.tmp")
            os.rmdir(self.root + "/fix.tmp")
        except OSError:
            pass  # a full flash: recover from what the listing shows
        segs, chunks = [], []
        for name in os.listdir(self.root):
            if name.endswith(".tmp"):  # a segment or state replace cut short by power loss
                try:
                    os.remove(self.root + "/" + name)
                except OSError:
                    os.rmdir(self.root + "/" + name)
            elif name[0] == "s" and "_" in name and name[1:9].isdigit():
                segs.append([int(name[1:9]), int(name[10:]), True])
            elif name[0] == "j" and len(name) == 9 and name[1:].isdigit():
                chunks.append(int(name[1:]))
        files = segs
        for c in chunks:
            path = self._chunk(c)
            covered = False
            for s in segs:
                if s[0] <= c < s[0] + s[1]:
                    covered = True
            if not covered:
                with open(path, "rb") as f:
                    n = self._read_frame(f, 0)
                if n and _fsize(path) == n:
                    files.append([c, self._fb[1], False])
                    continue
            os.remove(path)  # copied into a segment already, or a commit cut short (empty or torn)
        files.sort()
        self._files = files
        self._nchunks = 0
        for f in files:
            if not f[2]:
                self._nchunks += 1
        ok = False
        try:
            with open(self._state, "rb") as f:
                n = f.readinto(self._st)
            floor, dropped, cap, crc = struct.unpack("<IIII", self._st)
            ok = n == 16 and crc == crc32(memoryview(self._st)[:12]) & 0xFFFFFFFF
        except OSError:
            pass
        if not ok:
            floor, dropped, cap = files[0][0] - 1 if files else 0, 0, 0
        if not self.capacity:
            self.capacity = cap or self._flash_capacity()
        last = files[-1][0] + files[-1][1] - 1 if files else 0
        last = max(last, floor)
        self.next_seq = self._committed = last + 1
        self._floor, self._drop0 = floor, dropped
        if not ok or cap != self.capacity:
            # Fold the drops made under the old capacity before the new one applies.
            cursor = max(floor, last - cap) if cap else floor
            self._write_state(cursor, dropped + cursor - floor)
        self._trim()

    def _flash_capacity(self):
        """Readings the flash holds with KEEP_FREE of it left free, counting this log's own files as free."""
        st = os.statvfs(self.root)
        bsize, total, free = st[0], st[2], st[3]
        own = 0
        for name in os.listdir(self.root):
            n = _fsize(self.root + "/" + name)
            if n > 0:
                own += (n + bsize - 1) // bsize
        room = (free + own - int(total * KEEP_FREE)) * bsize
        return min(max(room // BYTES_PER_READING, 100), 10000000)  # 10M: a host's disk (unix port), not flash

    def _write_state(self, floor, dropped):
        struct.pack_into("<III", self._st, 0, floor, dropped, self.capacity)
        struct.pack_into("<I", self._st, 12, crc32(memoryview(self._st)[:12]) & 0xFFFFFFFF)
        with open(self._tmp, "wb") as f:
            f.write(self._st)
        os.rename(self._tmp, self._state)
        self._floor, self._drop0 = floor, dropped

    # -- counters (the same contract as store.Store)

    @property
    def cursor(self):
        """Highest seq acknowledged or dropped; pending starts after it. Only committed readings count toward
        capacity: a power cut takes back the uncommitted ones, and the cursor must not go back after it."""
        return max(self._floor, self._committed - 1 - self.capacity)

    @property
    def depth(self):
        """Readings pending, those not yet committed included."""
        return self.next_seq - 1 - self.cursor

    @property
    def dropped(self):
        return self._drop0 + self.cursor - self._floor

    @property
    def uncommitted(self):
        return self._pk.count

    # -- writing

    def append(self, seq, payload):
        """Take one reading as canonical v1 JSON bytes (wire.encode_reading), as store.Store does."""
        r = json.loads(payload)
        if r["seq"] != seq:
            raise ValueError("payload seq %d is not %d" % (r["seq"], seq))
        self.add(seq, r["boot"], r["t"], r["ticks"], r["sensor"], r["values"], r["flags"], r.get("instance", 0))

    def add(self, seq, boot, t, ticks, kind, values, flags, instance=0):
        """Take one reading (values by metric name, flags a list); it is committed within window_s."""
        if seq != self.next_seq:
            raise ValueError("seq %d is not next_seq %d" % (seq, self.next_seq))
        pk = self._pk
        if not pk.add(boot, t, ticks, kind, values, flags, instance):
            self.commit()
            if not pk.add(boot, t, ticks, kind, values, flags, instance):
                raise ValueError("reading does not fit a frame")
        self.next_seq = seq + 1
        if ticks - pk.t0 >= self.window_ms:
            self.commit()

    def tick(self, now_ms):
        """Commit the frame once its oldest reading is window_s old (now_ms: the readings' ticks clock)."""
        if self._pk.count and now_ms - self._pk.t0 >= self.window_ms:
            self.commit()

    def flush(self):
        """Commit what is not yet committed: before a deliberate stop."""
        self.commit()

    def commit(self):
        pk = self._pk
        if not pk.count:
            return
        first = self._committed
        n = pk.frame(self._fb)
        path = self._chunk(first)
        while True:
            try:
                with open(path, "wb") as f:  # close = LittleFS sync: the frame is committed on return
                    f.write(memoryview(self._fb)[:n])
                break
            except OSError as e:
                try:
                    os.remove(path)
                except OSError:
                    pass
                if e.args[0] != _ENOSPC or not self._drop_oldest():
                    # Nothing of this frame reached the flash and nothing was sent: its seqs are reused.
                    self.next_seq = first
                    pk.clear()
                    raise
        self._files.append([first, pk.count, False])
        self._nchunks += 1
        self._committed = first + pk.count
        self.commits += 1
        pk.clear()
        if self._nchunks >= self._segn:
            self._consolidate()
        if self._files and self._files[0][0] + self._files[0][1] - 1 <= self.cursor:
            self._trim()

    def _drop_oldest(self):
        # The flash filled up before `capacity` did: drop the oldest file (state first, as in ack).
        if len(self._files) < 2:
            return False
        f = self._files[0]
        end = f[0] + f[1] - 1
        if end > self.cursor:
            self._write_state(end, self.dropped + end - self.cursor)
        self._trim()
        return True

    def _consolidate(self):
        files = self._files
        while True:
            i = len(files) - self._nchunks
            chunks = files[i:]
            first = chunks[0][0]
            count = chunks[-1][0] + chunks[-1][1] - first
            tmp = self.root + "/s.tmp"
            try:
                with open(tmp, "wb") as g:
                    for c in chunks:
                        with open(self._chunk(c[0]), "rb") as f:
                            n = self._read_frame(f, 0)
                        if not n:
                            raise OSError(5)  # EIO: a chunk went bad on the flash
                        g.write(memoryview(self._fb)[:n])
                os.rename(tmp, self._seg(first, count))
                break
            except OSError as e:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
                if e.args[0] != _ENOSPC or len(files) - self._nchunks < 1 or not self._drop_oldest():
                    return  # the chunks stay as they are: still a valid log; retried at the next commit
        del files[i:]
        files.append([first, count, True])
        self._nchunks = 0
        for c in chunks:
            os.remove(self._chunk(c[0]))

    def ack(self, seq):
        """Everything <= seq is acknowledged; persisted atomically before anything is deleted."""
        seq = min(seq, self._committed - 1)
        if seq > self.cursor:
            self._write_state(seq, self.dropped)
            self._trim()

    def _trim(self):
        # Delete the oldest files whose readings are all <= cursor (acknowledged or dropped).
        files, cursor = self._files, self.cursor
        while files and files[0][0] + files[0][1] - 1 <= cursor:
            f = files.pop(0)
            if not f[2]:
                self._nchunks -= 1
            os.remove(self._path(f))

    # -- reading

    def readings(self, max_count=100):
        """Oldest-first committed readings after the cursor, as packed.unpack gives them."""
        out = []
        want = self.cursor + 1
        files = self._files
        if not files or want >= self._committed:
            return out
        i = len(files) - 1
        while i > 0 and files[i][0] > want:
            i -= 1
        while i < len(files) and len(out) < max_count:
            fl = files[i]
            hf, ho, hs = self._hint
            off, seq = (ho, hs) if hf == fl[0] and hs <= want else (0, fl[0])
            with open(self._path(fl), "rb") as f:
                while len(out) < max_count:
                    n = self._read_frame(f, off)
                    if not n:
                        break  # the end, or damage (flash rot): on to the next file
                    c = self._fb[1]
                    if seq + c > want:
                        packed.unpack(self._fb, seq, out, want, max_count - len(out))
                        if len(out) < max_count or out[-1][0] == seq + c - 1:
                            self._hint = (fl[0], off + n, seq + c)
                        else:
                            self._hint = (fl[0], off, seq)
                    off += n
                    seq += c
            i += 1
        return out

    def pack_pending(self, out, room, max_count=1000):
        """Pack the committed readings after the cursor, oldest first, as v2 frames (protocol/packed.py) into
        bytearray out, at most room bytes: one log frame's readings in RAM at a time, so a full batch costs no
        more heap than its bytes. Returns (first seq, count, bytes); count 0 when nothing is pending."""
        if self._wpk is None:
            self._wpk = packed.Packer(2048)
        pk, tmp = self._wpk, self._tmpl
        pk.clear()
        want = self.cursor + 1
        first, count, k = want, 0, 0
        files = self._files
        if not files or want >= self._committed:
            return first, 0, 0
        i = len(files) - 1
        while i > 0 and files[i][0] > want:
            i -= 1
        full = False
        while i < len(files) and not full:
            fl = files[i]
            off, seq = 0, fl[0]
            with open(self._path(fl), "rb") as f:
                while not full:
                    n = self._read_frame(f, off)
                    if not n:
                        break
                    c = self._fb[1]
                    if seq + c > want:
                        del tmp[:]
                        packed.unpack(self._fb, seq, tmp, want)
                        for r in tmp:
                            if count == max_count:
                                full = True
                                break
                            pk.size = min(2048, room - k)
                            if pk.add(r[3], r[1], r[2], r[4], r[6], r[7], r[5], True):
                                count += 1
                                continue
                            if pk.count:
                                k += pk.frame(memoryview(out)[k:])
                                pk.clear()
                                pk.size = min(2048, room - k)
                                if pk.add(r[3], r[1], r[2], r[4], r[6], r[7], r[5], True):
                                    count += 1
                                    continue
                            full = True
                            break
                        del tmp[:]
                    off += n
                    seq += c
            i += 1
        if pk.count:
            k += pk.frame(memoryview(out)[k:])
            pk.clear()
        return first, count, k

    def pending(self, max_count=50, max_bytes=4096):
        """Oldest-first [(seq, canonical v1 JSON)] committed after the cursor; at least one when any is."""
        out, total = [], 0
        for r in self.readings(max_count):
            p = wire.encode_reading_quanta(r[0], r[1], r[2], r[3], r[4], r[6], r[7])
            if out and total + len(p) > max_bytes:
                break
            out.append((r[0], p))
            total += len(p)
        return out

    # -- the old store's log

    def migrate(self):
        """Take over the pending readings of an old store.Store in this folder (clog_migrate.py, loaded only
        when its files are there); returns how many were copied."""
        for name in os.listdir(self.root):
            if name == "state" or name.startswith("seg-"):
                import clog_migrate
                return clog_migrate.migrate(self)
        return 0
