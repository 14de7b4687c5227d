"""`airwatt flash` refuses what a technician can get wrong with a message that says what to do."""

import os
import subprocess
import tty

import pytest

from airwatt.agent import flash_cmd, store
from airwatt.agent.web import pages
from serving import AIRWATT



def flash(tmp_path, port, *extra):
    cmd = [AIRWATT, "flash", "--port", port, "--device", "kk-01", "--wifi", "net:password",
           "--agent", "http://127.0.0.1:8080", "--data-dir", str(tmp_path), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def silent_port():
    """A serial port with a silent device behind it: (port path, function returning what was written to it)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)

    def written() -> bytes:
        try:
            return os.read(master, 65536)
        except BlockingIOError:
            return b""

    yield os.ttyname(slave), written
    os.close(master)
    os.close(slave)


@pytest.mark.parametrize("extra, message", [
    (("--wifi", "no-colon"), "--wifi must be SSID:PASSWORD"),
    (("--wifi", ":password1"), "--wifi: the SSID is empty"),
    (("--wifi", "x" * 33 + ":password1"), "is 33 bytes; a Wi-Fi network name has at most 32"),
    (("--wifi", "ศาลากลาง-ชั้น2:password1"), "is 38 bytes; a Wi-Fi network name has at most 32"),
    (("--wifi", "cityhall-iot:secret"), "a WPA password has 8 to 63 characters (or 64 hex digits), this one has 6"),
    (("--wifi", "cityhall-iot:x"), "this one has 1"),
    (("--wifi", "cityhall-iot:" + "z" * 64), "this one has 64"),
    (("--agent", "ftp://x"), "--agent must be an http:// URL"),
    (("--sensors", "energy,radon"), "unknown sensor radon"),
    (("--intervals", "pm=fast"), "--intervals takes KIND=SECONDS"),
    (("--intervals", "pm=2"), "the board would refuse this: config.json: sensors[1].interval_s: expected"),
    (("--upload-s", "0"), "config.json: upload_s: expected"),
    (("--wdt-s", "9999"), "config.json: wdt_s: expected"),
    (("--device", "City Hall"), "device id must be 1 to 32 characters"),
    (("--lat", "16.44"), "give both --lat and --lon"),
    (("--lon", "102.8"), "give both --lat and --lon"),
    (("--lat", "106.4", "--lon", "16.4"), "lat must be within -90..90"),
    (("--lat", "nan", "--lon", "102.8"), "lat must be within -90..90"),
])
def test_bad_arguments_are_refused_before_the_board_or_the_store_is_touched(tmp_path, silent_port, extra, message):
    port, written = silent_port
    result = flash(tmp_path, port, *extra)
    assert result.returncode == 2
    assert result.stderr.startswith("airwatt flash: ") and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, "one line, no traceback"
    assert written() == b"", "the board was not spoken to"
    assert not (tmp_path / "airwatt.db").exists(), "nothing registered for a refused command"


def test_an_open_network_and_the_longest_ssid_are_taken():
    assert flash_cmd.parse_wifi("x" * 32 + ":") == ("x" * 32, "")
    assert flash_cmd.parse_wifi("hall:" + "ab" * 32) == ("hall", "ab" * 32)  # a 64-hex-digit PSK
    assert flash_cmd.parse_wifi("hall:" + "p" * 63) == ("hall", "p" * 63)


def test_no_board_on_the_port(tmp_path):
    result = flash(tmp_path, "/dev/ttyUSB-none")
    assert result.returncode == 2
    assert "no board at /dev/ttyUSB-none" in result.stderr


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_path_that_is_no_serial_device_is_refused_and_registers_nothing(tmp_path, kind):
    path = tmp_path / "ttyUSB0"
    path.mkdir() if kind == "folder" else path.write_text("")
    result = flash(tmp_path, str(path))
    assert result.returncode == 2 and "is not a serial device" in result.stderr, result.stderr
    assert not (tmp_path / "airwatt.db").exists(), "no ghost device"


def test_a_port_where_no_micropython_answers_registers_nothing(tmp_path, silent_port):
    port, _ = silent_port
    result = flash(tmp_path, port)
    assert result.returncode == 2
    assert "no MicroPython REPL answered" in result.stderr
    assert not (tmp_path / "airwatt.db").exists(), "no ghost device"


def test_flash_records_the_boards_upload_interval_and_a_reflash_updates_it(tmp_path):
    config = flash_cmd.board_config("kk-03", "", "net:password", "http://10.0.0.2:8080", ["energy", "pm"],
                                    flash_cmd.parse_intervals("energy=120,pm=300"), upload_s=30)
    assert flash_cmd.upload_gap(config) == 120  # a reading every 120 s: no upload sooner
    fast = flash_cmd.board_config("kk-03", "", "net:password", "http://10.0.0.2:8080", ["energy"],
                                  flash_cmd.parse_intervals("energy=5"), upload_s=20)
    assert flash_cmd.upload_gap(fast) == 20
    flash_cmd.device_key(str(tmp_path), "kk-03", ["energy", "pm"], None, None, interval_s=120)
    key, created = flash_cmd.device_key(str(tmp_path), "kk-03", ["energy"], "Hall", None, 16.4, 102.8, 20)
    assert not created
    dev = store.get_device(store.open_db(tmp_path), "kk-03")
    assert (dev["interval_s"], dev["sensors"], dev["name"], dev["lat"], dev["lon"]) == (20, '["energy"]', "Hall",
                                                                                       16.4, 102.8)
    # The pages judge the board by that interval: 5 min without an upload is offline at 20 s, online at 120 s.
    now = 1_790_000_000.0
    assert pages.device_state(now - 300, dev["interval_s"], now) == "offline"
    assert pages.device_state(now - 300, 120, now) == "online"


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
