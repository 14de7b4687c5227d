"""`airwatt demo`: the whole system on one machine, over loopback.

The agent with its SQLite store, the emulated city platform, and N emulated boards (real MicroPython processes
behind ptys), each in a building of its own (its own loads, occupancy and air), provisioned the way a technician
does it (`airwatt flash` over the board's serial port), with day profiles running a little faster than real time
and an occasional fault. It prints the dashboard's URL first, then each board's steps (flashed, first reading
stored, first reading synced), and a summary at the end; it exits 1 when a board never delivered a reading or
kept rebooting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

from aiohttp import web

from airwatt.agent import flash_cmd, server, store
from airwatt.agent.adapters import KINDS
from airwatt.agent.app import make_app
from airwatt.agent.config import ConfigError, load_config
from airwatt.emulator.esp32 import EmulatedBoard
from airwatt.emulator.platform import start_platform

# Readings often enough that a few minutes fill the charts; a stuck sensor flagged after 6 equal readings (the
# firmware's default waits 20-120: minutes, longer than a demo's fault lasts).
DEMO_INTERVALS = {"energy": 5, "pm": 10, "co2": 5}
STUCK_N = 6
UPLOAD_S = 10
FIRST_FAULT_S = 20  # once every board has readings on the pages


def _h(hours: float) -> int:
    return int(hours * 3600)


# Each board's building: a day of (hour, value) points per sensor, Thai time, interpolated by the sensor emulators
# (emulator/board/sensors.py). Power in W, CO2 in ppm (occupancy), PM2.5 in ug/m3, temperature in C, RH in %.
BUILDINGS = (
    {"key": "city-hall", "name": "City hall, floor 2 offices", "site": "Khon Kaen City Hall",
     "lat": 16.4419, "lon": 102.8360,  # air-conditioned offices, 8:30-16:30, lunch dip
     "power": ((0, 180), (6, 200), (8, 1800), (10, 2600), (12, 1900), (13, 2700), (16, 2500), (18, 900), (20, 300)),
     "co2": ((0, 430), (7, 420), (9, 900), (11, 1150), (12, 800), (14, 1250), (17, 1000), (19, 550), (22, 450)),
     "pm25": ((0, 18), (6, 22), (8, 35), (10, 20), (16, 19), (18, 30), (21, 24)),
     "temp": ((0, 28.5), (6, 27.5), (9, 25.0), (15, 24.5), (18, 26.5), (21, 28.5)),
     "rh": ((0, 68), (7, 70), (9, 55), (17, 52), (20, 64))},
    {"key": "school", "name": "Classroom block B, fans only", "site": "Khon Kaen Municipal School 5",
     "lat": 16.4322, "lon": 102.8236,  # no air conditioning, windows open: crowded rooms, the street's air
     "power": ((0, 60), (7, 120), (7.5, 900), (11.5, 950), (12, 400), (13, 950), (15.5, 300), (16.5, 90)),
     "co2": ((0, 420), (7.5, 450), (8.5, 1400), (10, 1800), (11.5, 1700), (12, 700), (13, 1500), (15, 1650),
             (15.5, 700), (17, 430)),
     "pm25": ((0, 25), (6.5, 40), (7.5, 58), (9, 38), (14, 33), (15.5, 62), (17, 45), (21, 30)),
     "temp": ((0, 27.0), (6, 26.5), (10, 30.5), (14, 33.0), (17, 31.0), (21, 28.0)),
     "rh": ((0, 78), (6, 80), (10, 62), (14, 50), (18, 60), (22, 74))},
    {"key": "health-centre", "name": "Outpatient hall", "site": "Khon Kaen Municipal Health Centre 1",
     "lat": 16.4255, "lon": 102.8491,  # open 24 h: cold chain and lights at night, crowded mornings, filtered air
     "power": ((0, 2400), (6, 2600), (7, 5200), (10, 6800), (12, 6000), (16, 5600), (18, 3800), (21, 2600)),
     "co2": ((0, 520), (6, 560), (8, 1100), (10, 1350), (12, 950), (14, 1050), (17, 800), (20, 600)),
     "pm25": ((0, 8), (7, 11), (10, 14), (16, 12), (20, 9)),
     "temp": ((0, 24.5), (8, 24.0), (14, 24.8), (20, 24.3)),
     "rh": ((0, 55), (9, 52), (15, 50), (21, 54))},
    {"key": "market", "name": "Fresh market hall", "site": "Khon Kaen Municipal Market",
     "lat": 16.4301, "lon": 102.8334,  # freezers all night, busy from 4:00, an evening market, charcoal stalls
     "power": ((0, 1300), (3.5, 1500), (4.5, 3600), (9, 2900), (13, 2100), (16.5, 3200), (20, 2600), (21.5, 1300)),
     "co2": ((0, 440), (4, 470), (6, 650), (9, 600), (13, 480), (17, 640), (20, 560), (22, 450)),
     "pm25": ((0, 30), (4, 45), (6, 75), (9, 50), (13, 35), (17, 82), (20, 60), (23, 35)),
     "temp": ((0, 27.5), (6, 27.0), (12, 33.5), (15, 34.0), (19, 30.5), (23, 28.0)),
     "rh": ((0, 76), (6, 80), (12, 55), (15, 50), (20, 65))},
    {"key": "library", "name": "Reading room", "site": "Khon Kaen Public Library",
     "lat": 16.4372, "lon": 102.8298,  # open 9:00-19:00, quiet, a few readers after school
     "power": ((0, 150), (8.5, 300), (9, 1400), (12, 1500), (16, 1700), (19, 1500), (19.5, 200)),
     "co2": ((0, 420), (9, 450), (11, 620), (13, 700), (16, 900), (18, 820), (19.5, 480)),
     "pm25": ((0, 16), (9, 17), (12, 15), (17, 21), (20, 18)),
     "temp": ((0, 28.0), (9, 26.5), (12, 25.0), (19, 25.5), (21, 27.5)),
     "rh": ((0, 66), (9, 60), (15, 54), (20, 62))},
)

# (fault, value, seconds it lasts (0: one-shot, cleared by the reset it causes), what it does, where it shows)
FAULTS = (
    ("wifi_down", True, 35, "Wi-Fi down",
     "readings wait on the board: the fleet page shows it late, then its buffer depth draining"),
    ("pms", {"corrupt": 3}, 0, "3 corrupted PM frames", "sensor errors: pm 3 on the fleet page"),
    ("pzem", {"unplugged": True}, 25, "energy meter unplugged",
     "sensor errors: energy on the fleet page; a gap in its power chart"),
    ("scd4x", {"stuck": True}, 45, "CO2 sensor stuck", "flagged (hollow) points on its CO2 chart after 30 s"),
    ("power_cut_at_write", 3, 0, "power cut while writing flash", "the board reboots; no reading is lost"),
)


def _building(i: int) -> dict:
    b = BUILDINGS[i % len(BUILDINGS)]
    n = i // len(BUILDINGS) + 1
    return dict(b, id="%s-%02d" % (b["key"], n), name=b["name"] + ("" if n == 1 else " (%d)" % n))


def _profile(points: tuple) -> list:
    return [[_h(hour), value] for hour, value in points]


def board_config(i: int, day_scale: float) -> dict:
    """The emulated board of building i: its sensors' day profiles, its own noise, radio and chip id."""
    b = _building(i)
    return {"clock": "unset", "day_scale": day_scale, "unique_id": "a4cf1234%04x" % i, "rssi": -52 - 6 * (i % 5),
            "sensors": {"pzem": {"profile": _profile(b["power"]), "seed": 11 + i},
                        "pms": {"profile": _profile(b["pm25"]), "seed": 23 + i},
                        "scd4x": {"co2_profile": _profile(b["co2"]), "temp_profile": _profile(b["temp"]),
                                  "rh_profile": _profile(b["rh"]), "seed": 37 + i}}}


def _devices(db, count: int) -> list[str]:
    """Register the demo's boards (kept when they exist: a second demo in the same data dir goes on)."""
    ids = []
    for i in range(count):
        b = _building(i)
        if store.get_device(db, b["id"]) is None:
            store.add_device(db, b["id"], name=b["name"], site=b["site"], lat=b["lat"], lon=b["lon"],
                             interval_s=min(DEMO_INTERVALS.values()))
        ids.append(b["id"])
    return ids


def _foreign_devices(db) -> list[str]:
    """Devices in this store that no demo made: the store is someone's real one."""
    known = {b["key"] for b in BUILDINGS}
    return [d["id"] for d in store.list_devices(db) if d["id"].rsplit("-", 1)[0] not in known]


def _provision(board, device: str, data_dir: str, agent_url: str, image: dict[str, bytes]) -> int:
    """What `airwatt flash` does, without waiting for the self-test (the dashboard shows it)."""
    config = flash_cmd.board_config(device, "", "airwatt-demo:demo-pass", agent_url, list(DEMO_INTERVALS),
                                    DEMO_INTERVALS, upload_s=UPLOAD_S)
    config["key"], _ = flash_cmd.device_key(data_dir, device, list(DEMO_INTERVALS), None, None,
                                            interval_s=flash_cmd.upload_gap(config))
    for sensor in config["sensors"]:
        sensor["stuck_n"] = STUCK_N
    files = dict(image)
    files["/config.json"] = json.dumps(config, indent=1).encode()
    changed, _ = flash_cmd.provision(board.port, files, lambda line: None, None)
    return len(changed)


def _counts(db_path: Path) -> dict[str, tuple[int, int]]:
    """device -> (readings stored, readings the platform confirmed)."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT device, count(*), count(synced_at) FROM readings GROUP BY device").fetchall()
    finally:
        conn.close()
    return {device: (stored, synced) for device, stored, synced in rows}


class _Progress:
    """What the demo tells: each board's steps as it passes them, its crash loops, and the closing numbers."""

    def __init__(self, devices: list[str], say) -> None:
        self.say = say
        self.devices = devices
        self.flashed: set[str] = set()
        self.base: dict[str, tuple[int, int]] = {}  # counts before this run (a data dir used before)
        self.counts: dict[str, tuple[int, int]] = {}
        self.faults: dict[str, int] = {}
        self.crash_loops: dict[str, str] = {}
        self.failed: dict[str, str] = {}  # device -> why flashing it failed
        self.started = time.monotonic()

    def at(self) -> str:
        return "%3.0f s" % (time.monotonic() - self.started)

    def now_counts(self, counts: dict[str, tuple[int, int]]) -> None:
        for device in self.devices:
            before = self.base.get(device, (0, 0))
            stored, synced = (a - b for a, b in zip(counts.get(device, (0, 0)), before))
            old_stored, old_synced = self.counts.get(device, (0, 0))
            at = self.at()
            if stored and not old_stored:
                self.say("[%s] %s: first reading stored in the agent" % (at, device))
            if synced and not old_synced:
                self.say("[%s] %s: first reading synced to the city platform" % (at, device))
            self.counts[device] = (stored, synced)

    def summary(self, boards: dict) -> int:
        self.say("summary: readings stored in the agent / synced to the platform, per board")
        for device in self.devices:
            stored, synced = self.counts.get(device, (0, 0))
            board = boards.get(device)
            resets = ", ".join("%s %d" % (k, v) for k, v in board.resets.items() if v) if board else ""
            self.say("  %-18s %5d stored  %5d synced  resets: %s" % (device, stored, synced, resets or "none"))
        self.say("faults injected: %s" % (", ".join("%s x%d" % kv for kv in sorted(self.faults.items())) or "none"))
        silent = [d for d in self.devices if not self.counts.get(d, (0, 0))[0]]
        for device in silent:
            self.say("airwatt demo: %s never delivered a reading: %s" % (device, self._why(device, boards)))
        unsynced = [d for d in self.devices if d not in silent and not self.counts[d][1]]
        if unsynced:
            self.say("airwatt demo: nothing of %s reached the city platform yet: `airwatt sync status` says why"
                     % ", ".join(unsynced))
        for device in self.crash_loops:
            if device not in silent:
                self.say("airwatt demo: %s kept rebooting (see above)" % device)
        return 1 if silent or self.crash_loops else 0

    def _why(self, device: str, boards: dict) -> str:
        board = boards.get(device)
        if device in self.crash_loops:
            return "it kept rebooting (see above)"
        if device in self.failed:
            return "flashing it failed: " + self.failed[device]
        if board is None or device not in self.flashed:
            return "the demo stopped before it was flashed"
        return ("none reached the agent in the %.0f s of the demo (it uploads every %d s); the last lines it "
                "printed:\n%s" % (time.monotonic() - self.started, UPLOAD_S, board.tail()))


async def _watch(progress: _Progress, boards: dict, db_path: Path) -> None:
    while True:
        progress.now_counts(await asyncio.to_thread(_counts, db_path))
        for device, board in list(boards.items()):
            report = board.crash_loop()
            if report:
                progress.crash_loops[device] = report
                progress.say("airwatt demo: board %s %s" % (device, report))
        await asyncio.sleep(1)


async def _faults(boards: dict, rng: random.Random, every_s: float, progress: _Progress) -> None:
    await asyncio.sleep(FIRST_FAULT_S)
    while True:
        device = rng.choice(sorted(boards))
        name, value, lasts, what, where = rng.choice(FAULTS)
        board = boards[device]
        board.set_fault(name, value)
        progress.faults[what] = progress.faults.get(what, 0) + 1
        progress.say("[%s] fault on %s: %s%s (%s)" % (progress.at(), device, what,
                                                      " for %d s" % lasts if lasts else "", where))
        if lasts:
            await asyncio.sleep(lasts)
            board.set_fault(name, {k: False for k in value} if isinstance(value, dict) else False)
            progress.say("[%s] fault on %s cleared: %s" % (progress.at(), device, what))
        await asyncio.sleep(every_s * (0.5 + rng.random()))


async def run_demo(args: argparse.Namespace, say=print) -> int:
    """Run the demo until --duration or SIGINT/SIGTERM; returns the exit status (1: a board delivered nothing)."""
    data_dir = Path(args.data_dir).absolute()  # the caller's working directory, whatever runs below
    data_dir.mkdir(parents=True, exist_ok=True)
    db = store.open_db(data_dir)
    foreign = _foreign_devices(db)
    if foreign:
        db.close()
        raise ConfigError("%s holds devices the demo did not make (%s): give the demo a data dir of its own "
                          "with --data-dir" % (data_dir, ", ".join(foreign[:5])))
    devices = _devices(db, args.boards)
    db.close()
    progress = _Progress(devices, say)
    progress.base = _counts(store.db_path(data_dir))

    overrides = {"host": "127.0.0.1", "port": args.port, "platform.url": args.platform_url,
                 "platform.kind": args.platform_kind}
    platform_runner = None
    if not args.platform_url and args.platform_kind in ("sensorthings", "mqtt"):
        raise SystemExit("airwatt demo: --platform-kind %s needs --platform-url (the emulated platform speaks"
                         " ngsi-ld and http-json only)" % args.platform_kind)
    if not args.platform_url:
        platform_runner, url = await start_platform("127.0.0.1", 0, data_dir / "platform.db")
        overrides["platform.url"] = url
    runner = listener = None
    boards: dict[str, EmulatedBoard] = {}
    tasks: list[asyncio.Task] = []
    try:
        config = load_config(data_dir, overrides)
        runner = web.AppRunner(make_app(data_dir, config), shutdown_timeout=3,
                               **server.runner_options(config.idle_timeout_s))
        await runner.setup()
        listener, _, port = await server.start(runner, "127.0.0.1", args.port)  # serve's timeouts and cap
        agent_url = "http://127.0.0.1:%d" % port
        say("dashboard: %s/   (Ctrl-C stops the demo)" % agent_url)
        say("data dir: %s (store, platform, board flash images and consoles)" % data_dir)
        say("city platform: %s (%s%s)" % (overrides["platform.url"], args.platform_kind,
                                          ", emulated" if platform_runner else ""))

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def bring_up() -> None:
            image = flash_cmd.firmware_image()
            (data_dir / "boards").mkdir(exist_ok=True)
            tasks.append(asyncio.create_task(_watch(progress, boards, store.db_path(data_dir))))
            for i, device in enumerate(devices):
                board = EmulatedBoard(data_dir / "boards" / (device + ".flash"),
                                      config=board_config(i, args.day_scale),
                                      log_path=data_dir / "boards" / (device + ".log"))
                boards[device] = board.start()
                try:
                    n = await asyncio.to_thread(_provision, board, device, str(data_dir), agent_url, image)
                except flash_cmd.FlashError as err:  # this board only: the others go on
                    progress.failed[device] = str(err)
                    say("[%s] %s: flashing failed: %s" % (progress.at(), device, err))
                    continue
                progress.flashed.add(device)
                b = _building(i)
                say("[%s] %s: flashed on %s (%d files changed), booting. %s, %s: %s/device/%s?range=15m"
                    % (progress.at(), device, board.port, n, b["name"], b["site"], agent_url, device))
            if args.fault_every > 0:
                tasks.append(asyncio.create_task(_faults(boards, random.Random(args.seed), args.fault_every,
                                                         progress)))
            await asyncio.Event().wait()  # runs until stopped

        running = asyncio.create_task(bring_up())
        tasks.append(running)
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([running, stopped], timeout=args.duration or None,
                                     return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if running in done:
            running.result()  # a provisioning error: shown to the user
    finally:
        say("stopping: boards, agent, platform")
        for task in tasks:
            task.cancel()
        for board in boards.values():
            await asyncio.to_thread(board.stop)
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if platform_runner is not None:
            await platform_runner.cleanup()
    progress.now_counts(_counts(store.db_path(data_dir)))
    return progress.summary(boards)


def _demo_cmd(args: argparse.Namespace) -> int:
    if args.boards < 1:
        print("airwatt demo: --boards must be at least 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        status = asyncio.run(run_demo(args))
    except (ConfigError, flash_cmd.FlashError, ValueError) as err:
        print("airwatt demo: %s" % err, file=sys.stderr)
        return 2
    except OSError as err:
        print("airwatt demo: %s (is port %d in use? try --port)" % (err, args.port), file=sys.stderr)
        return 2
    print("demo ran %.0f s; its data stays in %s (`airwatt device list` and the other commands read it)"
          % (time.monotonic() - started, Path(args.data_dir).absolute()))
    return status


def add_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="agent + emulated boards + emulated city platform, dashboard on :8080")
    demo.add_argument("--data-dir", default=store.data_dir_default(),
                      help="folder for the store, platform and board flash (default: $AIRWATT_DATA_DIR or "
                           "./airwatt-data, the other commands' default)")
    demo.add_argument("--port", type=int, default=8080, help="dashboard and agent port (default 8080)")
    demo.add_argument("--boards", type=int, default=3, help="emulated boards, one per building (default 3)")
    demo.add_argument("--duration", type=float, default=0, help="stop after S seconds (default: until Ctrl-C)")
    demo.add_argument("--platform-url", help="sync to this external platform instead of the emulated one")
    demo.add_argument("--platform-kind", choices=KINDS, default="ngsi-ld")
    demo.add_argument("--day-scale", type=float, default=10,
                      help="the buildings' days run this much faster than real time (default 10: a minute on "
                           "screen is ten minutes of the day)")
    demo.add_argument("--fault-every", type=float, default=30,
                      help="mean seconds between a fault's end and the next one, from 20 s on (0: none)")
    demo.add_argument("--seed", type=int, default=None, help="seed for the fault schedule")
    demo.set_defaults(func=_demo_cmd)
