"""The emulated ESP32's machine/network/socket/time modules on the real MicroPython VM (no bridge: plain processes).

Each test runs a small board-side script with emulator/board first on the VM's path, as the emulated board does.
"""

from __future__ import annotations

import contextlib
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

from micropython_plugin import ROOT, run_micropython

BOARD_DIR = ROOT / "emulator" / "board"


def run_board_script(tmp_path: Path, source: str, timeout: float = 30) -> str:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    result = run_micropython([str(script)], extra_paths=(BOARD_DIR, ROOT / "firmware"), timeout=timeout)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and out.rstrip().endswith("DONE"), "MicroPython says:\n" + out
    return out


def test_uart_reaches_the_pzem_and_pms_emulators_by_pins(tmp_path):
    run_board_script(tmp_path, """
        import machine, pzem004t, pms5003, boardstate
        u = machine.UART(2, baudrate=9600, tx=17, rx=16, timeout=200)
        assert u.any() == 0
        assert u.write(pzem004t.read_request(0xF8)) == 8
        frame = u.read(25)
        assert len(frame) == 25, frame
        v = pzem004t.decode(frame)  # real CRC16/MODBUS checked by the driver
        assert 200 < v["voltage"] < 250 and v["frequency"] == 50.0, v
        p = machine.UART(1, baudrate=9600, tx=4, rx=5, timeout=1500)
        p.write(pms5003.command("passive"))
        p.read()  # the mode change is acknowledged
        p.write(pms5003.command("read"))
        buf = p.read(32)
        frame, used = pms5003.find_frame(buf)
        assert frame is not None, buf
        assert pms5003.decode(frame)["pm25"] >= 0
        # the wrong baud rate: the meter cannot parse the request, so it stays silent
        w = machine.UART(2, baudrate=115200, tx=17, rx=16, timeout=100)
        w.write(pzem004t.read_request(0xF8))
        assert w.read(25) is None
        # a UART on pins with nothing wired reads nothing, after its timeout
        n = machine.UART(0, baudrate=9600, tx=1, rx=3, timeout=20)
        n.write(b"x")
        assert n.read(5) is None and n.any() == 0
        # faults reach the sensor: unplugged means silence, corrupt means a bad CRC
        boardstate.set_faults({"pzem": {"unplugged": True}})
        u.write(pzem004t.read_request(0xF8))
        assert u.read(25) is None
        boardstate.set_faults({"pzem": {"corrupt": 1}})
        u.write(pzem004t.read_request(0xF8))
        bad = u.read(25)
        try:
            pzem004t.decode(bad)
            raise AssertionError("a corrupted frame decoded")
        except ValueError:
            pass
        print("DONE")
    """)


def test_i2c_scan_and_scd4x_words_with_crc(tmp_path):
    run_board_script(tmp_path, """
        import machine, scd4x, boardstate
        i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=100000)
        assert i2c.scan() == [0x62], i2c.scan()
        i2c.writeto(0x62, bytes([0x36, 0x82]))  # get_serial_number
        words = i2c.readfrom(0x62, 9)
        for k in range(3):
            assert scd4x.crc8(words[3 * k:3 * k + 2]) == words[3 * k + 2]
        buf = bytearray(3)
        i2c.writeto(0x62, bytes([0x23, 0x18]))  # get_temperature_offset
        i2c.readfrom_into(0x62, buf)
        assert scd4x.crc8(buf[:2]) == buf[2]
        try:
            i2c.writeto(0x44, b"\\x00")
            raise AssertionError("no device at 0x44 must NACK")
        except OSError as e:
            assert e.args[0] == 19  # ENODEV
        boardstate.set_faults({"scd4x": {"unplugged": True}})
        assert i2c.scan() == []
        print("DONE")
    """)


def test_rtc_starts_unset_at_2000_and_time_follows_it(tmp_path):
    run_board_script(tmp_path, """
        import machine, time, boardstate
        assert time.gmtime(0)[0] == 2000  # the ESP32 port's epoch
        assert time.time() < 5, time.time()
        dt = machine.RTC().datetime()
        assert dt[:3] == (2000, 1, 1) and dt[3] == 5, dt  # a Saturday
        machine.RTC().datetime((2026, 11, 22, 6, 10, 30, 0, 0))
        t = time.time()
        assert time.gmtime(t)[:6] == (2026, 11, 22, 10, 30, 0), time.gmtime(t)
        assert t + 946684800 == 1795343400, t
        assert time.mktime(time.localtime(t)) == t
        # clock_unset: setting the RTC has no effect (a board whose clock never gets set)
        boardstate.set_faults({"clock_unset": True})
        machine.RTC().datetime((2030, 1, 1, 1, 0, 0, 0, 0))
        assert time.gmtime()[0] == 2026
        assert machine.reset_cause() == machine.PWRON_RESET
        assert len(machine.unique_id()) == 6 and machine.freq() == 160000000
        print("DONE")
    """)


@contextlib.contextmanager
def greeting_server(greeting: bytes) -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback server that sends `greeting` to each connection; yields (port, connections), then closes them."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()
        for c in accepted:
            c.close()


def test_wlan_connects_and_wifi_down_fails_real_sockets(tmp_path):
    with greeting_server(b"hello") as (port, accepted):
        run_board_script(tmp_path, """
            import network, socket, time, boardstate
            wlan = network.WLAN(network.STA_IF)
            addr = ("127.0.0.1", %d)
            def connect():
                s = socket.socket()
                s.connect(socket.getaddrinfo(addr[0], addr[1])[0][-1])
                return s
            try:
                connect()
                raise AssertionError("a socket worked without Wi-Fi")
            except OSError:
                pass
            wlan.active(True)
            wlan.connect("airwatt-lab", "secret")
            assert wlan.status() == network.STAT_CONNECTING and not wlan.isconnected()
            t = time.ticks_ms()
            while not wlan.isconnected():
                assert time.ticks_diff(time.ticks_ms(), t) < 2000
                time.sleep_ms(20)
            assert wlan.status() == network.STAT_GOT_IP and wlan.ifconfig()[0] != "0.0.0.0"
            assert -90 < wlan.status("rssi") < -30
            s = connect()
            assert s.recv(5) == b"hello"
            boardstate.set_faults({"wifi_down": True})
            assert not wlan.isconnected() and wlan.status() == network.STAT_BEACON_TIMEOUT
            try:
                s.recv(5)
                raise AssertionError("a socket outlived the link")
            except OSError as e:
                assert e.args[0] == 103  # ECONNABORTED
            try:
                connect()
                raise AssertionError("connected with Wi-Fi down")
            except OSError:
                pass
            boardstate.set_faults({})
            t = time.ticks_ms()
            while not wlan.isconnected():  # the station reconnects by itself
                assert time.ticks_diff(time.ticks_ms(), t) < 3000
                time.sleep_ms(50)
            assert connect().recv(5) == b"hello"
            wlan.disconnect()
            assert wlan.status() == network.STAT_IDLE
            print("DONE")
        """ % port)
    assert len(accepted) == 2


def test_wlan_wrong_password_and_unknown_ssid(tmp_path):
    run_board_script(tmp_path, """
        import network, time, boardstate
        boardstate.config["wifi"] = {"ssid": "cityhall-iot", "key": "right"}
        w = network.WLAN(network.STA_IF)
        try:
            w.connect("cityhall-iot", "right")
            raise AssertionError("connect before active(True)")
        except OSError:
            pass
        w.active(True)
        w.connect("cityhall-iot", "wrong")
        time.sleep_ms(400)
        assert w.status() == network.STAT_WRONG_PASSWORD and not w.isconnected()
        w.connect("elsewhere", "right")
        time.sleep_ms(400)
        assert w.status() == network.STAT_NO_AP_FOUND
        w.connect("cityhall-iot", "right")
        time.sleep_ms(400)
        assert w.isconnected() and w.config("ssid") == "cityhall-iot"
        print("DONE")
    """)


def test_asyncio_streams_are_gated_by_the_emulated_wifi(tmp_path):
    with greeting_server(b"HTTP/1.1 200 OK\r\n\r\n") as (port, conns):
        run_board_script(tmp_path, """
            import asyncio, network, boardstate
            async def fetch():
                r, w = await asyncio.open_connection("127.0.0.1", %d)
                line = await r.readline()
                w.close()
                await w.wait_closed()
                return line
            async def main():
                w = network.WLAN(network.STA_IF)
                w.active(True)
                w.connect("lab", "key")
                while not w.isconnected():
                    await asyncio.sleep_ms(20)
                assert (await fetch()).startswith(b"HTTP/1.1 200")
                boardstate.set_faults({"wifi_down": True})
                try:
                    await fetch()
                    raise AssertionError("asyncio connected with Wi-Fi down")
                except OSError:
                    pass
            asyncio.run(main())
            print("DONE")
        """ % port)
    assert len(conns) == 1


def test_watchdog_without_a_bridge_resets_on_a_late_feed(tmp_path):
    script = tmp_path / "wdt.py"
    script.write_text(textwrap.dedent("""
        import machine, time
        wdt = machine.WDT(timeout=100)
        time.sleep_ms(20)
        wdt.feed()
        print("FED IN TIME")
        time.sleep_ms(250)
        wdt.feed()
        print("STILL RUNNING")
    """))
    result = run_micropython([str(script)], extra_paths=(BOARD_DIR,), timeout=30)
    assert "FED IN TIME" in result.stdout and "STILL RUNNING" not in result.stdout
    assert result.returncode == -9  # the board stopped on the spot
    assert "[emulated board stops: wdt]" in result.stderr
