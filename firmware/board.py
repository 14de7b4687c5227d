# The board's life, what main.py runs: the boot message, config, the flash log, sensors on their buses, Wi-Fi and
# the watchdog, then the loops (sampler, uplink, agent settings, the boot self-test), each answer's time and
# settings applied, and the status sent with each upload.
#   main()      never returns unless stopped with Ctrl-C or the config is wrong
#   selftest()  from the REPL: reads every sensor once, prints SELFTEST lines (format in README.md)
import asyncio
import gc
import sys

import sampler
from clock import Clock, boot_id
from protocol import canonical

VERSION = "0.2.0"  # the firmware's version: in every batch (fw) and the boot message
_REPORT_MS = 300000  # a STATUS line on the console this often
_WDT_TICK_MS = 1000  # the watchdog task looks at the loops (and feeds) this often


def log(msg):
    print(msg)


def _release(*names):
    # Boot-only code (config, self-test, migration), and the field table once the loops' modules have taken the
    # names they use from it (3.5 KB): drop the modules so their heap goes back to the loops.
    for name in names:
        try:
            del sys.modules[name]
        except KeyError:
            pass
        if name.startswith("protocol."):
            try:
                delattr(sys.modules["protocol"], name[9:])  # a package holds its loaded modules too
            except (KeyError, AttributeError):
                pass
    gc.collect()


def _load(path):
    """The validated config, or None (said on the console) when it is wrong; config.py is released after."""
    import config
    try:
        return config.load(path or config.PATH)
    except config.ConfigError as e:
        return str(e)
    finally:
        _release("config")


def _sensors(cfg, make=None):
    import drivers
    try:
        return drivers.build(cfg, make or drivers.driver)
    finally:
        drivers = None
        _release("drivers")


def selftest(path=None, make=None):
    """Read every configured sensor once and print the verdicts; returns True when all pass."""
    cfg = _load(path)
    if isinstance(cfg, str):
        log("SELFTEST FAIL " + cfg)
        return False
    import selftest as st
    return asyncio.run(st.run(cfg, _sensors(cfg, make), Clock(), boot_id(), log))


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


def take_answer(a, clock, up, smp=None, settings=None):
    """What an upload's checked answer brings besides the ack: the time (clock and RTC), the agent's settings."""
    if clock.from_agent(a["server_time"]):
        log("CLOCK set from the agent: %d" % a["server_time"])
    s = a.get("settings")
    if s:
        up.batch_max = s.get("batch_max", up.batch_max)
        iv = s.get("intervals")
        if iv and smp is not None:
            for kind in iv:
                smp.set_interval(kind, iv[kind])
        if settings is not None:
            settings.take(s)


class Board:
    def __init__(self, cfg, store, sensors, wifi=None, wdt=None, clock=None, boot=None, settings_path=None):
        import agent_settings
        import uplink
        self.cfg = cfg
        self.clock = clock or Clock()
        self.boot = boot or boot_id()
        self.store = store
        self.sampler = sampler.Sampler(sensors, store, self.clock, self.boot, log)
        self.wifi = wifi
        self.wdt = wdt
        self.uplink = uplink.Uplink(cfg, store, self.clock, self.boot, VERSION, log)
        self.settings = agent_settings.Settings(self, settings_path or agent_settings.PATH, log)
        import ota  # firmware updates: offered in the answer, reported in the status, probation after a switch
        self.ota = ota.Ota(self, log, running=VERSION)
        _release("protocol.fields")  # config.py and the modules above loaded it

    def status(self):
        """The protocol's device status, encoded: sent with each upload."""
        return canonical.encode_status(self.clock.ms() // 1000, gc.mem_free(),
                                       self.wifi.rssi() if self.wifi is not None else None, self.store.depth,
                                       self.store.dropped, self.sampler.errors, self.clock.sync,
                                       self.settings.applied, self.ota.report())

    def report(self):
        log("STATUS " + self.status().decode() + " uplink " + str(self.uplink.last))

    def take(self, a):
        take_answer(a, self.clock, self.uplink, self.sampler, self.settings)
        if a.get("firmware"):
            self.ota.offer(a["firmware"])

    async def selftest(self):
        """The boot self-test: SELFTEST lines from each sensor's first outcome, beside the loops."""
        import selftest
        sensors = self.sampler.sensors
        try:
            await selftest.report(sensors, self.clock, selftest.within_ms(self.cfg, sensors), log)
        finally:
            selftest = None
            _release("selftest", "protocol.fields", "protocol.wire")

    async def run(self):
        online = self.wifi.isconnected if self.wifi is not None else None
        tasks = [self.sampler.run(), self.uplink.run(online, self.status, self.take), self.settings.run(),
                 self.ota.run(),
                 watchdog(self.wdt, (("sampler", self.sampler), ("uplink", self.uplink)), self.clock,
                          self.cfg["stall_s"] * 1000, self.report),
                 self.selftest()]
        if self.wifi is not None:
            tasks.append(self.wifi.run(self.clock, self.cfg["ntp"]))
        await asyncio.gather(*[asyncio.create_task(t) for t in tasks])


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


def start(cfg):
    """Build the real board from a validated config: store on flash, sensors on their buses, Wi-Fi, WDT."""
    import machine
    import clog
    import wifi
    clock = Clock()
    boot = boot_id()
    import rtc
    kept = rtc.rtc_time(clock)
    rtc = None
    _release("rtc")
    log("AIRWATT firmware %s device %s boot %s reset %s clock %s" % (
        VERSION, cfg["device"], boot, _reset_cause(), "rtc" if kept else "unset"))
    st = clog.Log(root=cfg["data_dir"], capacity=cfg["capacity"], window_s=cfg["commit_s"])
    log("STORE %s next seq %d pending %d dropped %d capacity %d" % (
        cfg["data_dir"], st.next_seq, st.depth, st.dropped, st.capacity))
    sensors = _sensors(cfg)
    w = wifi.Wifi(cfg["ssid"], cfg["password"], log)
    wdt = machine.WDT(timeout=cfg["wdt_s"] * 1000) if cfg["wdt_s"] else None
    return Board(cfg, st, sensors, w, wdt, clock, boot)


def flush(st):
    """Commit the readings still waiting in RAM before the board stops."""
    try:
        n = st.uncommitted
        st.flush()
        log("STORE committed %d readings before stopping" % n)
    except Exception as e:
        log("STORE could not commit before stopping: %r" % (e,))


def main(path=None):
    log("AIRWATT firmware %s starting" % VERSION)
    cfg = _load(path)
    if isinstance(cfg, str):
        # No config, no board: stay at the REPL so a technician can fix it (airwatt flash / mpremote).
        log("CONFIG ERROR " + cfg)
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
