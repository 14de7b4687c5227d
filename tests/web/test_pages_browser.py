"""The operators' pages in headless Chromium against a real agent and a real SQLite store.

Plotted values are read back from the SVG's data attributes and compared with rows of the database.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from airwatt.agent import aqi, carbon, store, sync
from cdp_browser import Browser
from pages_fixture import HALL_STEP, TOKEN, WH_PER_STEP

ROW_IDS = "Array.from(document.querySelectorAll('#fleet tbody tr')).map(tr => tr.dataset.device)"


def _db(data_dir):
    return store.open_db(data_dir)


def _flagged(row) -> bool:
    return bool(row["flags"])


async def test_device_plots_match_database(agent, shots):
    base, data_dir, facts = agent
    now = facts["now"]
    async with Browser() as b:
        await b.goto(base + "/device/hall-01?lang=en&end=%d" % now)
        await b.screenshot(shots / "device-hall-01-en.png")
        markers = await b.js("""Array.from(document.querySelectorAll('svg.plot circle.pt')).map(c => ({
            plot: c.closest('svg').id, series: c.dataset.series, t: parseFloat(c.dataset.t),
            v: parseFloat(c.dataset.value), flagged: c.classList.contains('flagged'), n: c.dataset.n || null}))""")
        bars = await b.js("""Array.from(document.querySelectorAll('#plot-kwh rect.bar')).map(r => ({
            day: r.dataset.day, v: parseFloat(r.dataset.value)}))""")
        bands = await b.js("Array.from(document.querySelectorAll('#plot-pm25 rect.band'))"
                           ".map(r => r.getAttribute('fill'))")
        guides = await b.js("Array.from(document.querySelectorAll('#plot-co2 line.guide')).map(l => l.dataset.value)")
        legend = await b.js("document.querySelector('#plot-pm25').textContent")
    db = _db(data_dir)
    rows = store.readings(db, "hall-01", now - 86400, now + 1e-6)  # the page's window: [end - 24 h, end]
    db.close()
    for metric in ("pm25", "co2", "temperature", "humidity", "power"):
        want = sorted((r["t"], float(r[metric]), _flagged(r)) for r in rows if r[metric] is not None)
        got = sorted((m["t"], m["v"], m["flagged"]) for m in markers if m["series"] == metric)
        assert len(want) == 24 * 3600 // HALL_STEP
        assert got == want, metric  # every reading drawn with its exact value, flagged ones as flagged
        assert all(m["n"] is None for m in markers if m["series"] == metric)
    assert sum(1 for m in markers if m["flagged"] and m["series"] == "pm25") == sum(
        1 for r in rows if r["sensor"] == "pm" and "stuck" in r["flags"]) > 0
    # PM2.5 on the Thai AQI colour bands (the plot reaches 94 ug/m3, so all five show), CO2 guides
    assert bands == [aqi.colour(n) for n in range(5)]
    assert guides == ["1000", "1500"]
    assert "flagged reading" in legend
    # daily kWh bars: the meter used 25 Wh every 5 minutes throughout (through a 32-bit wrap and a reset)
    db = _db(data_dir)
    energy = [r for r in store.readings(db, "hall-01") if r["sensor"] == "energy"]
    db.close()
    expected = carbon.daily_wh(energy)
    assert {b_["day"]: b_["v"] for b_ in bars if b_["v"]} == pytest.approx(
        {d: wh / 1000 for d, wh in expected.items()}, abs=1e-6)  # the bars carry kWh to 6 places
    assert sum(b_["v"] for b_ in bars) == pytest.approx(WH_PER_STEP * (len(energy) - 1) / 1000)


async def test_many_readings_are_drawn_as_bucket_means(agent, shots):
    base, data_dir, facts = agent
    now = facts["now"]
    async with Browser() as b:
        await b.goto(base + "/device/hall-02?end=%d" % now)
        await b.screenshot(shots / "device-hall-02-th.png")
        markers = await b.js("""Array.from(document.querySelectorAll('#plot-pm25 circle.pt')).map(c => ({
            t: parseFloat(c.dataset.t), v: parseFloat(c.dataset.value), flagged: c.classList.contains('flagged'),
            n: parseInt(c.dataset.n || '1'), b0: parseFloat(c.dataset.b0), b1: parseFloat(c.dataset.b1)}))""")
    db = _db(data_dir)
    rows = [r for r in store.readings(db, "hall-02", now - 86400, now + 1) if r["pm25"] is not None]
    db.close()
    good = [r for r in rows if not r["flags"]]
    buckets = [m for m in markers if not m["flagged"]]
    assert len(good) > 720 and len(buckets) <= 720
    assert sum(m["n"] for m in buckets) == len(good)  # each unflagged reading in exactly one bucket
    for m in buckets:
        inside = [r["pm25"] for r in good if m["b0"] <= r["t"] < m["b1"] or (m["b1"] >= now and r["t"] == now)]
        assert len(inside) == m["n"]
        assert m["v"] == pytest.approx(sum(inside) / len(inside), abs=1e-5)
    flagged = sorted((m["t"], m["v"]) for m in markers if m["flagged"])
    assert flagged == [(r["t"], r["pm25"]) for r in rows if r["flags"]]  # flagged ones stay single


async def test_fleet_table_states_sorting_and_site_filter(agent, shots):
    base, data_dir, facts = agent
    async with Browser() as b:
        await b.goto(base + "/fleet?lang=en")
        await b.screenshot(shots / "fleet-en.png")
        table = await b.js("""Array.from(document.querySelectorAll('#fleet tbody tr')).map(tr =>
            Array.from(tr.cells).map(td => td.textContent.trim()))""")
        heads = await b.js("Array.from(document.querySelectorAll('#fleet th')).map(th => th.textContent)")
        # click the RSSI header twice: ascending then descending, in the browser's own script
        await b.js("document.querySelector('th[data-key=rssi]').click()")
        asc = await b.js(ROW_IDS)
        await b.js("document.querySelector('th[data-key=rssi]').click()")
        desc = await b.js(ROW_IDS)
        hash_ = await b.js("location.hash")
        # the sort survives the page's self-refresh (it reloads with the #sort=... hash)
        await b.js_and_wait("location.reload()")
        after_reload = await b.js(ROW_IDS)
        # filter by site with the select box
        await b.goto(base + "/fleet?lang=en&site=school")
        school = await b.js(ROW_IDS)
    col = {h: n for n, h in enumerate(heads)}
    by_id = {r[0]: r for r in table}
    assert sorted(by_id) == ["hall-01", "hall-02", "new-01", "school-01"]
    assert [by_id[d][col["State"]] for d in ("hall-01", "hall-02", "school-01", "new-01")] == [
        "online", "late", "offline", "never seen"]
    db = _db(data_dir)
    for d in store.list_devices(db):
        if d["last_status"] is None:
            assert by_id[d["id"]][col["RSSI (dBm)"]] == "-"
            continue
        st = json.loads(d["last_status"])
        row = by_id[d["id"]]
        assert row[col["Firmware"]] == d["firmware"]
        assert row[col["RSSI (dBm)"]] == ("-" if st["rssi"] is None else str(st["rssi"]))
        assert row[col["Free heap (bytes)"]] == str(st["free_heap"])
        assert row[col["Buffer depth"]] == str(st["buffer_depth"])
        assert row[col["Dropped readings"]] == str(st["dropped"])
        assert row[col["Time sync"]] == st["time_sync"]
        assert row[col["Readings"]] == str(d["readings"])
        errs = ", ".join("%s %d" % (k, v) for k, v in sorted(st["errors"].items()) if v) or "0"
        assert row[col["Sensor errors"]] == errs
    db.close()
    # RSSI: hall-02 -79 < hall-01 -61; devices without RSSI sort first ascending
    assert asc.index("hall-02") < asc.index("hall-01") and desc.index("hall-01") < desc.index("hall-02")
    assert desc == list(reversed(asc)) or desc[:2] == ["hall-01", "hall-02"]
    assert hash_ == "#sort=rssi:desc" and after_reload == desc
    assert sorted(school) == ["new-01", "school-01"]


async def test_sync_page_and_retry_needs_the_token(agent, shots):
    base, data_dir, facts = agent
    async with Browser() as b:
        await b.goto(base + "/sync?lang=en")
        await b.screenshot(shots / "sync-en.png")
        cards = await b.js("""({pending: document.querySelector('#pending b').textContent,
            synced: document.querySelector('#synced b').textContent})""")
        errors = await b.js("Array.from(document.querySelectorAll('#sync-errors tbody tr')).map(tr => tr.textContent)")
        # wrong token: the browser gets 403 and nothing is recorded
        await b.js("document.getElementById('token').value = 'wrong-token-0123456789'")
        await b.click_and_wait("#retry")
        forbidden = await b.js("document.body.textContent")
        db = _db(data_dir)
        assert store.get_meta(db, "sync_retry_requested") is None
        db.close()
        # the right token: recorded, back on the sync page with a notice
        await b.goto(base + "/sync?lang=en")
        await b.js("document.getElementById('token').value = %s" % json.dumps(TOKEN))
        await b.click_and_wait("#retry")
        notice = await b.js("(document.getElementById('retry-ok') || {}).textContent")
        path = await b.js("location.pathname")
    db = _db(data_dir)
    pending = db.execute("select count(*) from readings where synced_at is null").fetchone()[0]
    synced = db.execute("select count(*) from readings where synced_at is not null").fetchone()[0]
    retried = store.get_meta(db, "sync_retry_requested")
    db.close()
    assert cards == {"pending": str(pending), "synced": str(synced)}
    assert len(errors) == 2 and "503" in errors[1] and "BadRequestData" in errors[0]
    assert "operator token required" in forbidden
    assert notice == "Retry requested" and path == "/sync"
    assert retried is not None and abs(float(retried) - facts["now"]) < 600


async def test_actions_refuse_without_token_over_http(agent):
    base, data_dir, facts = agent
    assert not facts["app"][sync.SYNC_NOW].is_set()
    async with aiohttp.ClientSession() as http:
        for headers, data in [({}, {}), ({}, {"token": "nope"}), ({"Authorization": "Bearer nope"}, {}),
                              ({"Authorization": "Basic " + TOKEN}, {})]:
            async with http.post(base + "/sync/retry", headers=headers, data=data, allow_redirects=False) as r:
                assert r.status == 403
        async with http.post(base + "/sync/retry", headers={"Authorization": "Bearer " + TOKEN},
                             allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/sync?")
    assert facts["app"][sync.SYNC_NOW].is_set()  # the sync worker was woken


async def test_language_switch(agent, shots):
    base, data_dir, facts = agent
    async with Browser() as b:
        await b.goto(base + "/air")
        th_title = await b.js("document.querySelector('h1').textContent")
        th_lang = await b.js("document.documentElement.lang")
        await b.screenshot(shots / "air-th.png")
        await b.click_and_wait("#lang-switch")
        en_title = await b.js("document.querySelector('h1').textContent")
        en_url = await b.js("location.search")
        nav = await b.js("Array.from(document.querySelectorAll('header a')).map(a => a.textContent)")
        await b.click_and_wait("#lang-switch")
        back = await b.js("document.querySelector('h1').textContent")
        titles = {}
        for page in ("fleet", "carbon", "sync"):  # Thai is the default language
            await b.goto(base + "/" + page)
            await b.screenshot(shots / ("%s-th.png" % page))
            titles[page] = await b.js("document.querySelector('h1').textContent")
    assert (th_lang, th_title, en_title, back) == ("th", "คุณภาพอากาศ", "Air", "คุณภาพอากาศ")
    assert "lang=en" in en_url
    assert nav == ["City", "Fleet", "Air", "Carbon", "Sync", "ภาษาไทย"]
    assert titles == {"fleet": "อุปกรณ์", "carbon": "คาร์บอนฟุตพริ้นท์", "sync": "การซิงค์ข้อมูล"}


async def test_air_page_aqi_from_database(agent, shots):
    base, data_dir, facts = agent
    async with Browser() as b:
        await b.goto(base + "/air?lang=en")
        await b.screenshot(shots / "air-en.png")
        cells = await b.js("""Object.fromEntries(Array.from(document.querySelectorAll('#air tbody tr')).map(tr => {
            const a = tr.querySelector('td.aqi'); return [tr.dataset.device, {aqi: a.dataset.aqi,
            bg: a.style.backgroundColor, means: Array.from(tr.querySelectorAll('td[data-mean]')).map(td =>
            td.dataset.mean)}]}))""")
    db = _db(data_dir)
    first, last = aqi.clock_hours(facts["now"])

    def hourly_means(rows, metric):  # the PCD way, from the raw readings: mean of each clock hour's mean
        hours = {}
        for r in rows:
            hour = int(r["t"] // 3600 * 3600)
            if first <= hour <= last and r[metric] is not None and not {"stuck", "out_of_range"} & set(
                    r["flags"].split(",")):
                hours.setdefault(hour, []).append(r[metric])
        return [sum(v) / len(v) for v in hours.values()]

    for device in ("hall-01", "hall-02"):
        rows = [r for r in store.readings(db, device) if r["sensor"] == "pm"]
        # independent of the page's clock: the page used its own "now", which is at most seconds after ours
        pm25, _ = aqi.mean_of_hours(hourly_means(rows, "pm25"))
        pm10, _ = aqi.mean_of_hours(hourly_means(rows, "pm10"))
        best, _ = aqi.overall(pm25, pm10)
        got = cells[device]
        assert float(got["means"][0]) == pytest.approx(pm25, rel=0.02)
        assert float(got["means"][1]) == pytest.approx(pm10, rel=0.02)
        assert abs(int(got["aqi"]) - best.aqi) <= 2
        assert got["bg"] == aqi.colour(aqi.level_of(int(got["aqi"]))).replace(",", ", ")
    db.close()
    assert cells["new-01"]["aqi"] == "" and cells["school-01"]["aqi"] == ""


async def test_carbon_page_matches_counters(agent, shots):
    base, data_dir, facts = agent
    async with Browser() as b:
        await b.goto(base + "/carbon?lang=en&days=7")
        await b.screenshot(shots / "carbon-en.png")
        days = await b.js("""Array.from(document.querySelectorAll('#carbon-days tbody tr')).map(tr => ({
            site: tr.dataset.site, day: tr.dataset.day, kwh: parseFloat(tr.querySelector('[data-kwh]').dataset.kwh),
            kg: parseFloat(tr.querySelector('[data-kgco2e]').dataset.kgco2e)}))""")
        factor = await b.js("document.getElementById('factor').textContent")
        months = await b.js("""Array.from(document.querySelectorAll('#carbon-months tbody tr')).map(tr =>
            parseFloat(tr.querySelector('[data-kwh]').dataset.kwh))""")
    db = _db(data_dir)
    energy = [r for r in store.readings(db, "hall-01") if r["sensor"] == "energy"]
    db.close()
    expected = carbon.daily_wh(energy)
    assert {d["day"]: d["kwh"] for d in days} == pytest.approx({d: wh / 1000 for d, wh in expected.items()}, abs=1e-6)
    assert all(d["site"] == "city-hall" for d in days)
    for d in days:  # both are written to 6 places: a kWh rounded up may give kg 1e-6 off its product
        assert d["kg"] == pytest.approx(d["kwh"] * 0.475, abs=1.5e-6)
    # 25 Wh every 5 minutes for 26 h, across a 32-bit wrap and a reset: 312 x 25 Wh = 7.8 kWh, never negative
    assert sum(d["kwh"] for d in days) == pytest.approx(facts["steps"] * WH_PER_STEP / 1000)
    assert sum(months) == pytest.approx(facts["steps"] * WH_PER_STEP / 1000)
    assert "0.4750" in factor and "2026" in factor


async def test_device_range_links(agent, shots):
    base, data_dir, facts = agent
    async with Browser() as b:
        await b.goto(base + "/device/hall-01?lang=th")
        await b.click_and_wait("a[href*='range=6h']")
        await b.screenshot(shots / "device-hall-01-6h-th.png")
        span = await b.js("(s => [parseFloat(s.dataset.t0), parseFloat(s.dataset.t1)])"
                          "(document.getElementById('plot-co2'))")
        ts = await b.js("Array.from(document.querySelectorAll('#plot-co2 circle.pt'))"
                        ".map(c => parseFloat(c.dataset.t))")
        title = await b.js("document.querySelector('h2').textContent")
    t0, t1 = span
    assert t1 - t0 == 6 * 3600 and abs(t1 - facts["now"]) < 120
    db = _db(data_dir)
    want = [r["t"] for r in store.readings(db, "hall-01", t0, t1 + 1e-6) if r["co2"] is not None]
    db.close()
    assert sorted(ts) == want and len(want) == 6 * 3600 // HALL_STEP
    assert title == "ฝุ่น PM2.5 (µg/m³) บนแถบสีดัชนีคุณภาพอากาศ"


async def test_pages_run_their_scripts_under_their_content_security_policy(agent, shots):
    """Every page loads, sorts and filters in Chromium with its CSP on, and the browser reports no violation."""
    base, data_dir, facts = agent
    async with Browser() as b:
        for path in ("/fleet", "/air", "/sync", "/carbon", "/device/hall-01"):
            await b.goto(base + path + "?lang=en")
        await b.goto(base + "/fleet?lang=en")
        await b.js("document.querySelector('th[data-key=rssi]').click()")
        sorted_hash = await b.js("location.hash")  # set by the page's own (nonce'd) script
        await b.js_and_wait("var s = document.getElementById('site-filter'); s.value = 'school';"
                            "s.dispatchEvent(new Event('change'))")
        filtered = await b.js("location.search")
        school = await b.js(ROW_IDS)
        await b.screenshot(shots / "fleet-filtered-en.png")
        # a script the page did not bring is refused, and the browser says so
        await b.js("var x = document.createElement('script'); x.textContent = 'window.injected = 1';"
                   "document.body.appendChild(x)")
        injected = await b.js("window.injected === 1")
        problems = b.problems()
    assert sorted_hash == "#sort=rssi:asc"
    assert "site=school" in filtered and sorted(school) == ["new-01", "school-01"]
    assert not injected
    assert len(problems) == 1 and "Content Security Policy" in problems[0], problems
