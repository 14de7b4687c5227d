"""`airwatt bench ingest`: durable ingest over HTTP beside raw SQLite inserts of the same rows.

The agent runs as a real `airwatt serve` process on 127.0.0.1 (any free port) with a temp data dir; N uploaders
(one device each, aiohttp, one connection each) send pre-built signed batches back to back. Every 200 means
the batch was committed (WAL, synchronous=FULL). Then the same rows go into a fresh database with raw
`executemany` in ONE transaction (the ceiling) and with one commit per batch (what durable acks would cost
without group commit). Figures only: speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from airwatt.protocol import wire
from airwatt.protocol.models import parse_batch

from airwatt.agent import ingest, reading, store, writer
from airwatt.agent.bench.serve import start_agent, stop_agent

BOOT = "0b0e0c0d"


def _reading(seq: int, i: int) -> tuple[str, dict]:
    kind = ("energy", "pm", "co2")[seq % 3]
    if kind == "energy":
        return kind, {"voltage": 229.5 + i % 10 / 10, "current": 1.25, "power": 287.0, "energy_wh": 1000 + seq,
                      "frequency": 50.0, "pf": 0.98}
    if kind == "pm":
        return kind, {"pm1": 5 + i % 7, "pm25": 12 + i % 11, "pm10": 20 + i % 13}
    return kind, {"co2": 600 + i % 50, "temperature": 26.5, "humidity": 55.25}


def build_batches(devices: list[str], batches: int, size: int, t0: int) -> dict[str, list[bytes]]:
    """Per device, `batches` bodies of `size` readings with consecutive seqs (half with board time)."""
    out: dict[str, list[bytes]] = {}
    for d in devices:
        bodies = []
        for b in range(batches):
            readings = []
            for k in range(size):
                seq = b * size + k + 1
                kind, values = _reading(seq, k)
                t = t0 + seq if seq % 2 else None
                readings.append(wire.encode_reading(seq, t, seq * 1000, BOOT, kind, values))
            bodies.append(wire.batch_body(d, "0.1.0", BOOT, (b + 1) * size * 1000 + 500, readings))
        out[d] = bodies
    return out


async def _upload(url: str, keys: dict[str, bytes], bodies: dict[str, list[bytes]], start: int) -> tuple[float, int]:
    import aiohttp

    # Signed up front, as a board signs when it builds a batch: the timed part measures the agent, not this side.
    def signed_headers(device: str, body: bytes) -> dict:
        return {
            "Content-Type": "application/json",
            ingest.DEVICE_HEADER: device,
            ingest.SIGNATURE_HEADER: wire.sign(keys[device], body),
        }

    signed = {d: [(b, signed_headers(d, b)) for b in bodies[d][start:]] for d in bodies}

    async def one(session: aiohttp.ClientSession, device: str) -> None:
        for body, headers in signed[device]:
            async with session.post(url + "/v1/batches", data=body, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError("upload answered %d: %s" % (resp.status, await resp.text()))
                await resp.read()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm-up: each uploader's first batch opens its connection and fills the agent's key cache.
        await asyncio.gather(*(one_first(session, url, d, keys[d], bodies[d][0]) for d in bodies))
        commits = await _commits(session, url)
        began = time.perf_counter()
        await asyncio.gather(*(one(session, d) for d in bodies))
        elapsed = time.perf_counter() - began
        return elapsed, await _commits(session, url) - commits


async def _commits(session: Any, url: str) -> int:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    match = re.search(r"^airwatt_ingest_commits_total (\d+)", text, re.M)
    return int(match.group(1)) if match else 0


async def one_first(session: object, url: str, device: str, key: bytes, body: bytes) -> None:
    headers = {ingest.DEVICE_HEADER: device, ingest.SIGNATURE_HEADER: wire.sign(key, body)}
    async with session.post(url + "/v1/batches", data=body, headers=headers) as resp:  # type: ignore[attr-defined]
        if resp.status != 200:
            raise RuntimeError("upload answered %d: %s" % (resp.status, await resp.text()))


def _rows(bodies: dict[str, list[bytes]], start: int) -> list[list[tuple]]:
    now = time.time()
    out = []
    for d in bodies:
        for body in bodies[d][start:]:
            job = ingest.job_from_batch(parse_batch(body), now)
            # The agent times ticks-only readings from the boot offset; any time will do for the raw inserts.
            out.append([row if row[reading.T] is not None else reading.with_time(row, now, "ticks") for row in job.rows])
    return out


def raw_inserts(data_dir: Path, batches: list[list[tuple]], one_transaction: bool) -> float:
    """Seconds to insert the rows with executemany: in ONE transaction, or one commit per batch."""
    db = store.open_db(data_dir)
    conn = db.conn
    ids: dict[tuple[str, str], int] = {}
    for batch in batches:  # the boots' ids (the writer's lookup), outside the timed inserts
        for row in batch:
            if (row[0], row[2]) not in ids:
                ids[(row[0], row[2])] = store.boot_id(db, row[0], row[2])
    batches = [[row[:2] + (ids[(row[0], row[2])],) + row[3:] for row in batch] for batch in batches]
    began = time.perf_counter()
    if one_transaction:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(writer.INSERT, [row for batch in batches for row in batch])
        conn.execute("COMMIT")
    else:
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(writer.INSERT, batch)
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed


def run_ingest(uploaders: int = 50, batch: int = 50, batches: int = 40, data_dir: str | None = None,
               rounds: int = 1) -> dict:
    """Run the ingest bench `rounds` times (fresh databases each) and report the round with the best HTTP figure,
    with that round's own raw figures: the round least disturbed by whatever else the machine runs. Returns
    readings/s over HTTP, raw, ratio, batches per commit."""
    best: dict = {}
    with tempfile.TemporaryDirectory(prefix="airwatt-bench-") as tmp:
        base = Path(data_dir) if data_dir else Path(tmp)
        for n in range(rounds):
            r = _ingest_round(base / ("round-%d" % n), uploaders, batch, batches)
            if not best or r["http_per_s"] > best["http_per_s"]:
                best = r
    best.update({"uploaders": uploaders, "batch": batch, "readings": uploaders * batches * batch, "rounds": rounds})
    best["ratio"] = best["http_per_s"] / best["raw_one_tx_per_s"]
    return best


def _ingest_round(base: Path, uploaders: int, batch: int, batches: int) -> dict:
    agent_dir, raw1_dir, rawn_dir = base / "agent", base / "raw-one", base / "raw-each"
    for d in (agent_dir, raw1_dir, rawn_dir):
        if store.db_path(d).exists():
            raise SystemExit("bench: %s already holds a database; give an empty --data-dir" % d)
    db = store.open_db(agent_dir)
    devices = ["bench-%03d" % i for i in range(uploaders)]
    keys = {d: bytes.fromhex(store.add_device(db, d)) for d in devices}
    db.close()
    bodies = build_batches(devices, batches + 1, batch, int(time.time()) - 86400)
    proc, url = start_agent(agent_dir)
    store.tune_gc()  # the uploaders too: this process holds every body, which the collector would keep rescanning
    try:
        elapsed, commits = asyncio.run(_upload(url, keys, bodies, 1))
    finally:
        stop_agent(proc)
    readings = uploaders * batches * batch
    conn = sqlite3.connect(store.db_path(agent_dir))
    stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    conn.close()
    if stored != readings + uploaders * batch:  # every 200 must mean stored: check before quoting a speed
        raise RuntimeError("agent stored %d readings, expected %d" % (stored, readings + uploaders * batch))
    rows = _rows(bodies, 1)
    raw_one = raw_inserts(raw1_dir, rows, True)
    raw_each = raw_inserts(rawn_dir, rows, False)
    return {
        "http_seconds": elapsed,
        "http_per_s": readings / elapsed,
        "raw_one_tx_per_s": readings / raw_one,
        "raw_commit_each_per_s": readings / raw_each,
        "batches_per_commit": (uploaders * batches) / commits if commits else None,
    }


def format_ingest(r: dict) -> str:
    per_commit = "%.1f" % r["batches_per_commit"] if r["batches_per_commit"] else "?"
    return "\n".join(
        [
            "ingest bench: %d uploaders x batches of %d, %d readings, best of %d round(s) (cpu count %s)"
            % (r["uploaders"], r["batch"], r["readings"], r["rounds"], os.cpu_count()),
            "  durable ingest over HTTP (200 = committed): %10.0f readings/s  (%.2f s, %s batches per commit)"
            % (r["http_per_s"], r["http_seconds"], per_commit),
            "  raw executemany, ONE transaction:           %10.0f readings/s" % r["raw_one_tx_per_s"],
            "  raw executemany, one commit per batch:      %10.0f readings/s" % r["raw_commit_each_per_s"],
            "  ratio HTTP / raw one transaction:           %10.2f  (target >= 0.2; target >= 50,000 readings/s)"
            % r["ratio"],
        ]
    )


# -- airwatt bench ingest ----------------------------------------------------------------------------------------------


def _bench_ingest(args: argparse.Namespace) -> int:
    result = run_ingest(
        uploaders=args.uploaders, batch=args.batch, batches=args.batches, data_dir=args.data_dir, rounds=args.rounds
    )
    print(format_ingest(result))
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    """`airwatt bench ingest`, on the bench group's subparsers."""
    bi = bench.add_parser("ingest", help="durable ingest over HTTP vs raw executemany in one transaction")
    bi.add_argument("--uploaders", type=int, default=50)
    bi.add_argument("--batch", type=int, default=50, help="readings per batch")
    bi.add_argument("--batches", type=int, default=40, help="batches per uploader")
    bi.add_argument("--rounds", type=int, default=3, help="runs; each figure is its best run (default 3)")
    bi.add_argument("--data-dir", default=None, help="where to put the bench databases (default: a temp dir)")
    bi.set_defaults(func=_bench_ingest)
