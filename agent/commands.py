"""The agent's `airwatt` verbs on the store: device add/set/settings/list, readings, export, stats, backup, restore.

Every verb takes `--data-dir` (default $AIRWATT_DATA_DIR, else ./airwatt-data). Times on the command line are
ISO 8601 (a time without an offset is taken as UTC) or Unix seconds; times printed are ISO 8601 UTC.

`serve` is in server.py, the `sync` verbs in sync.py, `bench` in agent/bench/: each part adds its own verbs
(agent/cli.py). The helpers for times and data dirs here are shared with them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from airwatt.protocol import fields

from . import device_settings, store
from .backup import BackupError, backup, restore
from .retention import db_bytes

# Open-data export columns (City Data Inventory): no keys, boot ids or board ticks.
EXPORT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("device", "", "device id"),
    ("site", "", "site (building) name"),
    ("lat", "deg", "device latitude, WGS84"),
    ("lon", "deg", "device longitude, WGS84"),
    ("seq", "", "the device's reading number (unique per device)"),
    ("sensor", "", "sensor kind: " + ", ".join(fields.SENSORS)),
    ("time", "", "reading time, ISO 8601 UTC; empty when unknowable"),
    ("t", "s", "reading time, Unix seconds"),
    ("t_source", "", "board: the board's clock; ticks: from the board's uptime at upload; unknown"),
    ("flags", "", "quality flags, comma-separated: " + ", ".join(fields.FLAGS)),
) + tuple((row[1], row[2], "%s reading, resolution %s" % (row[0], 10 ** -row[7])) for row in fields.METRICS)


LICENCE = "https://creativecommons.org/licenses/by/4.0/"  # CC BY 4.0: what Thai open-data portals publish under
_TYPES = {"lat": "double", "lon": "double", "seq": "integer", "t": "double", "time": "dateTime"}
_TYPES.update({row[1]: "integer" if row[4] == "int" else "double" for row in fields.METRICS})


def csvw_metadata(csv_url: str, licence: str = LICENCE, title: str = "AirWatt readings") -> dict:
    """CSV on the Web (W3C CSVW) metadata of an open-data CSV export: its columns with datatypes, units and
    descriptions, its key, and its licence, so a data portal can publish the CSV as it stands. By the CSVW
    convention it sits beside the CSV as `<csv name>-metadata.json`."""
    columns = []
    for name, unit, description in EXPORT_COLUMNS:
        col: dict[str, Any] = {"name": name, "titles": name, "dc:description": description,
                               "datatype": _TYPES.get(name, "string"), "null": ""}
        if unit:
            col["schema:unitText"] = unit
        columns.append(col)
    return {"@context": ["http://www.w3.org/ns/csvw", {"@language": "en"}], "url": csv_url, "dc:title": title,
            "dc:license": {"@id": licence}, "dc:publisher": "AirWatt site agent",
            "dialect": {"header": True, "encoding": "utf-8"},
            "tableSchema": {"columns": columns, "primaryKey": ["device", "seq"], "aboutUrl": "#{device}-{seq}"}}


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """The --data-dir option every verb on the store takes."""
    parser.add_argument(
        "--data-dir",
        default=store.data_dir_default(),
        help="the agent's data folder (default: $AIRWATT_DATA_DIR or ./airwatt-data)",
    )


def parse_time(text: str) -> float:
    """ISO 8601 (no offset = UTC) or Unix seconds, as Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an ISO 8601 time or Unix seconds: %r" % text) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def iso(t: float | None) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds; "" for None."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_existing(data_dir: str) -> Any:
    """The store in data_dir, or exit saying how to make one."""
    if not store.db_path(data_dir).exists():
        raise SystemExit("airwatt: no database in %s (run `airwatt device add` or `airwatt serve` first)" % data_dir)
    return store.open_db(data_dir)


# -- device ---------------------------------------------------------------------------------------------


def _device_add(args: argparse.Namespace) -> int:
    db = store.open_db(args.data_dir)
    try:
        key = store.add_device(
            db,
            args.id,
            name=args.name,
            site=args.site,
            lat=args.lat,
            lon=args.lon,
            sensors=[s.strip() for s in args.sensors.split(",") if s.strip()],
            interval_s=args.interval,
        )
    except ValueError as err:
        print("airwatt: %s" % err, file=sys.stderr)
        return 1
    print("device %s added" % args.id)
    print("key: %s" % key)
    print(
        "This key is shown once: put it in the board's config.json now. It signs every upload; "
        "the agent keeps it in %s (mode 0600), apart from the readings." % store.keys_path(args.data_dir),
        file=sys.stderr,
    )
    return 0


def _device_set(args: argparse.Namespace) -> int:
    db = open_existing(args.data_dir)
    sensors = [s.strip() for s in args.sensors.split(",") if s.strip()] if args.sensors is not None else None
    changes = dict(name=args.name, site=args.site, lat=args.lat, lon=args.lon, sensors=sensors,
                   interval_s=args.interval)
    try:
        remote = dict(intervals=device_settings.parse_intervals(args.intervals) if args.intervals else None,
                      upload_s=args.upload_s, batch_max=args.batch, humid_rh=args.humid_rh,
                      asc=None if args.asc is None else args.asc == "on", temp_offset=args.temp_offset,
                      altitude=args.altitude, pressure=args.pressure, frc=args.frc)
    except ValueError as err:
        print("airwatt: %s" % err, file=sys.stderr)
        return 1
    if all(v is None for v in changes.values()) and all(v is None for v in remote.values()):
        print("airwatt: nothing to change: give --name, --site, --lat and --lon, --sensors or --interval, or the "
              "board's settings --intervals, --upload-s, --batch, --humid-rh, --asc, --temp-offset, --altitude, "
              "--pressure or --frc", file=sys.stderr)
        return 1
    try:
        if any(v is not None for v in remote.values()):
            # Checked first, so that a bad setting changes nothing at all.
            if store.get_device(db, args.id) is None:
                raise ValueError("no device %s: register it with `airwatt device add %s` (or `airwatt flash`)"
                                 % (args.id, args.id))
            got = device_settings.change(db, args.id, remote, by="cli")
            print("device %s: settings rev %d pending: the board gets them with its next upload's answer (%s)"
                  % (args.id, got["rev"], json.dumps(got["settings"], sort_keys=True)))
        if all(v is None for v in changes.values()):
            return 0
        row = store.set_device(db, args.id, **changes)
    except ValueError as err:
        print("airwatt: %s" % err, file=sys.stderr)
        return 1
    where = "%s,%s" % (row["lat"], row["lon"]) if row["lat"] is not None else "no location"
    print("device %s: name %s, site %s, %s, interval %d s" % (row["id"], row["name"] or "-", row["site"] or "-",
                                                              where, row["interval_s"]))
    return 0


def _device_settings(args: argparse.Namespace) -> int:
    db = open_existing(args.data_dir)
    if store.get_device(db, args.id) is None:
        print("airwatt: no device %s" % args.id, file=sys.stderr)
        return 1
    got = device_settings.state(db, args.id)
    if args.format == "json":
        print(json.dumps(got, sort_keys=True))
        return 0
    if got is None:
        print("device %s: no settings from the agent (the board runs its config.json)" % args.id)
        return 0
    if got["state"] == "applied":
        said = "applied at %s" % _when(got["applied_at"])
    elif got["applied_rev"]:
        said = "pending (the board applied rev %d at %s)" % (got["applied_rev"], _when(got["applied_at"]))
    else:
        said = "pending"
    print("device %s: settings rev %d %s" % (args.id, got["rev"], said))
    print("  %s" % json.dumps(got["settings"], sort_keys=True))
    if got["error"]:
        print("  board says: %s" % got["error"])
    if got["frc_pending"] is not None:
        print("  forced recalibration to %d ppm: pending" % got["frc_pending"])
    if got["frc"] is not None:
        f = got["frc"]
        print("  forced recalibration to %d ppm at %s: %s" % (
            f["target"], _when(f["at"]), "correction %+d ppm" % f["correction"] if f["correction"] is not None
            else "failed"))
    for name, c in got["changed"].items():
        print("  %s set at %s by %s" % (name, _when(c["at"]), c["by"]))
    return 0


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _device_list(args: argparse.Namespace) -> int:
    db = open_existing(args.data_dir)
    rows = store.list_devices(db)
    for row in rows:
        row["sensors"] = json.loads(row["sensors"]) if row["sensors"] else []
        row["last_status"] = json.loads(row["last_status"]) if row["last_status"] else None
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    _table(
        [
            {
                "id": r["id"],
                "name": r["name"] or "",
                "site": r["site"] or "",
                "lat,lon": ",".join("" if x is None else "%.5f" % x for x in (r["lat"], r["lon"])).strip(","),
                "sensors": ",".join(r["sensors"]),
                "firmware": r["firmware"] or "",
                "last seen": iso(r["last_seen"]) or "never",
                "readings": r["readings"],
            }
            for r in rows
        ],
        ("id", "name", "site", "lat,lon", "sensors", "firmware", "last seen", "readings"),
    )
    return 0


# -- readings / export ----------------------------------------------------------------------------------


READING_COLUMNS = ("device", "seq", "boot", "sensor", "time", "t", "t_source", "ticks", "received", "flags") + tuple(
    store.METRIC_COLUMNS
) + ("synced_at",)


def _readings(args: argparse.Namespace) -> int:
    db = open_existing(args.data_dir)
    if store.get_device(db, args.device) is None:
        print("airwatt: no device %s" % args.device, file=sys.stderr)
        return 1
    rows = store.iter_readings(db, args.device, args.since, args.until)
    out = sys.stdout
    if args.format == "json":
        _json_rows(out, ({"time": iso(r["t"]), **{k: r[k] for k in READING_COLUMNS if k != "time"}} for r in rows))
    elif args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(READING_COLUMNS)
        for r in rows:
            writer.writerow(_csv(iso(r["t"]) if k == "time" else r[k]) for k in READING_COLUMNS)
    else:
        table = []
        for r in rows:
            values = " ".join("%s=%s" % (k, r[k]) for k in store.METRIC_COLUMNS if r[k] is not None)
            table.append(
                {
                    "seq": r["seq"],
                    "time": iso(r["t"]) or "unknown",
                    "from": r["t_source"],
                    "sensor": r["sensor"],
                    "values": values,
                    "flags": r["flags"],
                    "synced": "yes" if r["synced_at"] is not None else "no",
                }
            )
        _table(table, ("seq", "time", "from", "sensor", "values", "flags", "synced"))
    return 0


def export_rows(db: Any, since: float | None = None, until: float | None = None, device: str | None = None,
                sensor: str | None = None) -> Iterator[dict]:
    """Readings as open-data rows (EXPORT_COLUMNS), device by device, in sequence order (optionally of one
    device, of one sensor)."""
    devices = {d["id"]: d for d in store.list_devices(db)}
    for r in store.iter_readings(db, device, since, until):
        if sensor is not None and r["sensor"] != sensor:
            continue
        d = devices.get(r["device"], {})
        row = {"device": r["device"], "site": d.get("site"), "lat": d.get("lat"), "lon": d.get("lon")}
        row.update({"seq": r["seq"], "sensor": r["sensor"], "time": iso(r["t"]) or None, "t": r["t"]})
        row.update({"t_source": r["t_source"], "flags": r["flags"]})
        row.update({name: r[name] for name in store.METRIC_COLUMNS})
        yield row


# The time as iso() writes it, UTC to the millisecond (times are stored to the millisecond), then t as SQLite
# writes a REAL. Most boards' times are whole seconds: for them the date and the time of day are cut from two
# blobs bound to the query (_time_params: the days in range, 11 bytes each, and the 86,400 seconds of a day, 14
# bytes each; substr of a blob goes straight to its bytes, of text it would count characters from the start),
# and t is its integer text with ".0": the same bytes as strftime and the REAL's 15 digits, in 5,500 machine
# instructions a line where strftime took 7,700 (SQLite 3.40, counted by valgrind). Other times (fractions,
# before 1970, outside the days bound) take strftime's %f and the REAL's text.
_CSV_TIME_T = ("iif(t BETWEEN ? AND ? AND t = CAST(t AS INTEGER),"
               " substr(?, (CAST(t AS INTEGER) / 86400 - ?) * 11 + 1, 11)"
               " || substr(?, CAST(t AS INTEGER) % 86400 * 14 + 1, 14) || CAST(t AS INTEGER) || '.0',"
               " printf('%s,%s', strftime('%Y-%m-%dT%H:%M:%fZ', t, 'unixepoch'), t))")
_MAX_DAYS = 40_000  # days the date blob may span (110 years, 440 KB); a wider range takes strftime
# Flags hold commas ("stuck,retried"): quoted then, as the csv module does.
_CSV_FLAGS = "CASE WHEN instr(flags, ',') THEN '\"' || flags || '\"' ELSE flags END"
# One printf per line (one string built in SQLite, not twenty joined in Python), the newline last: %s writes
# NULL as '' and a number as SQLite does. The device's own columns (id, site, lat, lon) go before it: a
# parameter of one device's query, or put in by Python when one pass reads every device.
_CSV_VALUES = ["seq", "sensor", _CSV_TIME_T, "t_source", _CSV_FLAGS, *store.METRIC_COLUMNS]
_CSV_REST = "printf('%s\n', %s)" % (",".join(["%s"] * len(_CSV_VALUES)), ", ".join(_CSV_VALUES))
_CSV_LINE = "printf('%%s%s\n', ?, %s)" % (",".join(["%s"] * len(_CSV_VALUES)), ", ".join(_CSV_VALUES))
FETCH = 20_000  # lines per fetchmany: a few MB of text at a time
HELD = 100_000  # lines a pass holds (all devices) before appending them to the devices' files: about 13 MB


@functools.cache
def _seconds_of_day() -> bytes:
    """"HH:MM:SS.000Z," for each second of a day, 14 bytes each (1.2 MB)."""
    return b"".join(b"%02d:%02d:%02d.000Z," % (s // 3600, s // 60 % 60, s % 60) for s in range(86400))


def _time_params(first: float | None, last: float | None) -> list:
    """The parameters of _CSV_TIME_T, in their order, for whole-second times from `first` to `last`."""
    if first is None or last is None or not 0 <= first <= last or last - first > _MAX_DAYS * 86400:
        return [1, 0, b"", 0, b""]  # no whole-second day bound: every time through strftime
    day0, day1 = int(first) // 86400, int(last) // 86400
    days = b"".join(datetime.fromtimestamp(d * 86400, timezone.utc).strftime("%Y-%m-%dT").encode()
                    for d in range(day0, day1 + 1))
    return [day0 * 86400, (day1 + 1) * 86400 - 1, days, day0, _seconds_of_day()]


def _t_bounds(db: Any, devices: list[str], since: float | None, until: float | None) -> tuple:
    """(first, last) t of these devices' readings in [since, until): two searches of (device, t) each."""
    first = last = None
    for d in devices:
        where, params = store.reading_filter(d, since, until)
        lo = db.execute("SELECT min(t) FROM readings%s" % where, params).fetchone()[0]
        hi = db.execute("SELECT max(t) FROM readings%s" % where, params).fetchone()[0]
        if lo is not None:
            first, last = lo if first is None else min(first, lo), hi if last is None else max(last, hi)
    return first, last


def export_csv(db: Any, out: IO[str], since: float | None = None, until: float | None = None, jobs: int = 1) -> int:
    """The open-data export as CSV (EXPORT_COLUMNS), device by device in sequence order; returns rows written.

    SQLite formats each line, and the table is read once in its own (rowid) order over the rows in range, each
    line appended to its device's temporary file, the files then copied out device after device: readings are
    stored about in time order, so a month of a city's readings (millions) is one sequential read, not a search
    of the (device, t) index then of the table for each row (1.3 µs a row). A line costs about 24,900 machine
    instructions: 17,300 in SQLite's formatting (printf's conversion of each value to text most of it), 7,500
    in Python's fetch, routing and writes (README: the export figures). Memory stays constant; the temporary
    files take the export's size on disk. jobs > 1: that many processes find the rowid span (each for its share
    of the devices) and then read parts of the range side by side. A device whose rows are not stored in
    sequence order (a backlog that arrived after newer readings) is read again with its own query sorted by seq,
    and so is every device when the rows in range lie scattered over the table (less than half of the rowids
    between them): the bytes are always those of the sorted query."""
    names = [c[0] for c in EXPORT_COLUMNS]
    if names[4:] != ["seq", "sensor", "time", "t", "t_source", "flags", *store.METRIC_COLUMNS]:
        raise RuntimeError("EXPORT_COLUMNS and the CSV line disagree")  # a column added to one but not the other
    header = io.StringIO()
    writer = csv.writer(header, lineterminator="\n")
    writer.writerow(names)
    out.write(header.getvalue())
    devices = store.list_devices(db)
    ids = [d["id"] for d in devices]
    # jobs > 1: the worker processes find the span first, each for its share of the devices; they start (a new
    # Python each, 0.4 s) and search the index side by side, then read the parts of the span.
    pool = (ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) if jobs > 1
            else None)
    with pool or contextlib.nullcontext():
        if pool is None:
            spans = _device_spans(db, ids, since, until)
        else:
            futures = [pool.submit(_on_file, _device_spans, store.db_file(db), ids[k::jobs], since, until)
                       for k in range(jobs)]
            spans = [s for f in futures for s in f.result()]
        span = _span_of(spans)
        if span is None:
            return sum(_device_csv(db, d, since, until, out) for d in devices)
        return _export_scan(db, devices, since, until, span, pool, max(jobs, 1), out)


def _prefix(d: dict) -> str:
    """A device's own columns (id, site, lat, lon) as the start of its CSV lines, comma included."""
    prefix = io.StringIO()
    csv.writer(prefix, lineterminator="").writerow([_csv(d[k]) for k in ("id", "site", "lat", "lon")])
    return prefix.getvalue() + ","


def _device_csv(db: Any, d: dict, since: float | None, until: float | None, out: IO[str],
                sensor: str | None = None) -> int:
    """One device's CSV lines (no header) written to out in sequence order, optionally of one sensor; returns how
    many. A search of (device, t) then of the table for each row (about 1.3 µs a line here) and SQLite's
    formatting; SQLite's sorter spills to disk: memory stays flat."""
    where, params = store.reading_filter(d["id"], since, until, sensor)
    times = _time_params(*_t_bounds(db, [d["id"]], since, until))
    cur = db.execute("SELECT %s FROM readings%s ORDER BY seq" % (_CSV_LINE, where), [_prefix(d), *times, *params])
    written = 0
    while True:
        chunk = cur.fetchmany(FETCH)
        if not chunk:
            return written
        out.write("".join([line for (line,) in chunk]))
        written += len(chunk)


def _rowid_span(db: Any, devices: list[dict], since: float | None, until: float | None) -> tuple[int, int] | None:
    """(first, last) rowid of the readings to export, from the (device, t) index alone; None when there are
    none, or when they are scattered: fewer than half the rowids between first and last (a board whose clock
    was far off, readings restored out of order)."""
    return _span_of(_device_spans(db, [d["id"] for d in devices], since, until))


def _device_spans(db: Any, devices: list[str], since: float | None, until: float | None) -> list[tuple]:
    """(count, first rowid, last rowid) of each device's readings in [since, until): a walk of (device, t)."""
    spans = []
    for d in devices:
        where, params = store.reading_filter(d, since, until)
        spans.append(db.execute("SELECT count(*), min(id), max(id) FROM readings%s" % where, params).fetchone())
    return spans


def _span_of(spans: list[tuple]) -> tuple[int, int] | None:
    """_rowid_span from the devices' _device_spans."""
    count, first, last = 0, None, None
    for n, lo, hi in spans:
        if n:
            count += n
            first, last = lo if first is None else min(first, lo), hi if last is None else max(last, hi)
    if first is None or last - first + 1 > 2 * count + FETCH:
        return None
    return first, last


def _export_scan(db: Any, devices: list[dict], since: float | None, until: float | None, span: tuple[int, int],
                 pool: ProcessPoolExecutor | None, jobs: int, out: IO[str]) -> int:
    prefixes = {d["id"]: _prefix(d) for d in devices}
    times = _time_params(*_t_bounds(db, list(prefixes), since, until))
    first, last = span
    step = (last - first + 1 + jobs - 1) // jobs
    parts = [(lo, min(lo + step - 1, last)) for lo in range(first, last + 1, step)]
    written = 0
    with tempfile.TemporaryDirectory(prefix="airwatt-export-") as tmp:
        dirs = [str(Path(tmp) / str(k)) for k in range(len(parts))]
        if pool is None:
            found = [_scan_part(db, part, since, until, prefixes, times, path) for part, path in zip(parts, dirs)]
        else:  # each rowid range in its own process, on its own read-only connection
            db_file = store.db_file(db)
            found = [f.result() for f in [pool.submit(_on_file, _scan_part, db_file, part, since, until, prefixes,
                                                      times, path) for part, path in zip(parts, dirs)]]
        for n, d in enumerate(devices):
            got = [(k, f[d["id"]]) for k, f in enumerate(found) if d["id"] in f]
            # in sequence order within each part, and each part's seqs above the part's before
            bounds = [s for _k, (_count, lo, hi, _ordered) in got for s in (lo, hi)]
            if all(ordered for _k, (_count, _lo, _hi, ordered) in got) and bounds == sorted(bounds):
                for k, (count, _lo, _hi, _ordered) in got:
                    _copy_out(str(Path(dirs[k]) / ("%d.csv" % n)), out)
                    written += count
            else:
                written += _device_csv(db, d, since, until, out)
    return written


def _on_file(func: Callable, db_file: str, *args: Any) -> Any:
    """func(a read-only connection to db_file, *args), in a worker process."""
    conn = sqlite3.connect(Path(db_file).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return func(conn, *args)
    finally:
        conn.close()


def _scan_part(db: Any, part: tuple[int, int], since: float | None, until: float | None,
               prefixes: dict[str, str], times: list, path: str) -> dict:
    """The readings in the rowid range `part` (inclusive) with t in [since, until), read in rowid order, each
    device's lines appended to its file `path`/N.csv (N: its place in `prefixes`). Returns, per device:
    (lines, first seq, last seq, whether its seqs only rose)."""
    os.makedirs(path)
    index = {device: n for n, device in enumerate(prefixes)}
    where, params = store.reading_filter(None, since, until)
    where += (" AND " if where else " WHERE ") + "id BETWEEN ? AND ?"
    # NOT INDEXED: the table's own rowid order, never an index over other devices' or other times' rows
    cur = db.execute("SELECT device, seq, %s FROM readings NOT INDEXED%s" % (_CSV_REST, where),
                     [*times, *params, *part])
    held: dict[str, list[str]] = {}
    state: dict[str, list] = {}  # device -> [lines, first seq, last seq, ordered]
    count = 0
    while True:
        chunk = cur.fetchmany(FETCH)
        for device, seq, line in chunk:
            lines = held.get(device)
            if lines is None:
                if device not in index:
                    continue  # a device no longer listed: not exported, as by the sorted query
                lines = held[device] = []
                if device not in state:
                    state[device] = [0, seq, seq - 1, True]
            s = state[device]
            if seq <= s[2]:
                s[3] = False
            s[0] += 1
            s[2] = seq
            lines.append(line)
        count += len(chunk)
        if count >= HELD or not chunk:
            for device, lines in held.items():
                prefix = prefixes[device]
                with open(Path(path) / ("%d.csv" % index[device]), "a", encoding="utf-8", newline="") as f:
                    f.write(prefix)
                    f.write(prefix.join(lines))
            held.clear()
            count = 0
        if not chunk:
            return {device: tuple(s) for device, s in state.items()}


def _copy_out(path: str, out: IO[str]) -> None:
    """A worker's UTF-8 file copied into out: as bytes when out is a file (a gigabyte is not decoded and encoded
    again), else as text."""
    raw = getattr(out, "buffer", None)
    if raw is not None and (getattr(out, "encoding", "") or "").replace("-", "").lower() == "utf8":
        out.flush()
        raw.flush()
        with open(path, "rb") as f:
            try:
                fd = raw.fileno()
            except (AttributeError, OSError, ValueError):
                fd = None
            if fd is not None:
                # the kernel copies file to file (or pipe): the gigabyte never passes through this process
                size, at = os.fstat(f.fileno()).st_size, 0
                try:
                    while at < size:
                        at += os.sendfile(fd, f.fileno(), at, size - at)
                    return
                except OSError:
                    if at:
                        raise  # part of it went out: copying again would repeat lines
            shutil.copyfileobj(f, raw, 1 << 20)
        return
    with open(path, encoding="utf-8", newline="") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return
            out.write(block)


def _export(args: argparse.Namespace) -> int:
    db = open_existing(args.data_dir)
    out: IO[str] = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
    try:
        if args.format == "csv":
            written = export_csv(db, out, args.since, args.until, args.jobs)
        else:
            out.write('{"columns":')
            out.write(json.dumps([{"name": n, "unit": u, "description": d} for n, u, d in EXPORT_COLUMNS]))
            out.write(',"readings":')
            written = _json_rows(out, export_rows(db, args.since, args.until))
            out.write("}\n")
    finally:
        if args.out:
            out.close()
    if args.out:
        print("wrote %d readings to %s (%s)" % (written, Path(args.out).absolute(), args.format), file=sys.stderr)
        if args.format == "csv":
            meta = Path(str(args.out) + "-metadata.json")
            meta.write_text(json.dumps(csvw_metadata(Path(args.out).name, args.licence), indent=1,
                                       ensure_ascii=False) + "\n", encoding="utf-8")
            print("wrote its CSV on the Web metadata to %s" % meta.absolute(), file=sys.stderr)
    return 0


def _csv(value: Any) -> Any:
    return "" if value is None else value


def _json_rows(out: IO[str], rows: Iterable[dict]) -> int:
    """A JSON array written row by row, so a big export never sits in memory; returns how many rows."""
    out.write("[")
    count = 0
    for count, row in enumerate(rows, 1):
        out.write(",\n" if count > 1 else "\n")
        out.write(json.dumps(row, separators=(",", ":")))
    out.write("\n]\n")
    return count


def _table(rows: list[dict], columns: tuple[str, ...]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip())


INTERVAL_HELP = ("longest expected seconds between the board's uploads, for online/late/offline "
                 "(`airwatt flash` sets it from --upload-s and --intervals)")


# -- backup / restore -----------------------------------------------------------------------------------


def _copy_verb(work: Callable[[], dict], say: Callable[[dict], str]) -> int:
    """Run a backup or restore; print what it did, or the error (exit status 1)."""
    try:
        info = work()
    except BackupError as err:
        print("airwatt: %s" % err, file=sys.stderr)
        return 1
    print(say(info))
    return 0


def _backup(args: argparse.Namespace) -> int:
    return _copy_verb(lambda: backup(args.data_dir, args.to), lambda info: (
        "backup of %s: %d devices, readings up to id %d, schema %d, %d bytes -> %s (device keys: %s)"
        % (store.db_path(args.data_dir), info["devices"], info["last_reading_id"], info["schema_version"],
           info["bytes"], args.to, info["keys"])))


def _restore(args: argparse.Namespace) -> int:
    return _copy_verb(lambda: restore(args.data_dir, args.from_), lambda info: (
        "restored %s into %s: %d devices, readings up to id %d, schema %d -> %d; device keys %s"
        % (args.from_, store.db_path(args.data_dir), info["devices"], info["last_reading_id"],
           info["schema_version"], info["schema_version_now"], info["keys"])))


def _stats(args: argparse.Namespace) -> int:
    db = open_existing(args.data_dir)
    sizes = db_bytes(db.conn)
    kept = db.execute("SELECT count(*), min(t), max(t) FROM readings").fetchone()
    stored = sum(store.reading_counts(db).values())
    raw = sum(v for k, v in sizes.items() if k == "readings" or k.startswith("readings_"))
    rollups = sum(v for k, v in sizes.items() if k.startswith("rollup_"))
    free = db.execute("PRAGMA freelist_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    print("readings kept:    %d of %d stored (older synced ones deleted by retention), %s to %s"
          % (kept[0], stored, iso(kept[1]) or "-", iso(kept[2]) or "-"))
    print("bytes per reading: %.1f (readings table and its indexes: %.1f MB)" % (raw / max(kept[0], 1), raw / 1e6))
    print("rollups:          %.1f MB; free pages for reuse: %.1f MB; file %.1f MB"
          % (rollups / 1e6, free / 1e6, store.db_path(args.data_dir).stat().st_size / 1e6))
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        if size >= 50_000:
            print("  %-32s %10.1f MB" % (name, size / 1e6))
    return 0


def add_verbs(subparsers: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """`airwatt NAME VERB ...`: a command whose verbs are the subparsers returned."""
    return subparsers.add_parser(name, help=help).add_subparsers(dest="verb", required=True, metavar="VERB")


def add_verb(verbs: argparse._SubParsersAction, name: str, help: str,
             func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A verb on the store (add_verbs' subparsers): takes --data-dir, runs func(args)."""
    parser = verbs.add_parser(name, help=help)
    add_data_dir(parser)
    parser.set_defaults(func=func)
    return parser


def _device_options(parser: argparse.ArgumentParser, new: bool) -> None:
    """What `device add` registers and `device set` changes; a new device gets the defaults."""
    parser.add_argument("id", help="device id: 1-32 of a-z 0-9 - _" if new else "the device's id")
    parser.add_argument("--name")
    parser.add_argument("--site", help="building or site name")
    parser.add_argument("--lat", type=float, help="latitude, WGS84 degrees (with --lon)")
    parser.add_argument("--lon", type=float, help="longitude, WGS84 degrees (with --lat)")
    parser.add_argument("--sensors", default=",".join(fields.SENSORS) if new else None,
                        help="comma-separated sensor kinds")
    parser.add_argument("--interval", type=int, default=60 if new else None,
                        help=INTERVAL_HELP + (" (default 60)" if new else ""))


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The verbs above, on the `airwatt` command's subparsers."""
    device = add_verbs(commands, "device", "register and list boards")
    _device_options(add_verb(device, "add", "register a board and print its key (once)", _device_add), new=True)
    edit = add_verb(device, "set", "change a registered board's name, site, location, sensors or interval",
                    _device_set)
    _device_options(edit, new=False)
    board = edit.add_argument_group("the board's settings (sent in its upload answers, acknowledged in its status)")
    board.add_argument("--intervals", metavar="KIND=S,...", help="sampling intervals, e.g. energy=10,co2=30,pm=60")
    board.add_argument("--upload-s", type=int, help="upload period in seconds")
    board.add_argument("--batch", type=int, help="most readings in one upload (1-%d)" % fields.MAX_READINGS)
    board.add_argument("--humid-rh", type=int, metavar="RH",
                       help="PM readings taken above this %%RH (from the SCD4x) get the humid flag; 0: never")
    care = edit.add_argument_group("SCD4x care (kept on the sensor, re-applied at boot)")
    care.add_argument("--asc", choices=("on", "off"), help="automatic self-calibration")
    care.add_argument("--temp-offset", type=float, metavar="C", help="temperature offset, degC (0-20)")
    care.add_argument("--altitude", type=int, metavar="M", help="altitude above sea level, m (0-3000)")
    care.add_argument("--pressure", type=int, metavar="PA", help="ambient pressure, Pa (replaces altitude)")
    care.add_argument("--frc", type=int, metavar="PPM",
                      help="forced recalibration to this reference (400-2000 ppm; the sensor must have run 3 "
                           "minutes at it); the correction comes back in `airwatt device settings`")
    show = add_verb(device, "settings", "a board's settings from the agent: pending or applied, FRC result",
                    _device_settings)
    show.add_argument("id", help="the device's id")
    show.add_argument("--format", choices=("text", "json"), default="text")
    lst = add_verb(device, "list", "list boards (keys are never shown)", _device_list)
    lst.add_argument("--format", choices=("table", "json"), default="table")

    rd = commands.add_parser("readings", help="one device's readings")
    add_data_dir(rd)
    rd.add_argument("--device", required=True)
    rd.add_argument("--since", type=parse_time, help="ISO 8601 or Unix seconds (inclusive)")
    rd.add_argument("--until", type=parse_time, help="ISO 8601 or Unix seconds (exclusive)")
    rd.add_argument("--format", choices=("table", "csv", "json"), default="table")
    rd.set_defaults(func=_readings)

    ex = commands.add_parser(
        "export",
        help="open-data export of every reading (no keys)",
        description="Columns: "
        + "; ".join("%s%s: %s" % (n, " [%s]" % u if u else "", d) for n, u, d in EXPORT_COLUMNS),
    )
    add_data_dir(ex)
    ex.add_argument("--format", choices=("csv", "json"), required=True)
    ex.add_argument("--out", help="file to write (default: stdout); a CSV gets its CSVW metadata beside it, "
                    "as FILE-metadata.json")
    ex.add_argument("--licence", default=LICENCE, help="licence URL in the CSVW metadata (default: CC BY 4.0)")
    ex.add_argument("--since", type=parse_time)
    ex.add_argument("--until", type=parse_time)
    ex.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="CSV: processes formatting devices side by side (default: one per CPU)")
    ex.set_defaults(func=_export)

    st = commands.add_parser("stats", help="the store's size: bytes per reading with indexes, rollups, retention")
    add_data_dir(st)
    st.set_defaults(func=_stats)

    bk = commands.add_parser("backup", help="consistent copy of the store, also while the agent runs")
    add_data_dir(bk)
    bk.add_argument("--to", required=True, help="the backup file to write (must not exist)")
    bk.set_defaults(func=_backup)
    rs = commands.add_parser("restore", help="replace the store with a backup, also while the agent runs")
    add_data_dir(rs)
    rs.add_argument("--from", dest="from_", required=True, help="a file written by `airwatt backup`")
    rs.set_defaults(func=_restore)
