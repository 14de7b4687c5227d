"""The agent's answer to an upload, checked: all of the protocol check a board needs (kept small for its heap).
Runs on MicroPython and CPython; check.py builds on the helpers here."""

import json

# Names, not the module: a board frees the field table once its modules have taken what they use (board.py).
from .fields import MAX_DEPTH, MAX_SEQ, MAX_WALL_TIME, MIN_WALL_TIME

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
    too_deep = "nests objects and lists deeper than %d levels" % MAX_DEPTH
    try:
        value = json.loads(text)
    except _TOO_DEEP:
        raise ProtocolError("", too_deep)
    except ValueError as err:
        raise ProtocolError("", "is not valid JSON (%s)" % err)
    if _depth_over(value, MAX_DEPTH):
        raise ProtocolError("", too_deep)
    return value


def check_answer(a):
    """Check the agent's answer to an upload (v1 or v2: a board takes its own version), all but the content of
    its settings: settings.check_settings checks those (check.check_answer does both; the board loads
    settings.py only when an answer carries settings, its heap is small)."""
    _object(a, "", ("v", "stored_seq", "server_time"), ("settings", "firmware"))
    _int(a["v"], "v", 1, 2)
    _int(a["stored_seq"], "stored_seq", 0, MAX_SEQ)
    _int(a["server_time"], "server_time", MIN_WALL_TIME, MAX_WALL_TIME)
