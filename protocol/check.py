"""Validate parsed AirWatt messages; the reference verdict that the agent's pydantic models must match.

Runs on MicroPython and CPython. Each check raises ProtocolError whose `path` names the offending item the
way the agent reports it (e.g. "readings[3].values.pm25") and whose message says why.
"""

import json

from . import fields

try:
    _TOO_DEEP = RecursionError  # CPython's json recurses; MicroPython's has no such error (and does not recurse)
except NameError:
    _TOO_DEEP = RuntimeError


class ProtocolError(ValueError):
    def __init__(self, path, why):
        super().__init__("%s: %s" % (path or "body", why))
        self.path = path
        self.why = why


def _join(path, key):
    if isinstance(key, int):
        return "%s[%d]" % (path, key)
    return key if not path else path + "." + key


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return (isinstance(x, (int, float))) and not isinstance(x, bool)


def _object(obj, path, required, optional=()):
    if not isinstance(obj, dict):
        raise ProtocolError(path, "must be an object")
    for key in required:
        if key not in obj:
            raise ProtocolError(_join(path, key), "is required")
    for key in obj:
        if key not in required and key not in optional:
            raise ProtocolError(_join(path, key), "is not a known field")


def _int(x, path, lo, hi, nullable=False):
    if x is None and nullable:
        return
    if not _is_int(x):
        raise ProtocolError(path, "must be an integer")
    if x < lo:
        raise ProtocolError(path, "%d is below the minimum %d" % (x, lo))
    if x > hi:
        raise ProtocolError(path, "%d is above the maximum %d" % (x, hi))


def _text(x, path, lo, hi, alphabet=None):
    if not isinstance(x, str):
        raise ProtocolError(path, "must be a string")
    if not lo <= len(x) <= hi:
        raise ProtocolError(path, "must be %d to %d characters long" % (lo, hi))
    for ch in x:
        if ch < " " or ch > "~" or ch in "\"\\" or (alphabet is not None and ch not in alphabet):
            raise ProtocolError(path, "has a character that is not allowed: %r" % ch)


DEVICE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"
HEX = "0123456789abcdef"


def _depth_over(value, limit):
    """True when value nests objects/lists deeper than limit (iterative: deep input must not recurse here)."""
    stack = [(value, 1)]
    while stack:
        x, depth = stack.pop()
        if isinstance(x, dict):
            x = x.values()
        elif not isinstance(x, list):
            continue
        if depth > limit:
            return True
        for y in x:
            if isinstance(y, (dict, list)):
                stack.append((y, depth + 1))
    return False


def parse_body(body):
    """The JSON value of a message body (bytes): UTF-8 without a byte order mark, nesting at most
    fields.MAX_DEPTH levels. Raises ProtocolError with path "" and the reason otherwise."""
    if body[:3] == b"\xef\xbb\xbf":
        raise ProtocolError("", "starts with a byte order mark: send UTF-8 JSON without one")
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body:
        raise ProtocolError("", "is UTF-16 or UTF-32 (has NUL bytes or their byte order mark): send UTF-8 JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeError:
        raise ProtocolError("", "is not valid UTF-8: send UTF-8 JSON")
    too_deep = "nests objects and lists deeper than %d levels" % fields.MAX_DEPTH
    try:
        value = json.loads(text)
    except _TOO_DEEP:
        raise ProtocolError("", too_deep)
    except ValueError as err:
        raise ProtocolError("", "is not valid JSON (%s)" % err)
    if _depth_over(value, fields.MAX_DEPTH):
        raise ProtocolError("", too_deep)
    return value


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


def check_reading(r, path):
    _object(r, path, ("seq", "t", "ticks", "boot", "sensor", "values", "flags"))
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
    _object(s, path, names + ("errors", "time_sync"))
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


def check_batch(b):
    """Check a parsed upload batch; raises ProtocolError naming the first problem."""
    _object(b, "", ("v", "device", "fw", "boot", "sent_ticks", "readings"), ("status",))
    if b["v"] != fields.VERSION or not _is_int(b["v"]):
        raise ProtocolError("v", "protocol version %s is not supported (this side speaks %d)" % (b["v"], fields.VERSION))
    _text(b["device"], "device", 1, fields.DEVICE_ID_MAX, DEVICE_ALPHABET)
    _text(b["fw"], "fw", 1, fields.FIRMWARE_MAX)
    _text(b["boot"], "boot", fields.BOOT_ID_LEN, fields.BOOT_ID_LEN, HEX)
    _int(b["sent_ticks"], "sent_ticks", 0, fields.MAX_TICKS)
    readings = b["readings"]
    if not isinstance(readings, list):
        raise ProtocolError("readings", "must be a list")
    if not 1 <= len(readings) <= fields.MAX_READINGS:
        raise ProtocolError("readings", "must hold 1 to %d readings, not %d" % (fields.MAX_READINGS, len(readings)))
    last = 0
    for i, r in enumerate(readings):
        path = _join("readings", i)
        check_reading(r, path)
        if r["seq"] <= last:
            raise ProtocolError(_join(path, "seq"), "must be greater than the previous reading's %d" % last)
        last = r["seq"]
        if r["boot"] == b["boot"] and r["ticks"] > b["sent_ticks"]:
            raise ProtocolError(_join(path, "ticks"), "is later than the batch's sent_ticks")
    if "status" in b:
        check_status(b["status"])


def check_answer(a):
    """Check the agent's answer to an upload."""
    _object(a, "", ("v", "stored_seq", "server_time"), ("settings",))
    _int(a["v"], "v", fields.VERSION, fields.VERSION)
    _int(a["stored_seq"], "stored_seq", 0, fields.MAX_SEQ)
    _int(a["server_time"], "server_time", fields.MIN_WALL_TIME, fields.MAX_WALL_TIME)
    if "settings" in a:
        s = a["settings"]
        _object(s, "settings", (), ("intervals", "batch_max"))
        if "intervals" in s:
            iv = s["intervals"]
            if not isinstance(iv, dict):
                raise ProtocolError("settings.intervals", "must be an object")
            for sensor in iv:
                if sensor not in fields.SENSORS:
                    raise ProtocolError("settings.intervals." + sensor, "is not a sensor kind")
                _int(iv[sensor], "settings.intervals." + sensor, 5, 86400)
        if "batch_max" in s:
            _int(s["batch_max"], "settings.batch_max", 1, fields.MAX_READINGS)
