"""`airwatt emulate`: one emulated ESP32 board on a pty, for mpremote, `airwatt flash` and the HIL tests."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from airwatt.emulator.board.codes import BOARD_FAULTS, SENSOR_FAULTS, SENSORS
from airwatt.emulator.esp32 import EmulatedBoard, is_bus_meter, meters_wiring


def parse_fault(text: str) -> tuple[str, Any]:
    """`wifi_down`, `hang`, `clock_unset`, `power_cut_at_write=N`, `pms.unplugged`, `pzem.corrupt=3`,
    `scd4x.stuck` -> (name, value) as EmulatedBoard.set_fault takes them."""
    name, eq, raw = text.partition("=")
    value: Any = True
    if eq:
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    sensor, dot, fault = name.partition(".")
    if dot:
        if sensor not in SENSORS and not is_bus_meter(sensor):
            raise ValueError("unknown sensor %r in fault %r (%s; pzem1, pzem2, ... with --meters)"
                             % (sensor, text, ", ".join(SENSORS)))
        if fault not in SENSOR_FAULTS:
            raise ValueError("unknown sensor fault %r (%s)" % (fault, ", ".join(SENSOR_FAULTS)))
        return sensor, {fault: value}
    if name not in BOARD_FAULTS:
        raise ValueError("unknown fault %r (%s=N, <sensor>.<fault>)" % (text, ", ".join(BOARD_FAULTS)))
    return name, value


def faults_from_args(items: list[str]) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    for item in items:
        name, value = parse_fault(item)
        if isinstance(value, dict):
            faults.setdefault(name, {}).update(value)
        else:
            faults[name] = value
    return faults


def _load_json(text: str | None) -> dict:
    if not text:
        return {}
    path = Path(text)
    return json.loads(path.read_text() if path.exists() else text)


def run(args: argparse.Namespace) -> int:
    try:
        faults = faults_from_args(args.fault or [])
        config = _load_json(args.wiring)
        if args.meters:
            config = meters_wiring(args.meters, config)
    except ValueError as e:
        print("airwatt emulate: %s" % e, file=sys.stderr)
        return 2
    # Every path against the caller's working directory, before the board starts.
    flash = Path(args.flash or "airwatt-board-flash.bin").absolute()
    port_file = Path(args.port_file).absolute() if args.port_file else None
    fault_file = Path(args.fault_file).absolute() if args.fault_file else None
    board = EmulatedBoard(flash, faults=faults, config=config, log_path=args.log, echo=args.echo)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        board.start()
    except ValueError as e:
        print("airwatt emulate: %s" % e, file=sys.stderr)
        return 2
    if port_file is not None:
        try:
            port_file.write_text(board.port + "\n")
        except OSError as e:
            board.stop()
            print("airwatt emulate: cannot write the port file %s: %s" % (port_file, e.strerror), file=sys.stderr)
            return 2
    print("emulated ESP32 on %s (flash %s)" % (board.port, flash), flush=True)
    print("try: mpremote connect %s fs ls" % board.port, flush=True)
    fault_mtime = None
    try:
        while not stop:
            time.sleep(0.2)
            report = board.crash_loop()
            if report:
                print("airwatt emulate: the board %s" % report, file=sys.stderr, flush=True)
            if fault_file is not None and fault_file.exists():
                mtime = fault_file.stat().st_mtime_ns
                if mtime != fault_mtime:
                    fault_mtime = mtime
                    try:
                        # the file's faults on top of the --fault ones (which stay unless the file names them)
                        board.set_faults({**faults, **json.loads(fault_file.read_text() or "{}")})
                    except ValueError as e:
                        print("airwatt emulate: ignoring %s: %s" % (fault_file, e), file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        if port_file is not None:
            port_file.unlink(missing_ok=True)
    print("emulated board stopped (boots %d, resets %s)" % (board.boots, board.resets), flush=True)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("emulate", help="run an emulated ESP32 board on a pty (use its port with mpremote)")
    p.add_argument("--port-file", help="write the board's serial port path to this file")
    p.add_argument("--flash", help="the board's flash image (LittleFS, created on first use; "
                                   "default ./airwatt-board-flash.bin)")
    p.add_argument("--fault", action="append", metavar="FAULT",
                   help="start with a fault: wifi_down, hang, clock_unset, power_cut_at_write=N, "
                        "pms.unplugged, pzem.corrupt=3, scd4x.stuck, pzem.mains_off (repeatable)")
    p.add_argument("--fault-file", help="JSON file of faults, re-read whenever it changes, on top of the --fault "
                                        "ones (e.g. {\"wifi_down\": true, \"pms\": {\"unplugged\": true}})")
    p.add_argument("--wiring", help="board config as JSON or a JSON file: uart/i2c wiring, wifi {ssid,key}, "
                                    "clock unset|host, unique_id, day_scale (see emulator/board/boardstate.py)")
    p.add_argument("--meters", type=int, help="N PZEM-004T meters on the energy bus at addresses 1..N, each with its "
                                              "own load (faults per meter: pzem2.unplugged, pzem3.wrong_addr=9)")
    p.add_argument("--log", help="append everything the board prints to this file")
    p.add_argument("--echo", action="store_true", help="also print what the board prints")
    p.set_defaults(func=run)
