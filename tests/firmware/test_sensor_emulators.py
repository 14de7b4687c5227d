# runs on: cpython, micropython
"""The drivers' I/O classes against the byte-exact sensor emulators (emulator/board/sensors.py), faults included.

A fake clock drives the emulators and the PMS warm-up, so cadences and warm-up take no real time.
"""
import asyncio
import errno

try:
    from airwatt.emulator.board import sensors
    from airwatt.firmware import pms5003, pzem004t, scd4x
except ImportError:  # MicroPython: the repository root and firmware/ are on MICROPYPATH
    from emulator.board import sensors
    import pms5003
    import pzem004t
    import scd4x
from uart_rx import UartRx

HOUR_MS = 3600000


class Clock:
    """Milliseconds since the board booted; t0 chosen so the emulators' day clock reads 00:00 (UTC+7)."""

    def __init__(self, hour=0.0):
        self.t = int((24 - 7 + hour) * HOUR_MS) % (24 * HOUR_MS)

    def __call__(self):
        return self.t

    def advance(self, ms):
        self.t += ms


class UartAdapter(UartRx):
    """machine.UART over a UART-side emulator: write() goes to the sensor, any()/readinto() drain what it sent."""

    def __init__(self, emu):
        super().__init__()
        self.emu = emu

    def write(self, data):
        self.emu.write(bytes(data))
        return len(data)

    def _pull(self):
        self.rx += self.emu.read_available()

    def any(self):
        self._pull()
        return len(self.rx)



class I2CAdapter:
    """machine.I2C over an I2C-side emulator; a wrong address NACKs with ENODEV."""

    def __init__(self, emu):
        self.emu = emu

    def writeto(self, addr, buf):
        if addr != self.emu.addr:
            raise OSError(errno.ENODEV)
        self.emu.i2c_write(bytes(buf))

    def readfrom_into(self, addr, buf):
        if addr != self.emu.addr:
            raise OSError(errno.ENODEV)
        buf[:] = self.emu.i2c_read(len(buf))


def _run(coro):
    return asyncio.run(coro)


def _oserror(coro):
    try:
        asyncio.run(coro)
    except OSError as e:
        return e.args[0]
    raise AssertionError("no OSError")


def _valueerror(coro):
    try:
        asyncio.run(coro)
    except ValueError as e:
        return str(e)
    raise AssertionError("no ValueError")


class Counted:
    """What the sampler does with a driver: count bus errors and bad frames, keep only good readings."""

    def __init__(self, driver):
        self.driver = driver
        self.bus_errors = 0
        self.bad_frames = 0
        self.readings = []

    def read(self):
        try:
            r = _run(self.driver.read())
        except OSError:
            self.bus_errors += 1
            return None
        except ValueError:
            self.bad_frames += 1
            return None
        if r is not None:
            self.readings.append(r)
        return r


# --- PZEM-004T ---------------------------------------------------------------------------------------------
def _pzem(hour=10.0, addr=1, driver_addr=None, **kw):
    clock = Clock(hour)
    emu = sensors.PZEMEmulator(addr=addr, clock_ms=clock, **kw)
    meter = pzem004t.PZEM004T(UartAdapter(emu), addr=driver_addr or addr, timeout_ms=20)
    return clock, emu, meter


def test_pzem_emulator_answers_the_driver_with_real_crcs():
    clock, emu, meter = _pzem()
    raw = bytearray()
    emu.write(pzem004t.read_request(1))
    raw += emu.read_available()
    assert len(raw) == 25 and raw[:3] == b"\x01\x04\x14" and pzem004t.crc16(raw) == 0
    values, flags = _run(meter.read())
    assert sorted(values) == ["current", "energy_wh", "frequency", "pf", "power", "voltage"]
    assert 215 < values["voltage"] < 240 and 49.8 <= values["frequency"] <= 50.2 and 0.8 <= values["pf"] <= 1
    assert abs(values["power"] - values["voltage"] * values["current"] * values["pf"]) < 0.02 * values["power"]
    assert flags == []


def test_pzem_load_follows_the_day_and_energy_accumulates():
    clock, emu, meter = _pzem(hour=3.0)
    night = _run(meter.read())[0]
    clock.advance(7 * HOUR_MS)  # 10:00
    day = _run(meter.read())[0]
    assert night["power"] < 400 < 1500 < day["power"], (night, day)
    e0 = day["energy_wh"]
    clock.advance(HOUR_MS // 2)
    e1 = _run(meter.read())[0]["energy_wh"]
    # half an hour at ~2.6 kW (office profile between 10:00 and 10:30)
    assert 1100 < e1 - e0 < 1500, (e0, e1)
    clock.advance(60000)
    assert _run(meter.read())[0]["energy_wh"] >= e1


def test_pzem_reset_energy_and_broadcast_rules():
    clock, emu, meter = _pzem(energy_wh=5000)
    assert _run(meter.read())[0]["energy_wh"] == 5000
    _run(meter.reset_energy())
    assert _run(meter.read())[0]["energy_wh"] == 0
    clock.advance(HOUR_MS)
    assert _run(meter.read())[0]["energy_wh"] > 1000
    # Broadcast (0x00): the meter acts but does not answer.
    emu.write(pzem004t.reset_energy_request(0))
    assert emu.read_available() == b""
    assert _run(meter.read())[0]["energy_wh"] == 0
    # The general address 0xF8 reaches the only meter, which answers with its own address.
    general = pzem004t.PZEM004T(UartAdapter(emu), timeout_ms=20)
    values, flags = _run(general.read())
    assert values["voltage"] > 200
    # Another meter's address: silence, so a bus error.
    other = pzem004t.PZEM004T(UartAdapter(emu), addr=2, timeout_ms=20)
    assert _oserror(other.read()) == errno.ETIMEDOUT


def test_pzem_emulator_ignores_bad_crc_and_answers_modbus_errors():
    clock, emu, meter = _pzem()
    req = bytearray(pzem004t.read_request(1))
    req[-1] ^= 1
    emu.write(bytes(req))
    assert emu.read_available() == b""
    too_many = bytes((1, 4, 0, 0, 0, 11))
    crc = pzem004t.crc16(too_many)
    emu.write(too_many + bytes((crc & 0xFF, crc >> 8)))
    reply = emu.read_available()
    msg = ""
    try:
        pzem004t.decode(reply)
    except ValueError as e:
        msg = str(e)
    assert "exception 0x02" in msg, msg
    unknown = bytes((1, 0x41))
    crc = pzem004t.crc16(unknown)
    emu.write(unknown + bytes((crc & 0xFF, crc >> 8)))
    assert emu.read_available()[:3] == b"\x01\xc1\x01"


def test_pzem_mains_off_means_no_answer_and_no_energy():
    clock, emu, meter = _pzem()
    e0 = _run(meter.read())[0]["energy_wh"]
    emu.set_mains(False)
    assert _oserror(meter.read()) == errno.ETIMEDOUT
    clock.advance(2 * HOUR_MS)
    emu.set_mains(True)
    e1 = _run(meter.read())[0]["energy_wh"]
    assert e1 - e0 <= 1, (e0, e1)


def test_pzem_faults_unplugged_corrupt_stuck():
    clock, emu, meter = _pzem()
    counted = Counted(meter)
    emu.set_fault("unplugged")
    assert counted.read() is None and counted.bus_errors == 1
    emu.set_fault("unplugged", False)
    emu.corrupt(1)
    values, flags = counted.read()
    assert flags == ["retried"] and emu.frames_corrupted == 1
    emu.corrupt(2)
    assert counted.read() is None and counted.bad_frames == 1 and emu.frames_corrupted == 3
    assert len(counted.readings) == 1  # a bad frame never becomes a reading
    emu.set_fault("stuck")
    first = counted.read()
    clock.advance(HOUR_MS)
    assert counted.read() == first
    emu.set_fault("stuck", False)
    clock.advance(1000)
    assert counted.read()[0]["energy_wh"] > first[0]["energy_wh"]


def test_pzem_corrupt_probability_is_counted_not_stored():
    clock, emu, meter = _pzem()
    emu.corrupt(0, probability=0.5)
    counted = Counted(meter)
    for _ in range(20):
        clock.advance(1000)
        counted.read()
    assert counted.bad_frames + len(counted.readings) == 20
    assert counted.bad_frames > 0 and len(counted.readings) > 0
    retried = sum(1 for r in counted.readings if "retried" in r[1])
    assert emu.frames_corrupted == 2 * counted.bad_frames + retried


# --- PMS5003 -----------------------------------------------------------------------------------------------
def _bus(n=3, hour=10.0):
    clock = Clock(hour)
    bus = sensors.PZEMBus(meters=n, clock_ms=clock, day_s=lambda: int(hour * 3600))
    uart = UartAdapter(bus)
    return clock, bus, uart, [pzem004t.PZEM004T(uart, addr=a, timeout_ms=20) for a in range(1, n + 1)]


def test_pzem_bus_three_meters_each_with_its_own_load():
    clock, bus, uart, meters = _bus()
    powers = []
    for i, m in enumerate(meters):
        values, flags = _run(m.read())
        assert flags == []
        powers.append(values["power"])
    assert len(set(powers)) == 3  # their own loads
    assert powers[2] > powers[0] > powers[1]  # loads 1.2, 1.0, 0.75 of one profile
    clock.advance(HOUR_MS)
    energies = [_run(m.read())[0]["energy_wh"] for m in meters]
    assert energies[2] > energies[0] > energies[1] > 0  # one counter each


def test_pzem_bus_one_meter_unplugged_or_misaddressed_fails_alone():
    clock, bus, uart, meters = _bus()
    bus.members["pzem2"].set_fault("unplugged", True)
    assert _run(meters[0].read())[0]["voltage"] > 200
    assert _oserror(meters[1].read()) == errno.ETIMEDOUT
    assert _run(meters[2].read())[0]["voltage"] > 200
    bus.members["pzem2"].set_fault("unplugged", False)
    bus.members["pzem3"].set_fault("wrong_addr", 9)
    assert "address 0x09" in _valueerror(meters[2].read())
    assert _run(meters[1].read())[0]["voltage"] > 200


def test_pzem_bus_general_address_collides_when_several_answer():
    clock, bus, uart, meters = _bus()
    general = pzem004t.PZEM004T(uart, timeout_ms=20)
    assert "CRC" in _valueerror(general.read_address())
    clock, bus, uart, meters = _bus(n=1)
    general = pzem004t.PZEM004T(uart, timeout_ms=20)
    assert _run(general.read_address()) == 1
    _run(general.set_address(2))  # echoed as sent, through 0xF8
    assert bus.members["pzem1"].addr == 2 and bus.state() == {"energies": [0], "addrs": [2]}
    assert _run(pzem004t.PZEM004T(uart, addr=2, timeout_ms=20).read_address()) == 2
    assert _oserror(pzem004t.PZEM004T(uart, addr=1, timeout_ms=20).read()) == errno.ETIMEDOUT


def _pms(hour=8.0, warmup_ms=30000):
    clock = Clock(hour)
    emu = sensors.PMSEmulator(clock_ms=clock)
    s = pms5003.PMS5003(UartAdapter(emu), warmup_ms=warmup_ms, timeout_ms=30, clock_ms=clock)
    return clock, emu, s


def test_pms_emulator_streams_checksummed_frames_in_active_mode():
    clock, emu, s = _pms()
    assert emu.read_available() == b""
    clock.advance(3000)
    stream = emu.read_available()
    assert len(stream) == 3 * 32
    frames = 0
    while stream:
        frame, used = pms5003.find_frame(stream)
        if frame is None:
            break
        d = pms5003.decode(frame)
        assert d["pm1"] <= d["pm25"] <= d["pm10"] and d["n03"] > d["n05"] > d["n10"]
        frames += 1
        stream = stream[used:]
    assert frames == 3


def test_pms_passive_warm_up_read_sleep_wake():
    clock, emu, s = _pms()
    _run(s.start())
    assert emu.awake and not emu.active
    clock.advance(5000)
    assert _run(s.read()) is None  # warming up
    clock.advance(25000)
    values, flags = _run(s.read())
    assert sorted(values) == ["pm1", "pm10", "pm25"] and flags == []
    assert 20 <= values["pm25"] <= 45, values  # morning traffic in the office profile
    _run(s.sleep())
    assert not emu.awake
    assert emu.read_available() == b"\x42\x4d\x00\x04\xe4\x00\x01\x77"  # the sleep acknowledgement
    clock.advance(60000)
    assert emu.read_available() == b""  # asleep: silent
    assert _run(s.read()) is None and emu.awake  # woken, warming up again
    clock.advance(30000)
    assert _run(s.read()) is not None


def test_pms_day_profile():
    clock, emu, s = _pms(hour=3.0, warmup_ms=0)
    _run(s.start())
    night = [_run(s.read())[0]["pm25"] for _ in range(5)]
    clock.advance(5 * HOUR_MS)  # 08:00
    morning = [_run(s.read())[0]["pm25"] for _ in range(5)]
    assert sum(morning) > sum(night) + 25, (night, morning)


def test_pms_faults_unplugged_corrupt_stuck():
    clock, emu, s = _pms(warmup_ms=0)
    _run(s.start())
    counted = Counted(s)
    emu.set_fault("unplugged")
    assert counted.read() is None and counted.bus_errors == 1
    emu.set_fault("unplugged", False)
    emu.corrupt(3)
    for _ in range(3):
        assert counted.read() is None
    assert counted.bad_frames == 3 and emu.frames_corrupted == 3 and counted.readings == []
    assert counted.read() is not None
    emu.set_fault("stuck")
    a = counted.read()
    clock.advance(2 * HOUR_MS)
    assert counted.read() == a
    emu.set_fault("stuck", False)
    values = set()
    for _ in range(5):
        values.add(tuple(sorted(counted.read()[0].items())))
    assert len(values) > 1


# --- SCD4x -------------------------------------------------------------------------------------------------
def _scd(hour=10.0):
    clock = Clock(hour)
    emu = sensors.SCD4xEmulator(clock_ms=clock)
    return clock, emu, scd4x.SCD4x(I2CAdapter(emu), stop_wait_ms=0)


def test_scd4x_five_second_cadence_and_data_ready():
    clock, emu, s = _scd()
    _run(s.start())
    assert emu.periodic
    assert _run(s.read()) is None
    clock.advance(4999)
    assert _run(s.read()) is None
    clock.advance(1)
    values, flags = _run(s.read())
    assert sorted(values) == ["co2", "humidity", "temperature"] and flags == []
    assert 800 < values["co2"] < 1400 and 20 < values["temperature"] < 30 and 40 < values["humidity"] < 70
    assert _run(s.read()) is None  # read once: not ready until the next measurement
    clock.advance(5000)
    assert _run(s.read()) is not None


def test_scd4x_words_carry_crc8():
    clock, emu, s = _scd()
    emu.i2c_write(scd4x.command("start_periodic"))
    clock.advance(5000)
    emu.i2c_write(scd4x.command("read"))
    raw = emu.i2c_read(9)
    for i in range(0, 9, 3):
        assert scd4x.crc8(raw[i:i + 2]) == raw[i + 2]
    emu.i2c_write(scd4x.command("data_ready"))
    ready = emu.i2c_read(3)
    assert (ready[0] << 8 | ready[1]) & 0x7FF == 0 and scd4x.crc8(ready[:2]) == ready[2]


def test_scd4x_settings_through_the_driver():
    clock, emu, s = _scd()
    _run(s.start())
    # During periodic measurement the sensor refuses settings (NACK).
    try:
        _run(s.command("set_temperature_offset", 5.4))
        raise AssertionError("accepted a setting during periodic measurement")
    except OSError as e:
        assert e.args[0] == errno.EIO
    clock.advance(180000)  # FRC needs 3 minutes of measuring before the stop
    emu.i2c_write(scd4x.command("stop_periodic"))
    _run(s.command("set_temperature_offset", 5.4))
    assert scd4x.temperature_offset(_run(s.command("get_temperature_offset"))[0]) == 5.4
    _run(s.command("set_altitude", 1950))
    assert _run(s.command("get_altitude")) == (1950,)
    _run(s.command("asc_off"))
    assert _run(s.command("get_asc")) == (0,) and not emu.asc
    _run(s.command("set_asc", True))
    assert _run(s.command("get_asc")) == (1,)
    before = emu.measure()[0]
    correction = _run(s.forced_recalibration(420))
    assert abs(correction - (420 - before)) <= 40
    emu.i2c_write(scd4x.command("start_periodic"))
    clock.advance(5000)
    assert abs(_run(s.read())[0]["co2"] - 420) <= 50


def test_scd4x_faults_unplugged_corrupt_stuck():
    clock, emu, s = _scd()
    _run(s.start())
    counted = Counted(s)
    emu.set_fault("unplugged")
    clock.advance(5000)
    assert counted.read() is None and counted.bus_errors == 1
    try:
        _run(s.read())
    except OSError as e:
        assert e.args[0] == errno.ENODEV
    emu.set_fault("unplugged", False)
    emu.corrupt(1)
    assert counted.read() is None and counted.bad_frames == 1 and counted.readings == []
    clock.advance(5000)
    assert counted.read() is not None
    emu.set_fault("stuck")
    clock.advance(5000)
    a = counted.read()
    clock.advance(3 * HOUR_MS)
    assert counted.read() == a
