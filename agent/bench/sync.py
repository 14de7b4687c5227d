"""`airwatt bench sync`: how fast the sync worker drains a store to the emulated platform over loopback.

A temp store gets N readings (energy, pm, co2 in turn, several devices); the emulated platform runs as its own
process on 127.0.0.1 (its own core, its own SQLite file); the real worker (agent/sync.py, the same code
`airwatt serve` runs) drains the store: batches out, confirmations back, `synced_at` committed durably
(WAL, synchronous=FULL) per batch. Beside it, in the same run: raw `executemany` of the same rows into a fresh
store in ONE transaction (the ceiling). Figures only; speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from airwatt.agent import reading, store, sync
from airwatt.agent.adapters import KINDS, make_adapter
from airwatt.emulator.real_servers import Mosquitto, SensorThingsServer
from airwatt.protocol import fields

DEVICES = 20


def bench_rows(n: int, t0: float, devices: int = DEVICES) -> list[dict]:
    """n readings over `devices` devices, as the store holds them."""
    rows = []
    per_device = -(-n // devices)
    for i in range(n):
        device, seq = "bench-%02d" % (i // per_device), i % per_device + 1
        sensor = ("energy", "pm", "co2")[seq % 3]
        row = {m: None for m in reading.METRIC_COLUMNS}
        row.update(device=device, seq=seq, boot="0b0e0c0d", sensor=sensor, t=t0 + seq * 60, t_source="board",
                   ticks=seq * 60000, received=t0 + n * 60, flags="" if seq % 50 else "stuck")
        if sensor == "energy":
            row.update(voltage=229.5 + seq % 10 / 10, current=1.254, power=287.5, energy_wh=100000 + seq,
                       frequency=50.0, pf=0.97)
        elif sensor == "pm":
            row.update(pm1=5 + seq % 7, pm25=12 + seq % 11, pm10=20 + seq % 13)
        else:
            row.update(co2=600 + seq % 50, temperature=26.55, humidity=55.12)
        rows.append(row)
    return rows


def insert_rows(db_dir: Path, rows: list[dict], new: bool = True) -> float:
    """Raw executemany of the rows into a fresh store (or, new=False, an existing one) in ONE transaction;
    returns seconds."""
    db = store.open_db(db_dir)
    for d in sorted({r["device"] for r in rows}) if new else ():
        store.add_device(db, d, site="Bench", lat=16.44, lon=102.83)
    ids = {key: store.boot_id(db, *key) for key in {(r["device"], r["boot"]) for r in rows}}
    rows = [{("boot_id" if k == "boot" else k): (ids[(r["device"], v)] if k == "boot" else v) for k, v in r.items()}
            for r in rows]
    cols = list(rows[0])
    values = [tuple(r[c] for c in cols) for r in rows]
    sql = "INSERT INTO readings(%s) VALUES (%s)" % (",".join(cols), ",".join("?" * len(cols)))
    start = time.perf_counter()
    db.conn.execute("BEGIN IMMEDIATE")
    db.conn.executemany(sql, values)
    db.conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.conn.close()
    return elapsed


def start_platform_process(data_dir: Path, faults: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m airwatt.emulator.platform` on 127.0.0.1, any free port; returns the process and its URL."""
    port_file = data_dir / "url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airwatt.emulator.platform", "--port", "0", "--data-dir", str(data_dir),
         "--port-file", str(port_file), *(["--faults", json.dumps(faults)] if faults else [])],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the emulated platform did not start")
        time.sleep(0.02)
    return proc, port_file.read_text()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 where there is none)."""
    try:
        fields_ = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


async def _drain(data_dir: Path, kind: str, url: str, batch: int) -> float:
    db = store.open_db(data_dir)
    store.tune_gc()  # as `airwatt serve` and `airwatt sync run` do: each batch makes thousands of short-lived objects
    adapter = make_adapter(kind, url)
    try:
        async with aiohttp.ClientSession() as session:
            start = time.perf_counter()
            await sync.run_worker(db, adapter, session, batch_size=batch, timeout_s=60,
                                  backoff_base_s=0.05, stop_when_drained=True)
            return time.perf_counter() - start
    finally:
        if adapter.close is not None:
            await adapter.close()
        db.conn.close()


def run_sync(n: int = 20000, kind: str = "ngsi-ld", batch: int = 1000, sink: bool = False) -> dict:
    """Fill a store with n readings, drain it to the emulated platform, check, and time both ways. With sink,
    the platform confirms without parsing or storing: the agent's side alone."""
    rows = bench_rows(n, time.time() - n * 60)
    with tempfile.TemporaryDirectory(prefix="airwatt-bench-sync-") as tmp:
        tmp_path = Path(tmp)
        # The ceiling: best of three fresh raw inserts (the machine may be busy with other work meanwhile).
        raw_s = min(insert_rows(tmp_path / ("raw%d" % i), rows) for i in range(3))
        insert_rows(tmp_path / "agent", rows)
        proc, url = start_platform_process(tmp_path / "platform", {"sink": True} if sink else None)
        try:
            cpu0, platform_cpu0 = time.process_time(), _cpu_seconds(proc.pid)
            drain_s = asyncio.run(_drain(tmp_path / "agent", kind, url, batch))
            agent_cpu, platform_cpu = time.process_time() - cpu0, _cpu_seconds(proc.pid) - platform_cpu0
        finally:
            proc.terminate()
            proc.wait(10)
        conn = sqlite3.connect(tmp_path / "platform" / "platform.db")
        stored, writes = conn.execute(
            "SELECT count(*), coalesce(sum(writes), 0) FROM records WHERE api = ?", (kind,)).fetchone()
        conn.close()
        conn = sqlite3.connect(store.db_path(tmp_path / "agent"))
        left = conn.execute("SELECT count(*) FROM readings WHERE synced_at IS NULL").fetchone()[0]
        conn.close()
        if (stored != n and not sink) or left:
            raise RuntimeError("platform holds %d of %d readings, %d left unsynced" % (stored, n, left))
    return {"kind": kind, "sink": sink, "readings": n, "batch": batch, "drain_seconds": drain_s, "drain_per_s": n / drain_s,
            "raw_one_tx_per_s": n / raw_s, "ratio": raw_s / drain_s, "platform_writes": writes,
            "agent_cpu_us": agent_cpu / n * 1e6, "platform_cpu_us": platform_cpu / n * 1e6,
            "load": os.getloadavg()[0]}


def _subscriber(port: int, topic: str, n: int, out: Path) -> subprocess.Popen:
    """A subscriber in its own process (not on the agent's core): counts distinct readings until it has n."""
    code = (
        "import asyncio, json, sys, aiomqtt\n"
        "async def main():\n"
        "    seen, copies = set(), 0\n"
        "    async with aiomqtt.Client('127.0.0.1', %d, identifier='bench-checker', clean_session=False) as c:\n"
        "        await c.subscribe(%r, qos=1)\n"
        "        open(%r + '.ready', 'w').close()\n"
        "        async for m in c.messages:\n"
        "            if m.topic.value.endswith('/status'): continue\n"
        "            b = json.loads(m.payload); seen.add((b['device'], b['seq'])); copies += 1\n"
        "            if len(seen) >= %d: break\n"
        "    open(%r, 'w').write(json.dumps([len(seen), copies]))\n"
        "asyncio.run(main())\n" % (port, topic, str(out), n, str(out))
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not Path(str(out) + ".ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the bench's MQTT subscriber did not start")
        time.sleep(0.02)
    return proc


def run_real(n: int = 20000, kind: str = "sensorthings", batch: int = 1000, devices: int = DEVICES) -> dict:
    """Like run_sync, to a real server started for the run on 127.0.0.1: django-ogc-sensorthings (a dev
    dependency) or Debian's mosquitto. SensorThings: the Things and Datastreams are provisioned first (one
    reading per board and sensor, timed apart), then the rest is drained; the server's count of Observations
    is checked. MQTT: a subscriber process checks it got every reading."""
    rows = bench_rows(n, time.time() - n * 60, devices)
    first = {}
    for row in rows:
        first.setdefault((row["device"], row["sensor"]), row)
    warmup = list(first.values()) if kind == "sensorthings" else []
    timed = [r for r in rows if r not in warmup] if warmup else rows
    with tempfile.TemporaryDirectory(prefix="airwatt-bench-sync-") as tmp:
        tmp_path = Path(tmp)
        raw_s = min(insert_rows(tmp_path / ("raw%d" % i), timed) for i in range(3))
        server = SensorThingsServer(tmp_path / "server") if kind == "sensorthings" else Mosquitto(tmp_path / "server")
        server.start()
        subscriber = None
        try:
            url = server.url if kind == "sensorthings" else server.url + "/bench?client_id=bench-agent"
            provision_s = 0.0
            if warmup:
                insert_rows(tmp_path / "agent", warmup)
                provision_s = asyncio.run(_drain(tmp_path / "agent", kind, url, batch))
                insert_rows(tmp_path / "agent", timed, new=False)
            else:
                insert_rows(tmp_path / "agent", timed)
                subscriber = _subscriber(server.port, "bench/+/+", n, tmp_path / "subscriber.json")
            cpu0, server_cpu0 = time.process_time(), _cpu_seconds(server.proc.pid)
            drain_s = asyncio.run(_drain(tmp_path / "agent", kind, url, batch))
            agent_cpu, server_cpu = time.process_time() - cpu0, _cpu_seconds(server.proc.pid) - server_cpu0
            if kind == "sensorthings":
                per_sensor = {s: len(fields.metrics(s)) for s in fields.SENSORS}
                want = sum(per_sensor[r["sensor"]] for r in rows)
                got = server.count("Observations", "parameters/seq ge 1")
                check = "server holds %d Observations of %d readings (%d expected)" % (got, n, want)
            else:
                subscriber.wait(60)
                got_readings, copies = json.loads((tmp_path / "subscriber.json").read_text())
                want, got = n, got_readings
                check = "subscriber got %d of %d readings (%d messages)" % (got_readings, n, copies)
        finally:
            if subscriber is not None and subscriber.poll() is None:
                subscriber.kill()
            server.stop()
        conn = sqlite3.connect(store.db_path(tmp_path / "agent"))
        left = conn.execute("SELECT count(*) FROM readings WHERE synced_at IS NULL").fetchone()[0]
        conn.close()
        if got != want or left:
            raise RuntimeError("%s; %d left unsynced" % (check, left))
    m = len(timed)
    return {"kind": kind, "sink": False, "real": True, "readings": m, "batch": batch, "drain_seconds": drain_s,
            "drain_per_s": m / drain_s, "raw_one_tx_per_s": m / raw_s, "ratio": raw_s / drain_s,
            "platform_writes": want, "agent_cpu_us": agent_cpu / m * 1e6, "platform_cpu_us": server_cpu / m * 1e6,
            "load": os.getloadavg()[0], "check": check, "provision_seconds": provision_s, "warmup": len(warmup)}


def format_sync(r: dict) -> str:
    if r.get("real"):
        server = "django-ogc-sensorthings (runserver)" if r["kind"] == "sensorthings" else "mosquitto"
        return "\n".join([
            "sync bench (%s): %d readings in batches of %d to a real %s over loopback (cpu count %s)"
            % (r["kind"], r["readings"], r["batch"], server, os.cpu_count()),
            *(["  provisioning first (%d readings: every Thing and Datastream): %.2f s"
               % (r["warmup"], r["provision_seconds"])] if r["warmup"] else []),
            "  sync drain (confirmed + marked synced):   %10.0f readings/s  (%.2f s; %s)"
            % (r["drain_per_s"], r["drain_seconds"], r["check"]),
            "  raw executemany, ONE transaction (best of 3): %7.0f readings/s" % r["raw_one_tx_per_s"],
            "  ratio drain / raw one transaction:        %10.2f" % r["ratio"],
            "  CPU per reading: agent %.1f us (all threads), %s %.1f us; load average %.1f"
            % (r["agent_cpu_us"], server, r["platform_cpu_us"], r["load"]),
        ])
    return "\n".join([
        "sync bench (%s%s): %d readings in batches of %d to the emulated platform over loopback (cpu count %s)"
        % (r["kind"], ", platform confirms without parsing: the agent alone" if r["sink"] else "", r["readings"],
           r["batch"], os.cpu_count()),
        "  sync drain (confirmed + marked synced):   %10.0f readings/s  (%.2f s, %d platform writes)"
        % (r["drain_per_s"], r["drain_seconds"], r["platform_writes"]),
        "  raw executemany, ONE transaction (best of 3): %7.0f readings/s" % r["raw_one_tx_per_s"],
        "  ratio drain / raw one transaction:        %10.2f  (target >= 0.2; target >= 50,000 readings/s)" % r["ratio"],
        "  CPU per reading: agent %.1f us (all threads), emulated platform %.1f us; load average %.1f"
        % (r["agent_cpu_us"], r["platform_cpu_us"], r["load"]),
    ])


def _bench_sync(args: argparse.Namespace) -> int:
    kinds = ["ngsi-ld", "http-json"] if args.kind == "both" else [args.kind]
    for kind in kinds:
        if kind in ("sensorthings", "mqtt"):
            print(format_sync(run_real(args.readings, kind, args.batch)), flush=True)
            continue
        print(format_sync(run_sync(args.readings, kind, args.batch)), flush=True)
        if args.agent_alone:
            print(format_sync(run_sync(args.readings, kind, args.batch, sink=True)), flush=True)
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    """`airwatt bench sync`, on the bench group's subparsers."""
    bs = bench.add_parser("sync", help="sync drain to the emulated platform vs raw executemany")
    bs.add_argument("--readings", type=int, default=20000, help="readings to drain (default 20000)")
    bs.add_argument("--kind", choices=KINDS + ("both",), default="both",
                    help="both: ngsi-ld and http-json to the emulated platform; sensorthings, mqtt: to a real"
                         " django-ogc-sensorthings server (dev dependency) or mosquitto started for the run")
    bs.add_argument("--batch", type=int, default=1000, help="readings per request (default 1000)")
    bs.add_argument("--agent-alone", action="store_true",
                    help="also drain to a platform that confirms without parsing (the agent's own ceiling)")
    bs.set_defaults(func=_bench_sync)
