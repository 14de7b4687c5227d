"""The `airwatt` command: one entry point for operators, technicians and developers."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path


def _schema_export(args: argparse.Namespace) -> int:
    from airwatt.protocol import schema

    for path in schema.export(Path(args.out).absolute()):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airwatt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    schema = commands.add_parser("schema", help="protocol JSON Schema files")
    schema_verbs = schema.add_subparsers(dest="verb", required=True)
    export = schema_verbs.add_parser("export", help="write the JSON Schema files of the protocol's messages")
    # Never into the installed package by default; the checked-in copies: --out protocol/schema in a checkout.
    export.add_argument("--out", default="airwatt-schema", help="folder to write to (default: ./airwatt-schema)")
    export.set_defaults(func=_schema_export)

    for register in _REGISTRARS:
        register(commands)
    return parser


# Each part of AirWatt that adds commands appends a function here that takes the subparsers object.
_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []

from airwatt.agent import commands as _agent_commands  # noqa: E402  serve, device, readings, export, sync, bench

_REGISTRARS.append(_agent_commands.register)
from airwatt.agent import bench_sync as _bench_sync  # noqa: E402  bench sync, platform

_REGISTRARS.append(_bench_sync.register)
from airwatt.agent import bench_pages as _bench_pages  # noqa: E402  bench pages

_REGISTRARS.append(_bench_pages.register)
from airwatt.agent import bench_board as _bench_board  # noqa: E402  bench board

_REGISTRARS.append(_bench_board.register)
from airwatt.agent import flash_cmd as _flash_cmd  # noqa: E402  flash, console

_REGISTRARS.append(_flash_cmd.register)
from airwatt.agent import demo as _demo  # noqa: E402  demo

_REGISTRARS.append(_demo.register)

from airwatt.agent import emulate_cmd as _emulate_cmd  # noqa: E402  emulate

_REGISTRARS.append(_emulate_cmd.register)
from airwatt.agent import meter_cmd as _meter_cmd  # noqa: E402  meter address

_REGISTRARS.append(_meter_cmd.register)


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
