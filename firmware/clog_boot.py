# Boot-only part of the compact flash log (clog.py): rebuilds the log from its files after any reset or power cut,
# sizes the default capacity from the flash, and starts the takeover of the old store's readings after a re-flash.
# clog.Log runs it once, then drops the module from the heap.
import os
import sys

import statefile
from clog import BYTES_PER_READING, KEEP_FREE


def _fsize(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def recover(log):
    """Rebuild the log's state from the files on the flash at boot: torn commits and cut merges dropped."""
    # LittleFS finishes a rename cut short by power loss only at its first write after mount; until then a
    # listing can miss a file (found by the power-cut campaign). One write first makes the listing whole.
    try:
        os.mkdir(log.root + "/fix.tmp")
        os.rmdir(log.root + "/fix.tmp")
    except OSError:
        pass  # a full flash: recover from what the listing shows
    segs, chunks = [], []
    for name in os.listdir(log.root):
        if name.endswith(".tmp"):  # a segment or state replace cut short by power loss
            try:
                os.remove(log.root + "/" + name)
            except OSError:
                os.rmdir(log.root + "/" + name)
        elif name[0] == "s" and "_" in name and name[1:9].isdigit():
            segs.append((int(name[1:9]), -int(name[10:])))
        elif name[0] == "j" and len(name) == 9 and name[1:].isdigit():
            chunks.append(int(name[1:]))
    files = segs
    for c in chunks:
        path = log._path(c, 0)
        covered = False
        for s in segs:
            if s[0] <= c < s[0] - s[1]:
                covered = True
        if not covered:
            with open(path, "rb") as f:
                n = log._read_frame(f, 0)
            if n and _fsize(path) == n:
                files.append((c, log._fb[1]))
                continue
        os.remove(path)  # copied into a segment already, or a commit cut short (empty or torn)
    files.sort()
    log._files = [f[0] for f in files]
    log._counts = [f[1] for f in files]
    log._nchunks = 0
    for f in files:
        if f[1] > 0:
            log._nchunks += 1
    st = statefile.read(log._state, log._st)
    ok = st is not None
    floor, dropped, cap = st if ok else (files[0][0] - 1 if files else 0, 0, 0)
    if not log.capacity:
        log.capacity = cap or _flash_capacity(log)
    last = log._end(len(files) - 1) if files else 0
    last = max(last, floor)
    log.next_seq = log._committed = last + 1
    log._floor, log._drop0 = floor, dropped
    if not ok or cap != log.capacity:
        # Fold the drops made under the old capacity before the new one applies.
        cursor = max(floor, last - cap) if cap else floor
        statefile.save(log, cursor, dropped + cursor - floor)
    log._trim()

def _flash_capacity(log):
    """Readings the flash holds with KEEP_FREE of it left free, counting this log's own files as free."""
    st = os.statvfs(log.root)
    bsize, total, free = st[0], st[2], st[3]
    own = 0
    for name in os.listdir(log.root):
        n = _fsize(log.root + "/" + name)
        if n > 0:
            own += (n + bsize - 1) // bsize
    room = (free + own - int(total * KEEP_FREE)) * bsize
    return min(max(room // BYTES_PER_READING, 100), 10000000)  # 10M: a host's disk (unix port), not flash


def migrate(log):
    """Take over the pending readings of an old store.Store in the log's folder (clog_migrate.py, loaded only
    when its files are there); returns how many were copied."""
    for name in os.listdir(log.root):
        if name == "state" or name.startswith("seg-"):
            import clog_migrate
            n = clog_migrate.migrate(log)
            clog_migrate = None
            for m in ("clog_migrate", "store"):
                sys.modules.pop(m, None)
            return n
    return 0
