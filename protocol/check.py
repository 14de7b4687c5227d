"""Validate parsed AirWatt messages; the reference verdict that the agent's pydantic models must match.

Runs on MicroPython and CPython. Each check raises ProtocolError whose `path` names the offending item the
way the agent reports it (e.g. "readings[3].values.pm25") and whose message says why.
"""

from . import fields
from . import answer, settings
from .answer import (  # noqa: F401  (parse_body: the agent's side imports it from here too)
    ProtocolError, _int, _is_int, _join, _object, parse_body)
from .settings import _is_number, _text


HEX = "0123456789abcdef"


def check_values(sensor, values, path):
    if not isinstance(values, dict):
        raise ProtocolError(path, "must be an object")
    for name in values:
        row = fields.metric(sensor, name)
        where = _join(path, name)
        if row is None:
            raise ProtocolError(where, "is not a metric of sensor %s" % sensor)
        x = values[name]
        if row[4] == "int" and not _is_int(x):
            raise ProtocolError(where, "must be an integer")
        if not _is_number(x):
            raise ProtocolError(where, "must be a number")
        if x < row[5]:
            raise ProtocolError(where, "%s is below the minimum %s %s" % (x, row[5], row[2]))
        if x > row[6]:
            raise ProtocolError(where, "%s is above the maximum %s %s" % (x, row[6], row[2]))


def check_reading(r, path, instance=False):
    _object(r, path, ("seq", "t", "ticks", "boot", "sensor", "values", "flags"), ("instance",) if instance else ())
    if "instance" in r:
        _int(r["instance"], _join(path, "instance"), 1, fields.MAX_INSTANCE)
    _int(r["seq"], _join(path, "seq"), 1, fields.MAX_SEQ)
    _int(r["t"], _join(path, "t"), fields.MIN_WALL_TIME, fields.MAX_WALL_TIME, nullable=True)
    _int(r["ticks"], _join(path, "ticks"), 0, fields.MAX_TICKS)
    _text(r["boot"], _join(path, "boot"), fields.BOOT_ID_LEN, fields.BOOT_ID_LEN, HEX)
    if r["sensor"] not in fields.SENSORS:
        raise ProtocolError(_join(path, "sensor"), "must be one of %s" % ", ".join(fields.SENSORS))
    check_values(r["sensor"], r["values"], _join(path, "values"))
    flags = r["flags"]
    where = _join(path, "flags")
    if not isinstance(flags, list):
        raise ProtocolError(where, "must be a list")
    for i, flag in enumerate(flags):
        if flag not in fields.FLAGS:
            raise ProtocolError(_join(where, i), "must be one of %s" % ", ".join(fields.FLAGS))
        if flag in flags[:i]:
            raise ProtocolError(where, "repeats %s" % flag)
    if not r["values"] and not flags:
        raise ProtocolError(_join(path, "values"), "is empty and no flag says why")


def check_status(s, path="status"):
    names = tuple(row[0] for row in fields.STATUS_FIELDS)
    _object(s, path, names + ("errors", "time_sync"), ("settings", "fw"))
    for name, lo, hi, nullable in fields.STATUS_FIELDS:
        _int(s[name], _join(path, name), lo, hi, nullable)
    errors = s["errors"]
    where = _join(path, "errors")
    if not isinstance(errors, dict):
        raise ProtocolError(where, "must be an object")
    for sensor in errors:
        if sensor not in fields.SENSORS:
            raise ProtocolError(_join(where, sensor), "is not a sensor kind")
        _int(errors[sensor], _join(where, sensor), 0, 4294967295)
    if s["time_sync"] not in fields.TIME_SYNC:
        raise ProtocolError(_join(path, "time_sync"), "must be one of %s" % ", ".join(fields.TIME_SYNC))
    if "settings" in s:
        settings.check_applied(s["settings"], _join(path, "settings"))
    if "fw" in s:
        settings.check_fw(s["fw"], _join(path, "fw"))


def check_batch(b):
    """Check a parsed upload batch (v1 or v2); raises ProtocolError naming the first problem. Returns the
    readings (for v2 decoded from `data`)."""
    if isinstance(b, dict) and b.get("v") == 2 and _is_int(b["v"]) and "data" in b:
        return _check_batch_v2(b)
    _object(b, "", ("v", "device", "fw", "boot", "sent_ticks", "readings"), ("status",))
    if b["v"] != fields.VERSION or not _is_int(b["v"]):
        raise ProtocolError("v", "protocol version %s is not supported here (1 carries readings, 2 data)" % (b["v"],))
    _check_head(b)
    readings = b["readings"]
    if not isinstance(readings, list):
        raise ProtocolError("readings", "must be a list")
    if not 1 <= len(readings) <= fields.MAX_READINGS:
        raise ProtocolError("readings", "must hold 1 to %d readings, not %d" % (fields.MAX_READINGS, len(readings)))
    return _check_body(b, readings, False)


def _check_head(b):
    """What every batch version says of its board."""
    _text(b["device"], "device", 1, fields.DEVICE_ID_MAX, fields.DEVICE_ALPHABET)
    _text(b["fw"], "fw", 1, fields.FIRMWARE_MAX)
    _text(b["boot"], "boot", fields.BOOT_ID_LEN, fields.BOOT_ID_LEN, HEX)
    _int(b["sent_ticks"], "sent_ticks", 0, fields.MAX_TICKS)


def _check_body(b, readings, instance):
    """Each reading (in increasing seq order, none later than the batch was sent) and the status; returns readings.
    `instance`: a reading may name its meter (v2; check_reading's `instance`)."""
    last = 0
    for i, r in enumerate(readings):
        path = _join("readings", i)
        check_reading(r, path, instance)
        if r["seq"] <= last:
            raise ProtocolError(_join(path, "seq"), "must be greater than the previous reading's %d" % last)
        last = r["seq"]
        if r["boot"] == b["boot"] and r["ticks"] > b["sent_ticks"]:
            raise ProtocolError(_join(path, "ticks"), "is later than the batch's sent_ticks")
    if "status" in b:
        check_status(b["status"])
    return readings


def _check_batch_v2(b):
    """check_batch for a v2 batch: returns its readings, decoded."""
    _object(b, "", ("v", "device", "fw", "boot", "sent_ticks", "first_seq", "n", "data"), ("status",))
    _check_head(b)
    _int(b["first_seq"], "first_seq", 1, fields.MAX_SEQ)
    _int(b["n"], "n", 1, fields.MAX_READINGS_V2)
    if not isinstance(b["data"], str):
        raise ProtocolError("data", "must be a string")
    from . import v2  # only the agent's side checks v2 batches: the board never loads it

    try:
        readings = v2.readings_v2(b)
    except ValueError as e:
        raise ProtocolError("data", str(e))
    if len(readings) != b["n"]:
        raise ProtocolError("n", "says %d readings, data holds %d" % (b["n"], len(readings)))
    return _check_body(b, readings, True)


def check_answer(a):
    """Check the agent's answer to an upload, its settings included."""
    answer.check_answer(a)
    if "settings" in a:
        settings.check_settings(a["settings"])
    if "firmware" in a:
        settings.check_offer(a["firmware"])
