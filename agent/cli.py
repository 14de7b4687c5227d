"""The `airwatt` command: one entry point for operators, technicians and developers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _schema_export(args: argparse.Namespace) -> int:
    from airwatt.protocol import schema

    for path in schema.export(Path(args.out) if args.out else schema.SCHEMA_DIR):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airwatt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    schema = commands.add_parser("schema", help="protocol JSON Schema files")
    schema_verbs = schema.add_subparsers(dest="verb", required=True)
    export = schema_verbs.add_parser("export", help="write the JSON Schema files of the protocol's messages")
    export.add_argument("--out", help="folder to write to (default: the protocol's schema folder)")
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
from airwatt.agent import bench_board as _bench_board  # noqa: E402  bench board

_REGISTRARS.append(_bench_board.register)
from airwatt.agent import flash_cmd as _flash_cmd  # noqa: E402  flash, console

_REGISTRARS.append(_flash_cmd.register)
from airwatt.agent import demo as _demo  # noqa: E402  demo

_REGISTRARS.append(_demo.register)

from airwatt.agent import emulate_cmd as _emulate_cmd  # noqa: E402  emulate

_REGISTRARS.append(_emulate_cmd.register)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
