"""Downloads of the pages: readings as the open-data export writes them (CSV, JSON, and the CSV's CSV on the Web
metadata), and the monthly City Carbon Footprint report (CSV and a printable page).

Readings stream a device and a day at a time from the pages' read-only connection: a month of a city's readings
never sits in memory. Parameters are read by web/params.py (a bad one is a 400 naming it).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import datetime
from html import escape
from typing import Any

import sqlite_utils
from aiohttp import web

from airwatt.protocol import fields

from .. import carbon, commands, rollup, store
from . import params, svg
from .i18n import label
from .layout import FACTORS_KEY, READER_KEY, _lang, _page, _url, period

DAY = 86400
MAX_DAYS = 400
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def download_links(lang: str, path: str, **query: Any) -> str:
    """The CSV / JSON (and CSVW metadata) buttons of a table or plot, for a download route and its query."""
    links = [('<a class="dl" data-format="csv" href="%s" download>CSV</a>'
              % escape(_url(path + ".csv", lang, **query)))]
    links.append('<a class="dl" data-format="json" href="%s" download>JSON</a>' % escape(_url(path + ".json", lang,
                                                                                              **query)))
    if path.endswith("/readings"):
        links.append('<a class="dl" data-format="csvw" href="%s" download>CSVW</a>'
                     % escape(_url(path + ".csv-metadata.json", lang, **query)))
    return '<span class="downloads">%s: %s</span>' % (escape(label(lang, "download")), " ".join(links))


def _range(request: web.Request, default_s: float = DAY) -> tuple[float, float]:
    now = time.time()
    until = params.moment(request, "to", svg.THAILAND, "ICT, UTC+7")
    until = now if until is None else until
    since = params.moment(request, "from", svg.THAILAND, "ICT, UTC+7")
    since = until - default_s if since is None else since
    if since >= until:
        raise params.bad("from", "must be before to")
    if until - since > MAX_DAYS * DAY:  # the export command is there for more
        raise params.bad("from", "must be at most %d days before to (airwatt export takes any range)" % MAX_DAYS)
    return since, until


def _csv_chunk(db: sqlite_utils.Database, device: dict, sensor: str | None, since: float, until: float) -> str:
    out = io.StringIO()
    commands._device_csv(db, device, since, until, out, sensor)
    return out.getvalue()


def _json_chunk(db: sqlite_utils.Database, device: str, sensor: str | None, since: float, until: float) -> list:
    return list(commands.export_rows(db, since, until, device, sensor))


def _devices(db: sqlite_utils.Database, device: str | None) -> list[dict]:
    return [d for d in store.list_devices(db) if device is None or d["id"] == device]


async def readings(request: web.Request) -> web.StreamResponse:
    """GET /download/readings.{csv,json,csv-metadata.json}?device=&sensor=&from=&to= (default: the last day)."""
    fmt = request.match_info["fmt"]
    device = params.text(request, "device")
    sensor = params.choice(request, "sensor", ("", *fields.SENSORS), "") or None
    since, until = _range(request)
    if fmt == "csv-metadata.json":
        meta = commands.csvw_metadata(request.path[:-len("-metadata.json")].rsplit("/", 1)[1]
                                      + ("?" + request.query_string if request.query_string else ""))
        return web.json_response(meta, dumps=lambda o: json.dumps(o, ensure_ascii=False),
                                 content_type="application/csvm+json")
    reader = request.app[READER_KEY]
    devices = await reader.run(_devices, device)
    if device is not None and not devices:
        raise web.HTTPNotFound(text="unknown device: %s" % device)
    name = "airwatt-%s%s-%s.%s" % (device or "all", "-" + sensor if sensor else "",
                                   datetime.fromtimestamp(since, svg.THAILAND).strftime("%Y%m%dT%H%M"), fmt)
    resp = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/json; charset=utf-8",
        "Content-Disposition": 'attachment; filename="%s"' % name})
    await resp.prepare(request)
    if fmt == "csv":
        head = io.StringIO()
        csv.writer(head, lineterminator="\n").writerow([c[0] for c in commands.EXPORT_COLUMNS])
        await resp.write(head.getvalue().encode())
    else:
        await resp.write(('{"columns":%s,"readings":[' % json.dumps(
            [{"name": n, "unit": u, "description": d} for n, u, d in commands.EXPORT_COLUMNS])).encode())
    first = True
    for d in devices:
        t = since
        while t < until:
            b = min(t + DAY, until)
            if fmt == "csv":
                await resp.write((await reader.run(_csv_chunk, d, sensor, t, b)).encode())
            else:
                for row in await reader.run(_json_chunk, d["id"], sensor, t, b):
                    await resp.write(((b"" if first else b",") + json.dumps(row).encode()))
                    first = False
            t = b
    if fmt == "json":
        await resp.write(b"]}\n")
    await resp.write_eof()
    return resp


# -- City Carbon Footprint report ---------------------------------------------------------------------------

REPORT_COLUMNS = ("month", "site", "kwh", "factor_kgco2e_per_kwh", "factor_year", "tco2e")


def month_bounds(month: str) -> tuple[float, float]:
    """Unix start and end of a Thai local month 'YYYY-MM'."""
    y, m = int(month[:4]), int(month[5:7])
    start = datetime(y, m, 1, tzinfo=svg.THAILAND)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=svg.THAILAND)
    return start.timestamp(), end.timestamp()


def footprint(db: sqlite_utils.Database, month: str, table: dict[int, float]) -> list[dict]:
    """Scope 2 (grid electricity) per site and for the city over a Thai local month, from the daily rollups:
    kWh, the TGO factor and its year, tCO2e. The city row (site None) is the sum of the sites."""
    since, until = month_bounds(month)
    site_of = {d: s for d, s in db.execute("SELECT id, site FROM devices").fetchall()}
    sites: dict[str, float] = {s or "": 0.0 for s in site_of.values()}
    for device, days in rollup.daily_wh(db, since, until).items():
        sites[site_of.get(device) or ""] = sites.get(site_of.get(device) or "", 0.0) + sum(days.values())
    factor, year = carbon.factor_for(int(month[:4]), table)
    rows = [{"month": month, "site": site, "kwh": wh / 1000.0, "factor_kgco2e_per_kwh": factor, "factor_year": year,
             "tco2e": wh / 1000.0 * factor / 1000.0} for site, wh in sorted(sites.items())]
    total = sum(r["kwh"] for r in rows)
    rows.append({"month": month, "site": None, "kwh": total, "factor_kgco2e_per_kwh": factor, "factor_year": year,
                 "tco2e": total * factor / 1000.0})
    return rows


def _month(request: web.Request) -> str:
    value = params.text(request, "month")
    if value is None:
        return datetime.fromtimestamp(time.time(), svg.THAILAND).strftime("%Y-%m")
    if not _MONTH.fullmatch(value):
        raise params.bad("month", "must be YYYY-MM")
    return value


async def report(request: web.Request) -> web.StreamResponse:
    """GET /carbon/report (printable page), /carbon/report.csv, /carbon/report.json?month=YYYY-MM."""
    lang = _lang(request)
    month = _month(request)
    fmt = request.match_info.get("fmt")
    rows = await request.app[READER_KEY].run(footprint, month, request.app[FACTORS_KEY])
    name = "airwatt-carbon-footprint-%s" % month
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(REPORT_COLUMNS)
        for r in rows:
            w.writerow(["" if r[k] is None else r[k] for k in REPORT_COLUMNS])
        return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": 'attachment; filename="%s.csv"' % name})
    if fmt == "json":
        return web.json_response({"columns": list(REPORT_COLUMNS), "rows": rows},
                                 headers={"Content-Disposition": 'attachment; filename="%s.json"' % name})
    y, m = int(month[:4]), int(month[5:7])
    prev = "%04d-%02d" % (y - (m == 1), (m - 2) % 12 + 1)
    nxt = "%04d-%02d" % (y + (m == 12), m % 12 + 1)
    heads = "".join("<th>%s</th>" % escape(label(lang, k)) for k in (
        "site", "kwh", "factor", "factor_year", "tco2e"))
    body_rows = "".join(
        '<tr data-site="%s"%s><td>%s</td><td class="num" data-value="%.6f">%.1f</td><td class="num">%.4f</td>'
        '<td>%d</td><td class="num" data-value="%.9f">%.3f</td></tr>'
        % ("" if r["site"] is None else escape(r["site"]), ' id="report-city"' if r["site"] is None else "",
           escape(label(lang, "city_total")) if r["site"] is None else escape(r["site"] or "-"),
           r["kwh"], r["kwh"], r["factor_kgco2e_per_kwh"], r["factor_year"], r["tco2e"], r["tco2e"])
        for r in rows)
    body = ('<p class="noprint"><a href="%s">&larr; %s</a> &middot; <a href="%s">%s &rarr;</a> &middot; %s</p>'
            '<p>%s</p><table id="carbon-report"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>'
            '<p class="note">%s</p>'
            % (escape(_url("/carbon/report", lang, month=prev)), prev, escape(_url("/carbon/report", lang,
                                                                                     month=nxt)), nxt,
               download_links(lang, "/carbon/report", month=month),
               escape(label(lang, "report_scope") % period(month)), heads, body_rows, escape(label(lang, "report_note"))))
    return _page(request, "carbon", "%s %s" % (label(lang, "report_title"), period(month)), body, refresh=False,
                 head="<style>@media print{header,.noprint,.downloads,.table-downloads{display:none}body{background:#fff}}</style>")


def setup_downloads(app: web.Application) -> None:
    app.router.add_get(r"/download/readings.{fmt:csv|json|csv-metadata\.json}", readings)
    app.router.add_get("/carbon/report", report)
    app.router.add_get(r"/carbon/report.{fmt:csv|json}", report)
