"""`airwatt flash` and `airwatt console` on an emulated board (the MicroPython VM behind a pty): what the
board holds decides what flashing may do, and leaving the console never leaves the firmware stopped unsaid."""

from __future__ import annotations

import os
import re
import select
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from airwatt.agent.bench.serve import start_agent  # noqa: F401  (test_settings_board imports it from here)
from airwatt.emulator.esp32 import EmulatedBoard
from serving import AIRWATT

FAST = ("--intervals", "energy=5,pm=5,co2=5", "--upload-s", "3")


def flash(board, data_dir, device, agent, *extra):
    cmd = [AIRWATT, "flash", "--port", board.port, "--device", device, "--wifi", "cityhall-iot:password1",
           "--agent", agent, "--data-dir", str(data_dir), "--no-wait", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def nobody_listening() -> str:
    """An agent URL on 127.0.0.1 where nothing answers: the board keeps its readings."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "http://127.0.0.1:%d" % s.getsockname()[1]


def rows(data_dir, sql, *params):
    with sqlite3.connect(Path(data_dir) / "airwatt.db") as conn:
        return conn.execute(sql, params).fetchall()


def wait_rows(data_dir, sql, *params, until, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        got = rows(data_dir, sql, *params)
        if until(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def pending_on_board(board, since) -> int:
    """The board's own count of readings not yet uploaded, from the STORE line it prints at boot."""
    out = board.wait_for("pending", timeout=30, since=since)
    return int(re.findall(r"STORE \S+ next seq \d+ pending (\d+)", out)[-1])


def test_reflashing_as_another_device_refuses_then_discards_with_force(tmp_path):
    data_dir = tmp_path / "agent"
    with EmulatedBoard(tmp_path / "flash.bin") as board:
        first = flash(board, data_dir, "kk-old-01", nobody_listening(), *FAST,
                      "--lat", "16.44", "--lon", "102.83", "--site", "City Hall", "--name", "Floor 1")
        assert first.returncode == 0, first.stdout + first.stderr
        device = rows(data_dir, "SELECT lat, lon, site, name, interval_s FROM devices WHERE id = 'kk-old-01'")
        assert device == [(16.44, 102.83, "City Hall", "Floor 1", 5)]  # interval: the flashed one, not 60
        board.wait_for("SELFTEST", timeout=30)  # the firmware runs and takes readings
        time.sleep(8)

        # The same device again: its buffered readings stay on the board, no --force needed.
        mark = board.log_offset()
        again = flash(board, data_dir, "kk-old-01", nobody_listening(), *FAST)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "discarded" not in again.stdout
        kept = pending_on_board(board, mark)
        assert kept > 0

        # Another device: refused, saying how many readings the board holds; nothing registered or written.
        time.sleep(2)
        mark = board.log_offset()
        refused = flash(board, data_dir, "kk-new-02", nobody_listening())
        assert refused.returncode == 2
        message = refused.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in refused.stderr, refused.stderr
        held = int(re.search(r"holds (\d+) reading\(s\) of device kk-old-01", message).group(1))
        assert held >= kept and "--force" in message
        assert rows(data_dir, "SELECT id FROM devices") == [("kk-old-01",)]
        board.wait_for("device kk-old-01 boot", timeout=30, since=mark)  # back at work under its old config
        assert pending_on_board(board, mark) == held

        old_boots = set(re.findall(r"device kk-old-01 boot ([0-9a-f]+)", board.output()))
        agent, url = start_agent(data_dir)
        try:
            mark = board.log_offset()
            forced = flash(board, data_dir, "kk-new-02", url, *FAST, "--force")
            assert forced.returncode == 0, forced.stdout + forced.stderr
            assert re.search(r"discarded the (\d+) reading\(s\) of device kk-old-01", forced.stdout)
            assert pending_on_board(board, mark) == 0
            got = wait_rows(data_dir, "SELECT r.seq, b.boot, r.t_source FROM readings r JOIN boot_ids b ON b.id = r.boot_id"
                            " WHERE r.device = 'kk-new-02' ORDER BY r.seq",
                            until=lambda r: len(r) >= 3)
        finally:
            agent.terminate()
            agent.wait(timeout=10)
        assert len(got) >= 3
        assert [seq for seq, _, _ in got] == list(range(1, len(got) + 1))  # a fresh log, from seq 1
        new_boots = set(re.findall(r"device kk-new-02 boot ([0-9a-f]+)", board.output()))
        assert {boot for _, boot, _ in got} <= new_boots and not new_boots & old_boots
        assert all(source != "unknown" for _, _, source in got)
        assert rows(data_dir, "SELECT count(*) FROM readings WHERE device = 'kk-old-01'") == [(0,)]
        assert rows(data_dir, "SELECT interval_s FROM devices WHERE id = 'kk-new-02'") == [(5,)]


def run_console(port, *extra, keys=(), timeout=90):
    """`airwatt console` on a terminal of its own: send each (wait_for, bytes) in turn, again every 3 s until the
    next step's text shows (a key can land while the board is busy, as under a technician's fingers).
    Returns (exit code or None if it never ended, everything it printed)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([AIRWATT, "console", "--port", port, *extra], stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    out = b""
    seen = 0  # where the text the next step waits for may start
    deadline = time.monotonic() + timeout
    steps = list(keys)
    sent, sent_at = None, 0.0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if steps and steps[0][0].encode() in out[seen:]:
                sent, sent_at = steps.pop(0)[1], time.monotonic()
                seen = len(out)
                os.write(master, sent)
            elif sent is not None and time.monotonic() - sent_at > 3:
                os.write(master, sent)
                sent_at = time.monotonic()
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    out += os.read(master, 4096)
                except OSError:  # the console closed its terminal
                    break
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace")


@pytest.fixture
def running_board(tmp_path):
    with EmulatedBoard(tmp_path / "flash.bin") as board:
        result = flash(board, tmp_path / "agent", "kk-console-01", nobody_listening(), *FAST)
        assert result.returncode == 0, result.stdout + result.stderr
        board.wait_for("SELFTEST", timeout=30)
        yield board


def test_leaving_the_console_with_the_firmware_stopped_restarts_it(running_board):
    board = running_board
    # Ctrl-C stops the firmware (the technician looks around at >>>), Ctrl-] leaves mpremote.
    code, out = run_console(board.port, keys=[("Ctrl-] or Ctrl-x", b"\x03"), (">>> ", b"\x1d")])
    assert "AIRWATT stopped" in board.output(), out + board.output()[-2000:]
    assert code == 0, out
    assert "firmware was stopped; restarted it" in out, out
    mark = board.log_offset()
    board.wait_for("SELFTEST", timeout=30, since=mark)  # taking readings again


def test_leaving_the_console_stopped_on_purpose_says_so_and_how_to_restart(running_board):
    board = running_board
    code, out = run_console(board.port, "--leave-stopped", keys=[("Ctrl-] or Ctrl-x", b"\x03"), (">>> ", b"\x1d")])
    assert "firmware is stopped" in out and "Ctrl-D" in out and "Traceback" not in out, out
    mark = board.log_offset()
    time.sleep(3)
    assert "AIRWATT firmware" not in board.output(since=mark)


def test_leaving_the_console_with_the_firmware_running_says_nothing(running_board):
    board = running_board
    code, out = run_console(board.port, keys=[("Ctrl-] or Ctrl-x", b"\x1d")])
    assert code == 0 and "airwatt console:" not in out, out
    assert "AIRWATT stopped" not in board.output()
