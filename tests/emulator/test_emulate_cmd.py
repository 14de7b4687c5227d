"""`airwatt emulate` as a technician runs it: prints the port, writes --port-file, serves mpremote, stops on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airwatt.agent.emulate_cmd import faults_from_args, parse_fault

BIN = Path(sys.executable).parent


def test_fault_flags_parse_to_board_faults():
    assert faults_from_args(["wifi_down", "pms.unplugged", "pzem.corrupt=3", "power_cut_at_write=7",
                             "pms.stuck"]) == {"wifi_down": True, "pms": {"unplugged": True, "stuck": True},
                                               "pzem": {"corrupt": 3}, "power_cut_at_write": 7}
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("meteor_strike")
    with pytest.raises(ValueError, match="unknown sensor"):
        parse_fault("dht22.unplugged")


def test_emulate_serves_mpremote_and_stops_on_ctrl_c(tmp_path):
    port_file = tmp_path / "port"
    flash = tmp_path / "flash.bin"
    fault_file = tmp_path / "faults.json"
    fault_file.write_text('{"wifi_down": true}')
    proc = subprocess.Popen([str(BIN / "airwatt"), "emulate", "--port-file", str(port_file), "--flash", str(flash),
                             "--fault", "pms.unplugged", "--fault-file", str(fault_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.1)
        port = port_file.read_text().strip()
        code = ("import machine\nu = machine.UART(1, 9600, tx=4, rx=5, timeout=1500)\n"
                "u.write(b'\\x42\\x4d\\xe2\\x00\\x00\\x01\\x71')\nprint('PMS', u.read())")
        out = subprocess.run([str(BIN / "mpremote"), "connect", port, "exec", code], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and out.stdout.strip() == "PMS None", out  # unplugged: no frame in 1.5 s
        ls = subprocess.run([str(BIN / "mpremote"), "connect", port, "fs", "ls"], capture_output=True, text=True,
                            timeout=30)
        assert "boot.py" in ls.stdout
        wifi = ("import network, time\nw = network.WLAN(network.STA_IF)\nw.active(True)\nw.connect('lab', 'k')\n"
                "time.sleep_ms(600)\nprint('WIFI', w.status())")
        out = subprocess.run([str(BIN / "mpremote"), "connect", port, "exec", wifi], capture_output=True, text=True,
                             timeout=30)
        assert out.stdout.strip() == "WIFI 201", out  # STAT_NO_AP_FOUND: the fault file's wifi_down
        fault_file.write_text("{}")
        for _ in range(20):  # the command re-reads the file when it changes (it looks 5 times a second)
            time.sleep(0.3)
            out = subprocess.run([str(BIN / "mpremote"), "connect", port, "exec", wifi], capture_output=True,
                                 text=True, timeout=30)
            if out.stdout.strip() != "WIFI 201":
                break
        assert out.stdout.strip() == "WIFI 1010", out  # STAT_GOT_IP
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert ("emulated ESP32 on " + port) in stdout and "emulated board stopped" in stdout
    assert not port_file.exists()
    assert flash.stat().st_size == 2 * 1024 * 1024


def test_emulate_refuses_a_file_that_is_not_a_flash_image(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a flash image")
    out = subprocess.run([str(BIN / "airwatt"), "emulate", "--flash", str(bogus)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "is not an emulated board's flash image" in out.stderr
    assert bogus.read_text() == "not a flash image"  # left alone
