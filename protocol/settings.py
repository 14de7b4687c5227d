"""The agent's settings in an upload answer and the board's acknowledgement in its status.

Runs on MicroPython and CPython. A module of its own, imported only when an answer carries settings or a status
its acknowledgement: the board's steady loop (no settings) does not pay for these tables in its heap.
"""

from . import fields
from .answer import ProtocolError, _int, _join, _object


# Checks of strings and numbers: here, not in answer.py, since a board needs them only for settings (check.py
# uses them too).
def _is_number(x):
    return (isinstance(x, (int, float))) and not isinstance(x, bool)


def _text(x, path, lo, hi, alphabet=None):
    if not isinstance(x, str):
        raise ProtocolError(path, "must be a string")
    if not lo <= len(x) <= hi:
        raise ProtocolError(path, "must be %d to %d characters long" % (lo, hi))
    for ch in x:
        if ch < " " or ch > "~" or ch in "\"\\" or (alphabet is not None and ch not in alphabet):
            raise ProtocolError(path, "has a character that is not allowed: %r" % ch)


# The agent's settings in an upload answer (settings.*): (name, minimum, maximum); intervals' bounds are per
# sensor kind. A board ignores names it does not know, so a newer agent can talk to an older board.
SETTINGS = (
    ("rev", 1, fields.MAX_SEQ),  # the revision the board reports back in status.settings.rev once applied
    ("batch_max", 1, fields.MAX_READINGS),
    ("upload_s", 1, 86400),
    ("humid_rh", 0, 100),  # PM readings above this %RH get the humid flag; 0: never
    ("intervals", 5, 86400),
)
# SCD4x care (settings.co2.*), ranges from the SCD4x datasheet: (name, minimum, maximum, "int" | "float" | "bool").
CO2_CARE = (
    ("asc", 0, 1, "bool"),  # automatic self-calibration
    ("temp_offset", 0, 20, "float"),  # degC the sensor subtracts for the board's own heat
    ("altitude", 0, 3000, "int"),  # m above sea level
    ("pressure", 70000, 120000, "int"),  # Pa ambient pressure; overrides altitude
    ("frc", 400, 2000, "int"),  # forced recalibration to this reference ppm (once per rev)
)
# A firmware release offered in an answer (answer.firmware.*): the version, its files' total bytes, and the
# probation window (s) in which the new version must pass its self-test and get an upload acknowledged.
OFFER = (("size", 1, 4000000), ("probation_s", 10, 86400))
# The board's firmware in its status (status.fw.*): the version it runs, the one it works towards, where the
# update stands and why it failed.
FW_STATES = ("idle", "downloading", "staged", "probation", "confirmed", "rolled-back", "failed")
FW_ERROR_MAX = 80
# The board's acknowledgement (status.settings.*): rev applied, FRC correction ppm (nullable), error text length.
APPLIED = (("rev", 0, fields.MAX_SEQ), ("frc", -32768, 32767), ("error", 0, 80))


def check_applied(a, path):
    """The board's acknowledgement of the agent's settings: the rev it applied, the FRC correction, any error."""
    rev, frc, error = APPLIED
    _object(a, path, ("rev", "frc", "error"))
    _int(a["rev"], _join(path, "rev"), rev[1], rev[2])
    _int(a["frc"], _join(path, "frc"), frc[1], frc[2], nullable=True)
    _text(a["error"], _join(path, "error"), error[1], error[2])


def check_settings(s, path="settings"):
    """The settings of an answer. Names this side does not know are errors here; the board ignores them."""
    _object(s, path, (), ("co2",) + tuple(row[0] for row in SETTINGS))
    for name, lo, hi in SETTINGS:
        if name not in s:
            continue
        where = _join(path, name)
        if name != "intervals":
            _int(s[name], where, lo, hi)
            continue
        iv = s[name]
        if not isinstance(iv, dict):
            raise ProtocolError(where, "must be an object")
        for sensor in iv:
            if sensor not in fields.SENSORS:
                raise ProtocolError(_join(where, sensor), "is not a sensor kind")
            _int(iv[sensor], _join(where, sensor), lo, hi)
    if "co2" in s:
        care = s["co2"]
        where = _join(path, "co2")
        _object(care, where, (), tuple(row[0] for row in CO2_CARE))
        for name, lo, hi, kind in CO2_CARE:
            if name not in care:
                continue
            x = care[name]
            at = _join(where, name)
            if kind == "bool":
                if not isinstance(x, bool):
                    raise ProtocolError(at, "must be true or false")
            elif kind == "int":
                _int(x, at, lo, hi)
            elif not _is_number(x) or not lo <= x <= hi:
                raise ProtocolError(at, "must be a number %s..%s" % (lo, hi))
        if "altitude" in care and "pressure" in care:
            raise ProtocolError(_join(where, "pressure"), "give altitude or pressure, not both")


def check_offer(o, path="firmware"):
    """A release offered in an answer: {"version", "size", "probation_s"}."""
    _object(o, path, ("version",) + tuple(row[0] for row in OFFER))
    _text(o["version"], _join(path, "version"), 1, fields.FIRMWARE_MAX)
    for name, lo, hi in OFFER:
        _int(o[name], _join(path, name), lo, hi)


def check_fw(s, path):
    """The board's firmware report (status.fw): {"run", "target", "state", "error"}."""
    _object(s, path, ("run", "target", "state", "error"))
    _text(s["run"], _join(path, "run"), 1, fields.FIRMWARE_MAX)
    _text(s["target"], _join(path, "target"), 0, fields.FIRMWARE_MAX)
    if s["state"] not in FW_STATES:
        raise ProtocolError(_join(path, "state"), "must be one of %s" % ", ".join(FW_STATES))
    _text(s["error"], _join(path, "error"), 0, FW_ERROR_MAX)
