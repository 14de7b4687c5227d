"""Issue 3 item 6 and issue 11 item 4: the board's loop (sample, log, upload) runs 10,000 cycles on the unix port
with no growth of the allocated heap after gc.collect(), catch-up with full 8 KB batches included.

It runs in a 64 KB heap (`micropython -X heapsize=65536`), the goal. Measured here on 2026-11-28: 57,760 bytes
allocated after warm-up, 59,488 at most with a batch planned; 18 of 18 runs passed at 64 KB (8 of them four at
a time on two cores), and 1 of 6 at 63.5 KB, so the margin is under 512 bytes: code that the loop loads, or
objects that live through a send, must not grow without a look at this test. What brought it from 65 KB to 64:
- the HTTP exchange waits on its socket without allocating (select's ipoll, no coroutine per wait) and sends a
  body's parts in one coroutine, and the uplink collects the garbage of signing before the send, so that the
  send's longer-lived objects (its coroutines, the socket) land low and whole;
- a v2 body's head and tail are made as they are sent, not held through the send;
- the log merges chunks without a list slice beside its two open files, and a merge that finds no heap leaves
  the chunks for a later commit instead of failing the reading that triggered it.
At 63.5 KB a LittleFS file's 304-byte buffer or a frame's 336-byte reader finds no room during the send.

Before (2026-11-27): it failed below 65 KB and ran at 68 KB. It was 62,752 and 64,256 bytes, failing below 69 KB,
while the uplink kept a batch's packed readings in a 6 KB buffer: the log now plans a batch and gives its bytes
again from the flash, a record at a time, as the body is signed and as it is sent. Before that (70,400 and 72,224
bytes, failing below 79 KB): the v2 body went whole into RAM, the field table stayed loaded (3.5 KB), the uplink
used asyncio's streams (1.8 KB of classes), the RTC's date maths lived in clock.py, and the log's file list was a
list per file.

Where the bytes go on this 64-bit port (2026-11-27, after gc.collect() at a 128 KB heap): 46.5 KB once everything
is imported, of which the modules' code and tables (asyncio 4.2, canonical 2.8, answer 3.7, clock 1.3, packed
8.0 with the field table's rows it keeps, sampler 3.2, statefile 1.2, clog 6.2, uplink 7.2) and about 345
interned names in 5 qstr pools, 10 KB (the 5th pool, 3.5 KB, comes with the 301st name: a board's boot modules
and this test's own names take it past that whatever the loop does); then LittleFS mounted on this test's block
device 2.9 KB, the log 1.5 with the uplink's read-back buffers, the sampler with its three sensors 1.9, and the
first cycle 2.6 (asyncio's wait_for for the sensors, 1 KB; the sampler's state). While a batch goes out: the
generators that read it back from the flash (the uplink's pieces, the log's walk, packed.readings), the reading in
hand, the HMAC and the socket, about 3.7 KB. Most of the code is one or two 32-byte GC blocks per function,
method, name and constant.

What runs (tests/firmware/board_memory.py): the real sampler, the real compact log (clog.Log) on LittleFS
(os.VfsLfs2 over a file-backed block device) and the real uplink in protocol v2 (the board's default), from the
board's /lib as `airwatt flash` compiles it (flash_cmd.firmware_image: every module a board holds), posting
over loopback HTTP to a scripted agent in this process that checks each batch. Only the sensors are fakes. In
each stretch of 900 cycles the agent is unreachable for 400 (nothing is sent, 1,200 readings wait on flash); the
backlog then drains oldest first in full batches while the sampler goes on.

Tolerance: gc.mem_alloc() after gc.collect() at each of ten checkpoints (after 1,000 warm-up cycles, each at the
same point of a stretch, caught up) may exceed the first by at most 512 bytes. MicroPython's collector is
conservative (it scans the C stack), so a stale pointer can keep one short-lived object alive at a checkpoint:
since the uplink reads each batch back from the flash, that is at times 416 bytes (about one checkpoint in three
on 2026-11-28, back to the first figure at the next; a LittleFS file with its buffer, or a generator, is that
size). A leak would show as a rise over the 9,000 measured cycles of at least one 16-byte GC block per cycle,
i.e. >= 144 KB, which 512 bytes cannot hide.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from airwatt.agent import flash_cmd
from micropython_plugin import find_micropython, run_micropython
from test_uplink import Server, answer

HERE = Path(__file__).resolve().parent
CYCLES = 10000
WARMUP = 1000
TOLERANCE = 512


def compile_board(out: Path) -> Path:
    """The board's /lib as `airwatt flash` writes it (every firmware module and the board's protocol modules,
    compiled with mpy-cross), plus this loop compiled beside it; returns the folder to put on the VM's path."""
    lib = out / "lib"
    for path, data in flash_cmd.firmware_image().items():
        if path.startswith("/lib/"):
            (out / path[1:]).parent.mkdir(parents=True, exist_ok=True)
            (out / path[1:]).write_bytes(data)
    mpy_cross = str(Path(find_micropython()).with_name("mpy-cross"))
    subprocess.run([mpy_cross, "-s", "board_memory", "-o", str(lib / "board_memory.mpy"),
                    str(HERE / "board_memory.py")], check=True, capture_output=True)
    return lib


HEAP = 65536  # 64 KB, the goal: see above


def test_board_loop_with_catch_up_runs_10000_cycles_without_heap_growth(tmp_path):
    lib = compile_board(tmp_path)
    server = Server([answer()])
    try:
        # Run in tmp_path with lib/ on the path: each module's file name (an interned string in the heap) is then
        # lib/NAME.mpy, about as long as a board's /lib/NAME.mpy, not this machine's long temporary path.
        result = run_micropython(["-m", "board_memory", "flash.bin", str(server.port), str(CYCLES), str(WARMUP)],
                                 cwd=tmp_path, extra_paths=(lib.relative_to(tmp_path),), heapsize=str(HEAP),
                                 timeout=240)
    finally:
        server.close()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(r"^DONE %d next_seq %d depth 0 dropped 0 errors \{.*\}$" % (CYCLES, 3 * CYCLES + 1),
                     result.stdout, re.M), out[-3000:]
    assert "'energy': 0" in result.stdout and "'pm': 0" in result.stdout and "'co2': 0" in result.stdout
    points = [(int(c), int(a), int(f)) for c, a, f in re.findall(r"^ALLOC (\d+) (\d+) (\d+)$", result.stdout, re.M)]
    assert [c for c, _, _ in points] == list(range(WARMUP, CYCLES + 1, (CYCLES - WARMUP) // 10)), points
    first = points[0][1]
    growth = max(a for _, a, _ in points) - first
    assert growth <= TOLERANCE, "allocated heap grew by %d bytes: %s" % (growth, points)
    print("heap allocated after warm-up %d bytes, max growth %d, free %d of %d" % (first, growth, points[-1][2], HEAP))
    peak, body, full = map(int, re.search(r"^PEAK (\d+) body (\d+) full batches (\d+)$", result.stdout, re.M).groups())
    print("peak heap with a batch planned %d bytes, largest body %d, full batches %d" % (peak, body, full))
    assert full >= 10 and 7500 < body <= 8192, "catch-up sent full 8 KB batches"
    # Every reading reached the agent, signed, valid and canonical, oldest first, none twice or missing.
    seqs = [r["seq"] for b in server.batches() for r in b["readings"]]
    assert seqs == list(range(1, 3 * CYCLES + 1))
