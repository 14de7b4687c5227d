"""`airwatt emulate` as a technician runs it: prints the port, writes --port-file, serves mpremote, stops on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airwatt.agent.emulate_cmd import faults_from_args, parse_fault
from airwatt.emulator.esp32 import BOARD_DIR, meters_wiring

BIN = Path(sys.executable).parent


def test_fault_flags_parse_to_board_faults():
    assert faults_from_args(["wifi_down", "pms.unplugged", "pzem.corrupt=3", "power_cut_at_write=7",
                             "pms.stuck"]) == {"wifi_down": True, "pms": {"unplugged": True, "stuck": True},
                                               "pzem": {"corrupt": 3}, "power_cut_at_write": 7}
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("meteor_strike")
    with pytest.raises(ValueError, match="unknown sensor"):
        parse_fault("dht22.unplugged")


def test_meter_faults_and_the_bus_wiring():
    assert faults_from_args(["pzem2.unplugged", "pzem3.wrong_addr=9"]) == {
        "pzem2": {"unplugged": True}, "pzem3": {"wrong_addr": 9}}
    with pytest.raises(ValueError, match="unknown sensor fault"):
        parse_fault("pzem2.melted")
    with pytest.raises(ValueError, match="unknown sensor"):
        parse_fault("pzem0.unplugged")
    wiring = meters_wiring(3)
    assert [u["device"] for u in wiring["uart"]] == ["pzembus", "pms"]
    assert wiring["sensors"] == {"pzembus": {"meters": 3}}
    with pytest.raises(ValueError, match="1 to 8"):
        meters_wiring(9)


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


def _start_emulate(cwd: Path, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(BIN / "airwatt"), "emulate", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    port_file = cwd / "port.txt"
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no port file"
        time.sleep(0.1)
    return proc, port_file.read_text().strip()


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    return stdout, stderr


def test_emulate_resolves_relative_paths_against_its_working_directory(tmp_path):
    # The VM runs elsewhere: a relative --flash once meant a file under emulator/board/ (or a crash loop).
    package = BOARD_DIR
    before = sorted(p.name for p in package.iterdir())
    (tmp_path / "boards").mkdir()
    proc, port = _start_emulate(tmp_path, "--flash", "boards/b2.bin", "--port-file", "port.txt", "--log", "b2.log")
    try:
        ls = subprocess.run([str(BIN / "mpremote"), "connect", port, "fs", "ls"], capture_output=True, text=True,
                            timeout=30)
        assert "boot.py" in ls.stdout, ls
    finally:
        stdout, stderr = _stop(proc)
    assert "(flash %s)" % (tmp_path / "boards" / "b2.bin") in stdout
    assert "'crash': 0" in stdout and "keeps rebooting" not in stderr
    assert (tmp_path / "boards" / "b2.bin").stat().st_size == 2 * 1024 * 1024
    assert b"Performing initial setup" in (tmp_path / "b2.log").read_bytes()
    assert sorted(p.name for p in package.iterdir()) == before


def test_emulate_names_a_flash_image_it_cannot_open_before_booting(tmp_path):
    started = time.monotonic()
    out = subprocess.run([str(BIN / "airwatt"), "emulate", "--flash", "no-such-dir/b.bin", "--port-file", "port.txt"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "cannot open the board's flash image %s: No such file or directory" % (tmp_path / "no-such-dir" / "b.bin") \
        in out.stderr
    assert not (tmp_path / "port.txt").exists() and time.monotonic() - started < 10


def test_emulate_reports_a_board_that_keeps_rebooting_with_its_last_lines(tmp_path):
    (tmp_path / "main.py").write_text("print('main: resetting')\nimport machine\nmachine.reset()\n")
    proc, port = _start_emulate(tmp_path, "--flash", "b.bin", "--port-file", "port.txt")
    try:
        subprocess.run([str(BIN / "mpremote"), "connect", port, "fs", "cp", "main.py", ":main.py", "+", "reset"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=30)
        time.sleep(10)  # three resets take a few seconds; reported once, however many follow
    finally:
        stdout, stderr = _stop(proc)
    assert "airwatt emulate: the board keeps rebooting: 3 resets within" in stderr, stderr
    assert "| main: resetting" in stderr
    assert stderr.count("keeps rebooting") == 1  # once a minute, not at every reset
