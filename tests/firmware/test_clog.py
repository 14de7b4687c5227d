"""The compact flash log (firmware/clog.py) on a real LittleFS (os.VfsLfs2) on the MicroPython VM, over the
emulated NOR flash of emulator/board/blockdev.py: the power-cut guarantee re-proved on the new format. Each test
runs clog_cases.py and checks what it printed (pytest -s shows the number of cuts and where they hit)."""

import re

import pytest

from micropython_plugin import run_micropython
from test_store import BOARD, HERE


def vm(*args, heapsize: str | None = None) -> str:
    result = run_micropython([str(HERE / "clog_cases.py"), *map(str, args)], extra_paths=(BOARD,),
                             heapsize=heapsize, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and result.stdout.rstrip().endswith("OK"), out[-3000:]
    return result.stdout


def test_window_commit_flush_ack_reboot_basics():
    assert "basics checked" in vm("basics")


@pytest.mark.parametrize("keep", [0, 33], ids=["cut-before-write", "torn-write-33-bytes"])
def test_power_cut_at_every_flash_write_and_erase(keep):
    out = vm("power_cuts", keep)
    print(out)
    m = re.search(r"CUTS (\d+) WRITES (\d+) keep=(\d+) (.*)", out)
    assert m, out
    cuts, writes = int(m[1]), int(m[2])
    assert cuts == writes >= 160  # every write/erase of the workload was cut once
    for kind in ("'add'", "'add-merge'", "'flush'", "'ack'", "'open'", "'erase'", "'write'"):
        assert kind in m[4], "no cut hit %s: %s" % (kind, m[4])


def test_power_cut_at_every_flash_write_while_the_flash_is_full():
    # Slow (about 2 minutes): each cut replays the workload up to a full flash.
    out = vm("full_cuts", 33, heapsize="4M")
    print(out)
    m = re.search(r"FULLCUTS (\d+) keep=33 dropped (\d+)", out)
    assert m and int(m[1]) >= 200 and int(m[2]) > 0, out


def test_power_cut_at_every_flash_write_of_the_migration_from_the_old_store():
    out = vm("migrate_cuts", 33)
    print(out)
    m = re.search(r"MIGRATECUTS (\d+) keep=33", out)
    assert m and int(m[1]) >= 100, out


@pytest.mark.parametrize("mutant", ["ack_trim_first", "merge_in_place"])
def test_power_cut_campaign_catches_a_broken_log(mutant):
    out = vm("mutant", mutant)
    assert "CAUGHT " + mutant in out, out
