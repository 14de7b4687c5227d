# Emulated `machine` module of an ESP32 running MicroPython 1.29 (runs on the MicroPython unix port).
# The subset AirWatt's firmware uses, with the ESP32 port's names and behaviour: UART and I2C with the byte-exact
# sensor emulators (emulator/board/sensors.py) behind them, per the board's wiring (boardstate.DEFAULT_CONFIG),
# Pin, WDT, RTC, reset, soft_reset, reset_cause, unique_id, deepsleep, lightsleep, freq, idle.
# Resets, deep sleep, the watchdog and power cuts end the VM process; emulator/esp32.py starts it again.
import json

import boardstate as _bs
from boardstate import PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET

_bt = _bs._btime

PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6
SLEEP = 2
DEEPSLEEP = 4

_ETIMEDOUT = 116
_ENODEV = 19
_EIO = 5

_freq = 160000000


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3
    _levels = {}

    def __init__(self, id, mode=-1, pull=-1, value=None, drive=None, hold=None):
        if not isinstance(id, int) or id < 0 or id > 39:
            raise ValueError("invalid pin")
        self._id = id
        self._mode = None
        self._pull = None
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, value=None, drive=None, hold=None):
        if mode != -1:
            if mode == Pin.OUT and 34 <= self._id <= 39:
                raise ValueError("pin can only be input")
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            Pin._levels[self._id] = 1 if value else 0

    def value(self, x=None):
        if x is None:
            if self._id in Pin._levels:
                return Pin._levels[self._id]
            return 0 if self._pull == Pin.PULL_DOWN else 1 if self._pull == Pin.PULL_UP else 0
        Pin._levels[self._id] = 1 if x else 0

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self.value())

    def irq(self, handler=None, trigger=3, wake=None):
        return None

    def __repr__(self):
        return "Pin(%d)" % self._id


def _pin_no(p):
    if p is None:
        return None
    if isinstance(p, Pin):
        return p._id
    return int(p)


def _hang():
    _bs.hang_point()


class UART:
    INV_TX = 32
    INV_RX = 4
    INV_RTS = 64
    INV_CTS = 8
    RTS = 1
    CTS = 2
    IRQ_RX = 1
    IRQ_BREAK = 2
    IRQ_RXIDLE = 4096

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) does not exist" % (id,))
        self._id = id
        self._rx_buf = bytearray()
        self._dev = None
        self._garbled = False
        self.init(baudrate, bits, parity, stop, **kw)

    def init(self, baudrate=None, bits=8, parity=None, stop=1, tx=None, rx=None, rts=None, cts=None,
             txbuf=None, rxbuf=256, timeout=0, timeout_char=0, invert=0, flow=0):
        if baudrate is not None:
            self._baud = baudrate
        self._timeout = timeout
        self._timeout_char = timeout_char
        self._rxbuf_size = max(rxbuf or 256, 260)
        self._tx = _pin_no(tx)
        self._rx = _pin_no(rx)
        name = None
        wired = None
        for w in _bs.config.get("uart") or ():
            if self._rx is not None and w.get("rx") == self._rx:
                wired = w
                break
        else:
            for w in _bs.config.get("uart") or ():
                if w.get("id") == self._id and (self._rx is None or "rx" not in w):
                    wired = w
                    break
        if wired is not None:
            name = wired.get("device")
            # the sensors speak 9600 8N1: at another rate neither side makes sense of the other's bytes
            self._garbled = self._baud != wired.get("baud", 9600)
        self._dev = _bs.device(name) if name else None
        self._name = name

    def deinit(self):
        self._dev = None

    def _pull(self):
        # Bytes the sensor has sent so far go into the UART's RX FIFO (bounded, as on the chip).
        _bs.poll()
        d = self._dev
        if d is None:
            return
        got = d.read_available()
        if got:
            if self._garbled:  # framing errors: what arrives is noise, and less of it
                got = bytes((b ^ 0x5A) | 0x80 for b in got[::3])
            self._rx_buf.extend(got)
            over = len(self._rx_buf) - self._rxbuf_size
            if over > 0:
                self._rx_buf = self._rx_buf[over:]

    def any(self):
        _hang()
        self._pull()
        return len(self._rx_buf)

    def _wait(self, n):
        # Blocking read semantics of the ESP32 port: wait up to `timeout` ms for the first byte, then
        # `timeout_char` between bytes; never longer.
        self._pull()
        if len(self._rx_buf) >= n or self._timeout <= 0:
            return
        start = _bt.ticks_ms()
        have = len(self._rx_buf)
        while len(self._rx_buf) < n:
            now = _bt.ticks_ms()
            limit = self._timeout if have == 0 else max(self._timeout_char, 2)
            if _bt.ticks_diff(now, start) >= limit:
                return
            _bt.sleep_ms(1)
            self._pull()
            if len(self._rx_buf) > have:
                have = len(self._rx_buf)
                start = _bt.ticks_ms()

    def read(self, nbytes=None):
        _hang()
        if nbytes is None:
            self._wait(1)
            n = len(self._rx_buf)
        else:
            self._wait(nbytes)
            n = min(nbytes, len(self._rx_buf))
        if n == 0:
            return None
        out = bytes(self._rx_buf[:n])
        self._rx_buf = self._rx_buf[n:]
        return out

    def readinto(self, buf, nbytes=None):
        _hang()
        if nbytes is None:
            nbytes = len(buf)
        self._wait(nbytes)
        n = min(nbytes, len(self._rx_buf))
        if n == 0:
            return None
        buf[:n] = self._rx_buf[:n]
        self._rx_buf = self._rx_buf[n:]
        return n

    def readline(self):
        _hang()
        self._wait(1)
        i = self._rx_buf.find(b"\n")
        if i < 0 and self._timeout > 0:
            start = _bt.ticks_ms()
            while i < 0 and _bt.ticks_diff(_bt.ticks_ms(), start) < self._timeout:
                _bt.sleep_ms(1)
                self._pull()
                i = self._rx_buf.find(b"\n")
        n = len(self._rx_buf) if i < 0 else i + 1
        if n == 0:
            return None
        out = bytes(self._rx_buf[:n])
        self._rx_buf = self._rx_buf[n:]
        return out

    def write(self, buf):
        _hang()
        _bs.poll()
        data = bytes(buf)
        if self._dev is not None and not self._garbled:
            self._dev.write(data)
            energy = getattr(self._dev, "energy", None)
            if energy is not None:
                # The meter keeps its counter across the board's resets: the bridge remembers it.
                _bs.ctl("E %s {\"energy_wh\": %d}" % (self._name, int(energy)))
            elif hasattr(self._dev, "state"):  # a bus of meters: counters and addresses
                _bs.ctl("E %s %s" % (self._name, json.dumps(self._dev.state())))
        return len(data)

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass

    def irq(self, handler=None, trigger=0, hard=False):
        return None

    def __repr__(self):
        return "UART(%d, baudrate=%d, tx=%s, rx=%s, timeout=%d)" % (
            self._id, self._baud, self._tx, self._rx, self._timeout)


class I2C:
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % (id,))
        self._id = id
        self.init(scl=scl, sda=sda, freq=freq, timeout=timeout)

    def init(self, scl=None, sda=None, freq=400000, timeout=50000):
        self._scl = _pin_no(scl)
        self._sda = _pin_no(sda)
        self._freq = freq
        self._wired = {}
        for w in _bs.config.get("i2c") or ():
            if (w.get("id") == self._id and self._sda is None) or (self._sda is not None and w.get("sda") == self._sda):
                devs = w.get("devices") or {}
                for a in devs:
                    self._wired[int(a)] = devs[a]
                break

    def deinit(self):
        self._wired = {}

    def _dev(self, addr):
        _hang()
        _bs.poll()
        name = self._wired.get(addr)
        d = _bs.device(name) if name else None
        if d is None:
            raise OSError(_ENODEV)  # no ACK from that address
        return d

    def scan(self):
        _hang()
        _bs.poll()
        found = []
        for a in sorted(self._wired):
            d = _bs.device(self._wired[a])
            if d is not None and not getattr(d, "unplugged", False):
                found.append(a)
        return found

    def writeto(self, addr, buf, stop=True):
        d = self._dev(addr)
        d.i2c_write(bytes(buf))
        if getattr(d, "eeprom_changed", False):
            # The sensor's EEPROM outlives the board's resets and power cuts: the bridge remembers it.
            d.eeprom_changed = False
            _bs.ctl("E %s %s" % (self._wired[addr], json.dumps({"eeprom": d.eeprom})))
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = bytearray()
        for b in vector:
            data.extend(b)
        return self.writeto(addr, data, stop)

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._dev(addr).i2c_read(nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self._dev(addr).i2c_read(len(buf))
        buf[: len(data)] = data

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        head = bytes([memaddr >> 8, memaddr & 0xFF]) if addrsize == 16 else bytes([memaddr & 0xFF])
        self.writeto(addr, head + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        head = bytes([memaddr >> 8, memaddr & 0xFF]) if addrsize == 16 else bytes([memaddr & 0xFF])
        self.writeto(addr, head, False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        buf[:] = self.readfrom_mem(addr, memaddr, len(buf), addrsize)


SoftI2C = I2C


class WDT:
    """The ESP32 task watchdog: once started it cannot be stopped; if feed() is not called within `timeout` ms
    the board resets and reset_cause() is WDT_RESET. The bridge (emulator/esp32.py) keeps the time, so a loop
    that hangs in any way - even in C code - is reset. Without a bridge a late feed() resets the board."""

    _armed = None

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%d) doesn't exist" % id)
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        self._timeout = timeout
        WDT._armed = self
        self._last = _bt.ticks_ms()
        _bs.ctl("W %d" % timeout)

    def feed(self):
        _hang()
        now = _bt.ticks_ms()
        if not _bs.has_bridge and _bt.ticks_diff(now, self._last) > self._timeout:
            _bs.die(_bs.EXIT_WDT, "wdt")
        self._last = now
        _bs.ctl("F")


class RTC:
    """Battery-less ESP32 RTC: starts at 2000-01-01 00:00:00 on power-on (unless the board's config says
    clock "host"), keeps time across soft/hard/WDT resets and deep sleep, is lost on a power cut.
    datetime() tuples are (year, month, day, weekday, hours, minutes, seconds, subseconds) as on the ESP32.
    The 'clock_unset' fault makes setting it have no effect (a board whose clock never gets set)."""

    def __init__(self, id=0, datetime=None):
        if datetime is not None:
            self.datetime(datetime)

    def init(self, datetime):
        self.datetime(datetime)

    def datetime(self, dt=None):
        if dt is None:
            ms = _bs.host_ms() + _bs.rtc_offset_ms
            s = ms // 1000
            import time

            t = time.gmtime(s)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], (ms % 1000) * 1000)
        dt = tuple(dt) + (0,) * (8 - len(dt))
        import time

        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        if _bs.fault("clock_unset"):
            return
        _bs.rtc_offset_ms = secs * 1000 + dt[7] // 1000 - _bs.host_ms()
        _bs.rtc_set = True
        _bs.ctl("T %d" % _bs.rtc_offset_ms)

    def memory(self, data=None):
        return b"" if data is None else None


def reset():
    """Hard reset: the VM dies and the bridge boots the board again (boot.py, then main.py)."""
    _bs.die(_bs.EXIT_HARD, "reset")


def soft_reset():
    raise SystemExit(_bs.EXIT_SOFT)


def reset_cause():
    return _bs.reset_cause


def wake_reason():
    return TIMER_WAKE if _bs.reset_cause == DEEPSLEEP_RESET else 0


def unique_id():
    h = _bs.config.get("unique_id") or "a4cf12345678"
    return bytes(int(h[i : i + 2], 16) for i in range(0, len(h), 2))


def deepsleep(time_ms=0):
    """Deep sleep: the board is off for time_ms (forever if 0), then boots with reset_cause() DEEPSLEEP_RESET."""
    _bs.die(_bs.EXIT_DEEPSLEEP, "deepsleep %d" % time_ms)


def lightsleep(time_ms=None):
    if time_ms:
        _bt.sleep_ms(time_ms)


def sleep():
    lightsleep()


def idle():
    _bt.sleep_ms(1)


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    return -2


def bootloader():
    _bs.die(_bs.EXIT_HARD, "bootloader")
