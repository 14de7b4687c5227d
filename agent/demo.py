"""`airwatt demo`: the whole system on one machine, over loopback.

The agent with its SQLite store, the emulated city platform, and N emulated boards (real MicroPython processes
behind ptys) in one building, each provisioned the way a technician does it (`airwatt flash` over the board's
serial port), with a day profile running faster than real time and an occasional fault. The dashboard is on
http://127.0.0.1:8080 until --duration runs out or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path

from airwatt.agent import flash_cmd, store
from airwatt.agent.config import ConfigError, load_config

DEMO_INTERVALS = {"energy": 10, "pm": 30, "co2": 15}
SITES = (("Khon Kaen City Hall", 16.4419, 102.8360), ("Khon Kaen Municipal School 5", 16.4322, 102.8236))
# (fault, value, seconds it lasts; 0: one-shot, cleared by the reset it causes)
FAULTS = (
    ("wifi_down", True, 40),
    ("pms", {"corrupt": 3}, 0),
    ("pzem", {"unplugged": True}, 25),
    ("scd4x", {"stuck": True}, 30),
    ("power_cut_at_write", 3, 0),
)


def _devices(db, count: int) -> list[str]:
    ids = []
    for i in range(count):
        device = "demo-%02d" % (i + 1)
        site, lat, lon = SITES[i % len(SITES)]
        if store.get_device(db, device) is None:
            store.add_device(db, device, name="Demo board %d" % (i + 1), site=site, lat=lat + i * 0.0003,
                             lon=lon + i * 0.0003, interval_s=15)
        ids.append(device)
    return ids


def _provision(board, device: str, data_dir: str, agent_url: str, image: dict[str, bytes],
               say) -> None:
    """What `airwatt flash` does, without waiting for the self-test (the dashboard shows it)."""
    config = flash_cmd.board_config(device, "", "airwatt-demo:demo-pass", agent_url, list(DEMO_INTERVALS),
                                    DEMO_INTERVALS, upload_s=10)
    config["key"], _ = flash_cmd.device_key(data_dir, device, list(DEMO_INTERVALS), None, None)
    files = dict(image)
    files["/config.json"] = json.dumps(config, indent=1).encode()
    changed, _ = flash_cmd.provision(board.port, files, lambda line: None, None)
    say("board %s on %s: %d files flashed, booting" % (device, board.port, len(changed)))


async def _faults(boards: dict, rng: random.Random, every_s: float, say) -> None:
    while True:
        await asyncio.sleep(every_s * (0.5 + rng.random()))
        device = rng.choice(sorted(boards))
        name, value, lasts = rng.choice(FAULTS)
        board = boards[device]
        board.set_fault(name, value)
        say("fault on %s: %s %s%s" % (device, name, value, " for %d s" % lasts if lasts else ""))
        if lasts:
            await asyncio.sleep(lasts)
            board.set_fault(name, {k: False for k in value} if isinstance(value, dict) else False)
            say("fault on %s cleared: %s" % (device, name))


async def run_demo(args: argparse.Namespace, say=print) -> None:
    from aiohttp import web

    from airwatt.agent.app import make_app
    from airwatt.emulator.esp32 import EmulatedBoard
    from airwatt.emulator.platform import start_platform

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"host": "127.0.0.1", "port": args.port, "platform.url": args.platform_url,
                 "platform.kind": args.platform_kind}
    platform_runner = None
    if not args.platform_url and args.platform_kind in ("sensorthings", "mqtt"):
        raise SystemExit("airwatt demo: --platform-kind %s needs --platform-url (the emulated platform speaks"
                         " ngsi-ld and http-json only)" % args.platform_kind)
    if not args.platform_url:
        platform_runner, url = await start_platform("127.0.0.1", 0, data_dir / "platform.db")
        overrides["platform.url"] = url
        overrides["platform.kind"] = args.platform_kind
        say("emulated city platform (%s) on %s" % (args.platform_kind, url))
    config = load_config(data_dir, overrides)
    db = store.open_db(data_dir)
    devices = _devices(db, args.boards)
    db.close()

    runner = web.AppRunner(make_app(data_dir, config), access_log=None, shutdown_timeout=3)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    agent_url = "http://127.0.0.1:%d" % runner.addresses[0][1]

    boards: dict[str, EmulatedBoard] = {}  # noqa: F821 (imported above, at run time)
    tasks: list[asyncio.Task] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def bring_up() -> None:
        image = flash_cmd.firmware_image()
        (data_dir / "boards").mkdir(exist_ok=True)
        for i, device in enumerate(devices):
            board = EmulatedBoard(data_dir / "boards" / (device + ".flash"),
                                  config={"clock": "unset", "day_scale": args.day_scale,
                                          "unique_id": "a4cf1234%04x" % i, "rssi": -55 - 7 * i},
                                  log_path=data_dir / "boards" / (device + ".log"))
            boards[device] = board.start()
            await asyncio.to_thread(_provision, board, device, str(data_dir), agent_url, image, say)
        say("dashboard: %s/   (Ctrl-C stops the demo)" % agent_url)
        if args.fault_every > 0:
            tasks.append(asyncio.create_task(_faults(boards, random.Random(args.seed), args.fault_every, say)))
        await asyncio.Event().wait()  # runs until stopped

    try:
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
        await runner.cleanup()
        if platform_runner is not None:
            await platform_runner.cleanup()


def _demo_cmd(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        asyncio.run(run_demo(args))
    except (ConfigError, flash_cmd.FlashError) as err:
        print("airwatt demo: %s" % err, file=sys.stderr)
        return 2
    except OSError as err:
        print("airwatt demo: %s (is port %d in use? try --port)" % (err, args.port), file=sys.stderr)
        return 2
    print("demo ran %.0f s" % (time.monotonic() - started))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="agent + emulated boards + emulated city platform, dashboard on :8080")
    demo.add_argument("--data-dir", default="airwatt-demo", help="folder for the store, platform and board flash")
    demo.add_argument("--port", type=int, default=8080, help="dashboard and agent port (default 8080)")
    demo.add_argument("--boards", type=int, default=3, help="emulated boards (default 3)")
    demo.add_argument("--duration", type=float, default=0, help="stop after S seconds (default: until Ctrl-C)")
    demo.add_argument("--platform-url", help="sync to this external platform instead of the emulated one")
    demo.add_argument("--platform-kind", choices=("ngsi-ld", "http-json", "sensorthings", "mqtt"), default="ngsi-ld")
    demo.add_argument("--day-scale", type=float, default=60, help="sensor day profiles run this much faster")
    demo.add_argument("--fault-every", type=float, default=90, help="mean seconds between faults (0: none)")
    demo.add_argument("--seed", type=int, default=None, help="seed for the fault schedule")
    demo.set_defaults(func=_demo_cmd)
