"""The `airwatt` command: one entry point for operators, technicians and developers.

One parser: each part of AirWatt adds its own verbs with its `add_parser(subparsers)`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from airwatt.agent import app, bench, commands, demo, emulate_cmd, firmware, flash_cmd, meter_cmd, sync
from airwatt.emulator import platform
from airwatt.protocol import schema


def _schema_export(args: argparse.Namespace) -> int:
    for path in schema.export(Path(args.out).absolute()):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airwatt", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    schema_p = subparsers.add_parser("schema", help="protocol JSON Schema files")
    schema_verbs = schema_p.add_subparsers(dest="verb", required=True)
    export = schema_verbs.add_parser("export", help="write the JSON Schema files of the protocol's messages")
    # Never into the installed package by default; the checked-in copies: --out protocol/schema in a checkout.
    export.add_argument("--out", default="airwatt-schema", help="folder to write to (default: ./airwatt-schema)")
    export.set_defaults(func=_schema_export)

    app.add_parser(subparsers)  # serve
    commands.add_parser(subparsers)  # device, readings, export, stats, backup, restore
    sync.add_parser(subparsers)  # sync status, run, retry
    bench.add_parser(subparsers)  # bench ingest, sync, pages, board
    platform.add_parser(subparsers)  # the emulated city platform
    flash_cmd.add_parser(subparsers)  # flash, console
    demo.add_parser(subparsers)
    emulate_cmd.add_parser(subparsers)
    firmware.add_parser(subparsers)  # firmware build, rollout, status
    meter_cmd.add_parser(subparsers)  # meter address
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return status
    except BrokenPipeError:
        # The reader stopped early (`airwatt device list --format json | head`): stop quietly, as `cat` does.
        # stdout goes to /dev/null so that Python's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
