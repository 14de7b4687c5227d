"""City Carbon Footprint: kWh per day and month from cumulative meter counters, and kgCO2e.

The PZEM-004T reports `energy_wh`, a cumulative counter (1 Wh, 0..4294967295). Energy in a period is the sum of
the differences between consecutive readings of one device, taken in the device's sampling order (`seq`, which
the board persists across reboots), whatever order the readings arrived in. Each difference is classified:

- normal: the counter rose by no more than the meter could deliver in the time between the two readings
  (MAX_POWER_W from the field table, plus 1 Wh for the counter's resolution): that rise is counted.
- wrap: the counter fell, and going round 2**32 gives a plausible rise: that rise is counted.
- reset: the counter fell otherwise (the energy-reset command, or a new meter starting near 0): the new value is
  the energy since the reset and is counted if plausible; what was used between the earlier reading and the reset
  is unknown and counted as 0 (never negative, never doubled).
- jump: the counter rose (or, after a fall, restarted) by more than is physically possible: a replaced meter
  with a used counter. Nothing is counted; the new value is the baseline from then on.

Readings with no wall time, no counter or flagged 'stuck' are left out (the next good reading's difference
covers them, so no energy is lost). A duplicate `seq` counts once.

A difference spanning several local days (Thailand, UTC+7, no daylight saving) is split between the days in
proportion to the time of the interval each covers (linear: constant power assumed during a gap); a zero or
negative interval (clock set between readings) is given to the day of the later reading.

kgCO2e = kWh x the grid emission factor for the day's year (TGO, scope 2). FACTORS keeps one factor per year
so that a past report computed again gives the same figures; config may add or override one year.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from airwatt.agent.tz import THAILAND
from airwatt.protocol import fields

WRAP = fields.metric("energy", "energy_wh")[6] + 1  # 2**32: the counter field's range is 0..4294967295
MAX_POWER_W = fields.metric("energy", "power")[6]  # 30000 W: the most the meter can measure
EPOCH_DAY = datetime(1970, 1, 1)

# Grid emission factors (kgCO2e/kWh) by the year they apply to.
FACTORS: dict[int, float] = {
    2026: 0.4750,  # TGO, Thailand Greenhouse Gas Management Organization, scope 2, in force from 2026-01-01
}
SKIP_FLAGS = frozenset({"stuck", "out_of_range"})


@dataclass(frozen=True)
class Delta:
    t0: float
    t1: float
    wh: float
    kind: str  # normal | wrap | reset | jump


def _skip(flags: str) -> bool:
    return any(f in SKIP_FLAGS for f in flags.split(","))


def _tuples(rows: list[dict]) -> list[tuple]:
    """Readings as (seq or None, t, energy_wh, flags) tuples, the form the counting works on."""
    return [(r.get("seq"), r.get("t"), r.get("energy_wh"), r.get("flags") or "") for r in rows]


def _usable(readings: list[tuple]) -> list[tuple]:
    """Counter readings that can be used, one per seq, in sampling order."""
    good = [r for r in readings if r[1] is not None and r[2] is not None and not (r[3] and _skip(r[3]))]
    # sampling order is seq (stable: of a duplicated seq the first given is kept); no seq (hand-made data): time
    good.sort(key=lambda r: (r[0], 0.0) if r[0] is not None else (-1, r[1]))
    out = []
    last = None
    for r in good:
        if r[0] is not None and r[0] == last:
            continue
        last = r[0]
        out.append(r)
    return out


def _steps(readings: list[tuple]):
    """(t0, t1, wh, kind) for each pair of consecutive usable readings (see the module docstring)."""
    good = _usable(readings)
    for a, b in zip(good, good[1:]):
        kind, wh = classify(int(a[2]), int(b[2]), b[1] - a[1])
        yield a[1], b[1], wh, kind


def classify(c0: int, c1: int, dt: float) -> tuple[str, float]:
    """(kind, Wh counted) of the counter going from c0 to c1 in dt seconds (see the module docstring)."""
    limit = MAX_POWER_W * max(dt, 0.0) / 3600.0 + 1.0
    if c1 >= c0:
        rise = c1 - c0
        return ("normal", float(rise)) if rise <= limit else ("jump", 0.0)
    if WRAP - c0 + c1 <= limit:
        return "wrap", float(WRAP - c0 + c1)
    if c1 <= limit:
        return "reset", float(c1)
    return "jump", 0.0


def usable(t: float | None, energy_wh: int | None, flags: str) -> bool:
    """Whether a counter reading takes part in the differences (wall time, a value, no 'stuck' flag)."""
    return t is not None and energy_wh is not None and not (flags and _skip(flags))


def deltas(rows: list[dict]) -> list[Delta]:
    """The classified counter differences between consecutive usable readings of ONE device."""
    return [Delta(*step) for step in _steps(_tuples(rows))]


def _offset(tz: timezone) -> float:
    # Thailand has one fixed offset (no daylight saving), which lets days be counted with plain arithmetic
    offset = tz.utcoffset(None)
    if offset is None:
        raise ValueError("a fixed-offset timezone is needed, not %r" % tz)
    return offset.total_seconds()


def _day_name(day: int) -> str:
    return (EPOCH_DAY + timedelta(days=day)).strftime("%Y-%m-%d")


def _split(t0: float, t1: float, wh: float, off: float, out: dict[int, float], size: int = 86400) -> None:
    """Add `wh` used between t0 and t1 to `out` (local period number -> Wh, periods of `size` seconds: days, or
    hours for the rollups) in proportion to time."""
    if t1 <= t0:
        day = math.floor((t1 + off) / size)
        out[day] = out.get(day, 0.0) + wh
        return
    start = t0
    while start < t1:
        day = math.floor((start + off) / size)
        end = min((day + 1) * size - off, t1)
        out[day] = out.get(day, 0.0) + wh * (end - start) / (t1 - t0)
        start = end


def split_hours(t0: float, t1: float, wh: float, out: dict[int, float]) -> None:
    """Add `wh` used between t0 and t1 to `out` (Unix start of each hour -> Wh) in proportion to time: summed by
    local day (Thailand's offset is whole hours) this is exactly what the daily split gives."""
    hours: dict[int, float] = {}
    _split(t0, t1, wh, 0.0, hours, 3600)
    for h, v in hours.items():
        out[h * 3600] = out.get(h * 3600, 0.0) + v


def local_day(t: float, tz: timezone = THAILAND) -> str:
    return _day_name(math.floor((t + _offset(tz)) / 86400))


def daily_wh(rows: list[dict], tz: timezone = THAILAND) -> dict[str, float]:
    """Wh per local day ('YYYY-MM-DD') of ONE device from its counter readings (dicts with seq, t,
    energy_wh, flags)."""
    return _daily(_tuples(rows), tz)


def _daily(readings: list[tuple], tz: timezone) -> dict[str, float]:
    off = _offset(tz)
    out: dict[int, float] = {}
    for t0, t1, wh, _kind in _steps(readings):
        if wh:
            _split(t0, t1, wh, off, out)
    return {_day_name(day): v for day, v in sorted(out.items())}


def monthly(daily: dict[str, float]) -> dict[str, float]:
    """Sum a per-day mapping by month ('YYYY-MM')."""
    out: dict[str, float] = {}
    for day, v in daily.items():
        out[day[:7]] = out.get(day[:7], 0.0) + v
    return out


def factors_table(extra: dict[int, float] | None = None) -> dict[int, float]:
    """FACTORS with the configured year(s) added or overriding."""
    table = dict(FACTORS)
    for year, value in (extra or {}).items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError("emission factor for %s must be a non-negative number, got %r" % (year, value))
        table[int(year)] = float(value)
    return table


def factor_for(year: int, table: dict[int, float]) -> tuple[float, int]:
    """(kgCO2e/kWh, the year the factor is for): that year's, else the latest earlier one, else the earliest."""
    if year in table:
        return table[year], year
    earlier = [y for y in table if y <= year]
    y = max(earlier) if earlier else min(table)
    return table[y], y


class Row(NamedTuple):
    """kWh and kgCO2e of a site in a period (a tuple: cheap to make by the thousand)."""

    site: str
    period: str  # 'YYYY-MM-DD' or 'YYYY-MM'
    kwh: float
    kgco2e: float
    factor: float
    factor_year: int


def site_rows(per_device: dict[str, dict[str, float]], site_of: dict[str, str],
              table: dict[int, float]) -> list[Row]:
    """Rows of kWh and kgCO2e per site and period from Wh per device and period."""
    sums: dict[tuple[str, str], float] = {}
    for device, periods in per_device.items():
        site = site_of.get(device) or ""
        for period, wh in periods.items():
            sums[(site, period)] = sums.get((site, period), 0.0) + wh
    rows = []
    for (site, period), wh in sorted(sums.items()):
        factor, year = factor_for(int(period[:4]), table)
        kwh = wh / 1000.0
        rows.append(Row(site, period, kwh, kwh * factor, factor, year))
    return rows
