"""`airwatt bench board`: the board's flash buffer and uploads on the emulated flash, today's v1 store beside the
compact log with v2 batches, both measured in the same run (emulator/board/bench_flash.py on the MicroPython
VM)."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from airwatt.agent import flash_cmd
from airwatt.emulator.esp32 import find_micropython

ROOT = Path(__file__).resolve().parents[2]
WEEK = 7 * 24 * 3600 * 0.15  # readings in a 7-day backlog at the default intervals: 90,720


def _micropython() -> str:
    try:
        return find_micropython()
    except RuntimeError as err:
        raise SystemExit(str(err)) from None


def write_image(folder: Path) -> None:
    """The files `airwatt flash` writes to a board (compiled as it compiles them), at their board paths under
    folder: what the bench puts on the emulated flash before the buffer."""
    for path, data in flash_cmd.firmware_image().items():
        target = folder / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def run_one(kind: str, image: Path, online: float, full: float, after: float) -> dict:
    """One store's timeline on the VM, with the board's files from folder image; the dict its RESULT line
    printed."""
    env = {**os.environ, "MICROPYPATH": ":".join(
        [str(ROOT / "emulator" / "board"), str(ROOT), str(ROOT / "firmware"), ".frozen"])}
    out = subprocess.run([_micropython(), "-X", "heapsize=16M", str(ROOT / "emulator" / "board" / "bench_flash.py"),
                          kind, str(image), str(online), str(full), str(after)], env=env, capture_output=True,
                         text=True, timeout=3600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return ast.literal_eval(line[7:])
    raise RuntimeError("bench_flash.py %s failed:\n%s" % (kind, (out.stdout + out.stderr)[-2000:]))


def format_board(v1: dict, v2: dict) -> str:
    def week(r: dict) -> tuple[float, float]:
        posts = WEEK / r["per_post"]
        return posts, posts * r["per_post"] * r["wire_per_reading"]

    rows = [
        ("readings held at the default intervals", "%d" % v1["held"], "%d" % v2["held"]),
        ("hours held", "%.1f" % v1["hours"], "%.1f" % v2["hours"]),
        ("sector erases per reading", "%.3f" % v1["erases_per_reading"], "%.4f" % v2["erases_per_reading"]),
        ("bytes written per reading", "%.0f" % v1["bytes_per_reading"], "%.0f" % v2["bytes_per_reading"]),
        ("highest erase count of a sector", "%d" % v1["max_erases"], "%d" % v2["max_erases"]),
        ("days emulated (incl. full-buffer outage)", "%.1f" % v1["days"], "%.1f" % v2["days"]),
        ("projected flash life, years (100k cycles)", "%.1f" % v1["life_years"], "%.1f" % v2["life_years"]),
        ("wire bytes per reading (full batches)", "%.1f" % v1["wire_per_reading"], "%.1f" % v2["wire_per_reading"]),
        ("readings per POST", "%.0f" % v1["per_post"], "%.0f" % v2["per_post"]),
        ("POSTs for a 7-day backlog (90,720)", "%.0f" % week(v1)[0], "%.0f" % week(v2)[0]),
        ("bytes for a 7-day backlog", "%.0f" % week(v1)[1], "%.0f" % week(v2)[1]),
        ("peak heap for a catch-up batch, bytes", "%d" % v1["peak_heap_per_batch"],
         "%d" % v2["peak_heap_per_batch"]),
    ]
    w = max(len(r[0]) for r in rows)
    lines = ["%-*s  %14s  %14s" % (w, "", "v1 store, JSON", "clog + v2")]
    lines += ["%-*s  %14s  %14s" % (w, a, b, c) for a, b, c in rows]
    lines.append("flash: 512 x 4 KiB sectors (2 MiB vfs), %d bytes of firmware files, %d bytes free before the "
                 "buffer" % (v2["firmware_bytes"], v2["free_bytes"]))
    return "\n".join(lines)


def _bench_board(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
        write_image(Path(tmp))
        # the two stores side by side, in the same run
        f1 = pool.submit(run_one, "v1", Path(tmp), args.online_days, args.full_days, args.after_days)
        f2 = pool.submit(run_one, "v2", Path(tmp), args.online_days, args.full_days, args.after_days)
        v1, v2 = f1.result(), f2.result()
    print(format_board(v1, v2))
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    """`airwatt bench board`, on the bench group's subparsers."""
    bb = bench.add_parser(
        "board", help="the board's flash buffer and uploads: today's v1 store beside the compact log and v2")
    bb.add_argument("--online-days", type=float, default=1.0, help="days online before the outage (default 1)")
    bb.add_argument("--full-days", type=float, default=1.0,
                    help="days the outage lasts after the buffer is full (default 1)")
    bb.add_argument("--after-days", type=float, default=1.0, help="days online after the catch-up (default 1)")
    bb.set_defaults(func=_bench_board)
