"""The flash store (firmware/store.py) on a real LittleFS (os.VfsLfs2) on the MicroPython VM, over the emulated
flash of emulator/board/blockdev.py. CPython has no VfsLfs2, so each test runs a MicroPython script
(store_cases.py, store_memory.py) and checks what it printed; the block device itself is also checked here on
CPython, where the emulator's host side may use it."""

import re
import sys
from pathlib import Path

import pytest

from micropython_plugin import ROOT, case_output, run_micropython

HERE = Path(__file__).resolve().parent
BOARD = ROOT / "emulator" / "board"
MIN_CUTS = 800  # the workload makes 847 flash writes/erases today; fewer would mean the battery shrank


def vm(script: str, *args, heapsize: str | None = None) -> str:
    result = run_micropython([str(HERE / script), *map(str, args)], extra_paths=(BOARD,), heapsize=heapsize)
    return case_output(result)


def test_append_pending_ack_basics():
    assert "basics checked" in vm("store_cases.py", "basics")


def test_capacity_drops_oldest_and_persists_the_dropped_count():
    assert "capacity checked" in vm("store_cases.py", "capacity")


def test_long_random_run_with_reboots_matches_the_model():
    out = vm("store_cases.py", "random")
    print(out)
    assert "random checked" in out


def test_reboot_from_flash_file_recovers_and_cuts_only_a_torn_tail(tmp_path):
    flash = tmp_path / "flash.bin"
    assert "reboot checked" in vm("store_cases.py", "reboot", flash)
    assert flash.stat().st_size == 4096 * 32


@pytest.mark.parametrize("keep", [0, 33], ids=["cut-before-write", "torn-write-33-bytes"])
def test_power_cut_at_every_flash_write(keep):
    out = vm("store_cases.py", "power_cuts", 1, 0, keep)
    print(out)  # pytest -s shows how many cuts were tried, and where they hit
    m = re.search(r"CUTS (\d+) WRITES (\d+) keep=(\d+) (.*)", out)
    assert m, out
    cuts, writes = int(m[1]), int(m[2])
    assert cuts == writes >= MIN_CUTS  # every write/erase of the workload was cut once
    for kind in ("'append'", "'append-dropping'", "'ack'", "'open'", "'open-dropping'", "'erase'", "'write'"):
        assert kind in m[4], "no cut hit %s: %s" % (kind, m[4])


def test_full_flash_drops_oldest_segments_and_counts_them():
    assert "flash full checked" in vm("store_cases.py", "flash_full")


def test_power_cut_at_every_flash_write_while_the_flash_is_full():
    out = vm("store_cases.py", "flash_full_cuts", 33)
    print(out)
    m = re.search(r"FULLCUTS (\d+) keep=33", out)
    assert m and int(m[1]) >= 500, out


@pytest.mark.parametrize("mutant", ["append_unsynced", "scan_loses_last", "trim_before_state"])
def test_power_cut_battery_catches_a_broken_store(mutant):
    # The battery's checks can fail: each deliberately broken store is caught.
    out = vm("store_cases.py", "mutant", mutant)
    assert "CAUGHT " + mutant in out, out


def test_memory_does_not_grow_over_10000_cycles_in_a_64k_heap():
    out = vm("store_memory.py", 10000, heapsize="65536")
    print(out)
    m = re.search(r"MEM start=(\d+) end=(\d+) growth=(-?\d+) max_growth=(-?\d+) cycles=(\d+) next_seq=(\d+)", out)
    assert m, out
    assert int(m[5]) == 10000 and int(m[6]) == 10301  # 300 warm-up + 10,000 measured appends all landed
    # gc.mem_alloc() counts 16-byte GC blocks. A leak of even one small object per cycle would show as
    # >= 160,000 bytes; 64 bytes (4 blocks) allows for one-off lazy allocations and nothing per cycle.
    assert int(m[3]) <= 64 and int(m[4]) <= 64, out


# The block device on CPython (the emulator's host side loads it too).

@pytest.fixture
def blockdev():
    sys.path.insert(0, str(BOARD))
    try:
        import blockdev as mod
        yield mod
    finally:
        sys.path.remove(str(BOARD))


def test_blockdev_protocol_and_file_persistence(blockdev, tmp_path):
    path = str(tmp_path / "flash.bin")
    bd = blockdev.BlockDev(path, block_size=512, block_count=8)
    assert (bd.ioctl(4, 0), bd.ioctl(5, 0), bd.ioctl(1, 0), bd.ioctl(3, 0)) == (8, 512, 0, 0)
    buf = bytearray(16)
    bd.readblocks(2, buf, 100)
    assert buf == b"\xff" * 16  # new flash is erased
    bd.writeblocks(2, b"hello", 100)
    bd.readblocks(2, buf, 98)
    assert buf[:9] == b"\xff\xffhello\xff\xff"
    bd.writeblocks(3, bytes(range(256)) * 2)  # simple protocol: erase + write a whole block
    assert bd.writes == 3  # the write above, then the implied erase and the write
    bd.writeblocks(2, b"\x0f\xf0", 100)  # NOR: programming only clears bits, without an erase old & new lands
    bd.readblocks(2, buf, 100)
    assert buf[:5] == bytes([ord("h") & 0x0F, ord("e") & 0xF0]) + b"llo"
    bd.track_wear()
    bd.ioctl(6, 2)
    bd.ioctl(6, 2)
    bd.ioctl(6, 5)
    assert (bd.erase_count(2), bd.erase_count(5), bd.max_erases()) == (2, 1, 2)
    bd.writeblocks(2, b"hello", 100)
    bd.close()
    again = blockdev.BlockDev(path, block_size=512, block_count=8)
    again.readblocks(2, buf, 100)
    assert buf[:5] == b"hello"
    assert again.ioctl(6, 2) == 0  # erase
    again.readblocks(2, buf, 100)
    assert buf == b"\xff" * 16
    with pytest.raises(OSError):
        again.readblocks(8, buf)  # outside the chip
    with pytest.raises(ValueError):
        blockdev.BlockDev(path, block_size=512, block_count=9)  # the file has another size


def test_blockdev_power_cut_lands_a_prefix_then_stays_dead(blockdev, tmp_path):
    path = str(tmp_path / "flash.bin")
    bd = blockdev.BlockDev(path, block_size=512, block_count=4)
    bd.cut_after_writes, bd.cut_keep = 2, 3
    bd.writeblocks(0, b"first", 0)
    with pytest.raises(blockdev.PowerCut):
        bd.writeblocks(1, b"second", 0)
    assert bd.dead and bd.cut_kind == "write"
    with pytest.raises(blockdev.PowerCut):  # nothing reaches the flash once the power is gone
        bd.writeblocks(0, b"late", 0)
    with pytest.raises(blockdev.PowerCut):
        bd.ioctl(6, 0)
    on = bd.power_on()
    buf = bytearray(6)
    on.readblocks(1, buf, 0)
    assert buf == b"sec\xff\xff\xff"  # only the first cut_keep bytes of the cut write landed
    on.readblocks(0, buf, 0)
    assert buf == b"first\xff"
    on.close()
    from_file = blockdev.BlockDev(path, block_size=512, block_count=4)
    from_file.readblocks(1, buf, 0)
    assert buf == b"sec\xff\xff\xff"  # and the file holds the same
    from_file.writeblocks(1, b"x" * 512)  # simple protocol: erase, then program
    from_file.cut_after_writes = 3
    with pytest.raises(blockdev.PowerCut):
        from_file.ioctl(6, 1)  # a cut erase leaves the block as it was (cut_keep = 0)
    assert from_file.cut_kind == "erase"
    after = from_file.power_on()
    after.readblocks(1, buf, 0)
    assert buf == b"xxxxxx"
