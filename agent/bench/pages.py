"""`airwatt bench pages`: the pages on a grown store beside a 1-day store, measured in the same run.

Grows two stores for the same boards (default 20 boards at 0.15 readings/s each, the boards' default rate):
one of 1 day and one of `--days` days (default 90: 23.3 M readings), every reading synced but the last hour's,
with realistic values (daily rhythms of power, CO2 and PM, a meter counter that keeps counting). Rows go in
with executemany in big transactions; then the roller builds the rollups, as a running agent would have.
For each store a real `airwatt serve` process answers each page `--requests` times over HTTP on 127.0.0.1,
the stores' requests interleaved (median reported); then its peak RSS. On the big store a 30-day CSV export
runs as `airwatt export` (time, CPU time and peak RSS), each run beside the baseline of each device's own
sorted query (the export before its one pass), whose bytes must be the same. Also: the database's bytes per reading, tables and
indexes included. Figures only; nothing here is asserted by tests (a test runs it at a tiny size to prove it
works).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from airwatt.agent import commands, retention, rollup, store, writer
from airwatt.agent.bench import serve
from airwatt.agent.tz import THAILAND

RATE = 0.15  # readings/s per board: the firmware's defaults (three sensors, one reading each every 20 s)
SITES = ("Khon Kaen City Hall", "Khon Kaen Municipal School 1", "Khon Kaen Hospital", "Central Market",
         "Bus Terminal 3")
INSERT = "INSERT INTO readings(%s, synced_at) VALUES (%s)" % (
    ",".join('"%s"' % c for c in writer.COLUMNS), ",".join("?" * (len(writer.COLUMNS) + 1)))
ROWS_PER_TX = 400_000
GOALS = {"median_s": 0.5, "growth": 3.0, "rss_mb": 300.0, "export_s": 20.0}


def _status(k: int) -> str:
    return json.dumps({"uptime_s": 86400 + k, "free_heap": 81000 + k, "rssi": -60 - k % 20, "buffer_depth": k % 5,
                       "dropped": 0, "errors": {}, "time_sync": "ntp"}, sort_keys=True, separators=(",", ":"))


def grow(data_dir: Path, boards: int, days: float, now: float, seed: int = 1) -> int:
    """A store of `boards` boards with `days` of readings ending at `now`; returns how many readings."""
    db = store.open_db(data_dir)
    devices = ["board-%03d" % i for i in range(boards)]
    for i, d in enumerate(devices):
        store.add_device(db, d, name="Floor %d" % (i % 7 + 1), site=SITES[i % len(SITES)],
                         lat=16.43 + i * 0.003, lon=102.83 + i * 0.002, interval_s=20)
    conn = db.conn
    conn.execute("PRAGMA synchronous = OFF")  # a bench store: rebuilt if the machine crashes meanwhile
    conn.execute("PRAGMA cache_size = -262144")
    rng = random.Random(seed)
    step = 1.0 / RATE
    start = now - days * 86400
    per_board = int(days * 86400 * RATE)
    counters = [rng.randint(10_000, 5_000_000) for _ in devices]
    boots = ["%08x" % rng.getrandbits(32) for _ in devices]
    boot_ids = [store.boot_id(db, d, boots[b]) for b, d in enumerate(devices)]
    unsynced_from = now - 3600
    total = 0
    rows: list[tuple] = []
    none6, none3 = (None,) * 6, (None,) * 3
    for k in range(per_board):
        t = start + k * step
        hour = ((t + 7 * 3600) % 86400) / 3600  # Thai local hour
        day_shape = max(0.0, math.sin((hour - 6) / 12 * math.pi))  # 0 at night, 1 at noon
        kind = k % 3
        synced = t + 35 if t < unsynced_from else None
        for b, device in enumerate(devices):
            tb = float(int(t + b * 0.37))  # board time is whole seconds; received too, as the agent stores it
            head = (device, k + 1, boot_ids[b], ("energy", "pm", "co2")[kind], tb, "board", k * 6667, tb + 3.0,
                    "retried" if rng.random() < 0.002 else "")
            if kind == 0:
                power = round(180 + 2400 * day_shape * (0.8 + 0.4 * rng.random()) + 30 * b, 1)
                counters[b] += int(power * 3 * step / 3600 + rng.random())
                volt = round(226 + 8 * rng.random(), 1)
                pf = round(0.86 + 0.12 * rng.random(), 2)
                values = (volt, round(power / volt / pf, 3), power, counters[b] % 4294967296,
                          round(49.9 + 0.2 * rng.random(), 1), pf) + none6
            elif kind == 1:
                pm25 = int(8 + 30 * (1 - day_shape) + 25 * rng.random() + b % 5 * 4)
                values = none6 + (max(pm25 - 4, 0), pm25, pm25 + int(12 * rng.random()) + 5) + none3
            else:
                values = none6 + none3 + (int(420 + 900 * day_shape * rng.random() + 20 * b),
                                          round(27 + 5 * day_shape + rng.random(), 2),
                                          round(70 - 15 * day_shape + 5 * rng.random(), 2))
            rows.append(head + values + (0, synced))  # instance 0: one sensor of each kind
        if len(rows) >= ROWS_PER_TX:
            total += _insert(conn, rows)
            rows = []
    total += _insert(conn, rows)
    with store.transaction(db):
        for i, d in enumerate(devices):
            db.execute("UPDATE devices SET firmware = '0.1.0', first_seen = ?, last_seen = ?, last_status = ?"
                       " WHERE id = ?", [start, now - 5, _status(i), d])
            db.execute('INSERT INTO boots(device, boot, "offset", learnt) VALUES (?, ?, ?, ?)',
                       [d, boots[i], start, start])
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_sync_ok', ?)", [repr(unsynced_from)])
    rollup.catch_up(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return total


def _insert(conn, rows: list[tuple]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(INSERT, rows)
    conn.execute("COMMIT")
    return len(rows)


def bytes_per_reading(data_dir: Path) -> tuple[float, dict[str, int]]:
    conn = store.connect(store.db_path(data_dir))
    try:
        sizes = retention.db_bytes(conn)
        n = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    finally:
        conn.close()
    raw = sum(v for k, v in sizes.items() if k == "readings" or k.startswith("readings_"))
    return raw / max(n, 1), sizes


def pages(days: int, now: float) -> list[tuple[str, str]]:
    today = datetime.fromtimestamp(now, bench_tz()).day
    return [("city /", "/"), ("fleet /fleet", "/fleet"), ("device, 24 h", "/device/board-000?range=24h"),
            ("device, 30 d", "/device/board-000?range=30d"), ("/air", "/air"),
            ("/carbon, this month", "/carbon?days=%d" % today),
            ("/carbon, whole period", "/carbon?days=%d" % min(max(days, 1), 400)), ("/sync", "/sync"),
            ("/metrics", "/metrics")]


def bench_tz():
    return THAILAND


def _get(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError("%s answered %d" % (url, resp.status))
    return time.perf_counter() - began


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    got = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                got[line.split(":")[0]] = int(line.split()[1]) / 1024
    return got.get("VmRSS", 0.0), got.get("VmHWM", 0.0)


def time_pages(stores: list[tuple[Path, int]], now: float, requests: int) -> list[dict]:
    """Median seconds per page over real HTTP, one real agent per (data dir, days) store, all running at once:
    each request to one store is followed by the same page of the others, so a busy machine weighs on every
    store alike (timed one store after the other, the load of other work at the time moved the ratios by 3x).
    Then each agent's RSS."""
    agents = []
    try:
        for data_dir, _days in stores:
            agents.append(serve.start_agent(data_dir))
        times: list[dict[str, list[float]]] = [{} for _ in stores]
        for k, (_dir, days) in enumerate(stores):
            for _name, path in pages(days, now):
                _get(agents[k][1] + path)  # warm-up: the first request after start opens the reader connection
        for _ in range(requests):
            for k, (_dir, days) in enumerate(stores):
                for name, path in pages(days, now):
                    times[k].setdefault(name, []).append(_get(agents[k][1] + path))
        out = []
        for k, (proc, _url) in enumerate(agents):
            rss, peak = _rss_mb(proc.pid)
            out.append({"pages": {name: statistics.median(ts) for name, ts in times[k].items()}, "rss_mb": rss,
                        "peak_rss_mb": peak})
        return out
    finally:
        for proc, _url in agents:
            serve.stop_agent(proc)


def time_export(data_dir: Path, days: float, now: float, out_file: Path, sorted_queries: bool = False) -> dict:
    """`airwatt export --format csv` of the last `days` days: seconds, rows, peak RSS of the export process.
    sorted_queries: the same CSV by each device's own query sorted by seq (_sorted_export), as the export did
    before its one pass over the table: the baseline."""
    # Peak RSS (KB) and CPU seconds of the export and its worker processes (the CPU figure holds on a busy
    # machine). Its own peak from /proc (VmHWM): getrusage's ru_maxrss outlives exec, so it would report this
    # bench's size at the fork (hundreds of MB after growing a store), not the export's.
    run = ("from airwatt.agent.bench.pages import _sorted_export as main" if sorted_queries
           else "from airwatt.agent.cli import main")
    code = ("import resource, sys; %s; rc = main(sys.argv[1:]); "
            "u = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]; "
            "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
            "print(max(hwm, u[1].ru_maxrss), sum(x.ru_utime + x.ru_stime for x in u), file=sys.stderr); "
            "sys.exit(rc)" % run)
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "export", "--data-dir", str(data_dir), "--format", "csv",
                           "--since", repr(now - days * 86400), "--until", repr(now + 1), "--out", str(out_file)],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError("export failed: %s" % done.stderr[-2000:])
    with open(out_file, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    rss_kb, cpu_s = done.stderr.split()[-2:]
    return {"seconds": elapsed, "rows": lines - 1, "peak_rss_mb": int(rss_kb) / 1024, "cpu_s": float(cpu_s),
            "bytes": out_file.stat().st_size}


def _sorted_export(argv: list[str]) -> int:
    """The baseline of time_export: the CSV by each device's own query sorted by seq (a search of (device, t)
    then of the table per row), in one process; argv as `airwatt export` takes it."""
    args = dict(zip(argv[1::2], argv[2::2]))
    db = store.open_db(args["--data-dir"])
    with open(args["--out"], "w", encoding="utf-8", newline="") as out:
        out.write(",".join(c[0] for c in commands.EXPORT_COLUMNS) + "\n")
        for d in store.list_devices(db):
            commands._device_csv(db, d, float(args["--since"]), float(args["--until"]), out)
    db.close()
    return 0


def time_exports(data_dir: Path, days: float, now: float, out_file: Path, runs: int, log=print) -> dict:
    """time_export `runs` times, each beside the baseline (the two alternating, so the load of the moment weighs
    on both alike); the median run of each, and whether their bytes are the same."""
    ours, base = [], []
    for _ in range(runs):
        for label, sorted_queries, got in (("export", False, ours), ("baseline", True, base)):
            load = os.getloadavg()[0]
            got.append(time_export(data_dir, days, now, out_file, sorted_queries) | {"load": load})
            got[-1]["sha256"] = _sha256(out_file)
            log("%s: %.1f s (%.1f s of CPU), load %.1f before" % (label, got[-1]["seconds"], got[-1]["cpu_s"], load))
    pick = lambda rs: sorted(rs, key=lambda r: r["seconds"])[(len(rs) - 1) // 2]
    return pick(ours) | {"runs": [r["seconds"] for r in ours], "baseline": pick(base),
                         "baseline_runs": [r["seconds"] for r in base],
                         "same_bytes": len({r["sha256"] for r in ours + base}) == 1}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(boards: int = 20, days: int = 90, requests: int = 5, export_days: float = 30, data_dir: str | None = None,
        log=print, reuse: bool = False, export_runs: int = 1, export_only: bool = False) -> dict:
    """reuse: time the stores a previous run left in data_dir (grown then; the time since shows as no data).
    export_runs: exports (each beside the baseline), the median shown. export_only: no pages."""
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="airwatt-bench-pages-") as tmp:
        base = Path(data_dir) if data_dir else Path(tmp)
        small, big = base / "store-1d", base / ("store-%dd" % days)
        for d in (small, big):
            if store.db_path(d).exists() != reuse:
                raise SystemExit("bench: %s %s a database; give %s --data-dir" % (
                    d, "already holds" if not reuse else "holds no", "an empty" if not reuse else "the same"))
        result: dict = {"boards": boards, "days": days, "requests": requests, "export_days": export_days}
        for label, d, n_days in (("1d", small, 1), ("big", big, days)):
            began = time.perf_counter()
            if reuse:
                conn = store.connect(store.db_path(d))
                n = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
                conn.close()
            else:
                n = grow(d, boards, n_days, now)
            result[label + "_readings"] = n
            result[label + "_grow_s"] = time.perf_counter() - began
            log("%s %s: %d readings in %.0f s" % ("counted" if reuse else "grew", d.name, n,
                                                  result[label + "_grow_s"]))
        result["bytes_per_reading"], result["sizes"] = bytes_per_reading(big)
        result["file_bytes"] = store.db_path(big).stat().st_size
        if not export_only:
            result["1d"], result["big"] = time_pages([(small, 1), (big, days)], now, requests)
            log("timed the pages on %s and %s" % (small.name, big.name))
        result["export"] = time_exports(big, min(export_days, days), now, base / "export.csv", export_runs, log)
        (base / "export.csv").unlink()
    return result


def format_result(r: dict) -> str:
    ex, bl = r["export"], r["export"]["baseline"]
    export = [
        "CSV export of the last %d days (median of %d, load %.1f before it): %d rows, %.1f MB in %.1f s (%.0f rows/s;"
        " %.1f s of CPU in all its processes), export process peak RSS %.0f MB"
        % (min(r["export_days"], r["days"]), len(ex["runs"]), ex["load"], ex["rows"], ex["bytes"] / 1e6,
           ex["seconds"], ex["rows"] / ex["seconds"], ex["cpu_s"], ex["peak_rss_mb"]),
        "  baseline, each device's own sorted query in one process (the export before its one pass), in the same"
        " run: %.1f s (%.1f s of CPU, load %.1f before it), peak RSS %.0f MB; the same bytes: %s"
        % (bl["seconds"], bl["cpu_s"], bl["load"], bl["peak_rss_mb"], "yes" if ex["same_bytes"] else "NO"),
        "  all runs: export %s; baseline %s" % (", ".join("%.1f s" % t for t in ex["runs"]),
                                                ", ".join("%.1f s" % t for t in ex["baseline_runs"])),
    ]
    if "1d" not in r:
        return "\n".join(["export bench: %d boards at %.2f readings/s each, %d readings (%d days; cpu count %s)"
                          % (r["boards"], RATE, r["big_readings"], r["days"], os.cpu_count()), *export,
                          "goal: 30-day export < %.0f s: %s" % (GOALS["export_s"],
                                                                 _yes(ex["seconds"] < GOALS["export_s"]))])
    small, big = r["1d"], r["big"]
    lines = ["pages bench: %d boards at %.2f readings/s each; medians of %d requests over HTTP (cpu count %s)"
             % (r["boards"], RATE, r["requests"], os.cpu_count()),
             "| page | 1 day | %d days | growth |" % r["days"], "|---|---|---|---|"]
    worst_time, worst_growth = 0.0, 0.0
    for name in small["pages"]:
        a, b = small["pages"][name], big["pages"][name]
        growth = b / a if a else float("inf")
        worst_time, worst_growth = max(worst_time, b), max(worst_growth, growth)
        lines.append("| %s | %.3f s | %.3f s | %.1fx |" % (name, a, b, growth))
    lines += [
        "stores: %d readings (1 day), %d readings (%d days); built in %.0f s and %.0f s"
        % (r["1d_readings"], r["big_readings"], r["days"], r["1d_grow_s"], r["big_grow_s"]),
        "database: %.1f bytes per reading (readings table and its indexes), file %.1f MB; by part: %s"
        % (r["bytes_per_reading"], r["file_bytes"] / 1e6,
           ", ".join("%s %.1f MB" % (k, v / 1e6) for k, v in sorted(r["sizes"].items(), key=lambda kv: -kv[1])
                     if v >= 1e5)),
        "agent RSS after the pages: %.0f MB (peak %.0f MB) on the %d-day store, %.0f MB (peak %.0f MB) on 1 day"
        % (big["rss_mb"], big["peak_rss_mb"], r["days"], small["rss_mb"], small["peak_rss_mb"]),
        *export,
        "goals: every page < %.1f s: %s (worst %.3f s); growth <= %.0fx: %s (worst %.1fx); RSS < %.0f MB: %s; "
        "30-day export < %.0f s: %s"
        % (GOALS["median_s"], _yes(worst_time < GOALS["median_s"]), worst_time, GOALS["growth"],
           _yes(worst_growth <= GOALS["growth"]), worst_growth, GOALS["rss_mb"],
           _yes(big["peak_rss_mb"] < GOALS["rss_mb"]), GOALS["export_s"], _yes(ex["seconds"] < GOALS["export_s"])),
    ]
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _bench_pages(args: argparse.Namespace) -> int:
    if args.quick:
        args.boards, args.days, args.requests = 2, 3, 1
    if args.reuse and not args.data_dir:
        raise SystemExit("bench: --reuse needs the --data-dir of an earlier run")
    if args.export_runs < 1:
        raise SystemExit("bench: --export-runs must be at least 1")
    result = run(args.boards, args.days, args.requests, args.export_days, args.data_dir,
                 log=lambda m: print(m, file=sys.stderr, flush=True), reuse=args.reuse,
                 export_runs=args.export_runs, export_only=args.export_only)
    print(format_result(result))
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    """`airwatt bench pages`, on the bench group's subparsers."""
    bp = bench.add_parser(
        "pages", help="page times on a grown store beside a 1-day store, agent RSS, a 30-day CSV export")
    bp.add_argument("--boards", type=int, default=20)
    bp.add_argument("--days", type=int, default=90, help="days of readings in the grown store (default 90)")
    bp.add_argument("--requests", type=int, default=5, help="requests per page; the median is shown")
    bp.add_argument("--export-days", type=float, default=30, help="days of readings the CSV export covers")
    bp.add_argument("--quick", action="store_true", help="2 boards, 3 days, 1 request: to see that it works")
    bp.add_argument("--data-dir", default=None, help="where to build the stores (default: a temp dir)")
    bp.add_argument("--reuse", action="store_true", help="time the stores an earlier run left in --data-dir")
    bp.add_argument("--export-runs", type=int, default=1,
                    help="CSV exports, each beside the baseline (each device's own sorted query); the median is shown")
    bp.add_argument("--export-only", action="store_true", help="time the CSV export alone, not the pages")
    bp.set_defaults(func=_bench_pages)
