"""Issue 3 item 6: the steady loop (sample, store, upload) runs 10,000 cycles on the unix port in a 64 KB heap
(`micropython -X heapsize=65536`) with no growth of the allocated heap after gc.collect().

What runs (tests/firmware/board_memory.py): the real sampler, the real store on LittleFS (os.VfsLfs2 over a
file-backed block device) and the real uplink, compiled with mpy-cross as a board gets them, posting every cycle
over loopback HTTP to a scripted agent in this process that checks each batch. Only the sensors are fakes.

Tolerance: gc.mem_alloc() after gc.collect() at each of ten checkpoints (after 1,000 warm-up cycles) may exceed
the first by at most 256 bytes. MicroPython's collector is conservative (it scans the C stack), so a stale
pointer can keep one short-lived object alive at a checkpoint; a leak would show as a rise over the 9,000
measured cycles of at least one 16-byte GC block per cycle, i.e. >= 144 KB, which 256 bytes cannot hide.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
    sources = [(ROOT / "firmware" / (m + ".py"), out / (m + ".mpy")) for m in ("sampler", "store", "uplink")]
    sources += [(ROOT / "protocol" / (m + ".py"), out / "protocol" / (m + ".mpy"))
                for m in ("__init__", "fields", "wire", "answer", "check")]
    sources.append((HERE / "board_memory.py", out / "board_memory.mpy"))
    for src, dst in sources:
        subprocess.run([mpy_cross, "-s", src.stem, "-o", str(dst), str(src)], check=True, capture_output=True)


def test_steady_loop_runs_10000_cycles_in_64k_heap_without_growth(tmp_path):
    compile_board(tmp_path / "mpy")
    server = Server([answer()])
    try:
        result = run_micropython(["-m", "board_memory", str(tmp_path / "flash.bin"), str(server.port), str(CYCLES),
                                  str(WARMUP)], extra_paths=(tmp_path / "mpy",), heapsize="65536", timeout=240)
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
    print("heap allocated after warm-up %d bytes, max growth %d, free %d of 65536" % (first, growth, points[-1][2]))
    # Every cycle's upload reached the agent, signed and valid, oldest first, no reading twice or missing.
    assert len(server.requests) == CYCLES
    seqs = [r["seq"] for b in server.batches() for r in b["readings"]]
    assert seqs == list(range(1, 3 * CYCLES + 1))
