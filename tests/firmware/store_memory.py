# MicroPython script for tests/firmware/test_store.py, run under `micropython -X heapsize=65536`:
#   micropython store_memory.py CYCLES
# append/pending/ack cycles on a LittleFS store; prints the allocated heap after gc.collect() at the start
# (after warm-up) and at the end. Kept apart from store_cases.py so its code does not crowd the small heap.
import gc
import os
import sys

from blockdev import BlockDev
from store import Store

cycles = int(sys.argv[1])
gc.collect()  # compile garbage out of the way of the one big block below
bd = BlockDev(None, block_size=512, block_count=32)  # the emulated flash lives in the heap too: 16 KB
os.VfsLfs2.mkfs(bd)
os.mount(os.VfsLfs2(bd), "/data")
s = Store("/data", capacity=20, seg_records=8)
p = b"x" * 120  # a reading's size
seq = 1
peak = 0


def cycle(seq):
    s.append(seq, p)
    got = s.pending(10, 2048)
    if seq % 5 == 0:  # the uplink acks every fifth cycle: the buffer holds 1..5 readings
        s.ack(got[-1][0])


for _ in range(300):  # warm-up: segments roll over and are deleted, lfs caches settle
    cycle(seq)
    seq += 1
gc.collect()
start = gc.mem_alloc()
for k in range(cycles):
    cycle(seq)
    seq += 1
    if k % 1000 == 999:
        gc.collect()
        peak = max(peak, gc.mem_alloc() - start)
gc.collect()
end = gc.mem_alloc()
print("MEM start=%d end=%d growth=%d max_growth=%d cycles=%d next_seq=%d depth=%d" % (
    start, end, end - start, peak, cycles, s.next_seq, s.depth))
print("OK")
