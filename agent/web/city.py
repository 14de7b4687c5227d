"""The city view (`/`, the City Dashboard's feed): per site and for the city, power now, energy and its carbon
today and this month, the current Thai AQI and CO2, and how many boards are online; a map of the boards.

Energy, carbon and AQI come from the rollups (rollup_day for kWh, rollup_hour for the 24-h PM means). "Now"
(kW, CO2) is each board's newest good reading of its last ONLINE_INTERVALS upload intervals: a seek on the
(device, t) index bounded by that window, never a scan of the readings.

The map is Leaflet (XStatic-Leaflet, Leaflet's own files as a Python package, so the installed agent serves them
itself). No tile server is reachable from a building's network as a rule: the boards are vector circle markers
on a plain background with a scale bar, and show without any tiles.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import sqlite_utils
from aiohttp import web

from .. import aqi, carbon, meters, rollup, store
from . import svg
from .i18n import label
from .layout import FACTORS_KEY, ONLINE_INTERVALS, READER_KEY, STATE_COLOURS, _lang, _page, _url, device_state, period

# Leaflet 1.9 as packaged by XStatic (OpenStack's packaging of JS libraries as Python packages)
import xstatic.pkg.leaflet as _leaflet

LEAFLET_DIR = Path(_leaflet.BASE_DIR)
LEAFLET_JS = "/static/leaflet-%s.js" % _leaflet.VERSION  # versioned: cached for good by browsers
# GOOD: the readings that count (as in the rollups): not flagged stuck or out_of_range
_LATEST = ("SELECT {col} FROM readings WHERE device = ? AND t > ? AND t <= ? AND {col} IS NOT NULL AND "
           + rollup.GOOD_FLAGS_SQL + " ORDER BY t DESC LIMIT 1")


def month_start(now: float) -> float:
    """Unix start of the Thai local month holding now."""
    return datetime.fromtimestamp(now, svg.THAILAND).replace(day=1, hour=0, minute=0, second=0,
                                                              microsecond=0).timestamp()


def latest(db: sqlite_utils.Database, device: str, column: str, since: float, now: float) -> float | None:
    """The newest good value of a metric in (since, now], or None."""
    row = db.execute(_LATEST.format(col=column), (device, since, now)).fetchone()
    return None if row is None else float(row[0])


def board_aqi(db: sqlite_utils.Database, device: str, now: float) -> tuple[aqi.SubIndex | None, int]:
    """The Thai AQI of a board (24-h PM means of the last 24 clock hours, from the hourly rollups) and the hours
    that had data."""
    first, last = aqi.clock_hours(now)
    hours = rollup.hours(db, device, ("pm25", "pm10"), first, last + 1)
    pm25, h25 = aqi.mean_of_hours([h[4] for h in hours["pm25"]])
    pm10, h10 = aqi.mean_of_hours([h[4] for h in hours["pm10"]])
    best, _subs = aqi.overall(pm25, pm10)
    return best, max(h25, h10)


def city_data(db: sqlite_utils.Database, now: float, table: dict[int, float]) -> dict[str, Any]:
    """Per board, per site and for the city: what the city view shows."""
    today = carbon.local_day(now)
    month = today[:7]
    factor, factor_year = carbon.factor_for(int(today[:4]), table)
    wh = rollup.daily_wh(db, month_start(now), now + 1)
    boards = []
    for d in store.list_devices(db):
        window = now - ONLINE_INTERVALS * (d["interval_s"] or 60)
        days = wh.get(d["id"], {})
        kwh_today = days.get(today, 0.0) / 1000.0
        kwh_month = sum(v for k, v in days.items() if k.startswith(month)) / 1000.0
        power = meters.supply_power(db, d["id"], window, now, rollup.GOOD_FLAGS_SQL)  # several meters: the supply's
        if power is False:
            power = latest(db, d["id"], "power", window, now)
        best, hours = board_aqi(db, d["id"], now)
        boards.append({
            "id": d["id"], "name": d["name"], "site": d["site"] or "", "lat": d["lat"], "lon": d["lon"],
            "state": device_state(d["last_seen"], d["interval_s"], now),
            "kw": None if power is None else power / 1000.0,
            "co2": latest(db, d["id"], "co2", window, now),
            "kwh_today": kwh_today, "kwh_month": kwh_month,
            "aqi": None if best is None else best.aqi, "aqi_level": None if best is None else best.level,
            "aqi_hours": hours})
    sites = {}
    for b in boards:
        sites.setdefault(b["site"], []).append(b)
    return {"boards": boards, "sites": [(s, summarise(bs, factor)) for s, bs in sorted(sites.items())],
            "city": summarise(boards, factor), "factor": factor, "factor_year": factor_year,
            "today": today, "month": month}


def summarise(boards: list[dict], factor: float) -> dict[str, Any]:
    """Sums (kW now, kWh) and worst values (AQI, CO2) over boards; carbon is kWh times the grid factor."""
    def worst(key: str) -> Any:
        values = [b[key] for b in boards if b[key] is not None]
        return max(values) if values else None

    kw = [b["kw"] for b in boards if b["kw"] is not None]
    out = {"boards": len(boards), "kw": sum(kw) if kw else None, "co2": worst("co2"), "aqi": worst("aqi"),
           "kwh_today": sum(b["kwh_today"] for b in boards), "kwh_month": sum(b["kwh_month"] for b in boards)}
    out["kg_today"] = out["kwh_today"] * factor
    out["kg_month"] = out["kwh_month"] * factor
    for state in ("online", "late", "offline", "never"):
        out[state] = sum(1 for b in boards if b["state"] == state)
    return out


def amount(value: float) -> str:
    """kW, kWh and kgCO2e as the city view shows them, one rule for every such cell (today's and this month's
    alike): two decimals under 10, one under 100, whole numbers above (0.01, 2.35, 23.5, 235, 2350)."""
    size = abs(value)
    return "%.*f" % (2 if size < 9.995 else 1 if size < 99.95 else 0, value)


def _num(value: float | None, key: str, fmt: str | None = None) -> str:
    """A number cell: `fmt` (a %-format) or else amount()."""
    if value is None:
        return '<td class="num" data-key="%s" data-value="" data-sort="-1">-</td>' % key
    return '<td class="num" data-key="%s" data-value="%.6f" data-sort="%.6f">%s</td>' % (
        key, value, value, fmt % value if fmt else amount(value))


def _aqi_cell(value: int | None) -> str:
    if value is None:
        return '<td class="aqi" data-key="aqi" data-value="" data-sort="-1">-</td>'
    level = aqi.level_of(value)
    return ('<td class="aqi" data-key="aqi" data-value="%d" data-sort="%d" style="background:%s;color:%s">%d</td>'
            % (value, value, aqi.colour(level), "#fff" if level in (1, 4) else "#000", value))


def _row(lang: str, s: dict[str, Any]) -> str:
    states = " / ".join('<span style="color:%s" data-state="%s" title="%s">%d</span>'
                        % (STATE_COLOURS[k], k, escape(label(lang, k)), s[k]) for k in ("online", "late", "offline"))
    if s["never"]:
        states += ' <span class="muted" data-state="never">(+%d %s)</span>' % (s["never"],
                                                                             escape(label(lang, "never")))
    return ("".join(_num(s[k], k) for k in ("kw", "kwh_today", "kg_today", "kwh_month", "kg_month"))
            + _aqi_cell(s["aqi"]) + _num(s["co2"], "co2", "%.0f")
            + '<td class="boards" data-sort="%d">%s</td>' % (s["online"], states))


MAP_JS = """
(function(){var el=document.getElementById('map');if(!el||!window.L)return;
var boards=JSON.parse(document.getElementById('map-data').textContent);
var map=L.map(el,{attributionControl:false,zoomSnap:0.25});L.control.scale({metric:true,imperial:false}).addTo(map);
var pts=[];boards.forEach(function(b){var ll=[b.lat,b.lon];pts.push(ll);
var m=L.circleMarker(ll,{radius:9,weight:3,color:b.stroke,fillColor:b.fill,fillOpacity:0.9,
className:'board board-'+b.id});m.bindTooltip(b.label,{permanent:true,direction:'right',offset:[10,0]});
m.bindPopup(b.popup);m.addTo(map);});
if(pts.length==1)map.setView(pts[0],16);else if(pts.length)map.fitBounds(pts,{padding:[60,60],maxZoom:17});
else map.setView([13.7563,100.5018],11);window.airwattMap=map;})();
"""


async def leaflet_js(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(LEAFLET_DIR / "leaflet.js", headers={"Cache-Control": "max-age=31536000, immutable"})


_CSS: str | None = None


def leaflet_css() -> str:
    """Leaflet's stylesheet, put inline in the page (the pages' CSP takes styles only inline)."""
    global _CSS
    if _CSS is None:
        _CSS = (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8")
    return _CSS


async def city_page(request: web.Request) -> web.Response:
    lang = _lang(request)
    now = time.time()
    data = await request.app[READER_KEY].run(city_data, now, request.app[FACTORS_KEY])
    cols = ("site", "kw_now", "kwh_today", "kg_today", "kwh_month", "kg_month", "aqi_now", "co2_now",
            "boards_state")
    head = "".join('<th class="sortable" data-key="%s">%s</th>' % (k, escape(label(lang, k))) for k in cols)
    rows = "".join('<tr data-site="%s"><td data-sort="%s"><a href="%s">%s</a></td>%s</tr>'
                   % (escape(site), escape(site), escape(_url("/fleet", lang, site=site)), escape(site or "-"),
                      _row(lang, s)) for site, s in data["sites"])
    total = '<tr id="city-total"><th>%s</th>%s</tr>' % (escape(label(lang, "city_total")), _row(lang, data["city"]))
    table = ('<table id="city"><thead><tr>%s</tr></thead><tbody>%s</tbody><tfoot>%s</tfoot></table>'
             % (head, rows, total))
    note = '<p class="note" id="city-note">%s</p>' % escape(label(lang, "city_note") % (
        period(data["today"]), period(data["month"]), data["factor"], data["factor_year"]))
    located = []
    for b in data["boards"]:
        if b["lat"] is None or b["lon"] is None:
            continue
        fill = aqi.colour(b["aqi_level"]) if b["aqi_level"] is not None else "#bbb"
        parts = [label(lang, b["state"])]
        if b["aqi"] is not None:
            parts.append("AQI %d" % b["aqi"])
        if b["co2"] is not None:
            parts.append("CO2 %.0f ppm" % b["co2"])
        if b["kw"] is not None:
            parts.append("%s kW" % amount(b["kw"]))
        popup = '<b><a href="%s">%s</a></b><br>%s<br>%s' % (
            escape(_url("/device/" + b["id"], lang)), escape(b["id"]), escape(b["name"] or ""),
            escape(" · ".join(parts)))
        located.append({"id": b["id"], "lat": b["lat"], "lon": b["lon"], "stroke": STATE_COLOURS[b["state"]],
                        "fill": fill, "label": escape(b["id"]), "popup": popup, "state": b["state"]})
    # JSON inside <script type="application/json">: "</" must not close the element
    payload = json.dumps(located).replace("</", "<\\/")
    legend = " ".join('<span><i class="chip" style="background:%s"></i>%s</span>' % (STATE_COLOURS[k],
                                                                                     escape(label(lang, k)))
                      for k in ("online", "late", "offline", "never"))
    unlocated = len(data["boards"]) - len(located)
    map_block = ('<h2>%s</h2><div id="map" data-boards="%d"></div><p class="note">%s: %s. %s%s</p>'
                 '<script type="application/json" id="map-data">%s</script>'
                 % (escape(label(lang, "map")), len(located), escape(label(lang, "map_legend")), legend,
                    escape(label(lang, "map_note")),
                    (" " + escape(label(lang, "map_unlocated") % unlocated)) if unlocated else "", payload))
    head_extra = ('<style>%s #map{height:420px;max-width:1200px;background:#eef2f5;border:1px solid #d5d8dc}'
                  '.leaflet-tooltip{font-size:11px}</style>' % leaflet_css())
    return _page(request, "city", label(lang, "city"), table + note + map_block, head=head_extra, js=MAP_JS,
                 scripts=(LEAFLET_JS,))


def setup_city(app: web.Application) -> None:
    app.router.add_get("/", city_page)
    app.router.add_get(LEAFLET_JS, leaflet_js)
