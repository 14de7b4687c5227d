"""The board's side of a firmware update (firmware/ota.py, the chooser in firmware/boot.py) on a real LittleFS on
the MicroPython VM, over the emulated NOR flash of emulator/board/blockdev.py, beside the reading log: staging,
the switch, probation and rollback, the cleanup of superseded versions that lets update follow update, and a
power cut at every flash write of two updates in a row (pytest -s shows the count and where the cuts hit)."""

import ast
import re

import pytest

from micropython_plugin import case_output, run_micropython, run_micropython_shards
from test_store import BOARD, HERE


def vm(*args) -> str:
    result = run_micropython([str(HERE / "ota_cases.py"), *map(str, args)], extra_paths=(BOARD,), timeout=850)
    return case_output(result)


def campaign(*args) -> tuple[int, dict[str, int]]:
    """A power-cut campaign of ota_cases.py split over the cores: (cuts, {phase: cuts}), after checking that
    the shards together cut at every one of the run's flash writes, once each."""
    total, cuts, kinds = None, 0, {}
    for result in run_micropython_shards([str(HERE / "ota_cases.py"), *map(str, args)], extra_paths=(BOARD,),
                                         timeout=850):
        out = case_output(result)
        print(out)
        m = re.search(r"CUTS (\d+) WRITES (\d+) (.*)", out)
        assert m and total in (None, int(m[2])), out
        total, cuts = int(m[2]), cuts + int(m[1])
        for phase, n in ast.literal_eval(m[3]):
            kinds[phase] = kinds.get(phase, 0) + n
    assert cuts == total, "the shards cut at %d of %d writes" % (cuts, total)
    return cuts, kinds


def test_update_is_staged_switched_and_confirmed_and_says_what_flash_it_took():
    out = vm("update")
    print(out)
    m = re.search(r"STAGED (\d+) blocks of (\d+) bytes for (\d+) bytes of files", out)
    planned = re.search(r"OTA 0.3.0: 4 files, (\d+) bytes, (\d+) flash blocks to stage", out)
    # What staging plans to take (and checks against the log's room) is never less than what it takes.
    assert m and planned and 0 < int(m[1]) <= int(planned[2]), out
    assert "UPDATE confirmed after 2 boots" in out


def test_update_after_update_fits_where_the_first_did_because_each_confirm_deletes_the_superseded_version():
    out = vm("again")
    print(out)
    for v in ("0.3.0", "0.4.0", "0.5.0"):
        assert "AGAIN %s confirmed" % v in out, out
    assert "OTA 0.3.0 replaces every module of the flashed /flash/lib: removed it" in out
    # The same flash without the cleanup: the second release does not fit beside the first and /lib.
    assert re.search(r"HOARDER no room: release needs \d+ blocks, \d+ free, reading log keeps \d+", out), out


def test_a_release_that_lacks_a_module_of_the_flashed_lib_keeps_it():
    out = vm("partial")
    assert "PARTIAL 0.3.0 confirmed, the flashed /lib kept: ['0.2.0', '0.3.0']" in out, out
    assert "removed it" not in out


def test_a_corrupted_download_is_refused_and_the_retry_stages_it():
    out = vm("corrupt")
    assert "CORRUPT refused: ota.mpy: SHA-256 does not match the manifest: refused; retried: staged" in out, out


def test_a_manifest_not_signed_with_the_device_key_is_refused():
    assert "FORGED manifest signature does not match the device key: refused" in vm("forged")


def test_staging_refuses_rather_than_take_the_reading_logs_room():
    out = vm("no_room")
    assert re.search(r"NOROOM no room: release needs \d+ blocks, \d+ free, reading log keeps \d+", out), out


def test_a_version_that_fails_its_probation_boots_the_previous_one_and_says_why():
    out = vm("rollback")
    assert "ROLLBACK" in out and "self-test failed in probation" in out, out


# The campaigns boot the VM's board hundreds of times: minutes on a loaded machine, beyond the suite's 300 s.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("keep", [0, 33], ids=["cut-before-write", "torn-write-33-bytes"])
def test_power_cut_at_every_flash_write_of_two_updates_in_a_row(keep):
    cuts, kinds = campaign("power_cuts", keep)
    print("keep=%d: %d cuts %r" % (keep, cuts, kinds))
    assert cuts >= 30
    for phase in ("stage", "switch", "chooser", "confirm", "cleanup", "log"):
        assert kinds.get(phase), "no cut hit %s: %s" % (phase, kinds)


@pytest.mark.timeout(900)
def test_power_cut_at_every_flash_write_of_an_update_that_is_rolled_back():
    cuts, kinds = campaign("rollback_cuts")
    print("%d cuts %r" % (cuts, kinds))
    assert cuts >= 30
    for phase in ("stage", "switch", "chooser", "why", "log"):
        assert kinds.get(phase), "no cut hit %s: %s" % (phase, kinds)
