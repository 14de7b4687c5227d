"""What every operators' page shares: the app keys the pages read, the page frame (navigation, language and
era switches, styles, the sort and download script), the formatting of times, and the operator-token check.

agent/web/pages.py, city.py and downloads.py build on it; setup_pages in pages.py fills the keys.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import secrets
import sqlite3
import time
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import sqlite_utils
from aiohttp import web

from ..dbthread import DbThread
from . import params, security, svg
from .i18n import label, lang_of

log = logging.getLogger("airwatt.pages")

TOKEN_FILE = "operator_token"
REFRESH_S = 60
NAV = (("city", "/"), ("fleet", "/fleet"), ("air", "/air"), ("carbon", "/carbon"), ("sync", "/sync"))
RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
# online while the last upload is at most ONLINE_INTERVALS reading intervals old, late up to LATE_INTERVALS,
# offline beyond: boards upload a batch every few readings, so one missed interval is not yet "late".
ONLINE_INTERVALS, LATE_INTERVALS = 3, 10
STATE_COLOURS = {"online": "#0a8f3c", "late": "#c77700", "offline": "#c00000", "never": "#777"}


class Reader:
    """A read-only connection used from one worker thread."""

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.thread = DbThread(self._connect, "airwatt-pages")
        self.db: sqlite_utils.Database | None = None

    def _connect(self) -> sqlite3.Connection:
        uri = Path(self.db_file).resolve().as_uri() + "?mode=ro"  # as_uri escapes '?', '#', spaces
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        self.db = sqlite_utils.Database(conn)
        return conn

    def _db(self) -> sqlite_utils.Database:
        self.thread.connection()
        assert self.db is not None
        return self.db

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.thread.call(lambda: fn(self._db(), *args))

    async def close(self, _app: web.Application | None = None) -> None:
        await self.thread.close()


READER_KEY = web.AppKey("airwatt_pages_reader", Reader)
TOKEN_KEY = web.AppKey("airwatt_operator_token", str)
LANG_KEY = web.AppKey("airwatt_pages_lang", str)
ERA_KEY = web.AppKey("airwatt_pages_thai_era", str)
FACTORS_KEY = web.AppKey("airwatt_pages_factors", dict)
WRITE_DB_KEY = web.AppKey("airwatt_pages_write_db", sqlite_utils.Database)
TOKEN_PATH_KEY = web.AppKey("airwatt_operator_token_path", str)
DATA_DIR_PATH_KEY = web.AppKey("airwatt_pages_data_dir", str)  # absolute, for the commands the pages suggest
CONFIG_KEY_ALERTS = web.AppKey("airwatt_pages_alerts_config", object)
FORM_TIMEOUT_KEY = web.AppKey("airwatt_pages_form_timeout", float)


def operator_token(data_dir: Path, configured: str | None) -> str:
    """The configured token, else the one kept in the data dir (generated, mode 0600, on first start)."""
    if configured:
        return configured
    path = Path(data_dir) / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        if len(token) >= 16:
            return token
    token = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(token + "\n", encoding="ascii")
    log.info("operator token generated into %s", path)
    return token


# -- HTML helpers ------------------------------------------------------------------------------------------

CSS = """
body{font-family:"Garuda","Loma","Noto Sans Thai","DejaVu Sans",sans-serif;margin:0;color:#222;background:#f5f6f8}
header{background:#1f3b57;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;padding:4px 8px;border-radius:4px}
header a.here{background:#3d6690} header .brand{font-weight:bold;margin-right:12px}
header .lang{margin-left:auto;border:1px solid #fff} header .era + .lang{margin-left:0}
main{padding:12px 16px} h1{font-size:20px;margin:6px 0 12px} h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #d5d8dc;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#e8ebef;white-space:normal;vertical-align:bottom} th.sortable{cursor:pointer}
th.sorted-asc:after{content:" \\25B2"} th.sorted-desc:after{content:" \\25BC"} td.num{text-align:right}
.state{font-weight:bold} .chip{display:inline-block;width:12px;height:12px;border-radius:2px;
vertical-align:middle;margin-right:4px} .aqi{font-weight:bold;text-align:center;min-width:48px}
.plot{display:block;background:#fff;margin:4px 0 8px;width:100%;max-width:1200px;height:auto}
.plot .tick{font-size:11px;fill:#444} .plot .unit{font-size:11px;fill:#444} .plot .legend{font-size:11px;fill:#222}
.plot .nodata{font-size:14px;fill:#888} .plot .guide-label{font-size:11px}
.note{color:#555;font-size:12px} .muted{color:#777} form.inline{display:inline}
main a.here{font-weight:bold;text-decoration:none} .ok{color:#0a8f3c} .err{color:#c00000}
.bands span{margin-right:12px;font-size:12px}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{background:#fff;border:1px solid #d5d8dc;padding:8px 14px}
.card b{display:block;font-size:22px}
"""

SORT_JS = """
function sortTable(th, desc){var t=th.closest('table'),i=Array.prototype.indexOf.call(th.parentNode.children,th);
var rows=Array.prototype.slice.call(t.tBodies[0].rows);
rows.sort(function(a,b){var x=a.cells[i].dataset.sort,y=b.cells[i].dataset.sort,nx=parseFloat(x),ny=parseFloat(y);
var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y));return desc?-c:c;});
rows.forEach(function(r){t.tBodies[0].appendChild(r);});
t.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
th.classList.add(desc?'sorted-desc':'sorted-asc');}
document.querySelectorAll('th.sortable').forEach(function(th){th.addEventListener('click',function(){
var desc=th.classList.contains('sorted-asc');sortTable(th,desc);
history.replaceState(null,'','#sort='+th.dataset.key+':'+(desc?'desc':'asc'));});});
var m=/sort=([a-z_0-9]+):(asc|desc)/.exec(location.hash);
if(m){var th=document.querySelector('th[data-key="'+m[1]+'"]');if(th)sortTable(th,m[2]=='desc');}
document.querySelectorAll('main table[id]').forEach(function(t){
var heads=Array.prototype.map.call(t.tHead.rows[0].cells,function(c){return c.textContent.trim();});
var rows=function(){return Array.prototype.map.call(t.querySelectorAll('tbody tr, tfoot tr'),function(r){
return Array.prototype.map.call(r.cells,function(c){return c.textContent.trim();});});};
var q=function(v){return /[",\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;};
var make={csv:function(){return [heads].concat(rows()).map(function(r){return r.map(q).join(',');}).join('\\n')+'\\n';},
json:function(){return JSON.stringify(rows().map(function(r){var o={};heads.forEach(function(h,i){o[h]=r[i];});return o;}));}};
var p=document.createElement('p');p.className='note table-downloads';p.dataset.table=t.id;
['csv','json'].forEach(function(f){var a=document.createElement('a');a.textContent=f.toUpperCase();a.href='#';
a.className='dl-table';a.dataset.format=f;a.download=t.id+'.'+f;a.style.marginRight='8px';
a.addEventListener('click',function(){a.href=URL.createObjectURL(new Blob([make[f]()],
{type:f=='csv'?'text/csv':'application/json'}));});p.appendChild(a);});
t.parentNode.insertBefore(p,t.nextSibling);t.airwattDownload=make;});
var sf=document.getElementById('site-filter');if(sf)sf.addEventListener('change',function(){sf.form.submit();});
"""


BE_OFFSET = 543  # Buddhist Era year = Common Era year + 543
ERA: contextvars.ContextVar[str] = contextvars.ContextVar("airwatt_pages_era", default="ce")


@web.middleware
async def era_of_request(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Years in Buddhist Era on Thai pages when ?era=be (or the config's thai_era), for this request."""
    default = request.app[ERA_KEY] if ERA_KEY in request.app else "ce"
    era = params.choice(request, "era", ("ce", "be"), default) if "era" in request.query else default
    token = ERA.set(era if _lang(request) == "th" else "ce")
    try:
        return await handler(request)
    finally:
        ERA.reset(token)


def local_date(d: datetime, with_time: bool = True) -> str:
    """A Thai local date (and time) as the pages write it: YYYY-MM-DD, or DD/MM/YYYY in Buddhist Era."""
    if ERA.get() == "be":
        return "%02d/%02d/%d%s" % (d.day, d.month, d.year + BE_OFFSET, d.strftime(" %H:%M:%S") if with_time else "")
    return d.strftime("%Y-%m-%d %H:%M:%S" if with_time else "%Y-%m-%d")


def period(text: str) -> str:
    """A day 'YYYY-MM-DD' or month 'YYYY-MM' as shown: in Buddhist Era 'DD/MM/YYYY' or 'MM/YYYY'."""
    if ERA.get() != "be":
        return text
    parts = text.split("-")
    parts[0] = str(int(parts[0]) + BE_OFFSET)
    return "/".join(reversed(parts))


def _lang(request: web.Request) -> str:
    return lang_of(request.query.get("lang"), request.app[LANG_KEY])


def _url(path: str, lang: str, **params: Any) -> str:
    q = {k: v for k, v in params.items() if v not in (None, "")}
    q["lang"] = lang
    if lang == "th" and ERA.get() == "be":
        q["era"] = "be"
    return "%s?%s" % (path, urlencode(q))


def _page(request: web.Request, key: str, title: str, body: str, refresh: bool = True, head: str = "",
          js: str = "", scripts: tuple[str, ...] = ()) -> web.Response:
    """The page around `body`: `head` (styles) goes into <head> with the scripts at the URLs `scripts`; `js` runs
    after the page's own script. Every script gets the page's CSP nonce."""
    lang = _lang(request)
    other = "en" if lang == "th" else "th"
    query = dict(request.query)
    query["lang"] = other
    nav = "".join('<a href="%s" class="%s">%s</a>' % (escape(_url(path, lang)), "here" if k == key else "",
                                                      escape(label(lang, k)))
                  for k, path in NAV)
    switch = '<a class="lang" id="lang-switch" href="%s">%s</a>' % (
        escape(request.path + "?" + urlencode(query)), escape(label(lang, "lang_other")))
    # reload (keeping #sort=...) rather than <meta refresh> so a sorted table stays sorted
    nonce, policy = security.page_policy()
    script = '<script nonce="%s">' % nonce  # the page's CSP runs no other script
    reload_js = (script + 'setTimeout(function(){location.reload();},%d);</script>'
                 '<noscript><meta http-equiv="refresh" content="%d"></noscript>' % (REFRESH_S * 1000, REFRESH_S)
                 if refresh else "")
    now = _fmt_time(time.time())
    if lang == "th":  # the era switch: Buddhist Era (พ.ศ.) or Common Era (ค.ศ.) years
        eq = dict(request.query)
        eq["era"] = "ce" if ERA.get() == "be" else "be"
        switch = '<a class="lang era" id="era-switch" href="%s">%s</a>' % (
            escape(request.path + "?" + urlencode(eq)), "ค.ศ." if ERA.get() == "be" else "พ.ศ.") + switch
    html = ('<!DOCTYPE html><html lang="%s"><head><meta charset="utf-8"><title>%s - AirWatt</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,"><style>%s</style>%s%s%s</head>'
            '<body><header><span class="brand">AirWatt</span>%s%s</header><main><h1>%s</h1>%s'
            '<p class="note">%s %s (UTC+7)</p></main>%s%s%s</script></body></html>'
            % (lang, escape(title), CSS, reload_js, head,
               "".join('<script nonce="%s" src="%s"></script>' % (nonce, escape(u)) for u in scripts),
               nav, switch, escape(title), body, escape(label(lang, "updated")), now, script, SORT_JS, js))
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": policy})


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    return local_date(datetime.fromtimestamp(t, svg.THAILAND))


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % (s // 60)
    if s < 172800:
        return "%.1f h" % (s / 3600)
    return "%.1f d" % (s / 86400)


def _td(text: Any, sort: Any = None, cls: str = "", extra: str = "") -> str:
    sort = text if sort is None else sort
    return '<td data-sort="%s"%s%s>%s</td>' % (escape(str(sort)), ' class="%s"' % cls if cls else "", extra,
                                               escape(str(text)))


def device_state(last_seen: float | None, interval_s: int | None, now: float) -> str:
    """online / late / offline from the age of the last upload against the device's interval (the longest it
    normally goes between uploads, recorded when it was flashed: flash_cmd.upload_gap)."""
    if last_seen is None:
        return "never"
    age = now - last_seen
    interval = interval_s or 60  # registered before intervals were recorded
    if age <= ONLINE_INTERVALS * interval:
        return "online"
    if age <= LATE_INTERVALS * interval:
        return "late"
    return "offline"


def authorised(request: web.Request, form: Any) -> bool:
    """True when the request carries the operator token (form field `token` or a Bearer header)."""
    given = form.get("token", "") if form is not None else ""
    header = request.headers.get("Authorization", "")
    if not given and header.startswith("Bearer "):
        given = header[7:].strip()
    expected = request.app[TOKEN_KEY]
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())
