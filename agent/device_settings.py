"""Settings the agent sends a board in its upload answers, and the board's acknowledgement.

Table `device_settings` (migration 6 in store.py), one row per device that was ever given settings:
  rev          the revision; every change makes a new one, which the board reports back once applied
  settings     JSON of what the board should hold (intervals, upload_s, batch_max, humid_rh, co2 care)
  frc, frc_rev a forced recalibration (target ppm) asked for in rev frc_rev, until the board has done it
  changed      JSON: setting name -> [unix time, by whom] ("cli" or the operator's name from the page)
  applied_rev, applied_at, error   the board's last acknowledgement (status.settings)
  frc_target, frc_correction, frc_at   the last FRC the board did, and the correction it reported

The answer carries the settings while applied_rev differs from rev, so a board that missed an answer, or
rebooted before it kept them, gets them again; the board applies a rev once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from airwatt.protocol import fields, models, settings as proto
from airwatt.protocol.check import ProtocolError

from . import store

CARE = tuple(row[0] for row in proto.CO2_CARE)  # asc, temp_offset, altitude, pressure, frc
PLAIN = ("upload_s", "batch_max", "humid_rh")


def parse_intervals(text: str) -> dict[str, int]:
    """'energy=10,co2=30,pm=60' -> {"energy": 10, ...}; ValueError saying what is wrong."""
    out: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        kind, eq, value = part.partition("=")
        kind = kind.strip()
        if not eq or kind not in fields.SENSORS:
            raise ValueError("intervals: %r is not KIND=SECONDS with KIND one of %s" % (part, ", ".join(fields.SENSORS)))
        try:
            out[kind] = int(value)
        except ValueError:
            raise ValueError("intervals: %s=%s: seconds must be a whole number" % (kind, value.strip())) from None
    if not out:
        raise ValueError("intervals: give KIND=SECONDS[,KIND=SECONDS...], e.g. energy=10,co2=30,pm=60")
    return out


def get(db: sqlite_utils.Database, device: str) -> dict | None:
    found = list(db.query("SELECT * FROM device_settings WHERE device = ?", [device]))
    if not found:
        return None
    d = found[0]
    d["settings"] = json.loads(d["settings"])
    d["changed"] = json.loads(d["changed"])
    return d


def _answer_settings(row: dict) -> dict:
    s = dict(row["settings"], rev=row["rev"])
    if row["frc"] is not None:  # until the board reports it done
        s["co2"] = dict(s.get("co2", {}), frc=row["frc"])
    return s


def _check(settings: dict) -> None:
    """Refuse what the board would refuse, naming the setting (the protocol's answer model is the judge)."""
    try:
        models.validate_answer({"v": fields.VERSION, "stored_seq": 0, "server_time": fields.MIN_WALL_TIME,
                                "settings": settings})
    except ProtocolError as err:
        raise ValueError("%s: %s" % (err.path, err.why)) from None


def change(db: sqlite_utils.Database, device: str, changes: dict[str, Any], by: str,
           now: float | None = None) -> dict:
    """Make a new settings revision for `device` from `changes` (intervals: {kind: s}, upload_s, batch_max,
    humid_rh, and the SCD4x care: asc, temp_offset, altitude, pressure, frc; None values are left out).
    Intervals merge per sensor kind; altitude and pressure replace each other. Returns state(). Raises
    ValueError for an unknown device, nothing to change or a value the protocol refuses."""
    now = time.time() if now is None else now
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - set(PLAIN) - set(CARE) - {"intervals"}
    if unknown:
        raise ValueError("no setting %s" % ", ".join(sorted(unknown)))
    if not changes:
        raise ValueError("nothing to change: give intervals, upload_s, batch_max, humid_rh or SCD4x care")
    if store.get_device(db, device) is None:
        raise ValueError("no device %s: register it with `airwatt device add %s` (or `airwatt flash`)"
                         % (device, device))
    if "altitude" in changes and "pressure" in changes:
        raise ValueError("settings.co2.pressure: give altitude or pressure, not both")
    by = (by or "").strip()[:64] or "unknown"
    with store.transaction(db):
        row = get(db, device)
        settings = dict(row["settings"]) if row else {}
        changed = dict(row["changed"]) if row else {}
        rev = (row["rev"] if row else 0) + 1
        frc, frc_rev = (row["frc"], row["frc_rev"]) if row else (None, None)
        if "intervals" in changes:
            settings["intervals"] = dict(settings.get("intervals", {}), **changes["intervals"])
            for kind in changes["intervals"]:
                changed["intervals." + kind] = [now, by]
        for name in PLAIN:
            if name in changes:
                settings[name] = changes[name]
                changed[name] = [now, by]
        care = dict(settings.get("co2", {}))
        for name in CARE:
            if name not in changes:
                continue
            changed["co2." + name] = [now, by]
            if name == "frc":
                frc, frc_rev = changes[name], rev
                continue
            care[name] = changes[name]
            other = {"altitude": "pressure", "pressure": "altitude"}.get(name)
            if other is not None:
                care.pop(other, None)
        if care:
            settings["co2"] = care
        _check(dict(settings, rev=rev, **({"co2": dict(care, frc=frc)} if frc is not None else {})))
        db.execute(
            "INSERT INTO device_settings(device, rev, settings, frc, frc_rev, changed) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(device) DO UPDATE SET rev = excluded.rev, settings = excluded.settings,"
            " frc = excluded.frc, frc_rev = excluded.frc_rev, changed = excluded.changed",
            (device, rev, json.dumps(settings, sort_keys=True), frc, frc_rev, json.dumps(changed, sort_keys=True)))
    return state(db, device) or {}


def exchange(db: sqlite_utils.Database, device: str, applied: Any, now: float | None = None) -> dict | None:
    """At each stored upload: take the board's acknowledgement (status.settings, a models.Applied or None) and
    return the settings the answer must carry (None when the board holds the current rev). One indexed read;
    a write only when the acknowledgement changed."""
    row = db.execute("SELECT rev, applied_rev FROM device_settings WHERE device = ?", (device,)).fetchone()
    if row is None:
        return None
    rev, applied_rev = row
    if applied is not None and applied.rev != applied_rev:
        _acknowledge(db, device, applied, time.time() if now is None else now)
        applied_rev = applied.rev
    if applied_rev == rev:
        return None
    full = get(db, device)
    return _answer_settings(full) if full else None


def _acknowledge(db: sqlite_utils.Database, device: str, applied: Any, now: float) -> None:
    with store.transaction(db):
        row = get(db, device)
        if row is None:
            return
        db.execute("UPDATE device_settings SET applied_rev = ?, applied_at = ?, error = ? WHERE device = ?",
                   (applied.rev, now, applied.error, device))
        if row["frc"] is not None and applied.rev >= row["frc_rev"]:
            # Done (or refused: the error says so); either way it is not sent again.
            db.execute("UPDATE device_settings SET frc = NULL, frc_target = ?, frc_correction = ?, frc_at = ?"
                       " WHERE device = ?", (row["frc"], applied.frc, now, device))
        if applied.rev == row["rev"]:
            gap = upload_gap(row["settings"], store.get_device(db, device) or {})
            if gap is not None:
                db.execute("UPDATE devices SET interval_s = ? WHERE id = ?", (gap, device))


def upload_gap(settings: dict, device: dict) -> int | None:
    """The longest the board now goes between uploads, for online/late/offline (as flash_cmd.upload_gap): its
    upload period and its shortest sensor interval. Without an upload_s setting the agent does not know the
    board's period, so the gap recorded at flashing stays a lower bound."""
    parts = [settings["upload_s"]] if "upload_s" in settings else [device.get("interval_s") or 60]
    if settings.get("intervals"):
        parts.append(min(settings["intervals"].values()))
    return max(parts) if parts else None


def state(db: sqlite_utils.Database, device: str) -> dict | None:
    """What the CLI and the device page show: the settings, their rev, `pending` or `applied` (with when), the
    board's error, the last FRC and who set what when. None when the device was never given settings."""
    row = get(db, device)
    if row is None:
        return None
    applied = row["applied_rev"] == row["rev"]
    return {
        "device": device,
        "rev": row["rev"],
        "settings": row["settings"],
        "state": "applied" if applied else "pending",
        "applied_rev": row["applied_rev"],
        "applied_at": row["applied_at"],
        "error": row["error"] or "",
        "frc_pending": row["frc"],
        "frc": None if row["frc_at"] is None else {
            "target": row["frc_target"], "correction": row["frc_correction"], "at": row["frc_at"]},
        "changed": {k: {"at": v[0], "by": v[1]} for k, v in sorted(row["changed"].items())},
    }
