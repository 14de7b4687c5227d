"""What every message needs: canonical JSON of plain values, the device status, and the HMAC signature.

Runs unchanged on MicroPython (the board) and CPython (the agent). The part of wire.py a board speaking v2 loads:
the reading and batch encoders of v1 stay in wire.py (which re-exports these).
"""

import hashlib
from binascii import hexlify, unhexlify

_BLOCK = 64


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of msg: bytes, or an iterable of bytes signed as their concatenation (a board signs
    its body piece by piece, never whole in RAM). MicroPython has hashlib.sha256 but no hmac module."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    for part in (msg,) if isinstance(msg, (bytes, bytearray, memoryview)) else msg:
        inner.update(part)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def sign(key, body):
    """Hex signature of the exact body bytes (or of the concatenation of an iterable of them), for the
    X-AirWatt-Signature header."""
    return hexlify(hmac_sha256(key, body)).decode()


def verify(key, body, signature):
    """True when signature (hex str) is the HMAC of body; compares in constant time."""
    try:
        given = unhexlify(signature)
    except (ValueError, TypeError):
        return False
    expected = hmac_sha256(key, body)
    if len(given) != len(expected):
        return False
    diff = 0
    for a, b in zip(given, expected):
        diff |= a ^ b
    return diff == 0


def _string(s):
    for ch in s:
        if ch < " " or ch > "~" or ch == '"' or ch == "\\":
            raise ValueError("only printable ASCII without quotes or backslashes: %r" % s)
    return '"' + s + '"'


def dumps(obj):
    """Canonical JSON of ints, strs, bools, None, lists and dicts (floats must go through render)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, str):
        return _string(obj)
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(x) for x in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(_string(k) + ":" + dumps(obj[k]) for k in sorted(obj)) + "}"
    raise ValueError("no canonical form for %r" % (obj,))


def encode_status(uptime_s, free_heap, rssi, buffer_depth, dropped, errors, time_sync, applied=None, fw=None):
    """The device status (protocol's status object) as canonical JSON bytes; `applied` is the settings
    acknowledgement {"rev", "frc", "error"} and `fw` the firmware report {"run", "target", "state", "error"},
    each left out when None."""
    status = {
        "buffer_depth": buffer_depth,
        "dropped": dropped,
        "errors": errors,
        "free_heap": free_heap,
        "rssi": rssi,
        "time_sync": time_sync,
        "uptime_s": uptime_s,
    }
    if applied is not None:
        status["settings"] = applied
    if fw is not None:
        status["fw"] = fw
    return dumps(status).encode()
