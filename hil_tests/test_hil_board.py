"""A technician's day with one board: flash, self-test, readings, outages, power cuts, watchdog, reboot.

The tests run in order on one board and one agent (module-scoped fixtures); each leaves the board running.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hil_support import flash

DEVICE = "hil-01"
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def needs_emulator(board):
    if not board.emulated:
        pytest.skip("fault injection needs the emulated board (this run uses a real one)")


def seqs(agent) -> list[int]:
    return [r[0] for r in agent.rows("SELECT seq FROM readings WHERE device = ? ORDER BY seq", DEVICE)]


def assert_contiguous(agent) -> list[int]:
    """Every reading the board took is stored once: seq 1..max without a gap."""
    got = seqs(agent)
    assert got == list(range(1, len(got) + 1)), "gaps or duplicates in %r" % got
    return got


def test_flash_prints_a_verdict_per_sensor(board, agent):
    result = flash(board, agent, DEVICE)
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ("energy", "pm", "co2"):
        assert any(line.split()[:2] == [kind, "PASS"] for line in result.stdout.splitlines()), result.stdout
    assert "SELF-TEST PASSED" in result.stdout
    assert "new device, key created" in result.stdout


def test_readings_of_every_sensor_reach_the_agent(board, agent):
    rows = agent.wait("SELECT sensor, count(*) FROM readings WHERE device = ? GROUP BY sensor", DEVICE,
                      until=lambda rows: len(rows) == 3 and all(n >= 2 for _, n in rows), timeout=90,
                      what="two readings of each sensor")
    assert {sensor for sensor, _ in rows} == {"energy", "pm", "co2"}
    now = time.time()
    times = agent.rows("SELECT t, t_source FROM readings WHERE device = ?", DEVICE)
    assert all(t is not None and now - 600 < t <= now + 5 for t, _ in times), times
    status = agent.rows("SELECT last_status FROM devices WHERE id = ?", DEVICE)[0][0]
    assert '"time_sync":"agent"' in status.replace(" ", "")
    assert_contiguous(agent)


def test_flashing_again_copies_nothing_unchanged(board, agent):
    result = flash(board, agent, DEVICE, "--no-wait")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^ *0 of \d+ files changed$", result.stdout, re.M), result.stdout  # every file was there
    assert "known device, key kept" in result.stdout


def test_wifi_outage_backlog_is_uploaded_oldest_first(board, agent):
    needs_emulator(board)
    agent.wait("SELECT count(*) FROM readings WHERE device = ?", DEVICE, until=lambda r: r[0][0] > 0)
    before = max(seqs(agent))
    board.set_fault("wifi_down", True)
    outage_start = time.time()
    time.sleep(20)
    during = max(seqs(agent))
    board.set_fault("wifi_down", False)
    outage_end = time.time()
    assert during - before <= 3, "readings kept arriving during the outage (%d -> %d)" % (before, during)
    rows = agent.wait("SELECT seq, t, received FROM readings WHERE device = ? AND t > ? AND t < ? ORDER BY seq",
                      DEVICE, outage_start + 1, outage_end - 1, until=lambda r: len(r) >= 6, timeout=60,
                      what="readings taken during the outage")
    assert all(received >= outage_end - 1 for _, _, received in rows), "taken offline, so stored after Wi-Fi came back"
    received = [r[0] for r in agent.rows("SELECT received FROM readings WHERE device = ? AND seq > ? ORDER BY seq",
                                         DEVICE, during)]
    assert received == sorted(received), "the backlog went up oldest first"
    assert_contiguous(agent)


def test_power_cut_during_a_buffer_write_loses_and_repeats_nothing(board, agent):
    needs_emulator(board)
    cuts = board.resets["powercut"]
    before = max(seqs(agent))
    board.set_fault("power_cut_at_write", 3)  # the board dies at its third flash write from now
    deadline = time.monotonic() + 60
    while board.resets["powercut"] == cuts:
        assert time.monotonic() < deadline, "the power cut never happened"
        time.sleep(0.2)
    board.wait_for("AIRWATT firmware", timeout=30, since=0)
    agent.wait("SELECT max(seq) FROM readings WHERE device = ?", DEVICE, until=lambda r: r[0][0] >= before + 6,
               timeout=90, what="readings after the power cut")
    assert_contiguous(agent)
    boots = agent.rows("SELECT count(DISTINCT boot_id) FROM readings WHERE device = ?", DEVICE)[0][0]
    assert boots >= 2


def test_watchdog_resets_a_hung_main_loop(board, agent):
    needs_emulator(board)
    resets = board.resets["wdt"]
    mark = board.log_offset()
    board.set_fault("hang", True)
    deadline = time.monotonic() + 40
    while board.resets["wdt"] == resets:
        assert time.monotonic() < deadline, "the watchdog never reset the hung board"
        time.sleep(0.2)
    out = board.wait_for("reset WDT", timeout=30, since=mark)
    assert "rst:0x" in out
    before = max(seqs(agent))
    agent.wait("SELECT max(seq) FROM readings WHERE device = ?", DEVICE, until=lambda r: r[0][0] > before + 3,
               timeout=60, what="readings after the watchdog reset")
    assert_contiguous(agent)


def test_reset_from_mpremote_reboots_and_keeps_counting(board, agent):
    boots_before = agent.rows("SELECT count(DISTINCT boot_id) FROM readings WHERE device = ?", DEVICE)[0][0]
    result = subprocess.run([MPREMOTE, "connect", board.port, "reset"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    agent.wait("SELECT count(DISTINCT boot_id) FROM readings WHERE device = ?", DEVICE,
               until=lambda r: r[0][0] > boots_before, timeout=90, what="readings from the new boot")
    assert_contiguous(agent)
