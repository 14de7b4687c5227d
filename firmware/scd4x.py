# Sensirion SCD4x (SCD40/SCD41) CO2, temperature and humidity over I2C (address 0x62).
# Pure part: crc8, decode_measurement, command, care_plan. I/O part: SCD4x.
import asyncio

try:
    from asyncio import sleep_ms as _sleep_ms
    from micropython import const
    from time import ticks_diff as _ticks_diff, ticks_ms as _ticks_ms
except ImportError:  # CPython
    from .host import const, sleep_ms as _sleep_ms, ticks_diff as _ticks_diff, ticks_ms as _ticks_ms

ADDR = const(0x62)

# name: (command word, takes a value, words in the answer, execution time ms)
COMMANDS = {
    "start_periodic": (0x21B1, False, 0, 0),
    "read": (0xEC05, False, 3, 1),
    "stop_periodic": (0x3F86, False, 0, 500),
    "data_ready": (0xE4B8, False, 1, 1),
    "set_temperature_offset": (0x241D, True, 0, 1),
    "get_temperature_offset": (0x2318, False, 1, 1),
    "set_altitude": (0x2427, True, 0, 1),
    "get_altitude": (0x2322, False, 1, 1),
    "set_ambient_pressure": (0xE000, True, 0, 1),
    "forced_recalibration": (0x362F, True, 1, 400),
    "set_asc": (0x2416, True, 0, 1),
    "asc_on": (0x2416, False, 0, 1),  # value 1 implied
    "asc_off": (0x2416, False, 0, 1),  # value 0 implied
    "get_asc": (0x2313, False, 1, 1),
    "persist": (0x3615, False, 0, 800),
    "serial_number": (0x3682, False, 3, 1),
    "self_test": (0x3639, False, 1, 10000),
    "single_shot": (0x219D, False, 0, 5000),
    "power_down": (0x36E0, False, 0, 1),
    "wake_up": (0x36F6, False, 0, 30),
    "reinit": (0x3646, False, 0, 30),
}

_IMPLIED = {"asc_on": 1, "asc_off": 0}


def crc8(data):
    """Sensirion CRC-8: poly 0x31, init 0xFF, no reflection, no final xor (0xBEEF -> 0x92)."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def _word(value, name):
    # Physical value -> the 16-bit word the sensor expects.
    if name == "set_temperature_offset":
        w = int(value * 65536 / 175 + 0.5)
    elif name == "set_ambient_pressure":
        w = int(value / 100 + 0.5)  # Pa -> hPa
    else:
        w = int(value)
    if not 0 <= w <= 0xFFFF:
        raise ValueError("SCD4x: value %r out of range for %s" % (value, name))
    return w


def command(name, value=None):
    """The bytes to write for `name` (2 bytes, or 5 with a value word and its CRC)."""
    if name not in COMMANDS:
        raise ValueError("SCD4x: unknown command %r" % (name,))
    code, takes, _, _ = COMMANDS[name]
    if name in _IMPLIED:
        takes, value = True, _IMPLIED[name]
    elif name == "set_asc" and value is not None:
        value = 1 if value else 0
    if not takes:
        if value is not None:
            raise ValueError("SCD4x: %s takes no value" % name)
        return bytes((code >> 8, code & 0xFF))
    if value is None:
        raise ValueError("SCD4x: %s needs a value" % name)
    w = _word(value, name)
    hi, lo = w >> 8, w & 0xFF
    return bytes((code >> 8, code & 0xFF, hi, lo, crc8((hi, lo))))


def words(buf, count):
    """Check each 3-byte group (word, CRC-8) of `buf` and return the words as a tuple."""
    if len(buf) < 3 * count:
        raise ValueError("SCD4x: %d bytes, expected %d" % (len(buf), 3 * count))
    out = []
    for i in range(count):
        j = 3 * i
        if crc8(buf[j:j + 2]) != buf[j + 2]:
            raise ValueError("SCD4x: bad CRC in word %d" % i)
        out.append((buf[j] << 8) | buf[j + 1])
    return tuple(out)


def decode_measurement(buf):
    """Decode the 9 bytes of read_measurement: co2 ppm, temperature degC, humidity %RH (2 decimals)."""
    co2, t, rh = words(buf, 3)
    return {
        "co2": co2,
        "temperature": round(-45 + 175 * t / 65536, 2),
        "humidity": round(100 * rh / 65536, 2),
    }


def temperature_offset(word):
    """get_temperature_offset's word -> degC."""
    return round(word * 175 / 65536, 2)


# Care settings that persist_settings keeps in the sensor's EEPROM: (care name, get command, set command).
_KEPT = (
    ("asc", "get_asc", "set_asc"),
    ("temp_offset", "get_temperature_offset", "set_temperature_offset"),
    ("altitude", "get_altitude", "set_altitude"),
)


def care_plan(want, have):
    """The (command, value) steps that bring a sensor whose EEPROM settings are `have` (words, as the get_*
    commands answer: {"asc": 0|1, "temp_offset": word, "altitude": m}) to the care settings `want` (the answer's
    settings.co2). Only what differs is written, and persisted once: the EEPROM takes about 2000 writes.
    Ambient pressure is not kept by the sensor, so it is always sent."""
    steps = []
    for name, _, setter in _KEPT:
        if name not in want:
            continue
        value = want[name]
        if name == "asc":
            value = 1 if value else 0
        if _word(value, setter) != have.get(name):
            steps.append((setter, value))
    if steps:
        steps.append(("persist", None))
    if "pressure" in want:
        steps.append(("set_ambient_pressure", want["pressure"]))
    return steps


class SCD4x:
    """SCD4x in periodic mode (a reading every 5 s). read() -> (values, flags), or None when not ready."""

    KIND = "co2"

    def __init__(self, i2c, addr=ADDR, stop_wait_ms=500):
        self.i2c = i2c
        self.addr = addr
        self.stop_wait_ms = stop_wait_ms
        self._rx = bytearray(9)
        self._mv = memoryview(self._rx)
        self._ready = command("data_ready")
        self._read = command("read")
        self._lock = asyncio.Lock()  # care commands and reads must not interleave on the bus
        self.rh = None  # the last humidity read, for the PM sensor's humid flag
        self.rh_ms = 0  # ticks_ms of that reading

    async def start(self):
        async with self._lock:
            await self._restart()

    async def _restart(self):
        # A sensor left in periodic mode (board reset without power cycle) refuses most commands: stop first.
        self.i2c.writeto(self.addr, command("stop_periodic"))
        await _sleep_ms(self.stop_wait_ms)
        self.i2c.writeto(self.addr, command("start_periodic"))

    async def _query(self, cmd, count):
        self.i2c.writeto(self.addr, cmd)
        await _sleep_ms(1)
        mv = self._mv[:3 * count]
        self.i2c.readfrom_into(self.addr, mv)
        return mv

    async def read(self):
        async with self._lock:
            ready = words(await self._query(self._ready, 1), 1)[0]
            if ready & 0x07FF == 0:
                return None
            d = decode_measurement(await self._query(self._read, 3))
        if d["co2"] == 0:
            return None  # Sensirion: a 0 ppm sample right after start is not a measurement
        self.rh = d["humidity"]
        self.rh_ms = _ticks_ms()
        return d, []

    def humid_above(self, rh, within_ms=300000):
        """True when the last humidity read, no older than within_ms, is above rh %RH (rh 0: never)."""
        return (bool(rh) and self.rh is not None and self.rh > rh
                and _ticks_diff(_ticks_ms(), self.rh_ms) <= within_ms)

    async def care(self, want, frc=None):
        """Apply care settings (settings.co2 without frc) with periodic measurement stopped, then FRC to `frc`
        ppm when given (the sensor must have measured at that level for 3 minutes). Returns the FRC correction
        in ppm (None without FRC); raises ValueError when the sensor refuses the FRC (answer 0xFFFF) and OSError
        for bus trouble. Periodic measurement is restarted in every case."""
        async with self._lock:
            self.i2c.writeto(self.addr, command("stop_periodic"))
            await _sleep_ms(self.stop_wait_ms)
            try:
                have = {}
                for name, getter, _ in _KEPT:
                    if name in want:
                        have[name] = (await self.command(getter))[0]
                for name, value in care_plan(want, have):
                    await self.command(name, value)
                correction = None
                if frc is not None:
                    correction = await self.forced_recalibration(frc)
                    await self.command("persist")
                return correction
            finally:
                self.i2c.writeto(self.addr, command("start_periodic"))

    async def command(self, name, value=None):
        """Send any command; returns the answer's words (a tuple, empty when there is none)."""
        code, _, count, wait_ms = COMMANDS[name]
        self.i2c.writeto(self.addr, command(name, value))
        if wait_ms:
            await _sleep_ms(wait_ms)
        if not count:
            return ()
        mv = self._mv[:3 * count]
        self.i2c.readfrom_into(self.addr, mv)
        return words(mv, count)

    async def forced_recalibration(self, target_ppm):
        """FRC (periodic measurement must be stopped, sensor run >3 min at target): returns correction ppm."""
        w = (await self.command("forced_recalibration", target_ppm))[0]
        if w == 0xFFFF:
            raise ValueError("SCD4x: forced recalibration failed")
        return w - 0x8000
