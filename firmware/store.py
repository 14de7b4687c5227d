# Power-loss-safe reading buffer on LittleFS: the firmware's buffer before the compact log (clog.py), kept to
# migrate from (clog_migrate.py) and as the baseline of `airwatt bench board`.
#
# Layout in root: seg-<first seq>.log files of appended records, each record = u16 length, u32 seq,
# u32 crc32(length, seq, payload), payload; `state`: statefile.py (floor, dropped, capacity).
# Seqs are contiguous, so a segment holds seqs name .. next segment's name - 1 and only the newest one is
# read at boot. Every append ends in a LittleFS sync (close), which commits the record atomically; `state`
# is replaced atomically (write state.tmp, rename). Drops are implicit: at most `capacity` readings after the
# floor are pending, the older ones count as dropped, so full-buffer appends cost no state write:
#   cursor = max(floor, last - capacity), dropped = state dropped + (cursor - floor).
# Segments wholly <= cursor are deleted; ack writes `state` before deleting anything. If the flash fills up
# before `capacity` does, append drops the oldest segment the same way (state first) and counts it as dropped.
import os
import struct
from binascii import crc32

import statefile

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_HDR = const(10)
_SEG_RECORDS = const(64)
_ENOSPC = const(28)


class Store(statefile.Counters):
    def __init__(self, root="/data", capacity=1000, seg_records=_SEG_RECORDS):
        if capacity < 1 or seg_records < 1:
            raise ValueError("capacity and seg_records must be >= 1")
        self.root = root
        self.capacity = capacity
        self._segn = seg_records
        self._hdr = bytearray(_HDR)
        self._hmv = memoryview(self._hdr)[:6]
        self._st = bytearray(16)
        self._state = root + "/state"
        self._tmp = root + "/state.tmp"
        self._hint = (0, 0, 0)  # (segment, seq, byte offset): where record seq starts, to skip acked records
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists
        self._recover()

    def _path(self, seg):
        return "%s/seg-%08d.log" % (self.root, seg)

    def _recover(self):
        segs = []
        for name in os.listdir(self.root):
            if name.startswith("seg-") and name.endswith(".log"):
                segs.append(int(name[4:-4]))
            elif name.endswith(".tmp"):  # a replace cut short by power loss
                os.remove(self.root + "/" + name)
        segs.sort()
        st = statefile.read(self._state, self._st)
        ok = st is not None
        # No state: a new store, or a lost state (unreachable with atomic renames): resend what is on flash, the
        # agent deduplicates by seq.
        floor, dropped, cap = st if ok else (segs[0] - 1 if segs else 0, 0, self.capacity)
        last = floor
        if segs:
            k = self._scan_tail(segs[-1])
            if k:
                last = max(last, segs[-1] + k - 1)
            else:  # created, but its first record never committed
                last = max(last, segs[-1] - 1)
                os.remove(self._path(segs.pop()))
        self._segs = segs
        self._cur = self._path(segs[-1]) if segs else None
        self.next_seq = last + 1
        self._floor, self._drop0 = floor, dropped
        if not ok or cap != self.capacity:
            # Fold the drops made under the old capacity before the new one applies.
            cursor = max(floor, last - cap)
            statefile.save(self, cursor, dropped + cursor - floor)
        self._trim()

    def _scan_tail(self, seg):
        # Count the valid records of the newest segment; rewrite it without a torn tail.
        path, hdr, k, end = self._path(seg), self._hdr, 0, 0
        with open(path, "rb") as f:
            while f.readinto(hdr) == _HDR:
                n, s, c = struct.unpack("<HII", hdr)
                p = f.read(n)
                if s != seg + k or n == 0 or len(p) != n or crc32(p, crc32(self._hmv)) & 0xFFFFFFFF != c:
                    break
                k += 1
                end += _HDR + n
        if k and os.stat(path)[6] != end:
            buf = bytearray(128)
            with open(path, "rb") as f, open(self._tmp, "wb") as g:
                while end > 0:
                    n = min(f.readinto(buf), end)
                    g.write(memoryview(buf)[:n])
                    end -= n
            os.rename(self._tmp, path)
        return k

    @property
    def cursor(self):
        """Highest seq acknowledged or dropped; pending starts after it."""
        return max(self._floor, self.next_seq - 1 - self.capacity)

    def append(self, seq, payload):
        if seq != self.next_seq:
            raise ValueError("seq %d is not next_seq %d" % (seq, self.next_seq))
        n = len(payload)
        if not 0 < n <= 0xFFFF:
            raise ValueError("payload length %d" % n)
        segs = self._segs
        new = not segs or seq - segs[-1] >= self._segn
        if new:
            self._cur = self._path(seq)
        hdr = self._hdr
        struct.pack_into("<HI", hdr, 0, n, seq)
        struct.pack_into("<I", hdr, 6, crc32(payload, crc32(self._hmv)) & 0xFFFFFFFF)
        while True:
            try:
                with open(self._cur, "ab") as f:  # close = LittleFS sync: the record is committed on return
                    f.write(hdr)
                    f.write(payload)
                break
            except OSError as e:
                if e.args[0] != _ENOSPC or len(segs) < 2:
                    raise
                # The flash filled up before `capacity` did: drop the oldest segment (state first, as in ack).
                end = segs[1] - 1
                statefile.save(self, end, self.dropped + end - self.cursor)
                self._trim()
        if new:
            segs.append(seq)
        self.next_seq = seq + 1
        if len(segs) > 1 and segs[1] <= self.cursor + 1:
            self._trim()

    def ack(self, seq):
        """Everything <= seq is acknowledged; persisted atomically before anything is deleted."""
        seq = min(seq, self.next_seq - 1)
        cursor = self.cursor
        if seq > cursor:
            statefile.save(self, seq, self.dropped)
            self._trim()

    def _trim(self):
        # Delete the oldest segments whose records are all <= cursor (acknowledged or dropped).
        segs, cursor = self._segs, self.cursor
        while segs and (segs[1] - 1 if len(segs) > 1 else self.next_seq - 1) <= cursor:
            os.remove(self._path(segs.pop(0)))

    def pending(self, max_count=50, max_bytes=4096):
        """Oldest-first [(seq, payload)] after the cursor; at least one record when any is pending."""
        out = []
        want = self.cursor + 1
        segs = self._segs
        if want >= self.next_seq or not segs:
            return out
        i = len(segs) - 1
        while i > 0 and segs[i] > want:
            i -= 1
        hdr, total = self._hdr, 0
        while i < len(segs) and len(out) < max_count:
            seg = segs[i]
            hs, hq, ho = self._hint
            seq, off = (hq, ho) if hs == seg and hq <= want else (seg, 0)
            with open(self._path(seg), "rb") as f:
                f.seek(off)
                while len(out) < max_count and f.readinto(hdr) == _HDR:
                    n, s, c = struct.unpack("<HII", hdr)
                    if s != seq:
                        break  # corrupt (flash rot): skip to the next segment
                    if s < want:
                        f.seek(n, 1)
                    else:
                        if out and total + n > max_bytes:
                            self._hint = (seg, seq, off)
                            return out
                        p = f.read(n)
                        if len(p) != n or crc32(p, crc32(self._hmv)) & 0xFFFFFFFF != c:
                            break
                        out.append((s, p))
                        total += n
                    seq += 1
                    off += _HDR + n
            self._hint = (seg, seq, off)
            i += 1
        return out
