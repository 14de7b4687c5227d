"""The pages over real HTTP on 127.0.0.1 (no browser): errors, token, config, and the SVG module's pieces."""

from __future__ import annotations

import re
import stat
import time
from datetime import datetime

import aiohttp
import pytest

from airwatt.agent import carbon, rollup, store, sync_store
from airwatt.agent.app import make_app
from airwatt.agent.config import Config
from airwatt.agent.web import pages, svg
from pages_fixture import expect_errors, fill
from serving import serve


async def test_bad_requests_are_clear_errors(agent):
    base, _, _ = agent
    async with aiohttp.ClientSession() as http:
        await expect_errors(http, base, [("/device/nope?lang=en", 404, "unknown device"),
                                         ("/device/hall-01?range=1y", 400, "range must be one of"),
                                         ("/device/hall-01?end=yesterday", 400, "end must be"),
                                         ("/carbon?days=many", 400, "days must be")])
        # reading needs no token; the pages are HTML in UTF-8
        async with http.get(base + "/sync") as r:
            assert r.status == 200 and r.content_type == "text/html" and r.charset == "utf-8"


async def test_device_page_shows_the_last_15_minutes_of_a_board_just_installed(agent):
    base, _, _ = agent
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/device/hall-01?range=15m&lang=en") as r:
            text = await r.text()
    assert r.status == 200 and ('<a href="/device/hall-01?range=15m&amp;lang=en" class="here" data-range="15m">'
                                '15 min</a>') in text, text
    since, until = re.search(r"Range: (\S+ \S+) &ndash; (\S+ \S+)</p>", text).groups()
    parse = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S")  # noqa: E731
    assert (parse(until) - parse(since)).total_seconds() == 900


async def test_token_generated_into_data_dir_once_and_required(tmp_path):
    data_dir = tmp_path / "d"
    app = make_app(data_dir, Config())
    path = data_dir / pages.TOKEN_FILE
    token = path.read_text().strip()
    assert len(token) >= 16 and stat.S_IMODE(path.stat().st_mode) == 0o600
    async with serve(app) as base, aiohttp.ClientSession() as http:
        page = {"Origin": base}  # what a browser sends with the sync page's form
        async with http.post(base + "/sync/retry", data={"token": token[:-1]}, headers=page,
                             allow_redirects=False) as r:
            assert r.status == 403
        async with http.post(base + "/sync/retry", data={"token": token}, headers=page, allow_redirects=False) as r:
            assert r.status == 303
    # a restart keeps the same token; a configured token wins over the file
    assert make_app(data_dir, Config())[pages.TOKEN_KEY] == token
    assert make_app(data_dir, Config(operator_token="x" * 20))[pages.TOKEN_KEY] == "x" * 20


async def test_configured_factor_language_and_carbon_rows(tmp_path):
    data_dir = tmp_path / "d"
    db = store.open_db(data_dir)
    now = float(int(time.time()))
    fill(db, now)
    energy = [r for r in store.readings(db, "hall-01") if r["sensor"] == "energy"]
    db.close()
    app = make_app(data_dir, Config(language="en", emission_factor=0.5, emission_factor_year=2026))
    async with serve(app) as base, aiohttp.ClientSession() as http:
        async with http.get(base + "/carbon?days=3") as r:
            html = await r.text()
    assert '<html lang="en">' in html and "2026: 0.5000 kgCO2e/kWh" in html
    rows = re.findall(r'data-day="([\d-]+)">.*?data-kwh="([\d.]+)".*?data-kgco2e="([\d.]+)"', html)
    expected = carbon.daily_wh(energy)
    assert {d: float(k) for d, k, _ in rows} == pytest.approx({d: wh / 1000 for d, wh in expected.items()}, abs=1e-6)
    for _, kwh, kg in rows:
        assert float(kg) == pytest.approx(float(kwh) * 0.5, abs=1e-6)


def test_device_state_thresholds():
    now = 10_000.0
    assert pages.device_state(None, 60, now) == "never"
    assert pages.device_state(now - 180, 60, now) == "online"  # 3 intervals
    assert pages.device_state(now - 181, 60, now) == "late"
    assert pages.device_state(now - 600, 60, now) == "late"  # 10 intervals
    assert pages.device_state(now - 601, 60, now) == "offline"
    assert pages.device_state(now - 601, None, now) == "offline"  # unknown interval: 60 s


def test_nice_ticks():
    assert svg.nice_ticks(0, 94) == [0, 20, 40, 60, 80, 100]
    assert svg.nice_ticks(420, 2019) == [0, 500, 1000, 1500, 2000, 2500]  # raw step 319.8 -> 500
    ticks = svg.nice_ticks(22.9, 29.1)
    assert ticks[0] <= 22.9 and ticks[-1] >= 29.1 and len(ticks) <= 8
    assert svg.nice_ticks(5, 5)[-1] > 5  # a flat series still gets a range


def test_downsample_keeps_flagged_and_means_buckets():
    pts = [(float(t), float(t % 10), t % 97 == 0) for t in range(0, 1000)]
    out = svg.downsample(pts, 0, 1000, 100)
    flagged = [m for m in out if m["flagged"]]
    assert [(m["t"], m["v"]) for m in flagged] == [(t, v) for t, v, f in pts if f]
    buckets = [m for m in out if not m["flagged"]]
    assert len(buckets) == 100 and sum(m["n"] for m in buckets) == sum(1 for p in pts if not p[2])
    first = [v for t, v, f in pts if t < 10 and not f]  # bucket 0 holds t 0..9 minus the flagged t=0
    assert buckets[0]["v"] == pytest.approx(sum(first) / len(first)) and buckets[0]["n"] == 9
    few = svg.downsample(pts[:50], 0, 1000, 100)
    assert all("b0" not in m for m in few) and len(few) == 50


def test_time_axis_is_thai_local_time():
    t0 = datetime(2026, 3, 10, 0, 0, tzinfo=svg.THAILAND).timestamp()
    plot = svg.time_plot([svg.Series("pm25", "PM2.5", "#000", [(t0 + 3600, 10.0, False)])], t0, t0 + 86400,
                         plot_id="p", unit="x")
    labels = re.findall(r'class="tick">([\d:/]+)</text>', plot)
    assert "03:00" in labels and "21:00" in labels and "11/03" in labels  # midnight shows the date


async def test_pages_refresh_themselves_except_a_fixed_past_range(agent):
    base, _, facts = agent
    async with aiohttp.ClientSession() as http:
        for path in ("/fleet", "/air", "/carbon", "/sync", "/device/hall-01"):
            async with http.get(base + path) as r:
                html = await r.text()
            assert "setTimeout(function(){location.reload();},60000)" in html, path
            assert '<meta http-equiv="refresh" content="60">' in html, path  # without JS
        async with http.get(base + "/device/hall-01?end=%d" % facts["now"]) as r:
            assert "location.reload" not in await r.text()  # a chosen past range stays put


@pytest.mark.parametrize("lang, heading, note", [
    ("en", "Devices without a location", "readings waiting"),
    ("th", "อุปกรณ์ที่ยังไม่มีพิกัดที่ตั้ง", "ข้อมูลที่รอส่ง"),
])
async def test_a_device_without_location_is_shown_with_the_command_that_fixes_it(agent, lang, heading, note):
    base, data_dir, _ = agent
    db = store.open_db(data_dir)
    for device in ("hall-01", "school-01", "new-01"):
        store.set_device(db, device, lat=16.44, lon=102.83)
    waiting = sync_store.waiting_for_location(db)
    db.close()
    assert waiting == {"hall-02": waiting["hall-02"]} and waiting["hall-02"] > 0
    fix = "airwatt device set hall-02 --lat LAT --lon LON --data-dir %s" % data_dir.resolve()
    async with aiohttp.ClientSession() as http:
        for page in ("/fleet", "/sync"):
            async with http.get(base + page + "?lang=" + lang) as r:
                html = await r.text()
            block = re.search(r'<div id="no-location">(.*?)</div>', html)
            assert block, page
            assert heading in block.group(1) and fix in block.group(1), page
            assert re.findall(r'<li data-device="([^"]+)"', block.group(1)) == ["hall-02"], page
            assert "<b>hall-02</b> (%d %s)" % (waiting["hall-02"], note) in block.group(1), page
        db = store.open_db(data_dir)
        store.set_device(db, "hall-02", lat=16.44, lon=102.83)
        db.close()
        async with http.get(base + "/fleet?lang=" + lang) as r:
            assert 'id="no-location"' not in await r.text()


async def test_long_ranges_plot_hourly_means_of_the_readings(agent):
    base, data_dir, facts = agent
    now = facts["now"]
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/device/hall-01?lang=en&range=7d&end=%d" % now) as r:
            html = await r.text()
    assert 'id="hourly-note"' in html
    db = store.open_db(data_dir)
    rows = store.readings(db, "hall-01", now - 7 * 86400, now + 1)
    db.close()
    for plot, metric in (("plot-co2", "co2"), ("plot-pm25", "pm25"), ("plot-power", "power")):
        svg_text = html.split('id="%s"' % plot)[1].split("</svg>")[0]
        got = {int(b0): (float(v), int(n)) for v, n, b0 in re.findall(
            r'data-value="([\d.]+)" data-n="(\d+)" data-b0="(\d+)"', svg_text)}
        want: dict[int, list[float]] = {}
        for r in rows:
            if r[metric] is not None and not {"stuck", "out_of_range"} & set(r["flags"].split(",")):
                want.setdefault(int(r["t"] // 3600 * 3600), []).append(r[metric])
        want = {h: v for h, v in want.items() if h >= (now - 7 * 86400) // 3600 * 3600}
        assert sorted(got) == sorted(want) and len(want) >= 26
        for h, values in want.items():
            assert got[h][1] == len(values)
            assert got[h][0] == pytest.approx(sum(values) / len(values), abs=1e-6)


async def test_month_ranges_plot_daily_means_of_the_readings(agent):
    """Over 8 days a plot draws the daily rollups: each point the mean and count of its Thai local day's good
    readings, computed here from the raw rows."""
    base, data_dir, facts = agent
    now = facts["now"]
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/device/hall-01?lang=en&range=30d&end=%d" % now) as r:
            html = await r.text()
    assert 'id="daily-note"' in html and 'id="hourly-note"' not in html
    db = store.open_db(data_dir)
    rows = store.readings(db, "hall-01", now - 31 * 86400, now + 1)
    db.close()
    for plot, metric in (("plot-co2", "co2"), ("plot-pm25", "pm25"), ("plot-power", "power")):
        svg_text = html.split('id="%s"' % plot)[1].split("</svg>")[0]
        got = {int(b0): (float(v), int(n), int(b1)) for v, n, b0, b1 in re.findall(
            r'data-value="([\d.]+)" data-n="(\d+)" data-b0="(\d+)" data-b1="(\d+)"', svg_text)}
        want: dict[int, list[float]] = {}
        for r in rows:
            if r[metric] is not None and not {"stuck", "out_of_range"} & set(r["flags"].split(",")):
                want.setdefault(rollup.day_start(r["t"]), []).append(r[metric])
        assert sorted(got) == sorted(want) and len(want) >= 2  # the fixture's 26 h reach over two local days
        for day, values in want.items():
            assert got[day][1] == len(values) and got[day][2] == day + 86400
            assert got[day][0] == pytest.approx(sum(values) / len(values), abs=1e-6)


async def test_no_query_value_or_form_is_a_500(agent):
    """Every parameter of every page against values that once broke them (NaN and far-off times, huge numbers,
    control characters, broken forms): each is answered, a value the page cannot use is a 400 naming it."""
    base, _, _ = agent
    hostile = ["nan", "inf", "-inf", "1e20", "-1e20", "1e309", "-5", "0", "0001-01-01T00:00", "9999-12-31T23:59",
               "2026-13-01T00:00", "--5", "%00", "%FF%FE", "x" * 5000, "9" * 40, "1e5", "%0A", "%ED%A0%80"]
    pages_params = {"/fleet": ("site", "lang"), "/device/hall-01": ("end", "range", "lang"),
                    "/carbon": ("days", "lang"), "/air": ("lang",), "/sync": ("retry", "lang"), "/": ("lang",)}
    async with aiohttp.ClientSession() as http:
        for path, names in pages_params.items():
            for name in names:
                for value in hostile:
                    url = "%s%s?%s=%s" % (base, path, name, value)
                    async with http.get(url, allow_redirects=False) as r:
                        assert r.status in (200, 302, 400), (url, r.status)
                        if r.status == 400:
                            assert (await r.text()).startswith(name + " "), url
        for value in ("nan", "inf", "1e20", "-1e20", "1e309", "0001-01-01T00:00", "9999-12-31T23:59"):
            async with http.get(base + "/device/hall-01?end=" + value) as r:
                assert r.status == 400 and "end must be Unix seconds or YYYY-MM-DDTHH:MM" in await r.text(), value
        async with http.get(base + "/device/hall-01?end=%d" % int(time.time() - 3600)) as r:
            assert r.status == 200  # a sane end still works
        for ctype, data in (("multipart/form-data", b"x"), ("multipart/form-data; boundary=zz", b"x"),
                            ("application/x-www-form-urlencoded; charset=bogus", b"token=abc")):
            async with http.post(base + "/sync/retry", data=data, headers={"Content-Type": ctype, "Origin": base},
                                 allow_redirects=False) as r:
                assert r.status == 400 and "the form could not be read" in await r.text(), ctype


async def test_answers_carry_security_headers_and_actions_must_come_from_the_pages(agent):
    base, data_dir, facts = agent
    async with aiohttp.ClientSession() as http:
        for path in ("/fleet", "/device/hall-01", "/sync", "/carbon", "/air", "/healthz", "/device/nope", "/carbon?days=x"):
            async with http.get(base + path) as r:
                h = r.headers
                assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY", path
                assert h["Referrer-Policy"] == "same-origin", path
                csp = h["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
                if r.status == 200 and r.content_type == "text/html":
                    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)
                    html = await r.text()
                    scripts = re.findall(r"<script[^>]*>", html)
                    assert scripts and all(s == '<script nonce="%s">' % nonce for s in scripts), path
                    assert not re.search(r"\son[a-z]+=", html), "inline event handlers do not run under the CSP"
        token = {"token": facts["app"][pages.TOKEN_KEY]}
        for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Referer": "http://evil.example/sync"}, {"Origin": base.replace("127.0.0.1", "localhost")}):
            async with http.post(base + "/sync/retry", data=token, headers=headers, allow_redirects=False) as r:
                assert r.status == 403 and "own pages" in await r.text(), headers
                assert r.headers["X-Frame-Options"] == "DENY"
        assert store.get_meta(store.open_db(data_dir), "sync_retry_requested") is None
        for headers in ({"Origin": base}, {"Referer": base + "/sync?lang=en"}):
            async with http.post(base + "/sync/retry", data=token, headers=headers, allow_redirects=False) as r:
                assert r.status == 303, headers
