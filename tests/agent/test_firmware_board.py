"""Signed firmware updates on an emulated board, driven only through the CLI (`airwatt flash`, `airwatt serve`,
`airwatt firmware build / rollout / status`), at the default reading-log capacity: release 0.3.0 is confirmed
after a corrupted download was refused and retried, the power was cut while it was staged (the staging picks up
where it was) and the agent was killed with -9 in the middle of the rollout; release 0.4.0 is confirmed after it
(update after update fits); release 0.5.0 crashes on import and is rolled back to 0.4.0 by the board on its own,
the rollout halted. No reading is lost, no seq skipped, the log keeps its capacity."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_flash_board import AIRWATT, FAST, flash, rows, wait_rows

from airwatt.emulator.esp32 import EmulatedBoard

DEVICE = "kk-ota-01"
SPARE = "kk-ota-02"  # registered, never powered: it waits behind the canary, then is halted
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def cli(data_dir, *args):
    got = subprocess.run([AIRWATT, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    return got.returncode, got.stdout + got.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agent(data_dir, port):
    proc = subprocess.Popen([AIRWATT, "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = ""
    while True:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            pytest.fail("airwatt serve did not start:\n" + said)
        said += line
        if "listening on" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc


def fw_status(data_dir) -> dict:
    code, out = cli(data_dir, "firmware", "status", "--format", "json")
    assert code == 0, out
    return {r["device"]: r for r in json.loads(out)}


def wait_state(data_dir, device, state, timeout=120.0, board=None, target=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = fw_status(data_dir)
        if got[device]["state"] == state and target in (None, got[device]["target"]):
            return got
        assert time.monotonic() < deadline, "%s never %s: %s\n%s" % (device, state, got,
                                                                    board.tail(40) if board else "")
        time.sleep(0.5)


def test_good_release_confirmed_and_broken_release_rolled_back_with_the_rollout_halted(tmp_path):
    data_dir = tmp_path / "agent"
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    agent = start_agent(data_dir, port)
    try:
        with EmulatedBoard(tmp_path / "flash.bin") as board:
            done = flash(board, data_dir, DEVICE, url, *FAST)
            assert done.returncode == 0, done.stdout + done.stderr
            assert cli(data_dir, "device", "add", SPARE)[0] == 0
            wait_rows(data_dir, "SELECT seq FROM readings WHERE device = ?", DEVICE, until=lambda r: len(r) >= 3)

            code, out = cli(data_dir, "firmware", "build", "--version", "0.3.0")
            assert code == 0 and "release 0.3.0" in out, out
            # A corrupted copy of one file: the board refuses it (SHA-256 of the signed manifest) and retries.
            with sqlite3.connect(data_dir / "airwatt.db") as conn:
                good = conn.execute("SELECT data FROM firmware_files WHERE path = 'ota.mpy'").fetchone()[0]
                conn.execute("UPDATE firmware_files SET data = ? WHERE path = 'ota.mpy'", (b"X" + good[1:],))
            code, out = cli(data_dir, "firmware", "rollout", "0.3.0", "--devices", "%s,%s" % (DEVICE, SPARE),
                            "--canary", "1", "--probation-s", "60")
            assert code == 0 and "canaries first: %s" % DEVICE in out, out
            got = wait_state(data_dir, DEVICE, "failed", board=board)
            assert "ota.mpy: SHA-256 does not match the manifest" in got[DEVICE]["error"], got
            assert got[SPARE]["state"] == "pending"
            with sqlite3.connect(data_dir / "airwatt.db") as conn:
                conn.execute("UPDATE firmware_files SET data = ? WHERE path = 'ota.mpy'", (good,))

            # The retry starts; the power is cut at a flash write of the staging: the board boots the version
            # it ran and picks up the staging where it was.
            mark = board.log_offset()
            board.wait_for("OTA 0.3.0: ", timeout=60, since=mark)
            board.set_fault("power_cut_at_write", 25)
            board.wait_for("AIRWATT firmware 0.2.0 starting", timeout=60, since=mark)
            assert "OTA 0.3.0 staged" not in board.output(mark)  # the cut came before the switch
            # The next retry starts; the agent dies (-9) while the board fetches, and comes back.
            mark = board.log_offset()
            board.wait_for("OTA 0.3.0: ", timeout=60, since=mark)
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=10)
            time.sleep(2)
            agent = start_agent(data_dir, port)
            staged = re.search(r"OTA 0.3.0: (\d+) files, (\d+) bytes, (\d+) flash blocks to stage",
                               board.output(mark))
            got = wait_state(data_dir, DEVICE, "confirmed", timeout=180, board=board)
            assert got[DEVICE]["running"] == "0.3.0" and got[DEVICE]["error"] == ""
            out = board.output(mark)
            assert "OTA 0.3.0 staged: switching" in out and "OTA 0.3.0 confirmed" in out, board.tail(40)
            assert "AIRWATT firmware 0.3.0 starting" in out
            took = re.search(r"OTA 0.3.0: staged in (\d+) flash blocks of 4096 bytes", out)
            assert staged and took and int(took[1]) <= int(staged[3]), out
            print("staged 0.3.0 after the cut: %s files, %s bytes, %s blocks of 4 KB planned, %s taken" % (staged.groups() + (took[1],)))
            assert wait_rows(data_dir, "SELECT id FROM devices WHERE id = ? AND firmware = '0.3.0'", DEVICE,
                             until=lambda r: len(r) == 1)

            board.wait_for("OTA 0.3.0 replaces every module of the flashed /lib: removed it", timeout=30, since=mark)

            # A second whole release on the same board, at the default capacity: it fits where the first did,
            # because confirming 0.3.0 removed the flashed /lib (at most two versions: the one running, one staged).
            code, out = cli(data_dir, "firmware", "build", "--version", "0.4.0")
            assert code == 0 and "release 0.4.0" in out, out
            mark = board.log_offset()
            code, out = cli(data_dir, "firmware", "rollout", "0.4.0", "--devices", DEVICE, "--probation-s", "60")
            assert code == 0, out
            got = wait_state(data_dir, DEVICE, "confirmed", timeout=180, board=board, target="0.4.0")
            assert got[DEVICE]["running"] == "0.4.0" and got[DEVICE]["error"] == "", got
            board.wait_for("OTA 0.4.0 confirmed", timeout=30, since=mark)
            out = board.output(mark)
            assert "AIRWATT firmware 0.4.0 starting" in out and "no room" not in out, board.tail(40)
            staged = re.search(r"OTA 0.4.0: (\d+) files, (\d+) bytes, (\d+) flash blocks to stage \((\d+) free, the "
                               r"reading log keeps (\d+)\)", out)
            took = re.search(r"OTA 0.4.0: staged in (\d+) flash blocks of 4096 bytes", out)
            assert staged and took and int(took[1]) <= int(staged[3]), out
            print("staged 0.4.0 beside 0.3.0: %s files, %s bytes, %s blocks of 4 KB planned (%s free, the log keeps %s), "
                  "%s taken" % (staged.groups() + (took[1],)))

            # A whole release that crashes on import: rolled back to 0.4.0 on the board, the rollout halted.
            broken = tmp_path / "broken"
            shutil.copytree(FIRMWARE, broken, ignore=shutil.ignore_patterns("__pycache__"))
            (broken / "board.py").write_text('raise RuntimeError("broken release")\n' + (broken / "board.py").read_text())
            code, out = cli(data_dir, "firmware", "build", "--version", "0.5.0", "--from", str(broken))
            assert code == 0 and "release 0.5.0" in out, out
            mark = board.log_offset()
            code, out = cli(data_dir, "firmware", "rollout", "0.5.0", "--devices", "%s,%s" % (DEVICE, SPARE),
                            "--canary", "1", "--probation-s", "60")
            assert code == 0, out
            got = wait_state(data_dir, DEVICE, "rolled-back", timeout=180, board=board)
            assert got[DEVICE]["error"] == "cannot start: RuntimeError broken release", got
            assert got[DEVICE]["running"] == "0.4.0" and got[SPARE]["state"] == "halted", got
            assert "broken release" in got[SPARE]["error"], got
            out = board.output(mark)
            assert "OTA 0.5.0 staged: switching" in out and "AIRWATT firmware 0.4.0 starting" in out

            # Readings keep flowing from the version it went back to; none lost, no seq skipped.
            since = time.time()
            wait_rows(data_dir, "SELECT seq FROM readings WHERE device = ? AND received > ?", DEVICE, since,
                      until=lambda r: len(r) >= 3)
            seqs = [s for (s,) in rows(data_dir, "SELECT seq FROM readings WHERE device = ? ORDER BY seq", DEVICE)]
            assert seqs == list(range(1, len(seqs) + 1))
            code, out = cli(data_dir, "firmware", "status")
            assert re.search(r"%s\s+0.4.0\s+0.5.0\s+rolled-back\s+cannot start" % DEVICE, out), out
            # The reading log kept the capacity it was sized with (a week and more at the default intervals:
            # energy 10 s, CO2 30 s, PM 60 s) through every update: a staged release took none of it.
            stores = re.findall(r"STORE /data next seq \d+ pending \d+ dropped (\d+) capacity (\d+)", board.output())
            assert len(stores) >= 5 and {d for d, _ in stores} == {"0"}, stores
            assert len({c for _, c in stores}) == 1 and int(stores[0][1]) >= 7 * 24 * (360 + 120 + 60), stores
            print("reading log capacity at every boot: %s readings" % stores[0][1])

            # A technician's flash wins over the updates: the board runs the flashed firmware again.
            mark = board.log_offset()
            done = flash(board, data_dir, DEVICE, url, *FAST)
            assert done.returncode == 0 and "it runs what is flashed" in done.stdout, done.stdout + done.stderr
            board.wait_for("AIRWATT firmware 0.2.0 starting", timeout=30, since=mark)
            wait_rows(data_dir, "SELECT seq FROM readings WHERE device = ? AND received > ?", DEVICE, time.time(),
                      until=lambda r: len(r) >= 3)
            assert fw_status(data_dir)[DEVICE]["running"] == "0.2.0"
            seqs = [s for (s,) in rows(data_dir, "SELECT seq FROM readings WHERE device = ? ORDER BY seq", DEVICE)]
            assert seqs == list(range(1, len(seqs) + 1))
    finally:
        agent.terminate()
        agent.wait(timeout=10)
