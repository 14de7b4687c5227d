# Compact flash log: the board's reading buffer for outages of a week, on LittleFS, built for 20 years of flash.
#
# Readings are packed (protocol/packed.py: integer quanta in varints, seq implicit, ticks and the energy counter
# as deltas; about 12 bytes a reading) into a frame in RAM. A frame is committed as its own small file
# j<first seq> when it is full (120 bytes: it stays a LittleFS inline file, so a commit is one metadata append,
# not the copy and erase of a data block that appending to a big file costs) or when its oldest reading is
# `window_s` old (60 s by default), or on flush() (a deliberate stop). Every `seg_chunks` chunk files are
# copied into one segment file s<first seq>_<count> (written as s.tmp, then renamed: a segment exists whole or
# not at all) and deleted. Seqs are contiguous across files, so file names give every reading's seq. An upload's
# v2 batch is planned (plan_pending), then read back from the flash as the uplink signs it and again as it sends it
# (stream_pending): the board never holds a batch in RAM.
#
# What a power cut can cost: the readings of the frame not yet committed, at most `window_s` seconds (or one
# full frame, ~9 readings) of each sensor. kWh totals lose nothing: energy_wh is the meter's own counter, kept
# in the PZEM, and the next reading carries the total. A lost window costs the power, voltage, PM and CO2
# samples of those seconds, and their seqs are reused (they were never sent). Committed readings are never lost.
#
# `log.state` (statefile.py: floor, dropped, capacity), replaced atomically, with the same rules as store.py: at
# most `capacity` readings after the floor are pending, the older ones count as dropped; files wholly
# acknowledged or dropped are deleted after the state says so. capacity=0 sizes the buffer from the
# flash when the log is created (kept in the state afterwards). A log on a flash that still holds the old
# store (store.py: seg-*.log and `state`) takes its pending readings over, keeping their seqs (clog_boot.migrate()).
import os
import sys

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

import statefile
from protocol import packed

_ENOSPC = const(28)
_FRAME = const(120)  # bytes: below LittleFS's inline limit (the cache size, 128 with VfsLfs2's defaults)
_HEAD_ROOM = const(24)  # bytes before a v2 frame's readings for its head: magic, count, length, boot, 2 varints
_SEG_CHUNKS = const(32)  # chunk files per segment: ~3.8 KB, one flash sector
BYTES_PER_READING = const(16)  # planning figure for the default capacity (measured ~12.5 at the default mix)
KEEP_FREE = 0.15  # of the flash, left free by the default capacity: wear levelling needs free sectors


class Log(statefile.Counters):
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
        # The uplink's: a packer that keeps no readings, and buffers for a frame read back, a head and a CRC.
        self._wpk = packed.Packer(0)
        self._wpk.buf = None
        self._wb = bytearray(frame + 8)
        self._hb = bytearray(_HEAD_ROOM)
        self._crc = bytearray(4)
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists
        import clog_boot
        clog_boot.recover(self)
        clog_boot.migrate(self)
        clog_boot = None
        sys.modules.pop("clog_boot", None)  # boot-only code: its heap goes back to the loops

    # -- files

    # The files, oldest first, are two lists of small ints: _files their first seqs, _counts their readings
    # (negated for a segment). Not a list of lists: an object per file would take kilobytes of heap in a long
    # backlog (a week's is about 300 segments).

    def _path(self, first, count):
        """The file of first seq and count (negative: a segment): s<first>_<-count> (a segment) or j<first>."""
        return "%s/s%08d_%d" % (self.root, first, -count) if count < 0 else "%s/j%08d" % (self.root, first)

    def _end(self, i):
        """The last seq of file i."""
        n = self._counts[i]
        return self._files[i] + (n if n > 0 else -n) - 1

    def _read_frame(self, f, off, fb=None):
        """Length of the frame at byte off of open file f, read into fb (self._fb); 0 at the end or when damaged."""
        fb = fb or self._fb
        f.seek(off)
        mv = memoryview(fb)
        if f.readinto(mv[:packed.HEAD]) != packed.HEAD:
            return 0
        n = packed.HEAD + (fb[2] | fb[3] << 8) + 4
        if n > len(fb) or f.readinto(mv[packed.HEAD:n]) != n - packed.HEAD or not packed.frame_ok(fb, n):
            return 0
        return n

    # -- counters (the same contract as store.Store)

    @property
    def cursor(self):
        """Highest seq acknowledged or dropped; pending starts after it. Only committed readings count toward
        capacity: a power cut takes back the uncommitted ones, and the cursor must not go back after it."""
        return max(self._floor, self._committed - 1 - self.capacity)

    @property
    def uncommitted(self):
        return self._pk.count

    # -- writing

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

    def commit(self):
        """Commit what is not yet committed (flush: before a deliberate stop)."""
        pk = self._pk
        if not pk.count:
            return
        first = self._committed
        n = pk.frame(self._fb)
        path = self._path(first, 0)
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
        self._files.append(first)
        try:
            self._counts.append(pk.count)
        except MemoryError:  # the lists stay in step (the next commit writes this frame again, as it would)
            self._files.pop()
            raise
        self._nchunks += 1
        self._committed = first + pk.count
        self.commits += 1
        pk.clear()
        if self._nchunks >= self._segn:
            try:
                self._consolidate()
            except MemoryError:  # its two files found no room in the heap: the frame above is committed, and the
                pass  # chunks stay a valid log, merged at a later commit (a reading is not lost for a merge)
        if self._files and self._end(0) <= self.cursor:
            self._trim()

    flush = commit

    def _drop_oldest(self):
        # The flash filled up before `capacity` did: drop the oldest file (state first, as in ack).
        if len(self._files) < 2:
            return False
        end = self._end(0)
        if end > self.cursor:
            statefile.save(self, end, self.dropped + end - self.cursor)
        self._trim()
        return True

    def _consolidate(self):
        files, counts = self._files, self._counts
        while True:
            i = len(files) - self._nchunks
            first = files[i]
            count = self._end(len(files) - 1) + 1 - first
            tmp = self.root + "/s.tmp"
            try:
                with open(tmp, "wb") as g:
                    for j in range(i, len(files)):  # not a slice: nothing more to allocate beside the two files
                        with open(self._path(files[j], 0), "rb") as f:
                            n = self._read_frame(f, 0)
                        if not n:
                            raise OSError(5)  # EIO: a chunk went bad on the flash
                        g.write(memoryview(self._fb)[:n])
                os.rename(tmp, self._path(first, -count))
                break
            except OSError as e:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
                if e.args[0] != _ENOSPC or len(files) - self._nchunks < 1 or not self._drop_oldest():
                    return  # the chunks stay as they are: still a valid log; retried at the next commit
        chunks = files[i:]
        del files[i:], counts[i:]
        files.append(first)
        counts.append(-count)
        self._nchunks = 0
        for c in chunks:
            os.remove(self._path(c, 0))

    def ack(self, seq):
        """Everything <= seq is acknowledged; persisted atomically before anything is deleted."""
        seq = min(seq, self._committed - 1)
        if seq > self.cursor:
            statefile.save(self, seq, self.dropped)
            self._trim()

    def _trim(self):
        # Delete the oldest files whose readings are all <= cursor (acknowledged or dropped).
        files, counts, cursor = self._files, self._counts, self.cursor
        while files and self._end(0) <= cursor:
            first, n = files.pop(0), counts.pop(0)
            if n > 0:
                self._nchunks -= 1
            os.remove(self._path(first, n))

    # -- reading

    def append(self, seq, payload):
        """Take one reading as canonical v1 JSON bytes (wire.encode_reading), as store.Store does."""
        import v1
        v1.append(self, seq, payload)

    def pending(self, max_count=50, max_bytes=4096):
        """Oldest-first [(seq, canonical v1 JSON)] committed after the cursor; at least one when any is."""
        import v1
        return v1.pending(self, max_count, max_bytes)

    def _walk(self, want):
        """The committed readings from seq want on, oldest first, one at a time (packed.readings tuples). No file
        stays open while a reading is out: the uplink sends as it walks, and the sampler may commit, merge or
        drop files meanwhile (the walk then finds want in its new file, or stops where it is gone)."""
        wb = self._wb
        at = off = seq = -1  # the file (its first seq) and the offset and first seq of the frame next read there
        while want < self._committed:
            files = self._files
            i = len(files) - 1
            while i > 0 and files[i] > want:
                i -= 1
            if not files or files[i] > want:
                return  # dropped: the caller checks the seqs it was given
            if files[i] != at:
                at, off, seq = files[i], 0, files[i]
            with open(self._path(at, self._counts[i]), "rb") as f:
                while True:
                    n = self._read_frame(f, off, wb)
                    if not n or seq + wb[1] > want:
                        break
                    off += n
                    seq += wb[1]
            f = None  # a closed file keeps its LittleFS buffer: not held while the readings go out
            if not n:  # damaged: on to the next file
                want = self._end(i) + 1
                continue
            off += n
            seq += wb[1]
            for r in packed.readings(wb, seq - wb[1], want):
                want = r[0] + 1
                yield r

    def plan_pending(self, room, max_count=1000):
        """The next batch: the committed readings after the cursor, oldest first, as v2 frames (protocol/packed.py)
        of at most room bytes in all. Frames end only where v2.pack ends them (another boot or clock, 255
        readings), at room or at a seq gap: the canonical bytes. Nothing is held but each frame's head: returns
        (first seq, count, bytes, frames), frames [(readings, head bytes)] for stream_pending; count 0 when none
        is pending."""
        first = self.cursor + 1
        pk = self._wpk
        pk.clear()
        pk.size = room - _HEAD_ROOM
        count = k = 0
        frames = []
        walk = self._walk(first)
        try:
            for r in walk:
                if not count and r[0] > first:
                    # The frames before it went bad on the flash after boot (boot recovery checks every CRC):
                    # their readings are gone. Counted as dropped, so that the backlog goes on past them.
                    statefile.save(self, r[0] - 1, self.dropped + r[0] - first)
                    first = r[0]
                if r[0] != first + count or count == max_count:
                    break
                if not self._wadd(r):
                    if not pk.count:
                        break
                    k += self._close_frame(frames)
                    pk.size = room - k - _HEAD_ROOM
                    if pk.size <= 0 or not self._wadd(r):
                        break
                count += 1
        finally:
            walk.close()
        if pk.count:
            k += self._close_frame(frames)
        return first, count, k, frames

    def _wadd(self, r):
        # A reading from _walk into the uplink's packer, as its quanta.
        return self._wpk.add(r[3], r[1], r[2], r[4], r[6], r[7], r[5], True)

    def _close_frame(self, frames):
        pk = self._wpk
        n = pk.head(self._hb)
        frames.append((pk.count, bytes(memoryview(self._hb)[:n])))
        n += pk.n + 4
        pk.clear()
        return n

    def stream_pending(self, first, frames):
        """The bytes of the batch plan_pending gave (first, frames), piece by piece, from the flash again: a frame's
        head, each reading's record, the frame's CRC. ValueError when the log no longer holds those readings."""
        pk = self._wpk
        pk.size = 1 << 30  # the plan ended the frames
        crc = self._crc
        seq = first
        j = left = 0
        walk = self._walk(first)
        try:
            for r in walk:
                if not left:
                    left, head = frames[j]
                    j += 1
                    pk.clear()
                    c = packed.crc32(head)
                    yield head
                if r[0] != seq or not self._wadd(r):
                    break
                rec = memoryview(pk._rec)[:pk.rlen]
                c = packed.crc32(rec, c)
                yield rec
                seq += 1
                left -= 1
                if not left:
                    for i in range(4):
                        crc[i] = (c >> (8 * i)) & 0xFF
                    yield crc
                    if j == len(frames):
                        return
        finally:
            walk.close()
        if left or j < len(frames):
            raise ValueError("seq %d left the log during the upload" % seq)
