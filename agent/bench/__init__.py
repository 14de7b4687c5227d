"""`airwatt bench ...`: throughput figures, each printed beside a baseline measured in the same run (never
asserted in tests).

- ingest.py: durable ingest over HTTP vs raw executemany
- sync.py: the sync worker draining to the emulated platform (or a real server) vs raw executemany
- pages.py: page times on a grown store, agent RSS, a CSV export
- board.py: the board's flash buffer and uploads, v1 store beside the compact log and v2
"""

from __future__ import annotations

import argparse

from . import board, ingest, pages, sync


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`airwatt bench ingest|sync|pages|board`, on the `airwatt` command's subparsers."""
    bench = subparsers.add_parser("bench", help="measure throughput").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    for part in (ingest, sync, pages, board):
        part.add_parser(bench)
