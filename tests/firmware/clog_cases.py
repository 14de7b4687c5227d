# MicroPython scripts for tests/firmware/test_clog.py: `micropython clog_cases.py CASE [ARGS]`.
# Each case prints what it checked and ends with "OK"; a failed check raises (non-zero exit).
# The compact log (firmware/clog.py) runs on a real LittleFS (os.VfsLfs2) on the emulated NOR flash of
# emulator/board/blockdev.py.
import gc
import os
import sys

from blockdev import BlockDev, PowerCut
from flash_mount import fresh, mount
import statefile
from clog import Log
from protocol import wire

MNT = "/data"
BOOT = "0a1b2c3d"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def reading(seq):
    """(t, ticks, kind, values, flags) of reading seq: deterministic, varied, the clock set from seq 30 on."""
    ticks = seq * 6700
    t = None if seq < 30 else 1790000000 + ticks // 1000
    k = seq % 9
    if k < 6:
        v = {"voltage": 220 + (seq * 37) % 200 / 10, "current": (seq * 7919) % 20000 / 1000,
             "power": (seq * 104729) % 50000 / 10, "energy_wh": 1000000 + seq * 3 - (seq % 50 == 0) * 999000,
             "frequency": 49.5 + (seq % 11) / 10, "pf": (seq % 100) / 100}
        if seq % 13 == 0:
            del v["pf"]
        return t, ticks, "energy", v, ["alarm"] if seq % 17 == 0 else []
    if k < 8:
        return t, ticks, "co2", {"co2": 400 + seq % 3000, "temperature": -5 + (seq % 500) / 10,
                                 "humidity": (seq * 31) % 10000 / 100}, ["retried"] if seq % 7 == 0 else []
    return t, ticks, "pm", {"pm1": seq % 50, "pm25": seq % 300, "pm10": seq % 999}, []


def payload(seq):
    t, ticks, kind, v, flags = reading(seq)
    return wire.encode_reading(seq, t, ticks, BOOT, kind, v, flags)


def add(log):
    seq = log.next_seq
    t, ticks, kind, v, flags = reading(seq)
    log.add(seq, BOOT, t, ticks, kind, v, list(flags))


def state(log):
    """What must survive a power cut: (last committed seq, cursor, dropped)."""
    return (log._committed - 1, log.cursor, log.dropped)


def verify(log, what):
    """Every pending committed reading is there once, in order, intact, from cursor + 1 with no gap."""
    last = log._committed - 1
    got = log.pending(100000, 1 << 30)
    seqs = [r[0] for r in got]
    check(seqs == list(range(log.cursor + 1, last + 1)), "%s: pending seqs %r..%r (%d), expected %d..%d" % (
        what, seqs[:1], seqs[-1:], len(seqs), log.cursor + 1, last))
    for seq, p in got:
        check(p == payload(seq), "%s: reading %d damaged: %r != %r" % (what, seq, p, payload(seq)))
    check(log.depth == log.next_seq - 1 - log.cursor, "%s: depth" % what)


def workload():
    """Adds (committed by window and by full frames), flushes, acks, merges into segments, drops by
    capacity, reboots with other capacities."""
    ops = [("open", 60)]
    a = lambda k: ops.extend([("add", 0)] * k)
    a(20); ops += [("pending", 0), ("ack", 5)]
    a(25); ops += [("flush", 0), ("ack", 30)]  # segments merged, then acknowledged
    a(40)  # committed depth > 60: drops
    ops += [("pending", 0), ("ack", 85)]  # everything acked: files deleted, next_seq from the state
    a(9); ops += [("open", 60)]  # a plain reboot: the uncommitted readings are gone
    a(30); ops += [("flush", 0), ("open", 20)]  # shrink: fold drops and persist at boot
    a(12); ops += [("open", 90)]  # grow
    a(50); ops += [("ack", 150), ("flush", 0), ("ack", 1000)]  # ack beyond the last committed is clamped
    a(8)
    return ops


def new_log(cap):
    return Log(MNT, capacity=cap, window_s=60, seg_chunks=4)


def step(log, op):
    if op[0] == "open":
        return new_log(op[1])
    if op[0] == "add":
        add(log)
    elif op[0] == "flush":
        log.flush()
    elif op[0] == "ack":
        log.ack(op[1])
    elif op[0] == "pending":
        verify(log, "pending")
    return log


def reference(ops, image):
    """The workload without cuts: per op, (floor, dropped at floor, last committed) after it."""
    bd = BlockDev(None, block_size=4096, block_count=32, data=bytearray(image))
    mount(bd, MNT)
    log, out = None, []
    for op in ops:
        log = step(log, op)
        out.append((log._floor, log._drop0, log._committed - 1, log.capacity))
    return out, bd.writes


def rebooted(ref, cap):
    floor, drop0, last, _ = ref
    cursor = max(floor, last - cap)
    return (last, cursor, drop0 + cursor - floor)


# micropython_plugin.run_micropython_shards: VM k of n cuts at every n-th write from the (k+1)-th.
SHARD, SHARDS = map(int, (os.getenv("AIRWATT_SHARD") or "0/1").split("/"))


def case_power_cuts():
    """Cut the power at every flash write and erase of the workload; after each, reboot: the log holds the
    committed state from just before or just after the operation in flight, every reading intact, no gap,
    and it keeps working (3 more readings, flush, ack, reboot)."""
    keep = int(sys.argv[2])
    ops = workload()
    image = bytes(fresh(MNT).data)
    ref, total = reference(ops, image)
    tried, kinds = 0, {}
    for n in range(1 + SHARD, total + 1, SHARDS):
        bd = BlockDev(None, block_size=4096, block_count=32, data=bytearray(image))
        mount(bd, MNT)
        bd.cut_after_writes, bd.cut_keep = n, keep
        log, i = None, 0
        try:
            for i in range(len(ops)):
                log = step(log, ops[i])
        except PowerCut:
            pass
        else:
            raise AssertionError("cut %d never happened" % n)
        tried += 1
        op = ops[i][0]
        merging = log is not None and log._nchunks >= 3 and op in ("add", "flush")
        for k in (op + ("-merge" if merging else ""), bd.cut_kind):
            kinds[k] = kinds.get(k, 0) + 1
        cap = ref[i][3]
        bd = bd.power_on()
        mount(bd, MNT)
        log = new_log(cap)
        st = state(log)
        ok = [rebooted(ref[i], cap)] + ([rebooted(ref[i - 1], cap)] if i else [(0, 0, 0)])
        check(st in ok, "cut %d in op %d %r: (last, cursor, dropped) %r, expected one of %r" % (n, i, ops[i], st, ok))
        verify(log, "cut %d in op %d %r" % (n, i, ops[i]))
        for _ in range(3):
            add(log)
        log.flush()
        log.ack(log.next_seq - 2)
        st = state(log)
        mount(bd, MNT)
        log = new_log(cap)
        check(state(log) == st, "cut %d: after 3 more, flush, ack, reboot: %r != %r" % (n, state(log), st))
        verify(log, "cut %d, then 3 more, reboot" % n)
        # Each cut leaves 128 KB flash images behind; collected here, at a shallow stack, because a collection
        # forced deep in the next cut can find a stale pointer to one of them on the C stack and fail to find
        # 128 KB in one piece.
        gc.collect()
    print("CUTS %d WRITES %d keep=%d %r" % (tried, total, keep, sorted(kinds.items())))


def case_full_cuts():
    """The flash fills up before capacity does: oldest files dropped (counted) for room. Cut at every write of
    that: after reboot, every committed reading is there or was counted as dropped (oldest first), never both."""
    keep = int(sys.argv[2])
    image = bytes(fresh(MNT, 512, 40).data)
    # The writes before the flash first fills are the power_cuts case's ground: start 40 writes before that.
    bd = BlockDev(None, block_size=512, block_count=40, data=bytearray(image))
    mount(bd, MNT)
    log = Log(MNT, capacity=100000, window_s=60, seg_chunks=3)
    while not log.dropped:
        w = bd.writes
        add(log)
    first = max(1, w - 40)
    n, tried = first + SHARD, 0
    while True:
        bd = BlockDev(None, block_size=512, block_count=40, data=bytearray(image))
        mount(bd, MNT)
        bd.cut_after_writes, bd.cut_keep = n, keep
        log, committed, cursor0, dropped0 = None, 0, 0, 0
        try:
            log = Log(MNT, capacity=100000, window_s=60, seg_chunks=3)
            for _ in range(700):
                cursor0, dropped0 = log.cursor, log.dropped
                add(log)
                committed = log._committed - 1
        except PowerCut:
            pass
        else:
            check(log.dropped > 0, "the flash never filled up")
            total = bd.writes
            break
        tried += 1
        bd = bd.power_on()
        mount(bd, MNT)
        log = Log(MNT, capacity=100000, window_s=60, seg_chunks=3)
        last, what = log._committed - 1, "cut %d after seq %d committed" % (n, committed)
        check(last >= committed and last <= committed + 20, "%s: last %d" % (what, last))
        check(log.cursor == log.dropped and log.cursor >= cursor0 and log.dropped >= dropped0,
              "%s: cursor %d dropped %d" % (what, log.cursor, log.dropped))
        verify(log, what)
        add(log)
        log.flush()
        verify(log, what + ", one more")
        n += SHARDS
        gc.collect()
    print("FULLCUTS %d FROM %d WRITES %d keep=%d dropped %d of %d"
          % (tried, first, total, keep, log.dropped, log.next_seq - 1))


def old_store(n, acked):
    import store
    s = store.Store(MNT, capacity=100000, seg_records=16)
    for seq in range(1, n + 1):
        s.append(seq, payload(seq))
    s.ack(acked)


def case_migrate_cuts():
    """A board on the old firmware (store.Store) holding pending readings is re-flashed: the new log takes them
    over with their seqs. Cut at every write of the migration: after reboot, every pending reading is there."""
    keep = int(sys.argv[2])
    bd0 = BlockDev(None, block_size=4096, block_count=32)
    os.VfsLfs2.mkfs(bd0)
    mount(bd0, MNT)
    old_store(150, 20)
    image = bytes(bd0.data)
    n, tried = 1 + SHARD, 0
    while True:
        bd = BlockDev(None, block_size=4096, block_count=32, data=bytearray(image))
        mount(bd, MNT)
        bd.cut_after_writes, bd.cut_keep = n, keep
        try:
            log = new_log(0)
        except PowerCut:
            pass
        else:
            bd.cut_after_writes, total = None, bd.writes
            break
        tried += 1
        bd = bd.power_on()
        mount(bd, MNT)
        log = new_log(0)
        check(log.cursor == 20 and log._committed - 1 == 150 and log.dropped == 0, "cut %d: %r" % (n, state(log)))
        verify(log, "cut %d in the migration" % n)
        check([x for x in os.listdir(MNT) if x.startswith("seg-") or x == "state"] == [], "old files left")
        n += SHARDS
    check(log.cursor == 20 and log._committed - 1 == 150, "migrated: %r" % (state(log),))
    verify(log, "migrated")
    add(log)
    log.flush()
    check(log._committed - 1 == 151, "new readings follow on")
    print("MIGRATECUTS %d WRITES %d keep=%d" % (tried, total, keep))


def case_basics():
    bd = fresh(MNT)
    log = new_log(1000)
    check(log.next_seq == 1 and log.depth == 0 and log.pending(10, 1000) == [], "empty log")
    try:
        log.add(2, BOOT, None, 0, "pm", {"pm1": 1}, [])
        check(False, "seq 2 accepted before 1")
    except ValueError:
        pass
    for _ in range(5):
        add(log)
    check(log.depth == 5 and log.uncommitted == 5 and log.pending(10, 1 << 20) == [], "not committed yet")
    mount(bd, MNT)  # a power cut: the window is lost, its seqs reused
    log = new_log(1000)
    check(log.next_seq == 1, "uncommitted readings gone after a cut")
    for _ in range(200):
        add(log)
    check(log.uncommitted < 20 and log.commits > 10, "the window commits: %d commits" % log.commits)
    log.flush()
    verify(log, "200 readings")
    log.ack(50)
    verify(log, "after ack 50")
    log.append(log.next_seq, payload(log.next_seq))  # the v1 JSON path
    log.flush()
    verify(log, "appended as JSON")
    mount(bd, MNT)
    log = new_log(1000)
    verify(log, "reboot")
    check(log.cursor == 50 and log._committed == 202, "state after reboot %r" % (state(log),))
    print("basics checked")



def batch(log, first, frames):
    """The packed bytes stream_pending gives, its pieces copied (they are views of the log's buffers)."""
    return b"".join([bytes(p) for p in log.stream_pending(first, frames)])


def case_stream():
    from protocol import v2
    fresh(MNT)
    log = new_log(100000)
    for _ in range(700):  # frames end where the clock is set (seq 30) and at 255 readings
        add(log)
    log.flush()
    sent, posts = [], 0
    while True:
        first, n, k, frames = log.plan_pending(2000)
        if not n:
            break
        data = batch(log, first, frames)
        got = v2.unpack_all(data, first)
        check(len(data) == k <= 2000, "batch at %d: %d bytes, planned %d" % (first, len(data), k))
        check([r[0] for r in got] == list(range(first, first + n)), "batch at %d: seqs" % first)
        check(v2.pack(got) == data, "batch at %d: not the canonical frames" % first)
        for r in got:
            t, ticks, kind, v, flags = reading(r[0])
            check((r[1], r[2], r[4], r[7]) == (t, ticks, kind, flags), "reading %d: %r" % (r[0], r))
        check(batch(log, first, frames) == data, "batch at %d: streamed twice, other bytes" % first)
        sent += [r[0] for r in got]
        posts += 1
        log.ack(first + n - 1)
    check(sent == list(range(1, 701)) and posts > 3, "every reading once: %d in %d batches" % (len(sent), posts))
    # The sampler commits and merges chunks into segments while a batch streams: the same bytes.
    for _ in range(40):
        add(log)
    log.flush()
    first, n, k, frames = log.plan_pending(2000)
    want = batch(log, first, frames)
    pieces, commits = [], log.commits
    for p in log.stream_pending(first, frames):
        pieces.append(bytes(p))
        if len(pieces) % 7 == 0:
            for _ in range(6):
                add(log)
            log.flush()
    check(b"".join(pieces) == want and log.commits > commits + 4, "streamed while the log merged: other bytes")
    # The batch's oldest readings leave the log between the plan and the send: refused, not sent wrong.
    first, n, k, frames = log.plan_pending(2000)
    log.ack(log._end(0))  # its first file deleted (a drop when the flash is full does the same)
    check(log._files[0] > first, "the batch's first file is gone")
    try:
        batch(log, first, frames)
        check(False, "a batch streamed after its readings left the log")
    except ValueError as e:
        check("left the log" in str(e), "the error says why: %s" % e)
    # A frame at the head of the backlog goes bad on the flash after boot: the readings of its file (here a
    # segment) count as dropped and the batch starts after them; the backlog does not wait on them for ever.
    log.ack(log._committed - 1)
    for _ in range(40):
        add(log)
    log.flush()
    head = log.cursor + 1
    check(log._files[0] == head and len(log._files) > 1, "the backlog starts a file, another follows")
    gone = log._end(0) + 1 - head
    with open(log._path(head, log._counts[0]), "r+b") as f:
        f.seek(12)
        b = f.read(1)
        f.seek(12)
        f.write(bytes([b[0] ^ 0x10]))
    dropped = log.dropped
    first, n, k, frames = log.plan_pending(2000)
    got = v2.unpack_all(batch(log, first, frames), first)
    check(first == head + gone and n == 40 - gone and [r[0] for r in got] == list(range(first, first + n)),
          "after the damaged frame: batch %d+%d, expected %d+%d" % (first, n, head + gone, 40 - gone))
    check(log.dropped == dropped + gone and log.cursor == first - 1, "the damaged readings count as dropped")
    log.ack(first + n - 1)
    check(log.depth == 0 and log.plan_pending(2000)[1] == 0, "all sent")
    log = new_log(100000)
    check(log.dropped == dropped + gone and log.depth == 0, "the drop persists: %r" % (state(log),))
    print("stream checked: 700 readings in %d batches" % posts)


def case_merge_nomem():
    """A merge that finds no heap for its files (a fragmented heap) loses no reading: the commit stands, the chunks
    stay a valid log, and a later commit merges them."""
    import clog
    bd = fresh(MNT)
    log = new_log(1000)
    real = open

    def no_heap(path, mode="r"):
        if path.endswith("/s.tmp"):
            raise MemoryError("memory allocation failed, allocating 304 bytes")
        return real(path, mode)

    clog.open = no_heap
    for _ in range(60):
        add(log)  # every 4th commit merges: each fails here
    log.flush()
    check(log._nchunks > 4 and min(log._counts) > 0, "chunks kept: %r" % (log._counts,))
    verify(log, "merges without heap")
    del clog.open
    add(log)
    log.flush()
    check(log._nchunks == 0 and len(log._files) == 1, "merged at the next commit: %r" % (log._counts,))
    verify(log, "merged later")
    mount(bd, MNT)
    log = new_log(1000)
    verify(log, "reboot")
    print("merge without heap checked: %d readings" % (log._committed - 1))


def _ack_trim_first(self, seq):
    # Mutant: acknowledged files deleted before the new cursor is persisted.
    seq = min(seq, self._committed - 1)
    if seq > self.cursor:
        floor, dropped = self._floor, self.dropped
        self._floor = seq
        self._trim()
        self._floor = floor
        statefile.save(self, seq, dropped)


def _merge_in_place(self):
    # Mutant: chunks merged straight into the segment's final name (no tmp + rename), chunks deleted first.
    files, counts = self._files, self._counts
    i = len(files) - self._nchunks
    chunks = files[i:]
    first = chunks[0]
    count = self._end(len(files) - 1) + 1 - first
    frames = []
    for c in chunks:
        with open(self._path(c, 0), "rb") as f:
            frames.append(f.read())
        os.remove(self._path(c, 0))
    with open(self._path(first, -count), "wb") as g:
        for fr in frames:
            g.write(fr)
    del files[i:], counts[i:]
    files.append(first)
    counts.append(-count)
    self._nchunks = 0


def case_mutant():
    """The campaign must catch a log that breaks the rules: proof that it can fail."""
    import clog
    name = sys.argv[2]
    if name == "ack_trim_first":
        clog.Log.ack = _ack_trim_first
    elif name == "merge_in_place":
        clog.Log._consolidate = _merge_in_place
    sys.argv[2] = "0"
    try:
        case_power_cuts()
    except AssertionError as e:
        print("CAUGHT %s: %s" % (name, e))
        return
    raise AssertionError("mutant %s survived" % name)


if __name__ == "__main__":
    globals()["case_" + sys.argv[1]]()
    print("OK")
