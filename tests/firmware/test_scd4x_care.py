# runs on: cpython, micropython
"""SCD4x care: the golden frames (tests/firmware/scd4x_frames.json) from the firmware's command() and into the
byte-exact emulator, care_plan, and the driver's care() against the emulator: settings kept in its EEPROM by
persist_settings (and only when they change), FRC with the correction reported, and the 0xFFFF of a failed FRC."""
import asyncio
import json

try:
    from airwatt.emulator.board import sensors
    from airwatt.firmware import scd4x
except ImportError:  # MicroPython: the repository root and firmware/ are on MICROPYPATH
    from emulator.board import sensors
    import scd4x

FRAMES = __file__[: __file__.rfind("/")] + "/scd4x_frames.json"


def _vectors():
    with open(FRAMES) as f:
        return json.load(f)


def _h(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


class Bus:
    """machine.I2C over the emulator, recording every frame written."""

    def __init__(self, emu):
        self.emu = emu
        self.written = []

    def writeto(self, addr, buf):
        self.written.append(bytes(buf))
        self.emu.i2c_write(bytes(buf))

    def readfrom_into(self, addr, buf):
        buf[:] = self.emu.i2c_read(len(buf))


def _scd(**kw):
    clock = Clock()
    emu = sensors.SCD4xEmulator(clock_ms=clock, **kw)
    bus = Bus(emu)
    return clock, emu, bus, scd4x.SCD4x(bus, stop_wait_ms=0)


def _run(coro):
    return asyncio.run(coro)


def test_firmware_builds_the_golden_frames():
    for c in _vectors()["commands"]:
        assert scd4x.command(c["name"], c["value"]).hex() == c["frame"], c


def test_golden_answers_decode():
    for a in _vectors()["answers"]:
        assert scd4x.words(_h(a["bytes"]), 1) == (a["word"],), a
    assert scd4x.temperature_offset(2022) == 5.4


def test_emulator_takes_every_golden_frame_and_answers_with_crc():
    clock, emu, bus, s = _scd(frc_warm_ms=0)
    emu.i2c_write(_h("21b1"))
    clock.t += 5000
    emu.i2c_write(_h("3f86"))
    for c in _vectors()["commands"]:
        if c["name"] == "start_periodic":
            continue
        emu.i2c_write(_h(c["frame"]))
        if c["name"].startswith("get_") or c["name"] == "forced_recalibration":
            raw = emu.i2c_read(3)
            assert scd4x.crc8(raw[:2]) == raw[2], c
    assert emu.offset_word == 2022 and emu.altitude == 1950 and emu.pressure_hpa == 987 and emu.asc is False
    # A setter whose value word has a bad CRC is NACKed.
    bad = bytearray(_h("241d07e648"))
    bad[4] ^= 1
    try:
        emu.i2c_write(bytes(bad))
        raise AssertionError("a bad CRC was taken")
    except OSError:
        pass


def test_care_plans():
    for p in _vectors()["care_plans"]:
        steps = scd4x.care_plan(p["want"], p["have"])
        assert [scd4x.command(n, v).hex() for n, v in steps] == p["frames"], p["about"]


def test_failed_frc_answers_ffff():
    clock, emu, bus, s = _scd()  # the datasheet's 3 minutes of measuring before the stop
    emu.i2c_write(_h("21b1"))
    clock.t += 60000
    emu.i2c_write(_h("3f86"))
    emu.i2c_write(_h("362f01e0b4"))
    assert emu.i2c_read(3) == _h("ffffac")
    assert emu.frc_correction == 0


def test_care_persists_only_changes_and_survives_a_power_cycle():
    clock, emu, bus, s = _scd()
    _run(s.start())
    clock.t += 5000
    assert _run(s.care({"asc": False, "temp_offset": 5.4, "altitude": 180})) is None
    assert emu.periodic, "periodic measurement restarted after care"
    assert emu.persisted == 1
    assert emu.eeprom == {"offset_word": 2022, "altitude": 180, "asc": False, "frc_correction": 0}
    assert bus.written[0] == _h("3f86") and bus.written[-1] == _h("21b1")
    # Applied again at the next boot: the sensor already holds them, so no EEPROM write.
    _run(s.care({"asc": False, "temp_offset": 5.4, "altitude": 180}))
    assert emu.persisted == 1
    # Power cycle: a new sensor from the EEPROM keeps them; a setting never persisted is lost.
    emu.i2c_write(_h("3f86"))
    emu.i2c_write(_h("2427079e09"))  # altitude 1950, not persisted
    again = sensors.SCD4xEmulator(clock_ms=clock, eeprom=emu.eeprom)
    assert again.offset_word == 2022 and again.asc is False and again.altitude == 180


def test_care_forced_recalibration_reports_the_correction():
    clock, emu, bus, s = _scd(co2_profile=((0, 900), (43200, 900)))
    _run(s.start())
    clock.t += 180000
    before = emu.measure()[0]
    correction = _run(s.care({}, 420))
    assert abs(correction - (420 - before)) <= 40, (correction, before)
    assert emu.eeprom["frc_correction"] == emu.frc_correction != 0, "FRC persisted"
    assert emu.periodic
    clock.t += 5000
    values, _ = _run(s.read())
    assert abs(values["co2"] - 420) <= 50


def test_care_refused_frc_raises_and_restarts_measuring():
    clock, emu, bus, s = _scd()
    _run(s.start())
    clock.t += 10000  # not the 3 minutes
    try:
        _run(s.care({"asc": True}, 420))
        raise AssertionError("a failed FRC passed")
    except ValueError as e:
        assert "failed" in str(e)
    assert emu.periodic and emu.frc_correction == 0


def test_humid_above_uses_the_last_fresh_reading():
    clock, emu, bus, s = _scd(rh_profile=((0, 92.0), (43200, 92.0)))
    _run(s.start())
    assert not s.humid_above(85)
    clock.t += 5000
    assert _run(s.read()) is not None
    assert s.humid_above(85) and not s.humid_above(95) and not s.humid_above(0)
