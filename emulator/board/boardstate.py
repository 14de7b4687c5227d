# State of one emulated ESP32 board, shared by the emulated machine, network, socket and time modules.
# Runs on the MicroPython VM. The CPython side (emulator/esp32.py) starts the VM with these environment variables:
#   AIRWATT_BOARD_CTL_FD    fd of a pipe to the bridge: one line per event (see ctl())
#   AIRWATT_BOARD_IN_FD     fd of a pipe from the bridge: "F <json>" lines replace the faults
#   AIRWATT_BOARD_CONFIG    JSON: wiring, wifi, clock, unique_id, sensor settings (DEFAULT_CONFIG below)
#   AIRWATT_BOARD_FAULTS    JSON: the faults at start
#   AIRWATT_BOARD_CAUSE     reset cause of this boot (machine.*_RESET numbers)
#   AIRWATT_BOARD_RTC       RTC offset in ms: board wall clock (ms since 2000-01-01) = host unix ms + offset
#   AIRWATT_BOARD_SENSOR_<NAME>  JSON: state a sensor keeps across the board's resets (the meter's energy counter)
#   AIRWATT_BOARD_FLASH, AIRWATT_BOARD_MODE  the flash image file; "raw" after a soft reset from the raw REPL
# Without a bridge (a plain `micropython` process) every variable is optional and the board starts powered on.
import os
import sys
import json
import select

from native import native

_btime = native("time")  # the VM's built-in time module, not our emulated one

from codes import PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET  # noqa: F401
from codes import EXIT_SOFT, EXIT_HARD, EXIT_DEEPSLEEP, EXIT_POWERCUT, EXIT_WDT  # noqa: F401
from codes import SENSOR_FAULTS

EPOCH_2000_UNIX = 946684800  # the ESP32 port's time epoch is 2000-01-01 (docs: time module, "Time Epoch")

# The AirWatt board's wiring (matches firmware/config.example.json). A UART is matched by its rx pin, else by id.
DEFAULT_CONFIG = {
    "uart": [
        {"id": 2, "tx": 17, "rx": 16, "device": "pzem"},
        {"id": 1, "tx": 4, "rx": 5, "device": "pms"},
    ],
    "i2c": [{"id": 0, "scl": 22, "sda": 21, "devices": {"98": "scd4x"}}],
    "sensors": {},  # per device: keyword arguments for its emulator (e.g. {"pzem": {"energy_wh": 1000}})
    "wifi": None,  # {"ssid": ..., "key": ...} the access point in range; None: any ssid/key connects
    "rssi": -61,
    "clock": "unset",  # "unset": RTC starts at 2000-01-01 on power-on; "host": RTC starts at the host's UTC time
    "unique_id": "a4cf12345678",
    "day_scale": 1,  # sensor day profiles run this many times faster than real time
    "day_start_s": None,  # second of day (Thai time) the profiles start at; None: the host's time of day
    "t0": None,  # host unix time the scenario started (for day_scale); None: now
    "wdt_survives_soft_reset": False,  # True: like the ESP32's task WDT, it keeps running across a soft reset
}

config = {}
for _k in DEFAULT_CONFIG:
    config[_k] = DEFAULT_CONFIG[_k]
_cfg = os.getenv("AIRWATT_BOARD_CONFIG")
if _cfg:
    _c = json.loads(_cfg)
    for _k in _c:
        config[_k] = _c[_k]

faults = {}
_f = os.getenv("AIRWATT_BOARD_FAULTS")
if _f:
    faults = json.loads(_f)

reset_cause = int(os.getenv("AIRWATT_BOARD_CAUSE") or PWRON_RESET)


def host_ms():
    """Host wall clock, unix ms (the emulated board's clock runs from it)."""
    return _btime.time_ns() // 1000000


_rtc = os.getenv("AIRWATT_BOARD_RTC")
if _rtc:
    rtc_offset_ms = int(_rtc)
elif config.get("clock") == "host":
    rtc_offset_ms = -EPOCH_2000_UNIX * 1000
else:
    rtc_offset_ms = -host_ms()  # power-on: the RTC starts at 2000-01-01 00:00:00
rtc_set = bool(_rtc) or config.get("clock") == "host"  # has the wall clock been set since power-on

_ctl = None
_ctl_fd = os.getenv("AIRWATT_BOARD_CTL_FD")
if _ctl_fd:
    _ctl = open("/proc/self/fd/" + _ctl_fd, "wb")
_in = None
_poller = None
_in_fd = os.getenv("AIRWATT_BOARD_IN_FD")
if _in_fd:
    _in = open("/proc/self/fd/" + _in_fd, "rb")
    _poller = select.poll()
    _poller.register(_in, select.POLLIN)

has_bridge = _ctl is not None
_last_poll = _btime.ticks_ms()
_listeners = []  # functions called with the faults dict after it changed


def ctl(line):
    """Tell the bridge about an event: S B|I (busy/idle), W ms (WDT armed), F (fed), T ms (RTC offset),
    E device json (sensor state to keep across resets), X code reason (the VM is about to die)."""
    if _ctl is not None:
        try:
            _ctl.write(line + "\n")
        except OSError:  # the bridge is gone (killed): a board without power
            _orphaned()


def _orphaned():
    os.system("kill -9 $PPID")
    while True:
        _btime.sleep_ms(10)


def on_faults(fn):
    _listeners.append(fn)
    fn(faults)


def set_faults(new):
    """Replace the fault set (the bridge does this through the pipe; in-VM tests may call it directly)."""
    global faults
    faults = new
    for fn in _listeners:
        fn(faults)


def poll(force=False):
    """Pick up fault changes from the bridge; cheap enough to call on every emulated hardware access."""
    global _last_poll
    if _poller is None:
        return
    now = _btime.ticks_ms()
    if not force and _btime.ticks_diff(now, _last_poll) < 50:
        return
    _last_poll = now
    new = None
    while _poller.poll(0):
        line = _in.readline()
        if not line:  # the bridge closed its end: it is gone, and so is the board's power
            _orphaned()
        if line.startswith(b"F "):
            new = json.loads(line[2:])
    if new is not None:
        set_faults(new)


def fault(name, default=None):
    poll()
    return faults.get(name, default)


def hang_point():
    """The 'hang' fault: the next hardware access never returns (the main loop hangs; the WDT must reset)."""
    if fault("hang"):
        while True:  # stuck in "C code": not even Ctrl-C gets the board out, only a reset
            try:
                _btime.sleep_ms(50)
            except KeyboardInterrupt:
                pass


def die(code, reason):
    """The board stops now (reset, deep sleep, power cut): tell the bridge, then kill this process so that no
    handler in the firmware can run another line, as on hardware."""
    ctl("X %d %s" % (code, reason))  # unbuffered: it is in the pipe now
    if _ctl is None:  # no bridge to restart the board: say why this process ends (killed, exit status -9)
        sys.stderr.write("[emulated board stops: %s]\n" % reason)
    os.system("kill -9 $PPID")
    while True:  # the signal is on its way
        _btime.sleep_ms(10)


# Devices behind the buses, created on first use and shared by every UART/I2C object on the same pins.
_devices = {}


def _day_s_fn():
    t0 = config.get("t0") or host_ms() / 1000
    scale = config.get("day_scale") or 1
    start = config.get("day_start_s")
    if start is None:
        start = (int(t0) + 7 * 3600) % 86400

    def day_s():
        return int(start + (host_ms() / 1000 - t0) * scale) % 86400

    return day_s


def device(name):
    """The sensor emulator called `name` ("pzem", "pms", "scd4x"), or None if there is no such device."""
    if name in _devices:
        return _devices[name]
    import sensors

    kwargs = {}
    saved = config.get("sensors", {}).get(name) or {}
    for k in saved:
        kwargs[k] = saved[k]
    state = os.getenv("AIRWATT_BOARD_SENSOR_" + name.upper())
    if state:
        st = json.loads(state)
        for k in st:
            kwargs[k] = st[k]
    kwargs["day_s"] = _day_s_fn()
    cls = {"pzem": sensors.PZEMEmulator, "pms": sensors.PMSEmulator, "scd4x": sensors.SCD4xEmulator,
           "pzembus": sensors.PZEMBus}.get(name)
    if cls is None:
        return None
    dev = cls(**kwargs)
    _devices[name] = dev
    _sensor_faults(faults)
    return dev


_applied = {}


def _apply_sensor_faults(dev, name, f):
    want = f.get(name) or {}
    if isinstance(want, str):
        want = {want: True}
    elif isinstance(want, list):
        w = {}
        for k in want:
            w[k] = True
        want = w
    had = _applied.get(name) or {}
    for k in SENSOR_FAULTS:
        v = want.get(k, False)
        if had.get(k, False) != v:
            if k == "corrupt" and isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1:
                dev.corrupt(0, v)  # a probability: every frame may be hit
            elif k == "corrupt" and not v:
                dev.corrupt(0, 0.0)
            elif (k != "mains_off" and k != "wrong_addr") or hasattr(dev, "set_mains"):
                dev.set_fault(k, v)
    _applied[name] = want


def _sensor_faults(f):
    for name in _devices:
        dev = _devices[name]
        members = getattr(dev, "members", None)
        if members is None:
            _apply_sensor_faults(dev, name, f)
        else:  # a bus: each meter's faults under its own name ("pzem2": {"unplugged": true})
            for m in members:
                _apply_sensor_faults(members[m], m, f)


on_faults(_sensor_faults)
