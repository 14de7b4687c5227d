"""The compact flash log (firmware/clog.py) on a real LittleFS (os.VfsLfs2) on the MicroPython VM, over the
emulated NOR flash of emulator/board/blockdev.py: the power-cut guarantee re-proved on the new format. Each test
runs clog_cases.py and checks what it printed (pytest -s shows the number of cuts and where they hit)."""

import re

import pytest

from micropython_plugin import case_output, run_micropython, run_micropython_shards
from test_store import BOARD, HERE


def vm(*args, heapsize: str | None = None) -> str:
    result = run_micropython([str(HERE / "clog_cases.py"), *map(str, args)], extra_paths=(BOARD,),
                             heapsize=heapsize, timeout=600)
    return case_output(result)


def shards(*args, heapsize: str | None = None) -> list[str]:
    """A power-cut campaign of clog_cases.py split over the cores (micropython_plugin.run_micropython_shards):
    each VM's output."""
    outs = []
    for result in run_micropython_shards([str(HERE / "clog_cases.py"), *map(str, args)], extra_paths=(BOARD,),
                                         heapsize=heapsize, timeout=600):
        outs.append(case_output(result))
        print(outs[-1])
    return outs


def test_window_commit_flush_ack_reboot_basics():
    assert "basics checked" in vm("basics")


def test_a_batch_streams_from_the_flash_as_canonical_frames_even_while_the_log_merges():
    """The uplink's v2 body is planned, then read back from the flash twice (signed, sent), never held."""
    assert "stream checked" in vm("stream")


def test_a_merge_that_finds_no_heap_loses_no_reading():
    """A fragmented heap fails the merge's file opens: the commit stands and a later commit merges."""
    assert "merge without heap checked" in vm("merge_nomem")


@pytest.mark.parametrize("keep", [0, 33], ids=["cut-before-write", "torn-write-33-bytes"])
def test_power_cut_at_every_flash_write_and_erase(keep):
    found = [re.search(r"CUTS (\d+) WRITES (\d+) keep=(\d+) (.*)", out) for out in shards("power_cuts", keep)]
    assert all(found) and len({m[2] for m in found}) == 1
    cuts, writes = sum(int(m[1]) for m in found), int(found[0][2])
    assert cuts == writes >= 160  # every write/erase of the workload was cut once
    kinds = " ".join(m[4] for m in found)
    for kind in ("'add'", "'add-merge'", "'flush'", "'ack'", "'open'", "'erase'", "'write'"):
        assert kind in kinds, "no cut hit %s: %s" % (kind, kinds)


def test_power_cut_at_every_flash_write_while_the_flash_is_full():
    # Slow (about 2 minutes on one core): each cut replays the workload up to a full flash.
    found = [re.search(r"FULLCUTS (\d+) FROM (\d+) WRITES (\d+) keep=33 dropped (\d+)", out)
             for out in shards("full_cuts", 33, heapsize="4M")]
    assert all(found) and len({(m[2], m[3]) for m in found}) == 1
    cuts, first, writes = sum(int(m[1]) for m in found), int(found[0][2]), int(found[0][3])
    assert cuts == writes - first + 1 >= 200  # every write from 40 before the flash first fills, once
    assert all(int(m[4]) > 0 for m in found)


def test_power_cut_at_every_flash_write_of_the_migration_from_the_old_store():
    # 4 MB, as the full-flash campaign: each cut copies the 128 KB flash image, which needs room in one piece
    found = [re.search(r"MIGRATECUTS (\d+) WRITES (\d+) keep=33", out)
             for out in shards("migrate_cuts", 33, heapsize="4M")]
    assert all(found) and len({m[2] for m in found}) == 1
    assert sum(int(m[1]) for m in found) == int(found[0][2]) >= 100


@pytest.mark.parametrize("mutant", ["ack_trim_first", "merge_in_place"])
def test_power_cut_campaign_catches_a_broken_log(mutant):
    out = vm("mutant", mutant)
    assert "CAUGHT " + mutant in out, out
