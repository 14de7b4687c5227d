"""Small server-side SVG plots: time series (with colour bands, guide lines, flagged markers) and bars.

Every plotted point carries its data (`data-t`, `data-value`, and `data-n`, `data-t0`, `data-t1` when it is the
mean of several readings), so what is drawn can be checked against the database.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape

from airwatt.agent.tz import THAILAND

LEFT, RIGHT, TOP, BOTTOM = 58, 14, 26, 34
TIME_STEPS = (600, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


@dataclass
class Series:
    key: str  # metric name, written as data-series
    label: str
    colour: str
    points: list[tuple[float, float, bool]] = field(default_factory=list)  # (t, value, flagged)
    means: list[dict] | None = None  # already bucket means (t, v, n, b0, b1; from the rollups): drawn as they are


def _num(v: float) -> str:
    """A short, exact-enough number for attributes and coordinates."""
    if float(v).is_integer():
        return str(int(v))
    return ("%.6f" % v).rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] with about `count` steps of 1, 2, 2.5 or 5 x 10^k."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 10))
    return ticks


def downsample(points: list[tuple[float, float, bool]], t0: float, t1: float, max_points: int) -> list[dict]:
    """Markers for the plot: every flagged reading as itself; unflagged ones as they are when few enough,
    else as the mean of each of `max_points` equal time buckets (with n, t0, t1 of the bucket)."""
    good = [p for p in points if not p[2]]
    out = [{"t": t, "v": v, "flagged": True, "n": 1} for t, v, f in points if f]
    if len(good) <= max_points:
        out += [{"t": t, "v": v, "flagged": False, "n": 1} for t, v, _ in good]
    else:
        width = (t1 - t0) / max_points
        # running sums per bucket (a day of readings is thousands of points per plot)
        count, tsum, vsum = [0] * max_points, [0.0] * max_points, [0.0] * max_points
        last = max_points - 1
        for t, v, _ in good:
            b = int((t - t0) // width)
            if b > last:
                b = last
            count[b] += 1
            tsum[b] += t
            vsum[b] += v
        for b in range(max_points):
            n = count[b]
            if n:
                out.append({"t": tsum[b] / n, "v": vsum[b] / n, "flagged": False, "n": n, "b0": t0 + b * width,
                            "b1": t0 + (b + 1) * width})
    out.sort(key=lambda m: m["t"])
    return out


def _time_ticks(t0: float, t1: float, tz: timezone) -> tuple[list[float], int]:
    span = max(t1 - t0, 1)
    step = next((s for s in TIME_STEPS if span / s <= 8), TIME_STEPS[-1])
    offset = tz.utcoffset(None).total_seconds()
    first = math.ceil((t0 + offset) / step) * step - offset
    ticks = []
    t = first
    while t <= t1:
        ticks.append(t)
        t += step
    return ticks, step


def _time_label(t: float, step: int, tz: timezone) -> str:
    d = datetime.fromtimestamp(t, tz)
    if step >= 86400:
        return d.strftime("%d/%m")
    if d.hour == 0 and d.minute == 0:
        return d.strftime("%d/%m")
    return d.strftime("%H:%M")


def time_plot(series: list[Series], t0: float, t1: float, *, plot_id: str, unit: str,
              bands: list[tuple[float, float, str]] = (), guides: list[tuple[float, str, str]] = (),
              y_floor: float | None = None, y_min_top: float | None = None, flagged_label: str = "flagged",
              no_data: str = "no data", width: int = 880, height: int = 230, max_points: int = 720,
              tz: timezone = THAILAND, tz_label: str = "ICT (UTC+7)") -> str:
    """An SVG time plot. bands: (low, high, colour) drawn behind; guides: (value, colour, label) lines."""
    markers = {s.key: ([dict(m, flagged=False) for m in s.means] if s.means is not None
                       else downsample(s.points, t0, t1, max_points)) for s in series}
    values = [m["v"] for ms in markers.values() for m in ms]
    lo = min(values + [g[0] for g in guides]) if values or guides else 0.0
    hi = max(values + [g[0] for g in guides]) if values or guides else 1.0
    if y_floor is not None:
        lo = min(lo, y_floor)
    if y_min_top is not None:
        hi = max(hi, y_min_top)
    pad = (hi - lo) * 0.08 or 1.0
    ticks = nice_ticks(lo - (0 if y_floor is not None and lo >= y_floor else pad), hi + pad)
    if y_floor is not None and ticks[0] < y_floor <= lo:
        ticks = [t for t in ticks if t >= y_floor] or [y_floor]
    ymin, ymax = ticks[0], ticks[-1]
    if ymax <= ymin:
        ymax = ymin + 1
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * pw

    def y(v: float) -> float:
        return TOP + ph - (v - ymin) / (ymax - ymin) * ph

    out = ['<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="%s" viewBox="0 0 %d %d" width="%d" '
           'height="%d" data-t0="%s" data-t1="%s" data-ymin="%s" data-ymax="%s" role="img">'
           % (escape(plot_id), width, height, width, height, _num(t0), _num(t1), _num(ymin), _num(ymax)),
           '<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="#bbb"/>' % (LEFT, TOP, pw, ph)]
    for b_lo, b_hi, colour in bands:
        top, bottom = min(max(b_hi, ymin), ymax), min(max(b_lo, ymin), ymax)
        if top > bottom:
            out.append('<rect class="band" x="%d" y="%.1f" width="%d" height="%.1f" fill="%s" fill-opacity="0.35" '
                       'data-low="%s" data-high="%s"/>' % (LEFT, y(top), pw, y(bottom) - y(top), colour,
                                                          _num(b_lo), _num(b_hi)))
    for v in ticks:
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#000" stroke-opacity="0.08"/>'
                   '<text x="%d" y="%.1f" text-anchor="end" class="tick">%s</text>'
                   % (LEFT, LEFT + pw, y(v), y(v), LEFT - 5, y(v) + 4, _num(v)))
    tticks, step = _time_ticks(t0, t1, tz)
    for t in tticks:
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#000" stroke-opacity="0.08"/>'
                   '<text x="%.1f" y="%d" text-anchor="middle" class="tick">%s</text>'
                   % (x(t), x(t), TOP, TOP + ph, x(t), TOP + ph + 16, _time_label(t, step, tz)))
    out.append('<text x="6" y="%d" class="unit">%s</text>' % (TOP - 10, escape(unit)))
    # the time zone of the time axis, under its first tick
    out.append('<text x="%d" y="%d" class="tick tz">%s</text>' % (LEFT, height - 2, escape(tz_label)))
    # Guides are lines across the plot; their labels sit in the strip above it, after the unit, each with a
    # dashed swatch: a label on the line itself hid the data wherever the readings crossed it.
    gx = LEFT + 6
    for value, colour, text in guides:
        if ymin <= value <= ymax:
            out.append('<line class="guide" data-value="%s" x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" '
                       'stroke-width="1.5" stroke-dasharray="6 4"/>'
                       % (_num(value), LEFT, LEFT + pw, y(value), y(value), colour))
            out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="1.5" stroke-dasharray="4 3"/>'
                       '<text x="%d" y="%d" class="guide-label" data-value="%s" fill="%s">%s</text>'
                       % (gx, gx + 16, TOP - 13, TOP - 13, colour, gx + 20, TOP - 9, _num(value), colour,
                          escape(text)))
            gx += 40 + int(7 * len(text))
    for s in series:
        ms = markers[s.key]
        good = [m for m in ms if not m["flagged"]]
        gaps = sorted(b["t"] - a["t"] for a, b in zip(good, good[1:]))
        limit = 3 * gaps[len(gaps) // 2] if gaps else 0
        segment: list[str] = []
        segments = []
        for a, b in zip([None] + good, good):
            if a is not None and b["t"] - a["t"] > limit:
                segments.append(segment)
                segment = []
            segment.append("%.1f,%.1f" % (x(b["t"]), y(b["v"])))
        segments.append(segment)
        for seg in segments:
            if len(seg) > 1:
                out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'
                           % (s.colour, " ".join(seg)))
        for m in ms:
            extra = ""
            if "b0" in m:  # the mean of a time bucket
                extra = ' data-n="%d" data-b0="%s" data-b1="%s"' % (m["n"], _num(m["b0"]), _num(m["b1"]))
            if m["flagged"]:
                out.append('<circle class="pt flagged" data-series="%s" data-t="%s" data-value="%s" cx="%.1f" '
                           'cy="%.1f" r="3.5" fill="#fff" stroke="%s" stroke-width="1.8"/>'
                           % (s.key, _num(m["t"]), _num(m["v"]), x(m["t"]), y(m["v"]), s.colour))
            else:
                out.append('<circle class="pt" data-series="%s" data-t="%s" data-value="%s"%s cx="%.1f" cy="%.1f" '
                           'r="1.8" fill="%s"/>' % (s.key, _num(m["t"]), _num(m["v"]), extra, x(m["t"]), y(m["v"]),
                                                    s.colour))
    # legend, top right: series swatches and the hollow "flagged" marker
    lx = width - RIGHT
    items = [(s.label, s.colour, False) for s in series] + [(flagged_label, "#555", True)]
    for text, colour, hollow in reversed(items):
        lx -= 24 + 6.5 * len(text)  # a rough text width: 11 px font
        out.append('<circle cx="%.1f" cy="%d" r="4" fill="%s" stroke="%s" stroke-width="1.8"/>'
                   '<text x="%.1f" y="%d" class="legend">%s</text>'
                   % (lx, TOP - 13, "#fff" if hollow else colour, colour, lx + 8, TOP - 9, escape(text)))
    if not values:
        out.append('<text x="%d" y="%d" text-anchor="middle" class="nodata">%s</text>'
                   % (LEFT + pw // 2, TOP + ph // 2, escape(no_data)))
    out.append("</svg>")
    return "\n".join(out)


def bar_plot(bars: list[tuple[str, float]], *, plot_id: str, unit: str, colour: str = "#3b7dd8",
             no_data: str = "no data", width: int = 880, height: int = 200,
             label: Callable[[str], str] | None = None) -> str:
    """An SVG bar chart of (day 'YYYY-MM-DD', value) pairs with the value written above each bar; or of (month
    'YYYY-MM', value) pairs, each bar's `label(month)` below it."""
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM
    top = max([v for _, v in bars] + [0.0])
    ticks = nice_ticks(0, top * 1.1 if top > 0 else 1)
    ymax = ticks[-1]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="%s" viewBox="0 0 %d %d" width="%d" '
           'height="%d" data-ymax="%s" role="img">' % (escape(plot_id), width, height, width, height, _num(ymax)),
           '<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="#bbb"/>' % (LEFT, TOP, pw, ph)]
    for v in ticks:
        yy = TOP + ph - v / ymax * ph
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#000" stroke-opacity="0.08"/>'
                   '<text x="%d" y="%.1f" text-anchor="end" class="tick">%s</text>'
                   % (LEFT, LEFT + pw, yy, yy, LEFT - 5, yy + 4, _num(v)))
    out.append('<text x="6" y="%d" class="unit">%s</text>' % (TOP - 10, escape(unit)))
    slot = pw / max(len(bars), 1)
    every = max(1, math.ceil(len(bars) / 16))  # day labels: at most 16
    for n, (day, v) in enumerate(bars):
        h = v / ymax * ph
        bx = LEFT + n * slot + slot * 0.15
        out.append('<rect class="bar" data-%s="%s" data-value="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" '
                   'fill="%s"/>' % ("day" if len(day) > 7 else "month", escape(day), _num(round(v, 6)), bx,
                                    TOP + ph - h, slot * 0.7, h, colour))
        if len(bars) <= 16:  # values written above the bars only while they fit
            out.append('<text x="%.1f" y="%.1f" text-anchor="middle" class="tick">%s</text>'
                       % (bx + slot * 0.35, TOP + ph - h - 4, "%.2f" % v))
        if n % every == 0:
            out.append('<text x="%.1f" y="%d" text-anchor="middle" class="tick">%s</text>'
                       % (bx + slot * 0.35, TOP + ph + 16,
                          escape(label(day)) if label else "%s/%s" % (day[8:10], day[5:7])))
    if not bars:
        out.append('<text x="%d" y="%d" text-anchor="middle" class="nodata">%s</text>'
                   % (LEFT + pw // 2, TOP + ph // 2, escape(no_data)))
    out.append("</svg>")
    return "\n".join(out)
