"""The operators' pages: Fleet, Device, Sync, Carbon, Air (server-rendered HTML with SVG plots).

Reading is open; every action that changes something (POST) needs the operator token, as the form field
`token` or `Authorization: Bearer <token>`, else 403; a form POST must also come from these pages (security.py).
Queries run on a read-only connection in one worker
thread so a slow page never holds up ingest on the event loop.
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any, Callable

import sqlite_utils
from aiohttp import web

from .. import alerts, aqi, carbon, device_settings, firmware, rollup, store, sync, sync_store
from ..config import Config
from . import firmware_block, meters_view, params, security, svg
from .city import setup_city
from .downloads import download_links, setup_downloads
from .i18n import label, lang_of
from .layout import (CONFIG_KEY_ALERTS, DATA_DIR_PATH_KEY, ERA_KEY, FACTORS_KEY, FORM_TIMEOUT_KEY, LANG_KEY,
                     LATE_INTERVALS, ONLINE_INTERVALS, RANGES, READER_KEY, STATE_COLOURS, TOKEN_FILE, TOKEN_KEY,
                     TOKEN_PATH_KEY, WRITE_DB_KEY, Reader, _fmt_age, _fmt_time, _lang, _page, _td, _url, authorised,
                     device_state, era_of_request, operator_token, period)

# -- Fleet -------------------------------------------------------------------------------------------------


def fleet_rows(db: sqlite_utils.Database, site: str | None, now: float) -> tuple[list[dict], list[str]]:
    devices = store.list_devices(db)
    sites = sorted({d["site"] or "" for d in devices})
    out = []
    for d in devices:
        if site and (d["site"] or "") != site:
            continue
        try:
            status = json.loads(d["last_status"]) if d["last_status"] else {}
        except ValueError:
            status = {}
        d["status"] = status if isinstance(status, dict) else {}
        d["state"] = device_state(d["last_seen"], d["interval_s"], now)
        out.append(d)
    return out, sites


def no_location_block(lang: str, devices: list[str], waiting: dict[str, int], data_dir: str) -> str:
    """The devices without a location, each with the command that gives it one (fleet and sync pages)."""
    if not devices:
        return ""
    items = "".join(
        '<li data-device="%s"><b>%s</b> (%d %s): <code>airwatt device set %s --lat LAT --lon LON --data-dir %s'
        '</code></li>' % (escape(d), escape(d), waiting.get(d, 0), escape(label(lang, "waiting")), escape(d),
                          escape(shlex.quote(data_dir))) for d in devices)
    return ('<div id="no-location"><h2>%s</h2><p class="note">%s:</p><ul>%s</ul></div>'
            % (escape(label(lang, "no_location")), escape(label(lang, "no_location_note")), items))


def no_location_data(db: sqlite_utils.Database) -> tuple[list[str], dict[str, int]]:
    devices = [r[0] for r in db.execute("SELECT id FROM devices WHERE lat IS NULL OR lon IS NULL ORDER BY id")]
    return devices, sync_store.waiting_for_location(db) if devices else {}


def _alert_rule(lang: str, a: dict, cfg: Any) -> str:
    """The rule of an alert, with its threshold, in the page's language."""
    rule, threshold = a["rule"], a["threshold"] or 0
    if rule == "co2":
        args: tuple = ("%g" % threshold, "%g" % cfg.co2_minutes)
    elif rule == "pm25_aqi":
        args = ("%d" % threshold,)
    elif rule in ("offline", "sync_lag", "meter_missing"):
        args = (_fmt_age(threshold),)
    else:
        args = ("%d" % threshold,)
    return label(lang, "rule_" + rule) % args


def _alert_value(a: dict) -> str:
    v = a["value"] or 0
    return {"co2": "%d ppm" % v, "pm25_aqi": "AQI %d" % v, "buffer": "%d" % v, "meter_missing": "-"}.get(
        a["rule"], _fmt_age(v))


def alerts_box(request: web.Request, open_: list[dict]) -> str:
    """The open alerts as a table, each with an acknowledge form (operator token)."""
    lang = _lang(request)
    notice = ('<p class="ok" id="ack-ok">%s</p>' % escape(label(lang, "ack_done"))
              if request.query.get("acked") else "")
    title = '<h2 id="alerts-title">%s (%d)</h2>' % (escape(label(lang, "alerts")), len(open_))
    if not open_:
        return title + notice + '<p id="alerts-none">%s</p>' % escape(label(lang, "no_alerts"))
    heads = "".join("<th>%s</th>" % escape(label(lang, k)) for k in (
        "alert_rule", "device", "alert_value", "alert_since", "ack"))
    rows = []
    for a in open_:
        if a["acked_at"] is not None:
            ack = '<span class="muted">%s %s</span>' % (escape(label(lang, "acked")), _fmt_time(a["acked_at"]))
        else:
            ack = ('<form method="post" class="inline" action="%s"><input type="hidden" name="id" value="%d">'
                   '<input type="password" name="token" class="ack-token" placeholder="%s" '
                   'autocomplete="current-password"> <button type="submit" class="ack">%s</button></form>'
                   % (escape(_url("/alerts/ack", lang)), a["id"], escape(label(lang, "operator_token")),
                      escape(label(lang, "ack"))))
        dev = a["device"]
        rows.append('<tr class="err" data-alert-id="%d" data-rule="%s" data-device="%s" data-acked="%d">'
                    '<td>%s</td><td>%s</td><td class="num" data-value="%s">%s</td><td>%s</td><td>%s</td></tr>'
                    % (a["id"], escape(a["rule"]), escape(dev), a["acked_at"] is not None,
                       escape(_alert_rule(lang, a, request.app[CONFIG_KEY_ALERTS])),
                       '<a href="%s">%s</a>' % (escape(_url("/device/" + dev, lang)), escape(dev)) if dev else "-",
                       a["value"], escape(_alert_value(a)), _fmt_time(a["since"]), ack))
    return (title + notice + '<table id="alerts"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>'
            % (heads, "".join(rows)))


async def fleet(request: web.Request) -> web.Response:
    lang = _lang(request)
    site = params.text(request, "site")
    now = time.time()
    rows, sites = await request.app[READER_KEY].run(fleet_rows, site, now)
    open_ = await request.app[READER_KEY].run(alerts.open_alerts)
    fw = {r["device"]: r for r in await request.app[READER_KEY].run(firmware.status)}  # firmware_block.py
    rollout = firmware_block.rollout_box(lang, await request.app[READER_KEY].run(firmware.progress),
                                         _url("/firmware/halt", lang))
    options = '<option value="">%s</option>' % escape(label(lang, "all_sites")) + "".join(
        '<option value="%s"%s>%s</option>' % (escape(s), " selected" if s == site else "", escape(s or "-"))
        for s in sites)
    form = ('<form method="get" action="/fleet"><input type="hidden" name="lang" value="%s">%s: '
            '<select name="site" id="site-filter">%s</select> '
            '<noscript><button>%s</button></noscript></form>'
            % (lang, escape(label(lang, "site")), options, escape(label(lang, "show"))))
    cols = [("device", "device"), ("name", "name"), ("site", "site"), ("state", "state"),
            ("last_seen", "last_seen"), ("firmware", "firmware"), ("rssi", "rssi"), ("free_heap", "free_heap"),
            ("buffer_depth", "buffer_depth"), ("dropped", "dropped"), ("sensor_errors", "sensor_errors"),
            ("time_sync", "time_sync"), ("readings", "readings")]
    head = "".join('<th class="sortable" data-key="%s">%s</th>' % (k, escape(label(lang, lab))) for k, lab in cols)
    body = []
    state_rank = {"online": 0, "late": 1, "offline": 2, "never": 3}
    for d in rows:
        st = d["status"]
        errors = st.get("errors") or {}
        err_text = ", ".join("%s %s" % (k, v) for k, v in sorted(errors.items()) if v) or "0"
        age = None if d["last_seen"] is None else now - d["last_seen"]

        def num(key: str) -> str:
            v = st.get(key)
            return _td("-" if v is None else v, -1e12 if v is None else v, "num")

        body.append(
            '<tr data-device="%s">' % escape(d["id"])
            + '<td data-sort="%s"><a href="%s">%s</a></td>' % (escape(d["id"]), escape(_url("/device/" + d["id"],
                                                                                          lang)), escape(d["id"]))
            + _td(d["name"] or "") + _td(d["site"] or "")
            + '<td data-sort="%d" class="state" data-state="%s" style="color:%s">%s</td>'
            % (state_rank[d["state"]], d["state"], STATE_COLOURS[d["state"]], escape(label(lang, d["state"])))
            + _td("%s (%s %s)" % (_fmt_time(d["last_seen"]), _fmt_age(age), label(lang, "ago")) if age is not None
                  else "-", d["last_seen"] or 0)
            + _td(firmware_block.cell(d["firmware"], fw.get(d["id"]))) + num("rssi") + num("free_heap") + num("buffer_depth") + num("dropped")
            + _td(err_text, sum(v for v in errors.values() if isinstance(v, int)), "num")
            + _td(st.get("time_sync", "-")) + _td(d["readings"], d["readings"], "num") + "</tr>")
    table = '<table id="fleet"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (head, "".join(body))
    note = '<p class="note">%s</p>' % escape(label(lang, "state_note") % (ONLINE_INTERVALS, LATE_INTERVALS))
    unlocated = no_location_block(lang, *await request.app[READER_KEY].run(no_location_data),
                                  request.app[DATA_DIR_PATH_KEY])
    return _page(request, "fleet", label(lang, "fleet"),
                 alerts_box(request, open_) + rollout + form + table + note + unlocated)


# -- Device ------------------------------------------------------------------------------------------------


RAW_MAX_S = 86400  # ranges up to a day are drawn reading by reading; longer ones from the hourly rollups
# ranges over 8 days (30 d, and from/to spans up to MAX_SPAN_S) from the daily rollups: a plot stays a few hundred
# points (30 a month, not 720), so the page costs about the same whatever the range
HOURLY_MAX_S = 8 * 86400
PLOTTED = ("pm25", "co2", "temperature", "humidity", "power")


MAX_SPAN_S = 400 * 86400
MIN_FIT_S = 300  # a fitted range shows at least 5 minutes


def first_reading(db: sqlite_utils.Database, device: str, since: float, until: float) -> float | None:
    """When the device has nothing stored before `since` (raw or rolled up), the time of its first reading in
    [since, until]: a board installed within the range. None otherwise. Index seeks only."""
    older = db.execute("SELECT 1 FROM readings WHERE device = ? AND t > 0 AND t < ? LIMIT 1",
                       (device, since)).fetchone() or db.execute(
        "SELECT 1 FROM rollup_hour WHERE device = ? AND start < ? LIMIT 1", (device, since - 3600)).fetchone()
    if older:
        return None
    return db.execute("SELECT min(t) FROM readings WHERE device = ? AND t >= ? AND t <= ?",
                      (device, since, until)).fetchone()[0]


def device_data(db: sqlite_utils.Database, device: str, since: float, until: float, kwh_since: float,
                fit: bool = False) -> dict | None:
    """What the device page draws; fit: start the range at the board's first reading when it came within it."""
    row = store.get_device(db, device)
    if row is None:
        return None
    if fit:
        first = first_reading(db, device, since, until)
        if first is not None:
            since = min(max(since, first - 60), until - MIN_FIT_S)
    out: dict[str, Any] = {"device": row, "rows": [], "hours": None, "range": (since, until), "fitted": fit and
                           since > until - 86400}
    if until - since <= RAW_MAX_S:
        # only what the plots draw, as tuples: (t, sensor, flags, *PLOTTED)
        out["rows"] = db.execute("SELECT t, sensor, flags, %s FROM readings WHERE device = ? AND t >= ? AND t < ?"
                                 % ", ".join(PLOTTED), (device, since, until + 1e-6)).fetchall()
    elif until - since <= HOURLY_MAX_S:
        # hours that start in the range; the last one may reach past `until` (a partial hour at the end)
        out["hours"] = rollup.hours(db, device, PLOTTED, since - since % 3600, until)
        out["bucket"] = 3600
    else:
        # Thai local days that start in the range, and the one it starts in (partial days at either end)
        out["hours"] = rollup.days(db, device, PLOTTED, rollup.day_start(since), until)
        out["bucket"] = 86400
    out["wh"] = rollup.daily_wh(db, kwh_since, until + 1e-6, device).get(device, {})
    out["settings"] = device_settings.state(db, device)
    out["meters"] = meters_view.meters_data(db, device, since, until, kwh_since)  # several meters: None if one
    return out


def _series(data: dict, metric: str, label_: str, colour: str) -> svg.Series:
    """A plot's series: the readings themselves, or hourly or daily means (data-n, data-b0, data-b1) for long
    ranges."""
    if data["hours"] is None:
        k = 3 + PLOTTED.index(metric)
        return svg.Series(metric, label_, colour, [(r[0], float(r[k]), bool(r[2])) for r in data["rows"]
                                                   if r[k] is not None])
    # drawn mid-bucket, kept inside the plot for the partial buckets at either end of the range
    t0, t1 = data["range"]
    size = data["bucket"]
    return svg.Series(metric, label_, colour, means=[
        {"t": max(t0, min(start + size / 2, t1)), "v": mean, "n": n, "b0": start, "b1": start + size}
        for start, n, _lo, _hi, mean in data["hours"][metric] if n])


async def device_page(request: web.Request) -> web.Response:
    lang = _lang(request)
    device = request.match_info["id"]
    now = time.time()
    rng = params.choice(request, "range", RANGES, "24h")
    end = params.moment(request, "end", svg.THAILAND, "Thai time")
    frm = params.moment(request, "from", svg.THAILAND, "ICT, UTC+7")
    to = params.moment(request, "to", svg.THAILAND, "ICT, UTC+7")
    if frm is not None or to is not None:  # the from/to picker
        until = now if to is None else to
        since = until - RANGES[rng] if frm is None else frm
        if since >= until:
            raise params.bad("from", "must be before to")
        if until - since > MAX_SPAN_S:
            raise params.bad("from", "must be at most %d days before to" % (MAX_SPAN_S // 86400))
    else:
        until = now if end is None else end
        since = until - RANGES[rng]
    # nothing chosen: the last day, or less when the board has not been there that long
    fit = frm is None and to is None and end is None and not request.query.get("range")
    # daily kWh over at least the last 7 local days, from the start of the first day
    first_day = datetime.fromtimestamp(until - max(until - since, 7 * 86400) + 1, svg.THAILAND)
    kwh_since = first_day.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    data = await request.app[READER_KEY].run(device_data, device, since, until, kwh_since, fit)
    if data is None:
        raise web.HTTPNotFound(text="%s: %s" % (label(lang, "unknown_device"), device))
    since, until = data["range"]
    rows = data["rows"]
    try:
        kinds = set(json.loads(data["device"]["sensors"] or "[]"))
    except ValueError:
        kinds = set()
    kinds |= {r[1] for r in rows} | ({"energy"} if data["wh"] else set())
    sensor_of_metric = {"pm25": "pm", "co2": "co2", "temperature": "co2", "humidity": "co2", "power": "energy"}
    kinds |= {sensor_of_metric[m] for m, hs in (data["hours"] or {}).items() if hs}
    flagged = label(lang, "flagged")
    nodata = label(lang, "no_data")
    kw = {"flagged_label": flagged, "no_data": nodata}
    pm_bands = aqi.pm25_bands()
    plots = []
    plots.append(("pm25_plot", svg.time_plot(
        [_series(data, "pm25", "PM2.5", "#222")], since, until, plot_id="plot-pm25",
        unit="µg/m³", bands=pm_bands, y_floor=0, y_min_top=40, **kw)
        + '<div class="bands">%s</div>' % "".join(
            '<span><i class="chip" style="background:%s"></i>%s (AQI %d-%s, PM2.5 %s-%s)</span>'
            % (aqi.colour(n), escape(lvl[4] if lang == "th" else lvl[3]), lvl[0], "%d" % lvl[1] if n < 4 else "500",
               aqi.BREAKPOINTS["pm25"][n][0], aqi.BREAKPOINTS["pm25"][n][1])
            for n, lvl in enumerate(aqi.LEVELS))))
    plots.append(("co2_plot", svg.time_plot(
        [_series(data, "co2", "CO2", "#6a3d9a")], since, until, plot_id="plot-co2", unit="ppm",
        guides=[(1000, "#c77700", label(lang, "guide_1000")), (1500, "#c00000", label(lang, "guide_1500"))],
        y_floor=0, **kw)))
    plots.append(("temp_plot", svg.time_plot(
        [_series(data, "temperature", label(lang, "temp_plot"), "#d95f02")],
        since, until, plot_id="plot-temperature", unit="°C", **kw)))
    plots.append(("hum_plot", svg.time_plot(
        [_series(data, "humidity", label(lang, "hum_plot"), "#1b9e77")],
        since, until, plot_id="plot-humidity", unit="%RH", **kw)))
    plots.append(("power_plot", svg.time_plot(
        [_series(data, "power", label(lang, "power_plot"), "#3b7dd8")],
        since, until, plot_id="plot-power", unit="W", y_floor=0, **kw)))
    days = data["wh"]
    day_keys = []
    d = first_day.replace(hour=0, minute=0, second=0, microsecond=0)
    while d.timestamp() <= until:
        day_keys.append(d.strftime("%Y-%m-%d"))
        d = (d + timedelta(days=1, hours=2)).replace(hour=0)
    bars = [(k, days.get(k, 0.0) / 1000.0) for k in day_keys]
    plots.append(("kwh_plot", svg.bar_plot(bars, plot_id="plot-kwh", unit="kWh", no_data=nodata)))
    dev = data["device"]
    picked = frm is None and to is None and not data["fitted"]
    ranges = " ".join('<a href="%s"%s data-range="%s">%s</a>' % (
        escape(_url(request.path, lang, range=r, end=request.query.get("end"))),
        ' class="here"' if picked and r == rng else "", r, escape(label(lang, "r_" + r))) for r in RANGES)
    local = lambda t: datetime.fromtimestamp(t, svg.THAILAND).strftime("%Y-%m-%dT%H:%M")  # noqa: E731
    form = ('<form method="get" class="inline" id="range-form"><input type="hidden" name="lang" value="%s">'
            '<label>%s <input type="datetime-local" name="from" id="range-from" value="%s"></label> '
            '<label>%s <input type="datetime-local" name="to" id="range-to" value="%s"></label> '
            '<span class="muted">ICT (UTC+7)</span> <button>%s</button></form>'
            % (lang, escape(label(lang, "from")), local(since), escape(label(lang, "to")), local(until),
               escape(label(lang, "show"))))
    if data["fitted"]:
        form += '<p class="note" id="fitted-note">%s</p>' % escape(label(lang, "fitted_note"))
    head = ('<p>%s: <b>%s</b> &middot; %s: %s &middot; %s: %s &middot; %s: %s &ndash; %s</p><p>%s: %s %s</p>'
            % (escape(label(lang, "name")), escape(dev["name"] or dev["id"]), escape(label(lang, "site")),
               escape(dev["site"] or "-"), escape(label(lang, "firmware")), escape(dev["firmware"] or "-"),
               escape(label(lang, "range")), _fmt_time(since), _fmt_time(until), escape(label(lang, "range")),
               ranges, form))
    sensor_of = {"pm25_plot": "pm", "co2_plot": "co2", "temp_plot": "co2", "hum_plot": "co2", "power_plot": "energy",
                 "kwh_plot": "energy"}
    def links(k: str) -> str:  # the plot's readings as `airwatt export` writes them
        a = kwh_since if k == "kwh_plot" else since
        return '<p class="note">%s</p>' % download_links(lang, "/download/readings", device=device,
                                                          sensor=sensor_of[k], **{"from": "%.3f" % a,
                                                                                  "to": "%.3f" % (until + 0.001)})
    if data["meters"]:  # the phases and circuits instead of one power plot mixing every meter's readings
        plots = [(k, p) for k, p in plots if k != "power_plot"]
    body = head + "".join("<h2>%s</h2>%s%s" % (escape(label(lang, k)), p, links(k)) for k, p in plots
                          if sensor_of[k] in kinds)
    if data["meters"]:
        body += meters_view.meters_block(lang, data["meters"], kw)
    if data["hours"] is not None:
        note = "hourly" if data["bucket"] == 3600 else "daily"
        body = '<p class="note" id="%s-note">%s</p>' % (note, escape(label(lang, note + "_note"))) + body
    body += '<p class="note">%s</p>' % escape(label(lang, "energy_note"))
    body += settings_block(request, lang, device, data["settings"])
    return _page(request, "device", "%s %s" % (label(lang, "device"), device), body, refresh=end is None)


# -- Board settings (on the device page) ------------------------------------------------------------------

_SETTING_INPUTS = (  # form field, settings name, how to read it
    ("int_energy", "intervals.energy", int), ("int_co2", "intervals.co2", int), ("int_pm", "intervals.pm", int),
    ("upload_s", "upload_s", int), ("batch_max", "batch_max", int), ("humid_rh", "humid_rh", int),
    ("asc", "co2.asc", None), ("temp_offset", "co2.temp_offset", float), ("altitude", "co2.altitude", int),
    ("pressure", "co2.pressure", int), ("frc", "co2.frc", int),
)


def _setting_value(settings: dict, name: str) -> Any:
    head, _, tail = name.partition(".")
    if not tail:
        return settings.get(head)
    return (settings.get(head) or {}).get(tail)


def settings_block(request: web.Request, lang: str, device: str, st: dict | None) -> str:
    """The device page's board settings: rev, applied or pending, the FRC result, who set what when, and the
    form that changes them (operator token required)."""
    out = ['<h2 id="board-settings">%s</h2>' % escape(label(lang, "board_settings"))]
    if st is None:
        out.append('<p id="settings-state">%s</p>' % escape(label(lang, "settings_none")))
    else:
        if st["state"] == "applied":
            said = label(lang, "settings_applied") % (st["rev"], _fmt_time(st["applied_at"]))
        else:
            said = label(lang, "settings_pending") % st["rev"]
            if st["applied_rev"]:
                said += "; " + label(lang, "settings_last") % (st["applied_rev"], _fmt_time(st["applied_at"]))
        out.append('<p id="settings-state" class="%s">%s</p>' % (st["state"], escape(said)))
        if st["error"]:
            out.append('<p id="settings-error" class="err">%s: %s</p>' % (escape(label(lang, "board_error")),
                                                                         escape(st["error"])))
        f = st["frc"]
        if st["frc_pending"] is not None:
            out.append('<p id="frc">%s</p>' % escape(label(lang, "frc_pending") % st["frc_pending"]))
        elif f is not None:
            key = "frc_done" if f["correction"] is not None else "frc_failed"
            args = (f["target"], _fmt_time(f["at"])) + (("%+d" % f["correction"],) if f["correction"] is not None
                                                         else ())
            out.append('<p id="frc">%s</p>' % escape(label(lang, key) % args))
        rows_ = []
        for name, c in st["changed"].items():
            value = "-" if name == "co2.frc" else _setting_value(st["settings"], name)
            if value is None:
                continue  # replaced since (altitude by pressure or the other way round)
            rows_.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
                escape(name), escape(json.dumps(value) if not isinstance(value, str) else value),
                _fmt_time(c["at"]), escape(c["by"])))
        heads = "".join("<th>%s</th>" % escape(label(lang, k)) for k in ("setting", "value", "set_at", "set_by"))
        out.append('<table id="settings"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (heads,
                                                                                                "".join(rows_)))
    if request.query.get("settings") == "ok":
        out.append('<p class="ok" id="settings-ok">%s</p>' % escape(label(lang, "settings_saved")))
    current = st["settings"] if st else {}
    inputs = []
    for field, name, kind in _SETTING_INPUTS:
        now_ = _setting_value(current, name)
        if kind is None:
            opts = "".join('<option value="%s">%s</option>' % (v, escape(t))
                           for v, t in (("", label(lang, "unchanged")), ("on", "on"), ("off", "off")))
            inputs.append('<label>%s <select name="%s" id="set-%s">%s</select></label>' % (
                escape(name), field, field, opts))
        else:
            inputs.append('<label>%s <input name="%s" id="set-%s" size="7" placeholder="%s"></label>' % (
                escape(name), field, field, escape("" if now_ is None else str(now_))))
    out.append(
        '<form method="post" action="%s" id="settings-form"><p>%s</p><p>%s</p><p>%s: <input name="operator" '
        'id="operator" required> %s: <input type="password" name="token" id="settings-token" '
        'autocomplete="current-password"> <button type="submit" id="settings-send">%s</button></p></form>'
        '<p class="note">%s</p>'
        % (escape(_url("/device/%s/settings" % device, lang)), escape(label(lang, "change_settings")),
           " ".join(inputs), escape(label(lang, "operator_name")), escape(label(lang, "operator_token")),
           escape(label(lang, "apply")), escape(label(lang, "token_where") % (request.app[TOKEN_PATH_KEY],))))
    return "".join(out)


async def device_settings_post(request: web.Request) -> web.Response:
    device = request.match_info["id"]
    form = await params.form(request, request.app[FORM_TIMEOUT_KEY])  # Origin/Referer: checked by security.py
    if not authorised(request, form):
        raise web.HTTPForbidden(text="operator token required")
    operator = str(form.get("operator", "")).strip()
    if not operator:
        raise web.HTTPBadRequest(text="operator: give your name, it is shown beside the settings you change")
    changes: dict[str, Any] = {}
    intervals: dict[str, int] = {}
    for field, name, kind in _SETTING_INPUTS:
        raw = str(form.get(field, "")).strip()
        if not raw:
            continue
        if kind is None:
            if raw not in ("on", "off"):
                raise web.HTTPBadRequest(text="%s: on or off, not %r" % (name, raw))
            value: Any = raw == "on"
        else:
            try:
                value = kind(raw)
            except ValueError:
                raise web.HTTPBadRequest(text="%s: %r is not a %s" % (
                    name, raw, "whole number" if kind is int else "number")) from None
        head, _, tail = name.partition(".")
        if head == "intervals":
            intervals[tail] = value
        else:
            changes[tail or head] = value
    if intervals:
        changes["intervals"] = intervals
    try:
        device_settings.change(request.app[WRITE_DB_KEY], device, changes, by=operator)
    except ValueError as err:
        if store.get_device(request.app[WRITE_DB_KEY], device) is None:
            raise web.HTTPNotFound(text=str(err)) from None
        raise web.HTTPBadRequest(text=str(err)) from None
    raise web.HTTPSeeOther(_url("/device/%s" % device, _lang(request), settings="ok") + "#board-settings")


# -- Sync --------------------------------------------------------------------------------------------------


def sync_data(db: sqlite_utils.Database) -> dict:
    state = sync_store.sync_state(db, errors=10)
    state["recent"] = sync_store.recent_log(db, 10)
    state["retry_requested"] = sync_store.retry_requested_at(db)
    state["held"] = sync_store.held_groups(db, time.time())
    return state


def _worker_state(app: web.Application) -> Any:
    return app.get(sync.SYNC_STATE)


def sync_status_text(lang: str, status: int | None, ok: bool) -> str:
    """A sync round's HTTP status with what it means, in the page's language (the detail is the platform's own)."""
    if ok:
        key = "st_ok"
    elif status is None or status == 0:
        key = "st_none"
    elif status in (207, 400, 401, 403, 404, 409, 413, 422, 429):
        key = "st_%d" % status
    elif status >= 500:
        key = "st_5xx"
    else:
        key = "st_other"
    return "%s (%s)" % ("-" if status is None else status, label(lang, key))


async def sync_page(request: web.Request) -> web.Response:
    lang = _lang(request)
    now = time.time()
    s = await request.app[READER_KEY].run(sync_data)
    lag = now - s["oldest_pending_received"] if s["pending"] and s["oldest_pending_received"] else 0.0
    cards = "".join('<div class="card" id="%s">%s<b>%s</b></div>' % (i, escape(label(lang, k)), escape(v))
                    for i, k, v in (("pending", "pending", str(s["pending"])), ("synced", "synced", str(s["synced"])),
                                    ("lag", "lag", _fmt_age(lag)),
                                    ("last-ok", "last_sync_ok", _fmt_time(s["last_sync_ok"]))))
    cards = '<div class="cards">%s</div>' % cards
    heads = "".join("<th>%s</th>" % escape(label(lang, k)) for k in ("at", "status", "count", "detail"))

    def log_rows(entries: list[dict], with_ok: bool) -> str:
        return "".join('<tr class="%s"><td>%s</td><td>%s</td><td class="num">%s</td><td>%s</td></tr>'
                       % ("ok" if e["ok"] else "err", _fmt_time(e["at"]),
                          escape(sync_status_text(lang, e["status"], bool(e["ok"]))), e["count"] or 0,
                          escape((e["detail"] or "")[:300])) for e in entries)
    errors = ('<table id="sync-errors"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>'
              % (heads, log_rows(s["last_errors"], False)) if s["last_errors"]
              else '<p id="sync-errors">%s</p>' % escape(label(lang, "none")))
    recent = ('<table id="sync-recent"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>'
              % (heads, log_rows(s["recent"], True)))
    notice = ""
    if request.query.get("retry") == "ok":
        notice = '<p class="ok" id="retry-ok">%s</p>' % escape(label(lang, "retry_requested"))
    last_retry = float(s["retry_requested"]) if s["retry_requested"] else None
    form = ('<form method="post" action="%s" id="retry-form">%s: <input type="password" name="token" id="token" '
            'autocomplete="current-password"> <button type="submit" id="retry">%s</button></form>'
            '<p class="note">%s: %s<br>%s</p>'
            % (escape(_url("/sync/retry", lang)), escape(label(lang, "operator_token")),
               escape(label(lang, "retry_now")), escape(label(lang, "last_retry")), _fmt_time(last_retry),
               escape(label(lang, "token_where") % (request.app[TOKEN_PATH_KEY],))))
    worker = _worker_state(request.app)
    if worker is not None and getattr(worker, "enabled", False):
        wtext = "%s %s &middot; %s: %s &middot; %s: %s" % (
            escape(str(worker.kind)), escape(str(worker.url)), escape(label(lang, "failures")), worker.failures,
            escape(label(lang, "next_attempt")), _fmt_time(worker.next_attempt_at))
    else:
        wtext = escape(label(lang, "disabled"))
    cards += '<p id="worker">%s: %s</p>' % (escape(label(lang, "worker")), wtext)
    if s["held"]:
        hheads = "".join("<th>%s</th>" % escape(label(lang, k)) for k in (
            "device", "held_count", "held_seqs", "sensors", "tries", "status", "detail", "held_until"))
        cards += ('<h2>%s</h2><table id="sync-held"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (
            escape(label(lang, "held")), hheads, "".join(
                '<tr data-device="%s" data-count="%d"><td>%s</td><td class="num">%d</td><td>#%s&ndash;%s</td>'
                "<td>%s</td><td class=\"num\">%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
                % (escape(h["device"]), h["count"], escape(h["device"]), h["count"], h["first"], h["last"],
                   escape(h["sensors"] or ""), h["tries"], h["status"] or "-", escape((h["error"] or "")[:200]),
                   _fmt_time(h["held_until"])) for h in s["held"])))
    cards += no_location_block(lang, *await request.app[READER_KEY].run(no_location_data),
                               request.app[DATA_DIR_PATH_KEY])
    body = (cards + notice + "<h2>%s</h2>%s" % (escape(label(lang, "retry_now")), form)
            + "<h2>%s</h2>%s" % (escape(label(lang, "last_errors")), errors)
            + "<h2>%s</h2>%s" % (escape(label(lang, "sync_log")), recent))
    return _page(request, "sync", label(lang, "sync"), body)


async def sync_retry(request: web.Request) -> web.Response:
    form = await params.form(request, request.app[FORM_TIMEOUT_KEY])
    if not authorised(request, form):
        raise web.HTTPForbidden(text="operator token required")
    # recorded (an audit trail, and a worker in another process or started later takes it); this process's
    # worker is woken at once
    sync_store.request_retry(request.app[WRITE_DB_KEY])
    raise web.HTTPSeeOther(_url("/sync", _lang(request), retry="ok"))


# -- Carbon ------------------------------------------------------------------------------------------------


DAY_BY_DAY = 31  # the longest period the carbon page shows day by day; longer ones by month


def carbon_data(db: sqlite_utils.Database, since: float, until: float, table: dict) -> tuple:
    return rollup.carbon_report(db, since, until, table)


async def carbon_page(request: web.Request) -> web.Response:
    lang = _lang(request)
    days = params.whole(request, "days", 31, 1, 400)
    now = time.time()
    today = datetime.fromtimestamp(now, svg.THAILAND).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    table = request.app[FACTORS_KEY]
    first = start.strftime("%Y-%m-%d")
    # Beyond DAY_BY_DAY days the page shows months: the months table, a bar per month, and the days left to the
    # report and the downloads (a year is not 1,830 table rows and bars); SQLite sums the months, so the page's
    # cost follows its months, not its days
    by_month = days > DAY_BY_DAY
    month_sum: dict[tuple[str, str], list[float]] = {}
    per_site: dict[str, dict[str, float]] = {}  # site -> day (or month) -> kWh, for the plots
    daily: list = []
    if by_month:
        for r in await request.app[READER_KEY].run(rollup.carbon_months, start.timestamp(), now, table):
            month_sum[(r.site, r.period)] = [r.kwh, r.kgco2e]
            per_site.setdefault(r.site, {})[r.period] = r.kwh
    else:
        daily, _monthly = await request.app[READER_KEY].run(carbon_data, start.timestamp(), now, table)
        daily = [r for r in daily if r.period >= first]
        for r in daily:
            month_sum.setdefault((r.site, r.period[:7]), [0.0, 0.0])
            month_sum[(r.site, r.period[:7])][0] += r.kwh
            month_sum[(r.site, r.period[:7])][1] += r.kgco2e
            per_site.setdefault(r.site, {})[r.period] = r.kwh
    heads = lambda first_col: "".join("<th>%s</th>" % escape(label(lang, k)) for k in (  # noqa: E731
        "site", first_col, "kwh", "kgco2e", "factor", "factor_year"))
    # a site's name escaped once, not on each of its days
    shown = {site: ('<tr data-site="%s" data-day="' % escape(site), escape(site or "-")) for site in per_site}
    drows = "".join('%s%s"><td>%s</td><td>%s</td><td class="num" data-kwh="%.6f">%.3f</td>'
                    '<td class="num" data-kgco2e="%.6f">%.3f</td><td class="num">%.4f</td><td>%d</td></tr>'
                    % (shown[r.site][0], r.period, shown[r.site][1], period(r.period), r.kwh, r.kwh, r.kgco2e,
                       r.kgco2e, r.factor, r.factor_year) for r in daily) if not by_month else ""
    this_month = today.strftime("%Y-%m")
    mrows = []
    for (site, month), (kwh, kg) in sorted(month_sum.items()):
        factor, year = carbon.factor_for(int(month[:4]), table)
        partial = month == this_month or (month == first[:7] and not first.endswith("-01"))
        mrows.append('<tr data-site="%s" data-month="%s"><td>%s</td><td>%s%s</td><td class="num" data-kwh="%.6f">'
                     '%.3f</td><td class="num" data-kgco2e="%.6f">%.3f</td><td class="num">%.4f</td><td>%d</td></tr>'
                     % (escape(site), month, escape(site or "-"), period(month),
                        ' <span class="muted">(%s)</span>' % escape(label(lang, "partial")) if partial else "",
                        kwh, kwh, kg, kg, factor, year))
    factors = ", ".join("%d: %.4f" % (y, v) for y, v in sorted(table.items()))
    if by_month:
        day_list, year, month = [], start.year, start.month
        while (year, month) <= (today.year, today.month):
            day_list.append("%04d-%02d" % (year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    else:
        day_list = [(start + timedelta(days=n, hours=2)).strftime("%Y-%m-%d") for n in range(days)]
    plots = ""
    for n, site in enumerate(sorted(per_site)):
        per = per_site[site]
        plots += "<h2>%s: %s</h2>%s" % (escape(label(lang, "kwh_plot")), escape(site or "-"), svg.bar_plot(
            [(d, per.get(d, 0.0)) for d in day_list], plot_id="plot-kwh-%d" % n, unit="kWh",
            no_data=label(lang, "no_data"), label=period if by_month else None))
    body = ('<p><a id="report-link" href="%s">%s</a></p>' % (escape(_url("/carbon/report", lang)),
                                                            escape(label(lang, "report_link")))
            + '<p id="factor">%s: %s kgCO2e/kWh</p><p class="note">%s</p><p>%s</p>'
            % (escape(label(lang, "factor_note")), escape(factors), escape(label(lang, "energy_note")),
               " ".join('<a href="%s">%d %s</a>' % (escape(_url("/carbon", lang, days=n)), n,
                                                     escape(label(lang, "days"))) for n in (7, 31, 92, 366)))
            + "<h2>%s</h2>" % escape(label(lang, "month"))
            + '<table id="carbon-months"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>'
            % (heads("month"), "".join(mrows)) + plots
            + "<h2>%s</h2>" % escape(label(lang, "day"))
            + ('<p class="note" id="days-by-month">%s</p>' % escape(label(lang, "days_by_month") % DAY_BY_DAY)
               if by_month else
               '<table id="carbon-days"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (heads("day"), drows)))
    # a long report costs seconds of reading: it is not redone every minute by itself
    return _page(request, "carbon", label(lang, "carbon"), body, refresh=days <= 31)


# -- Air ---------------------------------------------------------------------------------------------------


def air_data(db: sqlite_utils.Database, now: float) -> list[dict]:
    """Per device, the 24-h PM means (of the hourly means of the last 24 clock hours, from the rollups) and AQI."""
    out = []
    first, last = aqi.clock_hours(now)
    for d in store.list_devices(db):
        hours = rollup.hours(db, d["id"], ("pm25", "pm10"), first, last + 1)
        pm25, h25 = aqi.mean_of_hours([h[4] for h in hours["pm25"]])
        pm10, h10 = aqi.mean_of_hours([h[4] for h in hours["pm10"]])
        best, subs = aqi.overall(pm25, pm10)
        out.append({"device": d, "pm25": pm25, "pm10": pm10, "hours": max(h25, h10), "best": best, "subs": subs})
    return out


async def air_page(request: web.Request) -> web.Response:
    lang = _lang(request)
    now = time.time()
    entries = await request.app[READER_KEY].run(air_data, now)
    heads = "".join('<th class="sortable" data-key="%s">%s</th>' % (k, escape(label(lang, k))) for k in (
        "device", "site", "aqi", "level", "dominant", "pm25_24h", "pm10_24h", "hours"))
    rows = []
    for e in entries:
        d, best = e["device"], e["best"]
        if best is None:
            aqi_cell = '<td class="aqi" data-sort="-1" data-aqi="">-</td>'
            level = _td(label(lang, "no_data"), "")
        else:
            name = aqi.LEVELS[best.level][4 if lang == "th" else 3]
            text = "%d%s" % (best.aqi, "+" if best.above_scale else "")
            aqi_cell = ('<td class="aqi" data-sort="%d" data-aqi="%d" data-level="%d" style="background:%s;color:%s">'
                        '%s</td>' % (best.aqi, best.aqi, best.level, aqi.colour(best.level),
                                     "#fff" if best.level in (1, 4) else "#000", text))
            level = _td(name, best.level)
        sub = lambda p: ("%s (AQI %d)" % (e[p] and "%.1f" % e[p], e["subs"][p].aqi)  # noqa: E731
                         if p in e["subs"] else "-")
        hours = "%d / 24%s" % (e["hours"], "" if e["hours"] >= 18 else " (%s)" % label(lang, "provisional"))
        rows.append('<tr data-device="%s">' % escape(d["id"])
                    + '<td data-sort="%s"><a href="%s">%s</a></td>' % (escape(d["id"]), escape(
                        _url("/device/" + d["id"], lang)), escape(d["id"]))
                    + _td(d["site"] or "") + aqi_cell + level
                    + _td(best.pollutant.replace("pm25", "PM2.5").replace("pm10", "PM10") if best else "-")
                    + _td(sub("pm25"), e["pm25"] if e["pm25"] is not None else -1, "num",
                          ' data-mean="%s"' % ("" if e["pm25"] is None else "%.6f" % e["pm25"]))
                    + _td(sub("pm10"), e["pm10"] if e["pm10"] is not None else -1, "num",
                          ' data-mean="%s"' % ("" if e["pm10"] is None else "%.6f" % e["pm10"]))
                    + _td(hours, e["hours"]) + "</tr>")
    table = '<table id="air"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (heads, "".join(rows))
    legend_rows = "".join(
        '<tr><td style="background:%s;color:%s">%d - %s</td><td>%s</td><td>%s - %s</td><td>%s - %s</td></tr>'
        % (aqi.colour(n), "#fff" if n in (1, 4) else "#000", lvl[0], lvl[1] if n < 4 else "500*",
           escape(lvl[4] if lang == "th" else lvl[3]), aqi.BREAKPOINTS["pm25"][n][0], aqi.BREAKPOINTS["pm25"][n][1],
           aqi.BREAKPOINTS["pm10"][n][0], aqi.BREAKPOINTS["pm10"][n][1])
        for n, lvl in enumerate(aqi.LEVELS))
    legend = ('<h2>%s</h2><table id="aqi-bands"><thead><tr><th>AQI</th><th>%s</th><th>PM2.5 (µg/m³)</th>'
              '<th>PM10 (µg/m³)</th></tr></thead><tbody>%s</tbody></table>'
              '<p class="note" id="aqi-footnote">%s</p>'
              % (escape(label(lang, "legend")), escape(label(lang, "level")), legend_rows,
                 escape(label(lang, "aqi_footnote"))))
    return _page(request, "air", label(lang, "air"), table + legend)


# -- Alerts ------------------------------------------------------------------------------------------------


async def alerts_json(request: web.Request) -> web.Response:
    """GET /alerts: the open alerts and the rules, as JSON."""
    rows = await request.app[READER_KEY].run(alerts.open_alerts)
    return web.json_response({"alerts": rows, "rules": list(alerts.RULES)})


async def alerts_ack(request: web.Request) -> web.Response:
    """POST /alerts/ack (operator token): acknowledge an open alert."""
    form = await params.form(request, request.app[FORM_TIMEOUT_KEY])
    if not authorised(request, form):
        raise web.HTTPForbidden(text="operator token required")
    try:
        ident = int(form.get("id") or request.query.get("id") or "")
    except ValueError:
        raise web.HTTPBadRequest(text="id must be the number of an open alert (see /alerts)") from None
    ok = await request.app[alerts.EVALUATOR_KEY].run_ack(ident)
    if not ok:
        raise web.HTTPNotFound(text="no open alert %d (it may have cleared)" % ident)
    if request.headers.get("Accept", "").startswith("application/json"):
        return web.json_response({"id": ident, "acked": True})
    raise web.HTTPSeeOther(_url("/fleet", _lang(request), acked=ident))


ERROR_TITLES = {400: "err_400", 403: "err_403", 404: "err_404"}


@web.middleware
async def error_pages(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """A browser (Accept: text/html) gets a 400, 403 or 404 as a page in its language, with what to do; scripts
    keep the plain-text answer."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status not in ERROR_TITLES or "text/html" not in request.headers.get("Accept", ""):
            raise
        lang = _lang(request)
        detail = err.text or ""
        if err.status == 400:
            name = detail.split(" ", 1)[0]
            what = label(lang, "err_400_param") % name if name in PARAM_NAMES else label(lang, "err_400_text")
        else:
            what = label(lang, "err_%d_text" % err.status)
        body = ('<p id="error-text">%s</p><p class="note">%s: <code id="error-detail">%s</code></p>'
                '<p><a href="%s">%s</a></p>'
                % (escape(what), escape(label(lang, "err_detail")), escape(detail), escape(_url("/", lang)),
                   escape(label(lang, "city"))))
        resp = _page(request, "", "%d %s" % (err.status, label(lang, ERROR_TITLES[err.status])), body,
                     refresh=False)
        resp.set_status(err.status)
        return resp


PARAM_NAMES = ("from", "to", "end", "range", "days", "month", "site", "sensor", "device", "era")


def setup_pages(app: web.Application, db: sqlite_utils.Database, config: Config, data_dir: str | Path) -> None:
    """Add the operators' pages to the agent's app: `db` is the agent's own connection (the pages' few writes),
    `config` the agent's Config, `data_dir` its data folder (the operator token's file, the store)."""
    app[TOKEN_KEY] = operator_token(data_dir, config.operator_token)
    app[TOKEN_PATH_KEY] = str(Path(data_dir) / TOKEN_FILE)
    app[DATA_DIR_PATH_KEY] = str(Path(data_dir).resolve())
    app[LANG_KEY] = lang_of(config.language, "th")
    extra = {} if config.emission_factor is None else {config.emission_factor_year: config.emission_factor}
    app[FACTORS_KEY] = carbon.factors_table(extra)
    app[WRITE_DB_KEY] = db
    app[CONFIG_KEY_ALERTS] = config.alerts
    app[FORM_TIMEOUT_KEY] = config.body_timeout_s
    reader = Reader(store.db_path(data_dir))
    app[READER_KEY] = reader
    security.setup_security(app)
    app[ERA_KEY] = config.thai_era
    app.middlewares.append(era_of_request)
    app.middlewares.append(error_pages)
    setup_city(app)
    setup_downloads(app)
    firmware_block.setup(app)
    app.router.add_get("/fleet", fleet)
    app.router.add_get("/device/{id}", device_page)
    app.router.add_post("/device/{id}/settings", device_settings_post)
    app.router.add_get("/sync", sync_page)
    app.router.add_post("/sync/retry", sync_retry)
    app.router.add_get("/carbon", carbon_page)
    app.router.add_get("/air", air_page)
    app.router.add_get("/alerts", alerts_json)
    app.router.add_post("/alerts/ack", alerts_ack)
    app.on_cleanup.append(reader.close)
