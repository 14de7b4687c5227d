"""`airwatt flash` refuses what a technician can get wrong with a message that says what to do."""

import os
import subprocess
import sys
import termios
import tty
from pathlib import Path

import pytest

from airwatt.agent import flash_cmd, store

AIRWATT = str(Path(sys.executable).with_name("airwatt"))


def flash(tmp_path, port, *extra):
    cmd = [AIRWATT, "flash", "--port", port, "--device", "kk-01", "--wifi", "net:password",
           "--agent", "http://127.0.0.1:8080", "--data-dir", str(tmp_path), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("extra, message", [
    (("--wifi", "no-colon"), "--wifi must be SSID:PASSWORD"),
    (("--agent", "ftp://x"), "--agent must be an http:// URL"),
    (("--sensors", "energy,radon"), "unknown sensor radon"),
    (("--intervals", "pm=fast"), "--intervals takes KIND=SECONDS"),
])
def test_bad_arguments_are_refused_before_anything_is_touched(tmp_path, extra, message):
    result = flash(tmp_path, "/dev/ttyUSB-none", *extra)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "airwatt.db").exists(), "nothing registered for a refused command"


def test_no_board_on_the_port(tmp_path):
    result = flash(tmp_path, "/dev/ttyUSB-none")
    assert result.returncode == 2
    assert "no board at /dev/ttyUSB-none" in result.stderr


def test_a_port_where_no_micropython_answers(tmp_path):
    master, slave = os.openpty()  # a serial port with a silent device behind it
    tty.setraw(slave)
    try:
        result = flash(tmp_path, os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 2
    assert "no MicroPython REPL answered" in result.stderr


def test_config_carries_the_stores_key_and_the_chosen_schedule(tmp_path):
    key, created = flash_cmd.device_key(str(tmp_path), "kk-02", ["pm"], "Hall", "City Hall")
    assert created and (key, False) == flash_cmd.device_key(str(tmp_path), "kk-02", ["pm"], None, None)
    config = flash_cmd.board_config("kk-02", key, "net:pa:ssword", "http://10.0.0.2:8080/", ["pm", "co2"],
                                    flash_cmd.parse_intervals("pm=30"), upload_s=15, wdt_s=20)
    assert config["wifi"] == {"ssid": "net", "password": "pa:ssword"}
    assert config["agent_url"] == "http://10.0.0.2:8080"
    assert [(s["kind"], s["interval_s"]) for s in config["sensors"]] == [("pm", 30), ("co2", 30)]
    assert (config["upload_s"], config["wdt_s"], config["key"]) == (15, 20, key)
    db = store.open_db(tmp_path)
    assert store.get_device(db, "kk-02")["site"] == "City Hall"


def test_firmware_image_holds_compiled_modules_and_the_protocol():
    image = flash_cmd.firmware_image()
    assert {"/boot.py", "/main.py", "/lib/board.mpy", "/lib/protocol/wire.mpy", "/lib/protocol/__init__.py"} <= set(image)
    assert all(content[:1] == b"M" for path, content in image.items() if path.endswith(".mpy"))
    assert not any(path.endswith("__init__.mpy") for path in image)


def test_a_full_flash_is_named_as_such(tmp_path, monkeypatch):
    from airwatt.emulator.esp32 import EmulatedBoard

    monkeypatch.setenv("AIRWATT_BOARD_FLASH_BLOCKS", "10")  # a 40 KiB filesystem: the firmware does not fit
    with EmulatedBoard(tmp_path / "flash.bin") as board:
        result = flash(tmp_path, board.port, "--no-wait")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the board's flash is full writing /lib/" in result.stderr
