"""The agent's answer to an upload, checked: all of the protocol check a board needs (kept small for its heap).
Runs on MicroPython and CPython; check.py builds on the helpers here."""

from . import fields


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


def check_answer(a):
    """Check the agent's answer to an upload (v1 or v2: a board takes its own version)."""
    _object(a, "", ("v", "stored_seq", "server_time"), ("settings",))
    _int(a["v"], "v", 1, 2)
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
