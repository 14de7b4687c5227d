# Migration from the old firmware's reading buffer (store.Store: seg-*.log and `state`) to the compact log, run by
# clog.Log at boot when those files are there. Kept apart so the board's heap holds it only that once.
import os

import statefile
from clog_boot import _fsize


def migrate(log):
    """Take over the pending readings of an old store.Store in the same folder, seqs kept: write the state
    with the old cursor first, then copy what is not yet here, then delete the old files. A cut anywhere
    resumes here at the next boot; nothing is copied twice (seqs below next_seq are skipped)."""
    root = log.root
    old = []
    for name in os.listdir(root):
        if name.startswith("seg-") and name.endswith(".log"):
            old.append(int(name[4:-4]))
    if not old and _fsize(root + "/state") < 0:
        return 0
    import store

    s = store.Store(root, capacity=1 << 30)  # no drops on the way: keep all it holds
    if not log._files and log._floor < s.cursor and log._pk.count == 0:
        log.next_seq = log._committed = s.cursor + 1
        statefile.save(log, s.cursor, s.dropped)
    moved = 0
    while True:
        recs = s.pending(50, 1 << 20)
        todo = [r for r in recs if r[0] >= log.next_seq]
        if not recs:
            break
        for seq, p in todo:
            log.append(seq, p)
            moved += 1
        log.commit()
        s.ack(recs[-1][0])
    for name in os.listdir(root):
        if name.startswith("seg-") and name.endswith(".log"):
            os.remove(root + "/" + name)
    os.remove(root + "/state")
    return moved
