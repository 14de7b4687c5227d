"""Query parameters and forms of the operators' pages, read in one place: a value the pages cannot use is a 400
that names the parameter and what it takes, never a 500 further down (a NaN time, a year 9999, a bad charset)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any

from aiohttp import web
from airwatt.protocol import fields

# Times the pages can show: the protocol's wall-time range (readings never lie outside it).
EARLIEST, LATEST = fields.MIN_WALL_TIME, fields.MAX_WALL_TIME
MAX_TEXT = 200
_WHOLE = re.compile(r"-?[0-9]{1,12}")


def bad(name: str, why: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text="%s %s" % (name, why))


def text(request: web.Request, name: str, default: str | None = None) -> str | None:
    """A free-text parameter (a site name): at most MAX_TEXT characters, no control characters."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if len(value) > MAX_TEXT or any(ord(ch) < 32 for ch in value):
        raise bad(name, "must be at most %d characters without control characters" % MAX_TEXT)
    return value


def choice(request: web.Request, name: str, choices: Iterable[str], default: str) -> str:
    """One of `choices`; absent or empty means default."""
    choices = tuple(choices)
    value = request.query.get(name) or default
    if value not in choices:
        raise bad(name, "must be one of %s" % ", ".join(choices))
    return value


def whole(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """A whole number, brought within lo..hi (a day count past the end is the longest the page shows)."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not _WHOLE.fullmatch(value):
        raise bad(name, "must be a whole number (%d to %d)" % (lo, hi))
    return min(max(int(value), lo), hi)


def moment(request: web.Request, name: str, tz: tzinfo, tz_name: str) -> float | None:
    """A point in time as Unix seconds or YYYY-MM-DDTHH:MM in tz, within the protocol's wall-time range; None
    when absent."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    what = "must be Unix seconds or YYYY-MM-DDTHH:MM (%s), from %s to %s" % (
        tz_name, datetime.fromtimestamp(EARLIEST, tz).strftime("%Y-%m-%d"),
        datetime.fromtimestamp(LATEST, tz).strftime("%Y-%m-%d"))
    try:
        t = float(value)
    except ValueError:
        try:
            t = datetime.strptime(value, "%Y-%m-%dT%H:%M").replace(tzinfo=tz).timestamp()
        except (ValueError, OverflowError):
            raise bad(name, what) from None
    if not math.isfinite(t) or not EARLIEST <= t <= LATEST:
        raise bad(name, what)
    return t


async def form(request: web.Request, timeout_s: float) -> Mapping[str, Any]:
    """The POSTed form; 400 when it cannot be read (broken multipart, unknown charset), 408 when it is slow."""
    try:
        async with asyncio.timeout(timeout_s):
            return await request.post()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the form did not arrive within %g s" % timeout_s) from None
    except (ValueError, LookupError) as err:  # UnicodeError is a ValueError
        raise web.HTTPBadRequest(text="the form could not be read: %s" % err) from None
