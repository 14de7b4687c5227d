"""Thai Air Quality Index (Pollution Control Department, PM2.5 bands in force since 1 June 2023).

Sub-index of one pollutant: linear interpolation inside the band holding the 24-h mean X,
    I = (Ij - Ii) / (Xj - Xi) * (X - Xi) + Ii,
rounded to a whole number (half up). The overall AQI is the highest sub-index.

Choices the PCD table leaves open, and what this module does:
- Precision. The table gives PM2.5 to 0.1 ug/m3 and PM10 to 1 ug/m3, leaving gaps between bands (15.0 / 15.1).
  The mean is TRUNCATED to the table's precision before the band is looked up (as the US EPA's AQI technical
  assistance document does for PM), so 15.05 -> 15.0 -> "very good", 15.19 -> 15.1 -> "good". Every truncated
  value then lies in exactly one band.
- Upper end of the red band. PCD publishes only "> 200" (PM2.5 >= 75.1, PM10 >= 181). We map
  AQI 201-500 to PM2.5 75.1-500.0 ug/m3 and PM10 181-600 ug/m3: 500 ug/m3 is both the PMS5003's effective
  range and the US EPA's top PM2.5 breakpoint (500.4 -> AQI 500); 600 ug/m3 is close to the EPA's top PM10
  breakpoint (604 -> 500). Above the top the index is capped at 500 and reported as `above_scale`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

# (AQI low, AQI high, colour RGB, English name, Thai name)
LEVELS = (
    (0, 25, (0, 191, 243), "very good", "คุณภาพอากาศดีมาก"),
    (26, 50, (0, 166, 81), "good", "คุณภาพอากาศดี"),
    (51, 100, (253, 192, 78), "moderate", "ปานกลาง"),
    (101, 200, (242, 101, 34), "starting to affect health", "เริ่มมีผลกระทบต่อสุขภาพ"),
    (201, 500, (205, 0, 0), "affects health", "มีผลกระทบต่อสุขภาพ"),
)

# Concentration breakpoints per level (low, high), 24-h means in ug/m3, with the table's precision.
BREAKPOINTS = {
    "pm25": ((Decimal("0.0"), Decimal("15.0")), (Decimal("15.1"), Decimal("25.0")),
             (Decimal("25.1"), Decimal("37.5")), (Decimal("37.6"), Decimal("75.0")),
             (Decimal("75.1"), Decimal("500.0"))),
    "pm10": ((Decimal("0"), Decimal("50")), (Decimal("51"), Decimal("80")), (Decimal("81"), Decimal("120")),
             (Decimal("121"), Decimal("180")), (Decimal("181"), Decimal("600"))),
}
PRECISION = {"pm25": Decimal("0.1"), "pm10": Decimal("1")}
AQI_MAX = 500


@dataclass(frozen=True)
class SubIndex:
    pollutant: str
    concentration: Decimal  # the truncated 24-h mean the index was computed from
    aqi: int
    level: int  # index into LEVELS
    above_scale: bool


def truncate(pollutant: str, value: float) -> Decimal:
    """The mean truncated to the PCD table's precision (0.1 for PM2.5, 1 for PM10)."""
    if not math.isfinite(value) or value < 0:
        raise ValueError("%s mean must be a finite number, not negative: %r" % (pollutant, value))
    # round(.., 6) first so that a mean like 37.599999999999994 (float noise for 37.6) is not cut to 37.5
    return Decimal(repr(round(float(value), 6))).quantize(PRECISION[pollutant], rounding=ROUND_FLOOR)


def sub_index(pollutant: str, value: float) -> SubIndex:
    """The Thai AQI sub-index of one pollutant ('pm25' or 'pm10') from its 24-h mean in ug/m3."""
    if pollutant not in BREAKPOINTS:
        raise ValueError("unknown pollutant %r (expected pm25 or pm10)" % pollutant)
    x = truncate(pollutant, value)
    bands = BREAKPOINTS[pollutant]
    top = bands[-1][1]
    if x > top:
        return SubIndex(pollutant, x, AQI_MAX, len(LEVELS) - 1, True)
    for level, (lo, hi) in enumerate(bands):
        if lo <= x <= hi:
            i_lo, i_hi = LEVELS[level][0], LEVELS[level][1]
            i = Decimal(i_hi - i_lo) / (hi - lo) * (x - lo) + i_lo
            return SubIndex(pollutant, x, int(i.quantize(Decimal(1), rounding=ROUND_HALF_UP)), level, False)
    raise AssertionError("truncated value %s fell between bands" % x)  # impossible by construction


def overall(pm25: float | None, pm10: float | None) -> tuple[SubIndex | None, dict[str, SubIndex]]:
    """(the dominant sub-index or None when neither mean is known, every sub-index computed)."""
    subs = {}
    if pm25 is not None:
        subs["pm25"] = sub_index("pm25", pm25)
    if pm10 is not None:
        subs["pm10"] = sub_index("pm10", pm10)
    if not subs:
        return None, subs
    # the highest index wins; on a tie PM2.5 is named (it is the pollutant the 2023 bands are about)
    best = max(subs.values(), key=lambda s: (s.aqi, s.pollutant == "pm25"))
    return best, subs


def level_of(aqi: int) -> int:
    """The LEVELS index that an AQI value falls in."""
    for n, (lo, hi, _rgb, _en, _th) in enumerate(LEVELS):
        if aqi <= hi:
            return n
    return len(LEVELS) - 1


def colour(level: int) -> str:
    """CSS colour of a level."""
    r, g, b = LEVELS[level][2]
    return "rgb(%d,%d,%d)" % (r, g, b)


def pm25_bands() -> list[tuple[float, float, str]]:
    """(low, high, colour) concentration bands of PM2.5, for plots: each band runs up to the next one's start."""
    out = []
    bands = BREAKPOINTS["pm25"]
    for n, (lo, _hi) in enumerate(bands):
        upper = float(bands[n + 1][0]) if n + 1 < len(bands) else float(bands[n][1])
        out.append((float(lo), upper, colour(n)))
    return out


def daily_mean(rows: list[dict], metric: str, end: float, hours: int = 24) -> tuple[float | None, int]:
    """Mean of `metric` over the `hours` before `end`, as the mean of hourly means (PCD averages hourly data).

    Readings flagged 'stuck' or 'out_of_range' do not count. Returns (mean or None, hours with data), so a
    caller can say how complete the 24-h window was (PCD asks for at least 18 of 24 hours).
    """
    start = end - hours * 3600
    hourly: dict[int, list[float]] = {}
    for r in rows:
        t, v = r.get("t"), r.get(metric)
        if t is None or v is None or not (start < t <= end):
            continue
        flags = set(filter(None, (r.get("flags") or "").split(",")))
        if flags & {"stuck", "out_of_range"}:
            continue
        hourly.setdefault(math.ceil((t - start) / 3600) - 1, []).append(float(v))  # hour 0..hours-1
    if not hourly:
        return None, 0
    means = [sum(vs) / len(vs) for vs in hourly.values()]
    return sum(means) / len(means), len(hourly)


def clock_hours(end: float, hours: int = 24) -> tuple[int, int]:
    """[first, last] Unix starts of the `hours` clock hours ending with the one that holds `end`."""
    last = int(end // 3600 * 3600)
    return last - (hours - 1) * 3600, last


def mean_of_hours(hour_means: list[float | None]) -> tuple[float | None, int]:
    """The 24-h mean as the mean of the hourly means of the clock hours that have data, and how many had."""
    means = [m for m in hour_means if m is not None]
    if not means:
        return None, 0
    return sum(means) / len(means), len(means)
