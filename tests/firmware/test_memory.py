"""Issue 3 item 6 and issue 11 item 4: the board's loop (sample, log, upload) runs 10,000 cycles on the unix port
with no growth of the allocated heap after gc.collect(), catch-up with full 8 KB batches included.

The goal is a 64 KB heap (`micropython -X heapsize=65536`). The board's loop does not fit it yet: its code (clock,
sampler, the compact log, the uplink and the protocol modules they load, about 36 KB on this 64-bit port) plus the
8 KB body buffer, LittleFS and asyncio come to about 69 KB allocated. So the loop runs in 80 KB; the 64 KB goal
stays open in issue 11 rather than being carried here as an expected failure.

What runs (tests/firmware/board_memory.py): the real sampler, the real compact log (clog.Log) on LittleFS
(os.VfsLfs2 over a file-backed block device) and the real uplink in protocol v2 (the board's default), compiled
with mpy-cross as a board gets them, posting over loopback HTTP to a scripted agent in this process that checks
each batch. Only the sensors are fakes. In each stretch of 900 cycles the agent is unreachable for 400 (nothing is
sent, 1,200 readings wait on flash); the backlog then drains oldest first in full batches while the sampler goes on.

Tolerance: gc.mem_alloc() after gc.collect() at each of ten checkpoints (after 1,000 warm-up cycles, each at the
same point of a stretch, caught up) may exceed the first by at most 256 bytes. MicroPython's collector is
conservative (it scans the C stack), so a stale pointer can keep one short-lived object alive at a checkpoint; a
leak would show as a rise over the 9,000 measured cycles of at least one 16-byte GC block per cycle, i.e.
>= 144 KB, which 256 bytes cannot hide.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from micropython_plugin import ROOT, find_micropython, run_micropython
from test_uplink import Server, answer

HERE = Path(__file__).resolve().parent
CYCLES = 10000
WARMUP = 1000
TOLERANCE = 256


def compile_board(out: Path) -> None:
    """mpy-cross the modules the loop uses; -s keeps each module's source name short (one interned string)."""
    mpy_cross = str(Path(find_micropython()).with_name("mpy-cross"))
    (out / "protocol").mkdir(parents=True)
    sources = [(ROOT / "firmware" / (m + ".py"), out / (m + ".mpy"))
               for m in ("clock", "sampler", "clog", "clog_boot", "v1", "uplink")]
    sources += [(ROOT / "protocol" / (m + ".py"), out / "protocol" / (m + ".mpy"))
                for m in ("__init__", "fields", "canonical", "wire", "answer", "check", "packed")]
    sources.append((HERE / "board_memory.py", out / "board_memory.mpy"))
    for src, dst in sources:
        subprocess.run([mpy_cross, "-s", src.stem, "-o", str(dst), str(src)], check=True, capture_output=True)


HEAP = 81920


def test_board_loop_with_catch_up_runs_10000_cycles_without_heap_growth(tmp_path):
    compile_board(tmp_path / "mpy")
    server = Server([answer()])
    try:
        result = run_micropython(["-m", "board_memory", str(tmp_path / "flash.bin"), str(server.port), str(CYCLES),
                                  str(WARMUP)], extra_paths=(tmp_path / "mpy",), heapsize=str(HEAP), timeout=240)
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
    print("peak heap with a batch built %d bytes, largest body %d, full batches %d" % (peak, body, full))
    assert full >= 10 and 7500 < body <= 8192, "catch-up sent full 8 KB batches"
    # Every reading reached the agent, signed, valid and canonical, oldest first, none twice or missing.
    seqs = [r["seq"] for b in server.batches() for r in b["readings"]]
    assert seqs == list(range(1, 3 * CYCLES + 1))
