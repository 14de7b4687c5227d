# MicroPython scripts for tests/firmware/test_store.py: `micropython store_cases.py CASE [ARGS]`.
# Each case prints what it checked and ends with "OK"; a failed check raises (non-zero exit).
# The store runs on a real LittleFS (os.VfsLfs2) on the emulated flash of emulator/board/blockdev.py.
import gc
import os
import struct
import sys
from binascii import crc32

from blockdev import BlockDev, PowerCut
from flash_mount import fresh, mount
import statefile
from store import Store

MNT = "/data"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def payload(seq):
    # Deterministic, varied lengths (20..1411 bytes: inline LittleFS files and multi-block ones).
    n = 20 + (seq * 397) % 1392
    unit = b"%07d|" % seq
    return (unit * (n // 8 + 1))[:n]


class Model:
    """What the store must hold: the readings whose append returned, the cursor and the dropped count."""

    def __init__(self, cap):
        self.cap, self.last, self.cursor, self.dropped = cap, 0, 0, 0

    def copy(self):
        m = Model(self.cap)
        m.last, m.cursor, m.dropped = self.last, self.cursor, self.dropped
        return m

    def _limit(self):
        if self.last - self.cursor > self.cap:
            self.dropped += self.last - self.cap - self.cursor
            self.cursor = self.last - self.cap

    def apply(self, op, arg):
        if op == "open":
            self.cap = arg
        elif op == "append":
            self.last += 1
        elif op == "ack":
            arg = min(arg, self.last)
            if arg > self.cursor:
                self.cursor = arg
        self._limit()
        return self

    def state(self):
        return (self.last, self.cursor, self.dropped)


def store_state(s):
    return (s.next_seq - 1, s.cursor, s.dropped)


def verify(s, m, what):
    """Store s holds exactly model m: same seqs, cursor, dropped; every pending payload intact, once, in order."""
    check(store_state(s) == m.state(), "%s: store %r != model %r" % (what, store_state(s), m.state()))
    check(s.depth == m.last - m.cursor, "%s: depth %d" % (what, s.depth))
    got = s.pending(10000, 1 << 30)
    check([r[0] for r in got] == list(range(m.cursor + 1, m.last + 1)), "%s: pending seqs %r" % (what, [r[0] for r in got]))
    for seq, p in got:
        check(p == payload(seq), "%s: payload of %d damaged" % (what, seq))


def workload():
    """Appends, acks, segment rollover and deletion, drop-oldest, capacity changes at reopen."""
    ops = [("open", 6)]
    a = lambda k: ops.extend([("append", 0)] * k)
    a(5); ops += [("pending", 3), ("ack", 2)]
    a(3); ops += [("ack", 7)]  # rollover, then a whole segment acknowledged and deleted
    a(7)  # depth 8 > 6: drop-oldest
    ops += [("pending", 50), ("ack", 15)]  # everything acked: all segments deleted, next_seq from state
    a(2); ops += [("open", 6)]  # plain reboot
    a(5); ops += [("open", 4)]  # shrink: fold drops and persist at boot
    a(2); ops += [("open", 9)]  # grow
    a(6); ops += [("ack", 26), ("pending", 2), ("ack", 27)]
    a(12); ops += [("ack", 36), ("ack", 100)]  # ack beyond last is clamped
    a(3)
    return ops


def case_basics():
    fresh(MNT)
    s = Store(MNT, capacity=100, seg_records=4)
    check(s.next_seq == 1 and s.depth == 0 and s.dropped == 0 and s.pending(10, 1000) == [], "empty store")
    try:
        s.append(2, b"x")
        check(False, "seq 2 accepted before 1")
    except ValueError:
        pass
    for k in (b"", bytes(70000)):
        try:
            s.append(1, k)
            check(False, "payload of %d bytes accepted" % len(k))
        except ValueError:
            pass
    for seq in range(1, 11):
        s.append(seq, payload(seq))
    check(s.next_seq == 11 and s.depth == 10, "depth after 10 appends")
    check(s.pending(3, 1 << 20) == [(q, payload(q)) for q in (1, 2, 3)], "pending max_count")
    got = s.pending(100, len(payload(1)) + len(payload(2)))
    check([r[0] for r in got] == [1, 2], "pending max_bytes %r" % [r[0] for r in got])
    check([r[0] for r in s.pending(100, 1)] == [1], "pending returns one record even over max_bytes")
    s.ack(4)
    check(s.depth == 6 and [r[0] for r in s.pending(2, 1 << 20)] == [5, 6], "after ack 4")
    check("seg-00000001.log" not in os.listdir(MNT), "acked segment 1..4 deleted")
    s.ack(2)
    check(s.cursor == 4, "ack never goes backwards")
    s.ack(99)
    check(s.cursor == 10 and s.depth == 0 and s.pending(5, 1000) == [], "ack clamps to the last seq")
    check([n for n in os.listdir(MNT) if n.startswith("seg-")] == [], "all segments deleted when all acked")
    s = Store(MNT, capacity=100, seg_records=4)
    check(s.next_seq == 11, "next_seq after reboot with no segment left: %d" % s.next_seq)
    s.append(11, payload(11))
    check(s.pending(5, 1 << 20) == [(11, payload(11))], "append after everything acked")
    print("basics checked")


def case_capacity():
    bd = fresh(MNT)
    s = Store(MNT, capacity=5, seg_records=3)
    for seq in range(1, 13):
        s.append(seq, payload(seq))
    check(s.depth == 5 and s.dropped == 7, "depth %d dropped %d" % (s.depth, s.dropped))
    check([r[0] for r in s.pending(100, 1 << 20)] == [8, 9, 10, 11, 12], "oldest dropped first")
    segs = sorted(n for n in os.listdir(MNT) if n.startswith("seg-"))
    check(segs == ["seg-00000007.log", "seg-00000010.log"], "dropped segments deleted: %r" % segs)
    s.ack(9)
    check(s.dropped == 7 and s.depth == 3, "ack after drops")
    for seq in range(13, 17):
        s.append(seq, payload(seq))
    check(s.dropped == 9 and s.depth == 5, "drops after ack: %d" % s.dropped)
    mount(bd, MNT)  # reboot: the dropped count is derived from what is persisted
    s = Store(MNT, capacity=5, seg_records=3)
    check(s.dropped == 9 and s.depth == 5 and s.next_seq == 17, "dropped persisted: %d" % s.dropped)
    mount(bd, MNT)
    s = Store(MNT, capacity=2, seg_records=3)  # a smaller capacity drops more, once
    check(s.dropped == 12 and [r[0] for r in s.pending(9, 1 << 20)] == [15, 16], "shrink: %d" % s.dropped)
    mount(bd, MNT)
    s = Store(MNT, capacity=50, seg_records=3)  # growing never brings dropped readings back
    check(s.dropped == 12 and [r[0] for r in s.pending(9, 1 << 20)] == [15, 16], "grow: %d" % s.dropped)
    print("capacity checked")


def case_reboot():
    """Remount the same flash (and a file-backed one) after appends and acks; a torn tail is cut off."""
    path = sys.argv[2]
    bd = BlockDev(path, block_size=4096, block_count=32)
    os.VfsLfs2.mkfs(bd)
    mount(bd, MNT)
    s = Store(MNT, capacity=100, seg_records=8)
    for seq in range(1, 21):
        s.append(seq, payload(seq))
    s.ack(5)
    os.umount(MNT)
    bd.close()
    bd = BlockDev(path, block_size=4096, block_count=32)  # the flash file, as after a restart
    mount(bd, MNT)
    s = Store(MNT, capacity=100, seg_records=8)
    m = Model(100)
    m.last, m.cursor = 20, 5
    verify(s, m, "after restart from the flash file")
    # A torn last record (as from a writer without LittleFS's atomic sync): only it is discarded.
    name = MNT + "/seg-00000017.log"
    with open(name, "ab") as f:
        f.write(b"\x40\x00\x15\x00\x00\x00junk")
    mount(bd, MNT)
    s = Store(MNT, capacity=100, seg_records=8)
    verify(s, m, "after a torn tail")
    check(os.stat(name)[6] == sum(10 + len(payload(q)) for q in range(17, 21)), "torn tail cut off")
    for seq in range(21, 25):  # segment 17 is full
        s.append(seq, payload(seq))
        m.apply("append", 0)
    mount(bd, MNT)
    verify(Store(MNT, capacity=100, seg_records=8), m, "append after the torn tail")
    with open(MNT + "/seg-00000025.log", "wb") as f:  # the next segment, holding only a torn record
        f.write(b"\x40\x00\x19\x00\x00\x00")
    mount(bd, MNT)
    verify(Store(MNT, capacity=100, seg_records=8), m, "after a segment with only a torn record")
    check("seg-00000025.log" not in os.listdir(MNT), "the empty segment was removed")
    print("reboot checked")


def battery(first, last_n, keep):
    """Cut the power at every flash write/erase n = first.. of the workload (until it finishes before write n,
    or n > last_n when last_n > 0); after each cut reboot and check that the store holds exactly the state
    before or after the operation in flight, and keeps working. Returns (cuts, kinds of op and flash call)."""
    seg_records = 4
    ops = workload()
    image = bytes(fresh(MNT).data)  # formatted, empty
    tried, kinds, n = 0, {}, first
    while last_n == 0 or n <= last_n:
        bd = BlockDev(None, block_size=4096, block_count=32, data=bytearray(image))
        mount(bd, MNT)
        bd.cut_after_writes, bd.cut_keep = n, keep
        m, i, s = Model(6), 0, None
        before = None
        try:
            for i in range(len(ops)):  # one op at a time, to know which was in flight
                before = m.copy()
                s = _step(s, ops[i], m, seg_records)
        except PowerCut:
            pass
        else:
            check(bd.writes < n, "cut %d never happened" % n)
            break  # the workload finished before write n: every write has been cut
        tried += 1
        after = before.copy().apply(*ops[i])
        kind = ops[i][0] + ("-dropping" if after.dropped > before.dropped else "")
        for k in (kind, bd.cut_kind):
            kinds[k] = kinds.get(k, 0) + 1
        cap = after.cap
        bd = bd.power_on()
        mount(bd, MNT)
        s = Store(MNT, capacity=cap, seg_records=seg_records)
        st = store_state(s)
        if st == after.state():
            m = after
        else:
            m = before.apply("open", cap)  # a reboot with that capacity
            check(st == m.state(), "cut %d in op %d %r: store (last, cursor, dropped) %r, expected %r or %r" % (
                n, i, ops[i], st, before.state(), after.state()))
        verify(s, m, "cut %d in op %d %r" % (n, i, ops[i]))
        # The store keeps working: new seqs follow on, and survive another reboot.
        for _ in range(3):
            s.append(s.next_seq, payload(s.next_seq))
            m.apply("append", 0)
        s.ack(m.last - 1)
        m.apply("ack", m.last - 1)
        mount(bd, MNT)
        verify(Store(MNT, capacity=cap, seg_records=seg_records), m, "cut %d, then 3 appends, ack, reboot" % n)
        n += 1
        if n % 50 == 0:
            gc.collect()
    return tried, n - 1, kinds


def case_power_cuts():
    first, last_n, keep = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    tried, writes, kinds = battery(first, last_n, keep)
    print("CUTS %d WRITES %d keep=%d %r" % (tried, writes, keep, sorted(kinds.items())))


def _append_unsynced(self, seq, payload):
    # Mutant: append returns before the record is committed (the file is left open, not synced).
    if seq != self.next_seq:
        raise ValueError("seq")
    if not self._segs or seq - self._segs[-1] >= self._segn:
        self._segs.append(seq)
        self._cur = self._path(seq)
    struct.pack_into("<HI", self._hdr, 0, len(payload), seq)
    struct.pack_into("<I", self._hdr, 6, crc32(payload, crc32(self._hmv)) & 0xFFFFFFFF)
    f = open(self._cur, "ab")
    f.write(self._hdr)
    f.write(payload)
    self._open = getattr(self, "_open", []) + [f]
    self.next_seq = seq + 1


def _scan_loses_last(self, seg):
    # Mutant: recovery discards the newest record even when it is intact.
    return max(0, _scan_tail(self, seg) - 1)


_scan_tail = Store._scan_tail


def _trim_before_state(self, seq):
    # Mutant: acknowledged segments deleted before the new cursor is persisted.
    seq = min(seq, self.next_seq - 1)
    if seq > self.cursor:
        dropped, floor = self.dropped, self._floor
        self._floor = seq
        self._trim()
        self._floor = floor
        statefile.save(self, seq, dropped)


def case_mutant():
    """The battery must catch a store that breaks the rules: proof that it can fail."""
    name = sys.argv[2]
    if name == "append_unsynced":
        Store.append = _append_unsynced
    elif name == "scan_loses_last":
        Store._scan_tail = _scan_loses_last
    elif name == "trim_before_state":
        Store.ack = _trim_before_state
    try:
        tried, writes, kinds = battery(1, 0, 0)
    except AssertionError as e:
        print("CAUGHT %s: %s" % (name, e))
        return
    raise AssertionError("mutant %s survived %d cuts" % (name, tried))


def case_flash_full():
    """The flash fills up before `capacity` does: the oldest segments are dropped and counted, nothing else."""
    bd = fresh(MNT, 512, 24)  # 12 KB of flash, capacity 1000 readings of up to 1.4 KB: full after a few segments
    s = Store(MNT, capacity=1000, seg_records=4)
    for seq in range(1, 61):
        s.append(seq, payload(seq))
    check(s.dropped > 0 and s.dropped % 4 == 0, "whole segments dropped: %d" % s.dropped)
    m = Model(1000)
    m.last, m.cursor, m.dropped = 60, s.dropped, s.dropped  # nothing acked: everything gone was dropped
    verify(s, m, "flash full")
    mount(bd, MNT)
    s = Store(MNT, capacity=1000, seg_records=4)
    verify(s, m, "flash full, reboot")
    s.ack(m.cursor + 3)
    m.apply("ack", m.cursor + 3)
    for seq in range(61, 81):
        s.append(seq, payload(seq))
    check(s.dropped >= m.dropped, "dropped never shrinks")
    m.apply("append", 0)
    m.last, m.cursor, m.dropped = 80, s.cursor, s.dropped
    verify(s, m, "flash full after an ack")
    print("flash full checked: %d of 80 dropped" % s.dropped)


def case_flash_full_cuts():
    """Power cut at every flash write while the flash is full and segments are dropped for room: after
    reboot, every returned append is there or was counted as dropped (oldest first), never both, never lost."""
    keep = int(sys.argv[2])
    image = bytes(fresh(MNT, 512, 24).data)
    tried, n = 0, 1
    while True:
        bd = BlockDev(None, block_size=512, block_count=24, data=bytearray(image))
        mount(bd, MNT)
        bd.cut_after_writes, bd.cut_keep = n, keep
        returned, cursor0, dropped0, s = 0, 0, 0, None
        try:
            s = Store(MNT, capacity=1000, seg_records=4)
            for seq in range(1, 41):
                cursor0, dropped0 = s.cursor, s.dropped
                s.append(seq, payload(seq))
                returned = seq
        except PowerCut:
            pass
        else:
            check(s.dropped > 0, "the flash never filled up")
            break
        tried += 1
        bd = bd.power_on()
        mount(bd, MNT)
        s = Store(MNT, capacity=1000, seg_records=4)
        last, what = s.next_seq - 1, "cut %d after %d appends" % (n, returned)
        check(last in (returned, returned + 1), "%s: last %d" % (what, last))
        check(s.cursor == s.dropped and s.cursor >= cursor0 and s.dropped >= dropped0, "%s: cursor %d dropped %d" % (
            what, s.cursor, s.dropped))
        m = Model(1000)
        m.last, m.cursor, m.dropped = last, s.cursor, s.dropped
        verify(s, m, what)
        s.append(s.next_seq, payload(s.next_seq))
        n += 1
    check(tried > 100, "only %d cuts" % tried)
    print("FULLCUTS %d keep=%d" % (tried, keep))


def _step(s, opa, m, seg_records):
    op, arg = opa
    if op == "open":
        s = Store(MNT, capacity=arg, seg_records=seg_records)
    elif op == "append":
        s.append(s.next_seq, payload(s.next_seq))
    elif op == "ack":
        s.ack(arg)
    elif op == "pending":
        got = [r[0] for r in s.pending(arg, 4096)]
        check(got == expected_pending(m, arg, 4096), "pending(%d) gave %r" % (arg, got))
    m.apply(op, arg)
    return s


def expected_pending(m, max_count, max_bytes):
    out, total = [], 0
    for seq in range(m.cursor + 1, m.last + 1):
        n = len(payload(seq))
        if len(out) == max_count or (out and total + n > max_bytes):
            break
        out.append(seq)
        total += n
    return out


def case_random():
    """A long pseudo-random run of appends, pending reads (checked), acks and reboots against the model."""
    bd = fresh(MNT)
    x, cap, segn = 12345, 30, 5
    s, m = Store(MNT, capacity=cap, seg_records=segn), Model(cap)
    counts = {}
    for step in range(3000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        r = (x >> 8) % 100
        if r < 50:
            op = ("append", 0)
        elif r < 80:
            op = ("pending", 1 + (x >> 16) % 12)
        elif r < 97:
            op = ("ack", m.cursor + (x >> 16) % 9 - 2)
        else:
            op = ("open", cap)
            mount(bd, MNT)
        counts[op[0]] = counts.get(op[0], 0) + 1
        s = _step(s, op, m, segn)
        if step % 100 == 0:
            verify(s, m, "step %d" % step)
    verify(s, m, "end")
    check(m.dropped > 0 and m.cursor > m.dropped, "both acks and drops happened")
    print("random checked: %r, last %d, dropped %d" % (sorted(counts.items()), m.last, m.dropped))


if __name__ == "__main__":
    globals()["case_" + sys.argv[1]]()
    print("OK")
