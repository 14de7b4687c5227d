# Board life: boot message, config, sensors on their buses, Wi-Fi with backoff, the watchdog fed only while the
# sampler and the uplink make progress, the status sent with each upload, and the self-test.
#   main()      what main.py runs: never returns unless stopped with Ctrl-C or the config is wrong
#   selftest()  from the REPL: reads every sensor once, prints SELFTEST lines (format in README.md)
import asyncio
import gc
import sys

import config
import sampler
from protocol import fields, wire

_WIFI_WAIT_MS = 20000  # one connect attempt
_WIFI_BASE_MS = 5000
_WIFI_CAP_MS = 300000
_NTP_EVERY_MS = 3600000
_REPORT_MS = 300000  # a STATUS line on the console this often
_WDT_TICK_MS = 1000  # the watchdog task looks at the loops (and feeds) this often


def log(msg):
    print(msg)


def boot_id():
    """8 hex chars, random per boot: tells this boot's ticks from another boot's."""
    import os
    from binascii import hexlify
    return hexlify(os.urandom(4)).decode()


# -- time ------------------------------------------------------------------------------------------------

def _days_from_civil(y, m, d):
    # Howard Hinnant's algorithm: days since 1970-01-01, no dependency on the port's time epoch.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def unix_from_datetime(dt):
    """machine.RTC().datetime() tuple (y, m, d, wd, h, mi, s, sub) -> Unix seconds."""
    return _days_from_civil(dt[0], dt[1], dt[2]) * 86400 + dt[4] * 3600 + dt[5] * 60 + dt[6]


def datetime_from_unix(t):
    """Unix seconds -> the tuple machine.RTC().datetime() takes (weekday 0 = Monday)."""
    days, s = divmod(int(t), 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    return (y, m, d, (days + 3) % 7, s // 3600, s // 60 % 60, s % 60, 0)


def set_rtc(unix_s):
    """Set the board's RTC (machine.RTC) so the time survives a soft or watchdog reset."""
    try:
        import machine
        machine.RTC().datetime(datetime_from_unix(unix_s))
    except Exception:  # no RTC on this port: the Clock still has the time
        pass


def ntp_sync(clock, host):
    """Set the clock from NTP (blocking, ~1 s timeout); guarded: False when there is no ntptime or no answer."""
    try:
        import ntptime
        import time
        ntptime.host = host
        t = ntptime.time()
        if time.gmtime(0)[0] == 2000:  # a port whose epoch is 2000: NTP time comes back in that epoch
            t += 946684800
    except Exception:
        return False
    if clock.set_wall(t, "ntp"):
        set_rtc(t)
        return True
    return False


# -- sensors -----------------------------------------------------------------------------------------------

def _driver(s):
    """The driver object for one validated sensor entry; raises (ImportError, OSError, ValueError) when it
    cannot be built, which the caller turns into a failing sensor."""
    import machine
    kind = s["kind"]
    if kind == "energy":
        import pzem004t
        uart = machine.UART(s["uart"], baudrate=9600, tx=s["tx"], rx=s["rx"])
        return pzem004t.PZEM004T(uart, addr=s["addr"])
    if kind == "pm":
        import pms5003
        uart = machine.UART(s["uart"], baudrate=9600, tx=s["tx"], rx=s["rx"])
        return pms5003.PMS5003(uart, warmup_ms=s["warmup_s"] * 1000)
    import scd4x
    i2c = machine.I2C(s["i2c"], scl=machine.Pin(s["scl"]), sda=machine.Pin(s["sda"]), freq=s["freq"])
    return scd4x.SCD4x(i2c, addr=s["addr"])


def _meters(s, out):
    """One sampler sensor per meter of an energy bus, all on one UART: read in turn (the sampler awaits each
    read), each with its own errors and flags, its Modbus address as its instance."""
    import pzem004t
    try:
        import machine
        uart = machine.UART(s["uart"], baudrate=9600, tx=s["tx"], rx=s["rx"])
    except Exception as e:  # every meter on the bus then fails on its own line, the other sensors run
        log("SENSOR energy bus cannot be set up: %s %s" % (type(e).__name__, e))
        uart = None
    for m in s["meters"]:
        d = pzem004t.PZEM004T(uart, addr=m["addr"]) if uart is not None else None
        out.append(sampler.Sensor("energy", d, s["interval_s"] * 1000, s["stuck_n"], 0, m["addr"],
                                  "energy:" + m["name"]))


def build_sensors(cfg, make=_driver):
    out = []
    for s in cfg["sensors"]:
        if s.get("meters"):
            _meters(s, out)
            continue
        try:
            d = make(s)
        except Exception as e:  # missing module, bad pins: this sensor fails, the others run
            log("SENSOR %s cannot be set up: %s %s" % (s["kind"], type(e).__name__, e))
            d = None
        warmup = s.get("warmup_s", 0) * 1000
        out.append(sampler.Sensor(s["kind"], d, s["interval_s"] * 1000, s["stuck_n"], warmup))
    return out


# -- self-test ---------------------------------------------------------------------------------------------

def selftest_line(kind, outcome):
    """'SELFTEST <kind> PASS <metric>=<value> ...' or 'SELFTEST <kind> FAIL <reason>'."""
    if outcome is None:
        return "SELFTEST %s FAIL no reading in time" % kind
    kind_of = kind.split(":")[0]  # "energy:L2": one meter of several
    ok, detail = outcome
    if not ok:
        return "SELFTEST %s FAIL %s" % (kind, detail)
    parts = []
    for row in fields.metrics(kind_of):
        if row[1] in detail:
            parts.append("%s=%s" % (row[1], wire.render(detail[row[1]], row[7])))
    return "SELFTEST %s PASS %s" % (kind, " ".join(parts) if parts else "(values out of range)")


async def report_selftest(sensors, clock, within_ms):
    """Print one SELFTEST line per sensor from its first outcome this boot, then the verdict."""
    start = clock.ms()
    done = []
    while len(done) < len(sensors) and clock.ms() - start < within_ms:
        for s in sensors:
            if s.outcome is not None and s not in done:
                done.append(s)
                log(selftest_line(s.label, s.outcome))
        await asyncio.sleep_ms(200)
    ok = True
    for s in sensors:
        if s not in done:
            log(selftest_line(s.label, s.outcome))
        if s.outcome is None or not s.outcome[0]:
            ok = False
    log("SELFTEST " + ("PASS" if ok else "FAIL"))
    return ok


class _NoStore:
    """The self-test reads but keeps nothing."""
    next_seq = 1
    depth = 0
    dropped = 0

    def append(self, seq, payload):
        self.next_seq = seq + 1


async def _selftest(cfg, make):
    clock = sampler.Clock()
    sensors = build_sensors(cfg, make)
    smp = sampler.Sampler(sensors, _NoStore(), clock, boot_id(), log)
    for s in sensors:
        s.interval_ms = 86400000  # one reading each; "no value yet" is asked again every second
    within = cfg["selftest_s"] * 1000 + max([s.warmup_ms for s in sensors])

    async def sample():
        while True:
            await asyncio.sleep_ms(await smp.step())

    task = asyncio.create_task(sample())
    try:
        return await report_selftest(sensors, clock, within)
    finally:
        task.cancel()


def selftest(path=config.PATH, make=_driver):
    """Read every configured sensor once and print the verdicts; returns True when all pass."""
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        log("SELFTEST FAIL " + str(e))
        return False
    return asyncio.run(_selftest(cfg, make))


# -- Wi-Fi -------------------------------------------------------------------------------------------------

def _jitter(ms):
    import random
    return ms // 2 + random.getrandbits(24) % (ms // 2 + 1)


class Wifi:
    def __init__(self, ssid, password):
        import network
        self.ssid = ssid
        self.password = password
        self.wlan = network.WLAN(network.STA_IF)
        self.failures = 0
        self.up = False

    def isconnected(self):
        try:
            return self.wlan.isconnected()
        except OSError:
            return False

    def rssi(self):
        """dBm, or None when not connected (protocol: -127..0 or null)."""
        if not self.isconnected():
            return None
        try:
            r = self.wlan.status("rssi")
        except Exception:
            try:
                r = self.wlan.config("rssi")
            except Exception:
                return None
        if not isinstance(r, int):
            return None
        return -127 if r < -127 else 0 if r > 0 else r

    async def connect_once(self):
        try:
            self.wlan.active(True)
            try:
                self.wlan.disconnect()  # an attempt still in progress would make connect() fail
            except OSError:
                pass
            self.wlan.connect(self.ssid, self.password)
        except OSError as e:
            log("WIFI connect error: %s" % (e,))
            return False
        import network
        refused = (getattr(network, "STAT_WRONG_PASSWORD", None), getattr(network, "STAT_NO_AP_FOUND", None),
                   getattr(network, "STAT_CONNECT_FAIL", None))
        waited = 0
        while waited < _WIFI_WAIT_MS:
            if self.isconnected():
                return True
            await asyncio.sleep_ms(250)
            waited += 250
            try:
                st = self.wlan.status()
            except OSError:
                continue
            if st is not None and st in refused:
                if st == refused[0]:
                    log("WIFI wrong password for %s: check wifi.password in config.json" % self.ssid)
                return False
        return False

    async def run(self, clock=None, ntp=""):
        """Keep the station connected: reconnect with exponential backoff and jitter; NTP when configured."""
        ntp_at = None
        while True:
            if self.isconnected():
                if not self.up:
                    self.up = True
                    self.failures = 0
                    log("WIFI up rssi %s" % (self.rssi(),))
                if ntp and clock is not None and clock.sync != "ntp" and (
                        ntp_at is None or clock.ms() - ntp_at > _NTP_EVERY_MS):
                    ntp_at = clock.ms()
                    if ntp_sync(clock, ntp):
                        log("CLOCK set from NTP %s" % ntp)
                await asyncio.sleep_ms(1000)
                continue
            if self.up:
                self.up = False
                log("WIFI lost")
            if await self.connect_once():
                continue
            self.failures += 1
            ms = _WIFI_BASE_MS << (self.failures - 1 if self.failures < 8 else 7)
            ms = _jitter(ms if ms < _WIFI_CAP_MS else _WIFI_CAP_MS)
            log("WIFI %s not reachable (attempt %d): next try in %d ms" % (self.ssid, self.failures, ms))
            await asyncio.sleep_ms(ms)


# -- watchdog ----------------------------------------------------------------------------------------------

async def watchdog(wdt, loops, clock, stall_ms, report=None):
    """Feed the WDT only while every loop ticked within stall_ms: a hung loop gets the board reset."""
    stalled = None
    last_report = clock.ms()
    while True:
        now = clock.ms()
        late = None
        for name, loop in loops:
            if now - loop.progress > stall_ms:
                late = name
        if late is None:
            if wdt is not None:
                wdt.feed()
        elif late != stalled:
            log("WDT %s loop made no progress for %d ms: not feeding the watchdog" % (late, stall_ms))
        stalled = late
        if report is not None and now - last_report >= _REPORT_MS:
            last_report = now
            report()
        gc.collect()  # a little every second keeps the heap from fragmenting under the upload buffers
        await asyncio.sleep_ms(_WDT_TICK_MS)


# -- the board ---------------------------------------------------------------------------------------------

def _reset_cause():
    try:
        import machine
        cause = machine.reset_cause()
        for name in ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"):
            if getattr(machine, name, None) == cause:
                return name
        return str(cause)
    except Exception:
        return "unknown"


def rtc_time(clock):
    """Use the RTC's time if it kept a valid one across a soft or watchdog reset (ESP32: lost on power cut)."""
    try:
        import machine
        t = unix_from_datetime(machine.RTC().datetime())
    except Exception:
        return False
    return clock.set_wall(t, "none")


class Board:
    def __init__(self, cfg, store, sensors, wifi=None, wdt=None, clock=None, boot=None, settings_path=None):
        import agent_settings
        import uplink
        self.cfg = cfg
        self.clock = clock or sampler.Clock()
        self.boot = boot or boot_id()
        self.store = store
        self.sampler = sampler.Sampler(sensors, store, self.clock, self.boot, log)
        self.wifi = wifi
        self.wdt = wdt
        self.uplink = uplink.Uplink(cfg, store, self.clock, self.boot, status=self.status,
                                    online=wifi.isconnected if wifi is not None else None, sampler_=self.sampler,
                                    log=log, on_clock=set_rtc)
        self.settings = agent_settings.Settings(self, settings_path or agent_settings.PATH, log)
        self.uplink.on_settings = self.settings.take

    def status(self):
        """The protocol's device status, encoded: sent with each upload."""
        return wire.encode_status(self.clock.ms() // 1000, gc.mem_free(),
                                  self.wifi.rssi() if self.wifi is not None else None, self.store.depth,
                                  self.store.dropped, self.sampler.errors, self.clock.sync, self.settings.applied)

    def report(self):
        log("STATUS " + self.status().decode() + " uplink " + str(self.uplink.last))

    async def run(self):
        tasks = [self.sampler.run(), self.uplink.run(), self.settings.run(),
                 watchdog(self.wdt, (("sampler", self.sampler), ("uplink", self.uplink)), self.clock,
                          self.cfg["stall_s"] * 1000, self.report),
                 report_selftest(self.sampler.sensors, self.clock,
                                 self.cfg["selftest_s"] * 1000 + max([s.warmup_ms for s in self.sampler.sensors]))]
        if self.wifi is not None:
            tasks.append(self.wifi.run(self.clock, self.cfg["ntp"]))
        await asyncio.gather(*[asyncio.create_task(t) for t in tasks])


def start(cfg):
    """Build the real board from a validated config: store on flash, sensors on their buses, Wi-Fi, WDT."""
    import machine
    import clog
    import uplink
    clock = sampler.Clock()
    boot = boot_id()
    kept = rtc_time(clock)
    log("AIRWATT firmware %s device %s boot %s reset %s clock %s" % (
        uplink.FIRMWARE, cfg["device"], boot, _reset_cause(), "rtc" if kept else "unset"))
    st = clog.Log(root=cfg["data_dir"], capacity=cfg["capacity"], window_s=cfg["commit_s"])
    log("STORE %s next seq %d pending %d dropped %d capacity %d" % (
        cfg["data_dir"], st.next_seq, st.depth, st.dropped, st.capacity))
    sensors = build_sensors(cfg)
    wifi = Wifi(cfg["ssid"], cfg["password"])
    wdt = machine.WDT(timeout=cfg["wdt_s"] * 1000) if cfg["wdt_s"] else None
    return Board(cfg, st, sensors, wifi, wdt, clock, boot)


def flush(st):
    """Commit the readings still waiting in RAM before the board stops."""
    try:
        n = st.uncommitted
        st.flush()
        log("STORE committed %d readings before stopping" % n)
    except Exception as e:
        log("STORE could not commit before stopping: %r" % (e,))


def main(path=config.PATH):
    import uplink
    log("AIRWATT firmware %s starting" % uplink.FIRMWARE)
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        # No config, no board: stay at the REPL so a technician can fix it (airwatt flash / mpremote).
        log("CONFIG ERROR " + str(e))
        return
    b = None
    try:
        b = start(cfg)
        asyncio.run(b.run())
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C on the console, a soft reset: a deliberate stop
        if b is not None:
            flush(b.store)
        log("AIRWATT stopped")
    except Exception as e:
        sys.print_exception(e)
        if b is not None:
            flush(b.store)  # what was read is good even if the board is not: keep it
        log("AIRWATT crashed: reset in 10 s")
        import time
        import machine
        time.sleep(10)
        machine.reset()
