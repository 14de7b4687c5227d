"""Hardware-in-the-loop fixtures: an emulated board by default, a real one with --port.

    ./dev test hil_tests                                   # emulated ESP32 (MicroPython VM + emulated sensors)
    ./dev test hil_tests --port /dev/ttyUSB0 --agent-host 192.168.1.10   # a real board on this machine's LAN

The agent is a real `airwatt serve` process with its own data dir; the board is flashed with `airwatt flash`.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

AIRWATT = str(Path(sys.executable).with_name("airwatt"))


def pytest_addoption(parser):
    group = parser.getgroup("airwatt hardware-in-the-loop")
    group.addoption("--port", help="serial port of a real board (default: an emulated board)")
    group.addoption("--agent-host", default="127.0.0.1",
                    help="address the board reaches this machine's agent at (a real board needs the LAN address)")


class Agent:
    def __init__(self, data_dir: Path, url: str, proc: subprocess.Popen):
        self.data_dir, self.url, self.proc = data_dir, url, proc

    def rows(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.data_dir / "airwatt.db") as conn:
            return conn.execute(sql, params).fetchall()

    def wait(self, sql: str, *params, until, timeout: float = 60.0, what: str = "") -> list[tuple]:
        """Poll a query until `until(rows)` holds; fails with the last rows otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(sql, *params)
            if until(rows):
                return rows
            if time.monotonic() > deadline:
                pytest.fail("timed out after %d s waiting for %s; last rows: %r" % (timeout, what or sql, rows[:20]))
            time.sleep(0.5)


@pytest.fixture(scope="module")
def agent(tmp_path_factory, request) -> Agent:
    data_dir = tmp_path_factory.mktemp("agent")
    host = request.config.getoption("--agent-host")
    proc = subprocess.Popen([AIRWATT, "serve", "--data-dir", str(data_dir), "--host", host, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = ""
    match = None
    while match is None:  # log lines may come first
        line = proc.stdout.readline()
        if not line:
            pytest.fail("airwatt serve did not start:\n" + said)
        said += line
        match = re.search(r"listening on (http://\S+)", line)
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    yield Agent(data_dir, match.group(1), proc)
    proc.terminate()
    proc.wait(timeout=10)


class RealBoard:
    """A board on a serial port: no fault injection, no view of its console while not flashing."""

    emulated = False

    def __init__(self, port: str):
        self.port = port


@pytest.fixture(scope="module")
def board(tmp_path_factory, request):
    port = request.config.getoption("--port")
    if port:
        yield RealBoard(port)
        return
    from airwatt.emulator.esp32 import EmulatedBoard

    folder = tmp_path_factory.mktemp("board")
    emulated = EmulatedBoard(folder / "flash.bin", config={"clock": "unset"}, log_path=folder / "console.log")
    emulated.emulated = True
    emulated.start()
    yield emulated
    emulated.stop()
