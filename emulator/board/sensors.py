# Byte-exact sensor emulators that sit behind the emulated board's buses (runs on MicroPython and CPython).
#
# UART side (PZEMEmulator, PMSEmulator): write(data) takes the bytes the board sends; read_available() returns
# (and drains) the bytes the sensor has sent so far. I2C side (SCD4xEmulator): i2c_write(data) and
# i2c_read(n); both raise OSError(ENODEV) when unplugged, as a NACK does.
# Faults, settable at run time on every emulator: `unplugged` (no bytes at all), `corrupt(n, probability)`
# (flip one byte in each of the next n frames, or in any frame with that probability), `stuck` (values frozen).
# Checksums are computed here independently of the firmware drivers, so a driver bug cannot hide behind them.
# Time: `clock_ms` (ms, default time.ticks_ms / monotonic) paces cadences and energy; `day_s` (seconds of the
# day, default derived from clock_ms at UTC+7) drives the building-day profiles. A profile is a table of
# (second of day, value) points interpolated linearly, or a callable day_s -> value.
import time

try:
    _now_ms = time.ticks_ms
    _diff = time.ticks_diff
    _add = time.ticks_add
except AttributeError:  # CPython
    def _now_ms():
        return int(time.monotonic() * 1000)

    def _diff(a, b):
        return a - b

    def _add(a, b):
        return a + b

ENODEV = 19
EIO = 5
DAY_S = 86400
_THAI_UTC_OFFSET_S = 7 * 3600


def modbus_crc(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def sensirion_crc(hi, lo):
    crc = 0xFF
    for b in (hi, lo):
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _interp(points, x):
    """Piecewise-linear value at x (seconds of day) through [(second, value), ...] sorted, wrapping at midnight."""
    x = x % DAY_S
    prev = points[-1]
    prev = (prev[0] - DAY_S, prev[1])
    for p in points:
        if x < p[0]:
            return prev[1] + (p[1] - prev[1]) * (x - prev[0]) / (p[0] - prev[0])
        prev = p
    first = points[0]
    return prev[1] + (first[1] - prev[1]) * (x - prev[0]) / (first[0] + DAY_S - prev[0])


def _h(hours):
    return int(hours * 3600)


# A Thai office building's day: (second of day, value). Night base load, air conditioning from 8:00, lunch dip.
OFFICE_POWER_W = ((_h(0), 180), (_h(6), 200), (_h(8), 1800), (_h(10), 2600), (_h(12), 1900), (_h(13), 2700),
                  (_h(16), 2500), (_h(18), 900), (_h(20), 300), (_h(23), 180))
OFFICE_CO2_PPM = ((_h(0), 430), (_h(7), 420), (_h(9), 900), (_h(11), 1150), (_h(12), 800), (_h(14), 1250),
                  (_h(17), 1000), (_h(19), 550), (_h(22), 450))
OFFICE_TEMP_C = ((_h(0), 28.5), (_h(6), 27.5), (_h(9), 25.0), (_h(15), 24.5), (_h(18), 26.5), (_h(21), 28.5))
OFFICE_RH = ((_h(0), 68.0), (_h(7), 70.0), (_h(9), 55.0), (_h(17), 52.0), (_h(20), 64.0))
# PM2.5 indoors follows the city outside: morning and evening traffic.
OFFICE_PM25 = ((_h(0), 18), (_h(6), 22), (_h(8), 35), (_h(10), 20), (_h(16), 19), (_h(18), 30), (_h(21), 24))


class _Rng:
    """Small deterministic LCG: repeatable noise and fault positions on both runtimes."""

    def __init__(self, seed):
        self.state = seed & 0x7FFFFFFF or 1

    def next(self):
        self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
        return self.state

    def uniform(self):
        return self.next() / 0x7FFFFFFF


class _Sensor:
    def __init__(self, clock_ms, day_s, seed):
        self.clock_ms = clock_ms or _now_ms
        self.day_s = day_s or (lambda: (self.clock_ms() // 1000 + _THAI_UTC_OFFSET_S) % DAY_S)
        self.rng = _Rng(seed)
        self.unplugged = False
        self.stuck = False
        self.corrupt_next = 0
        self.corrupt_probability = 0.0
        self.frames_sent = 0
        self.frames_corrupted = 0
        self._frozen = None

    def corrupt(self, n=1, probability=0.0):
        """Flip one byte in each of the next `n` frames, and in any later frame with `probability`."""
        self.corrupt_next = n
        self.corrupt_probability = probability

    def set_fault(self, name, value=True):
        """Set a fault by name: "unplugged", "stuck" (bool) or "corrupt" (n frames); value False clears it."""
        if name == "unplugged":
            self.unplugged = bool(value)
        elif name == "stuck":
            self.stuck = bool(value)
            if not value:
                self._frozen = None
        elif name == "corrupt":
            self.corrupt(int(value) if value is not True else 1)
        else:
            raise ValueError("unknown fault %r" % (name,))

    def _values(self):
        if self.stuck:
            if self._frozen is None:
                self._frozen = self.measure()
            return self._frozen
        self._frozen = None
        return self.measure()

    def _finish(self, frame, start=0):
        """Count a frame going out and apply the corrupt fault (one byte xor-ed with a non-zero mask)."""
        self.frames_sent += 1
        hit = False
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            hit = True
        elif self.corrupt_probability and self.rng.uniform() < self.corrupt_probability:
            hit = True
        if hit:
            i = start + self.rng.next() % (len(frame) - start)
            frame[i] ^= 1 + self.rng.next() % 255
            self.frames_corrupted += 1
        return frame

    def _noise(self, amplitude):
        return (self.rng.uniform() * 2 - 1) * amplitude


class PZEMEmulator(_Sensor):
    """PZEM-004T v3 (Modbus-RTU slave, 9600 8N1). Each write() is one request frame (3.5 char silence apart).

    Energy accumulates from the power profile over clock_ms; `mains` False powers the metering chip off (no
    answer). Supports read input registers 0x04, read holding 0x03 and write single register 0x06 (1 alarm
    threshold W, 2 slave address), reset energy 0x42; broadcast 0x00 executes writes without answering; the
    general address 0xF8 is answered with the meter's own address.
    """

    def __init__(self, addr=1, profile=None, clock_ms=None, day_s=None, energy_wh=0, delay_ms=0, seed=1):
        _Sensor.__init__(self, clock_ms, day_s, seed)
        self.addr = addr
        self.profile = profile or OFFICE_POWER_W
        self.energy = float(energy_wh)
        self.alarm_threshold_w = 23000
        self.mains = True
        self.delay_ms = delay_ms
        self.requests = 0
        self._last_ms = self.clock_ms()
        self._out = bytearray()
        self._ready_at = None
        self._frozen_regs = None
        self.wrong_addr = None

    def set_mains(self, on):
        """Mains on/off: the metering chip is powered from the AC side, so off means no answer, no energy."""
        self._accumulate()
        self.mains = bool(on)

    def set_fault(self, name, value=True):
        if name == "mains_off":
            self.set_mains(not value)
        elif name == "wrong_addr":
            # Answers carry this address byte (a meter mis-addressed, or another one answering in its place).
            self.wrong_addr = int(value) & 0xFF if value not in (None, False) else None
        else:
            _Sensor.set_fault(self, name, value)

    def power_w(self):
        p = self.profile(self.day_s()) if callable(self.profile) else _interp(self.profile, self.day_s())
        return max(0.0, p)

    def _accumulate(self):
        now = self.clock_ms()
        dt = _diff(now, self._last_ms)
        self._last_ms = now
        if self.mains and dt > 0:
            self.energy += self.power_w() * dt / 3600000

    def measure(self):
        p = self.power_w() * (1 + self._noise(0.02))
        v = 228.0 + 4 * (1 - p / 3000) + self._noise(0.8)  # the voltage sags under load
        pf = 0.97 if p < 400 else 0.88 + self._noise(0.02)
        return {
            "voltage": int(v * 10 + 0.5),
            "current": int(p / (v * pf) * 1000 + 0.5),
            "power": int(p * 10 + 0.5),
            "frequency": int((50.0 + self._noise(0.05)) * 10 + 0.5),
            "pf": int(pf * 100 + 0.5),
        }

    def registers(self):
        """The 10 input registers as the meter would report them now."""
        self._accumulate()
        v = self._values()
        e = int(self.energy) & 0xFFFFFFFF
        alarm = 0xFFFF if v["power"] >= self.alarm_threshold_w * 10 else 0
        c, p = v["current"], v["power"]
        regs = (v["voltage"], c & 0xFFFF, c >> 16, p & 0xFFFF, p >> 16, e & 0xFFFF, e >> 16, v["frequency"],
                v["pf"], alarm)
        # A stuck meter repeats its whole frame, energy counter included (as users report of failing meters).
        if self.stuck:
            if self._frozen_regs is None:
                self._frozen_regs = regs
            return self._frozen_regs
        self._frozen_regs = None
        return regs

    def _reply(self, body):
        frame = bytearray(body)
        if self.wrong_addr is not None:
            frame[0] = self.wrong_addr
        crc = modbus_crc(frame)
        frame.append(crc & 0xFF)
        frame.append(crc >> 8)
        self._out += self._finish(frame)
        self._ready_at = _add(self.clock_ms(), self.delay_ms) if self.delay_ms else None

    def _error(self, func, code):
        self._reply((self.addr, func | 0x80, code))

    def write(self, data):
        if self.unplugged or not self.mains:
            self._accumulate()
            return
        self.requests += 1
        n = len(data)
        if n < 4 or modbus_crc(data) != 0:
            return  # a Modbus slave ignores a frame with a bad CRC
        to, func = data[0], data[1]
        if to != self.addr and to != 0xF8 and to != 0:
            return
        answer = to != 0
        if func == 0x42:
            if n != 4:
                return
            self._accumulate()
            self.energy = 0.0
            if answer:
                self._reply((self.addr, 0x42))
            return
        if func in (0x03, 0x04, 0x06) and n != 8:
            return
        reg, arg = (data[2] << 8) | data[3], (data[4] << 8) | data[5] if n >= 6 else 0
        if func == 0x04 or func == 0x03:
            if not answer:
                return
            regs = self.registers() if func == 0x04 else (0, self.alarm_threshold_w, self.addr)
            if arg < 1 or reg + arg > len(regs):
                self._error(func, 2)
                return
            body = bytearray((self.addr, func, 2 * arg))
            for r in regs[reg:reg + arg]:
                body.append(r >> 8)
                body.append(r & 0xFF)
            self._reply(body)
        elif func == 0x06:
            if reg == 1:
                self.alarm_threshold_w = arg
            elif reg == 2 and 1 <= arg <= 0xF7:
                self.addr = arg
            else:
                if answer:
                    self._error(func, 3 if reg in (1, 2) else 2)
                return
            if answer:
                # The meter echoes the request as sent, address byte included (Tasmota logs F8 06 00 02 00 01
                # FD A3 for address 1 set through 0xF8): the new address shows only in later answers.
                self._reply(bytes(data[:6]))
        elif answer:
            self._error(func, 1)

    def read_available(self):
        if self.unplugged or not self._out:
            return b""
        if self._ready_at is not None and _diff(self.clock_ms(), self._ready_at) < 0:
            return b""
        out = bytes(self._out)
        self._out = bytearray()
        return out


# Each meter of a bus its own load: a share of the office profile, as the phases of a building are never
# balanced (and a sub-circuit takes a part of one).
BUS_LOADS = (1.0, 0.75, 1.2, 0.35, 0.5, 0.6, 0.8, 0.9)


class PZEMBus:
    """Several PZEM-004T on one Modbus bus (one UART): meters at addresses 1..n, each with its own load, its
    own energy counter and its own faults (named "pzem1", "pzem2", ... by position, whatever its address).

    Every request reaches every meter; a meter answers only its own address (or 0xF8). When more than one
    answers at once their bytes collide on the wire: the line is idle high and any meter pulling it low wins,
    so the receiver gets the AND of the frames (as long as the longest): a frame whose CRC fails."""

    def __init__(self, meters=3, energies=None, addrs=None, clock_ms=None, day_s=None, loads=None, delay_ms=0):
        self.members = {}
        loads = loads or BUS_LOADS
        for i in range(meters):
            load = loads[i % len(loads)]
            profile = tuple((x, w * load) for x, w in OFFICE_POWER_W)
            m = PZEMEmulator(addr=(addrs[i] if addrs else i + 1), profile=profile, clock_ms=clock_ms,
                             day_s=day_s, energy_wh=(energies[i] if energies else 0), delay_ms=delay_ms,
                             seed=11 + i)
            self.members["pzem%d" % (i + 1)] = m

    def write(self, data):
        for m in self.members.values():
            m.write(data)

    def read_available(self):
        got = [b for b in (m.read_available() for m in self.members.values()) if b]
        if len(got) < 2:
            return got[0] if got else b""
        n = max(len(b) for b in got)
        out = bytearray(b"\xff" * n)
        for b in got:
            for i in range(len(b)):
                out[i] &= b[i]
        return bytes(out)

    def state(self):
        """What the meters keep across the board's resets: counters and addresses."""
        ms = list(self.members.values())
        return {"energies": [int(m.energy) for m in ms], "addrs": [m.addr for m in ms]}


class PMSEmulator(_Sensor):
    """PMS5003: active mode (power-on default) sends a data frame every `period_ms`; passive mode answers 0xE2;
    0xE1 sets the mode and 0xE4 sleeps/wakes, acknowledged with 8-byte frames as the real sensor does."""

    def __init__(self, profile=None, clock_ms=None, day_s=None, period_ms=1000, seed=2):
        _Sensor.__init__(self, clock_ms, day_s, seed)
        self.profile = profile or OFFICE_PM25
        self.period_ms = period_ms
        self.active = True
        self.awake = True
        self.woke_at = self.clock_ms()
        self._next_at = _add(self.woke_at, period_ms)
        self._out = bytearray()
        self._in = bytearray()

    def pm25(self):
        p = self.profile(self.day_s()) if callable(self.profile) else _interp(self.profile, self.day_s())
        return max(0.0, p)

    def measure(self):
        pm25 = self.pm25() * (1 + self._noise(0.08))
        pm1 = pm25 * 0.68
        pm10 = pm25 * 1.35
        atm = [int(pm1 + 0.5), int(pm25 + 0.5), int(pm10 + 0.5)]
        # CF=1 equals atmospheric at low loads and runs higher above ~30 ug/m3, as Plantower's tables do.
        cf1 = [a if a < 30 else int(a * 1.5 - 15) for a in atm]
        n03 = int(pm25 * 62 + 100)
        counts = [n03, int(n03 * 0.3), int(n03 * 0.06), int(pm25 * 0.35), int(pm25 * 0.12), int(pm25 * 0.05)]
        return cf1 + atm + counts

    def _ack(self, cmd, data):
        body = bytearray((0x42, 0x4D, 0, 4, cmd, data))
        s = sum(body)
        body.append(s >> 8)
        body.append(s & 0xFF)
        self._out += body

    def data_frame(self):
        frame = bytearray((0x42, 0x4D, 0, 28))
        for w in self._values():
            w = min(w, 0xFFFF)
            frame.append(w >> 8)
            frame.append(w & 0xFF)
        frame.append(0x97)  # version
        frame.append(0)  # error code
        s = sum(frame)
        frame.append(s >> 8)
        frame.append(s & 0xFF)
        return self._finish(frame)

    def write(self, data):
        if self.unplugged:
            return
        self._in += data
        buf = self._in
        while len(buf) >= 7:
            if buf[0] != 0x42 or buf[1] != 0x4D:
                buf = buf[1:]
                continue
            if sum(buf[:5]) != (buf[5] << 8) | buf[6]:
                buf = buf[1:]
                continue
            self._command(buf[2], buf[4])
            buf = buf[7:]
        self._in = bytearray(buf[-6:])

    def _command(self, cmd, data):
        if cmd == 0xE4:
            if data and not self.awake:
                self.awake = True
                self.woke_at = self.clock_ms()
                self._next_at = _add(self.woke_at, self.period_ms)
            elif not data and self.awake:
                self._ack(0xE4, 0)
                self.awake = False
            return
        if not self.awake:
            return  # asleep: only wake is heard
        if cmd == 0xE1:
            self.active = bool(data)
            self._ack(0xE1, 1 if data else 0)
            self._next_at = _add(self.clock_ms(), self.period_ms)
        elif cmd == 0xE2 and not self.active:
            self._out += self.data_frame()

    def _stream(self):
        # Active mode: frames every period_ms. A UART FIFO holds few, so at most 4 pending are kept.
        if not (self.awake and self.active):
            return
        now = self.clock_ms()
        sent = 0
        while _diff(now, self._next_at) >= 0:
            if sent < 4:
                self._out += self.data_frame()
                sent += 1
            self._next_at = _add(self._next_at, self.period_ms)
        if len(self._out) > 256:
            self._out = self._out[-256:]

    def read_available(self):
        if self.unplugged:
            self._out = bytearray()
            return b""
        self._stream()
        out = bytes(self._out)
        self._out = bytearray()
        return out


class SCD4xEmulator(_Sensor):
    """SCD4x at I2C 0x62: commands as 16-bit words (+ a CRC-8 word argument), answers as CRC-8 words.
    Periodic mode measures every 5 s; data-ready status goes to 0 once a measurement is read."""

    ADDR = 0x62
    PERIOD_MS = 5000

    # What persist_settings (0x3615) writes to the EEPROM, with the factory values: temperature offset word
    # (4.0 degC), altitude m, automatic self-calibration, and the FRC correction the sensor applies.
    FACTORY = {"offset_word": 1498, "altitude": 0, "asc": True, "frc_correction": 0}

    def __init__(self, clock_ms=None, day_s=None, co2_profile=None, seed=3, temp_profile=None, rh_profile=None,
                 eeprom=None, frc_warm_ms=180000):
        _Sensor.__init__(self, clock_ms, day_s, seed)
        self.addr = self.ADDR
        self.co2_profile = co2_profile or OFFICE_CO2_PPM
        self.temp_profile = temp_profile or OFFICE_TEMP_C
        self.rh_profile = rh_profile or OFFICE_RH
        self.periodic = False
        self.eeprom = dict(self.FACTORY)
        if eeprom:
            for k in eeprom:
                self.eeprom[k] = eeprom[k]
        self._load()
        self.pressure_hpa = 1013  # volatile: not kept by persist_settings
        # Sensirion: FRC needs the sensor to have measured (periodic mode) for 3 minutes before it was stopped;
        # otherwise it answers 0xFFFF.
        self.frc_warm_ms = frc_warm_ms
        self._ran_ms = 0  # how long the last periodic run lasted
        self.persisted = 0
        self.eeprom_changed = False  # set by persist_settings: the bridge keeps the EEPROM across resets
        self.serial = (0xBEEF, 0x0123, 0x4567)
        self._started_at = 0
        self._taken = 0  # measurements taken since start
        self._read_count = 0  # index of the last one read
        self._answer = None

    def _load(self):
        e = self.eeprom
        self.offset_word = e["offset_word"]
        self.altitude = e["altitude"]
        self.asc = e["asc"]
        self.frc_correction = e["frc_correction"]

    def measure(self):
        d = self.day_s()
        co2 = _interp(self.co2_profile, d) - self.frc_correction + self._noise(12)
        t = _interp(self.temp_profile, d) + self._noise(0.1) + 4.0 - self.offset_word * 175 / 65536
        rh = _interp(self.rh_profile, d) + self._noise(0.5)
        return (max(0, min(40000, int(co2 + 0.5))), int((t + 45) * 65536 / 175) & 0xFFFF,
                int(rh * 65536 / 100) & 0xFFFF)

    def _measurements_due(self):
        if not self.periodic:
            return self._taken
        return _diff(self.clock_ms(), self._started_at) // self.PERIOD_MS

    def data_ready(self):
        return self.periodic and self._measurements_due() > self._read_count

    def _words(self, ws):
        out = bytearray()
        for w in ws:
            hi, lo = (w >> 8) & 0xFF, w & 0xFF
            out.append(hi)
            out.append(lo)
            out.append(sensirion_crc(hi, lo))
        return out

    def i2c_write(self, data):
        if self.unplugged:
            raise OSError(ENODEV)
        self._answer = None
        if len(data) < 2:
            return
        code = (data[0] << 8) | data[1]
        arg = None
        if len(data) >= 5:
            if sensirion_crc(data[2], data[3]) != data[4]:
                raise OSError(EIO)  # the sensor NACKs an argument with a bad CRC
            arg = (data[2] << 8) | data[3]
        if self.periodic and code not in (0xEC05, 0xE4B8, 0x3F86, 0xE000):
            raise OSError(EIO)  # during periodic measurement other commands are NACKed
        if code == 0x21B1:
            self.periodic = True
            self._started_at = self.clock_ms()
            self._taken = 0
            self._read_count = 0
        elif code == 0x3F86:
            if self.periodic:
                self._taken = self._measurements_due()
                self._ran_ms = _diff(self.clock_ms(), self._started_at)
            self.periodic = False
        elif code == 0xE4B8:
            self._answer = self._words((0x8006 if self.data_ready() else 0x8000,))
        elif code == 0xEC05:
            if not self.data_ready():
                raise OSError(EIO)  # no new data: NACK
            self._read_count = self._measurements_due()
            self._answer = self._finish(self._words(self._values()))
        elif code == 0x241D and arg is not None:
            self.offset_word = arg
        elif code == 0x2318:
            self._answer = self._words((self.offset_word,))
        elif code == 0x2427 and arg is not None:
            self.altitude = arg
        elif code == 0x2322:
            self._answer = self._words((self.altitude,))
        elif code == 0xE000 and arg is not None:
            self.pressure_hpa = arg
        elif code == 0x2416 and arg is not None:
            self.asc = bool(arg)
        elif code == 0x2313:
            self._answer = self._words((1 if self.asc else 0,))
        elif code == 0x362F and arg is not None:
            if self._ran_ms < self.frc_warm_ms:
                self._answer = self._words((0xFFFF,))  # failed FRC
            else:
                before = self.measure()[0]
                self.frc_correction += before - arg
                self._answer = self._words((max(0, min(0xFFFE, 0x8000 + arg - before)),))
        elif code == 0x3615:
            self.persisted += 1
            self.eeprom = {"offset_word": self.offset_word, "altitude": self.altitude, "asc": self.asc,
                           "frc_correction": self.frc_correction}
            self.eeprom_changed = True
        elif code == 0x3646:
            self._load()  # reinit: settings back from the EEPROM
        elif code == 0x3682:
            self._answer = self._words(self.serial)
        elif code == 0x3639:
            self._answer = self._words((0,))
        elif code in (0x36E0, 0x36F6, 0x219D):
            pass
        else:
            raise OSError(EIO)  # unknown command

    def i2c_read(self, n):
        if self.unplugged:
            raise OSError(ENODEV)
        if self._answer is None:
            raise OSError(EIO)  # nothing to read: NACK
        out = bytes(self._answer[:n])
        if n > len(out):
            out += b"\xff" * (n - len(out))  # the bus reads 0xFF past the sensor's answer
        return out
