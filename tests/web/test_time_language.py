"""Time on the device page in headless Chromium, in both languages: the from/to picker, the time zone on the axes,
a default range that fits a board installed minutes ago, and guide labels clear of the data."""

from __future__ import annotations

from datetime import datetime

import aiohttp
import pytest

from airwatt.agent import store, sync_store
from airwatt.agent.web import svg
from airwatt.agent.web.i18n import label
from cdp_browser import Browser
from pages_fixture import HALL_STEP

PLOT = """(() => { const s = document.getElementById('plot-co2'); return {t0: parseFloat(s.dataset.t0),
    t1: parseFloat(s.dataset.t1), tz: s.querySelector('text.tz').textContent,
    pts: Array.from(s.querySelectorAll('circle.pt')).map(c => parseFloat(c.dataset.t))}; })()"""


def _local(t: float) -> str:
    return datetime.fromtimestamp(t, svg.THAILAND).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize("lang", ["en", "th"])
async def test_a_board_installed_ten_minutes_ago_shows_those_ten_minutes(agent, shots, lang):
    base, data_dir, facts = agent
    now = facts["now"]
    db = store.open_db(data_dir)
    store.add_device(db, "fresh-01", name="Installed just now", site="school", interval_s=60)
    store.insert_readings(db, [{"device": "fresh-01", "seq": k + 1, "boot": "0a1b2c3d", "sensor": "co2",
                                "t": now - 600 + 60 * k, "t_source": "board", "ticks": k, "received": now,
                                "flags": "", "co2": 500 + k} for k in range(10)])
    db.close()
    async with Browser() as b:
        await b.goto(base + "/device/fresh-01?lang=" + lang)
        await b.screenshot(shots / ("device-fresh-%s.png" % lang))
        plot = await b.js(PLOT)
        note = await b.js("document.getElementById('fitted-note').textContent")
        here = await b.js("document.querySelectorAll('a.here[data-range]').length")
    assert note == label(lang, "fitted_note") and here == 0
    assert plot["t0"] == pytest.approx(now - 660, abs=1) and plot["t1"] >= now
    assert sorted(plot["pts"]) == [now - 600 + 60 * k for k in range(10)]
    assert plot["tz"] == "ICT (UTC+7)"
    # a board with more than a day behind it still shows the last 24 h
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/device/hall-01?lang=en") as r:
            text = await r.text()
    assert 'id="fitted-note"' not in text and 'class="here" data-range="24h"' in text


@pytest.mark.parametrize("lang", ["en", "th"])
async def test_from_to_picker_shows_that_range(agent, shots, lang):
    base, data_dir, facts = agent
    now = facts["now"]
    since, until = now - 5 * 3600, now - 2 * 3600
    since, until = since - since % 60, until - until % 60  # the picker's minutes
    if (now - since) % HALL_STEP == 4:  # both ends on the CO2 readings (now - 4 s - k x 5 min): 37 of them, not 36
        since, until = since - 60, until - 60
    async with Browser() as b:
        await b.goto(base + "/device/hall-01?lang=" + lang)
        await b.js("document.getElementById('range-from').value = %r; document.getElementById('range-to').value = %r"
                   % (_local(since), _local(until)))
        await b.click_and_wait("#range-form button")
        await b.screenshot(shots / ("device-from-to-%s.png" % lang))
        plot = await b.js(PLOT)
        labels = await b.js("Array.from(document.querySelectorAll('a[data-range]')).map(a => a.textContent)")
        guide = await b.js("""(() => { const s = document.getElementById('plot-co2');
            const frame = s.querySelector('rect').getBoundingClientRect();
            return Array.from(s.querySelectorAll('text.guide-label')).map(t => {
                const r = t.getBoundingClientRect(); return {bottom: r.bottom, top: frame.top,
                value: t.dataset.value}; }); })()""")
        problems = b.problems()
    assert problems == []
    assert (plot["t0"], plot["t1"]) == (since, until)
    db = store.open_db(data_dir)
    want = sorted(r["t"] for r in store.readings(db, "hall-01", since, until + 1e-6) if r["co2"] is not None)
    db.close()
    assert sorted(plot["pts"]) == want and len(want) == 3 * 3600 // 300
    assert labels == [label(lang, "r_" + r) for r in ("15m", "1h", "6h", "24h", "7d", "30d")]
    # the 1000 and 1500 ppm labels stand above the plot, clear of the readings drawn inside it
    assert [g["value"] for g in guide] == ["1000", "1500"] and all(g["bottom"] <= g["top"] for g in guide)


async def test_bad_from_to_are_400s(agent):
    base, _, facts = agent
    async with aiohttp.ClientSession() as http:
        for query, text in [("from=soon", "from must be"), ("to=1e400", "to must be"),
                            ("from=%d&to=%d" % (facts["now"], facts["now"] - 60), "from must be before to"),
                            ("from=1700000000&to=1790000000", "from must be at most 400 days")]:
            async with http.get(base + "/device/hall-01?" + query) as r:
                assert r.status == 400 and text in await r.text(), query


@pytest.mark.parametrize("lang", ["en", "th"])
async def test_held_readings_are_grouped_under_a_header(agent, shots, lang):
    base, data_dir, facts = agent
    now = facts["now"]
    db = store.open_db(data_dir)
    pending = [r["id"] for r in sync_store.pending(db, 40)]
    with store.transaction(db):
        for n, rid in enumerate(pending):
            status, error = (400, "BadRequestData: location missing") if n < 37 else (422, "bad unit")
            db.execute("INSERT INTO sync_held(reading, tries, held_until, status, error, at) VALUES (?,?,?,?,?,?)",
                       (rid, 1 + n % 3, now + 3600, status, error, now))
    groups: dict = {}
    for rid in pending:
        device, seq = db.execute("SELECT device, seq FROM readings WHERE id = ?", (rid,)).fetchone()
        status = db.execute("SELECT status FROM sync_held WHERE reading = ?", (rid,)).fetchone()[0]
        groups.setdefault((device, status), []).append(seq)
    db.close()
    async with Browser() as b:
        await b.goto(base + "/sync?lang=" + lang)
        await b.screenshot(shots / ("sync-held-%s.png" % lang))
        heads = await b.js("Array.from(document.querySelectorAll('#sync-held thead th')).map(t => t.textContent)")
        rows = await b.js("""Array.from(document.querySelectorAll('#sync-held tbody tr')).map(tr =>
            Array.from(tr.cells).map(c => c.textContent))""")
    assert heads == [label(lang, k) for k in ("device", "held_count", "held_seqs", "sensors", "tries", "status",
                                              "detail", "held_until")]
    assert len(pending) == 40 and len(rows) == len(groups) == 2
    for row in rows:
        seqs = groups[(row[0], int(row[5]))]
        assert int(row[1]) == len(seqs) and row[2] == "#%d–%d" % (min(seqs), max(seqs))


@pytest.mark.parametrize("lang", ["en", "th"])
async def test_errors_are_pages_in_the_language(agent, shots, lang):
    base, _, facts = agent
    html = {"Accept": "text/html,application/xhtml+xml"}
    async with aiohttp.ClientSession() as http:
        for path, status, text in [("/device/hall-01?from=soon", 400, label(lang, "err_400_param") % "from"),
                                   ("/carbon/report?month=13", 400, label(lang, "err_400_param") % "month"),
                                   ("/device/nope", 404, label(lang, "err_404_text"))]:
            async with http.get(base + path + "&lang=" + lang if "?" in path else base + path + "?lang=" + lang,
                                headers=html) as r:
                page = await r.text()
                assert r.status == status and r.content_type == "text/html", path
                assert '<html lang="%s">' % lang in page and escape_html(text) in page, path
                assert label(lang, "err_%d" % status) in page and "Content-Security-Policy" in r.headers
        # a script (no text/html in Accept) keeps the plain answer
        async with http.get(base + "/device/hall-01?from=soon") as r:
            assert r.status == 400 and r.content_type == "text/plain"
    async with Browser() as b:  # a wrong token from the sync page's form: a 403 page in the page's language
        await b.goto(base + "/sync?lang=" + lang)
        await b.js("document.getElementById('token').value = 'wrong-token'")
        await b.click_and_wait("#retry")
        await b.screenshot(shots / ("error-403-%s.png" % lang))
        title = await b.js("document.querySelector('h1').textContent")
        text = await b.js("document.getElementById('error-text').textContent")
        await b.goto(base + "/air?lang=" + lang)
        footnote = await b.js("document.getElementById('aqi-footnote').textContent")
        await b.goto(base + "/sync?lang=" + lang)
        statuses = await b.js("Array.from(document.querySelectorAll('#sync-errors tbody tr')).map(tr =>"
                              " tr.cells[1].textContent)")
    assert title == "403 " + label(lang, "err_403") and text == label(lang, "err_403_text")
    assert footnote == label(lang, "aqi_footnote") and ("คพ." in footnote) == (lang == "th")
    assert statuses == ["207 (%s)" % label(lang, "st_207"), "503 (%s)" % label(lang, "st_5xx")]


def escape_html(text: str) -> str:
    from html import escape

    return escape(text)


async def test_buddhist_era_dates_on_thai_pages(agent, shots):
    base, data_dir, facts = agent
    now = facts["now"]
    d = datetime.fromtimestamp(now, svg.THAILAND)
    async with Browser() as b:
        await b.goto(base + "/device/hall-01?lang=th&era=be&range=24h")
        await b.screenshot(shots / "device-be-th.png")
        header = await b.js("document.querySelector('main p').textContent")
        nav = await b.js("Array.from(document.querySelectorAll('header a:not(.lang)')).map(a => a.getAttribute('href'))")
        await b.click_and_wait("#era-switch")  # back to Common Era years
        header_ce = await b.js("document.querySelector('main p').textContent")
        await b.goto(base + "/carbon?lang=th&era=be&days=7")
        months = await b.js("Array.from(document.querySelectorAll('#carbon-months tbody tr')).map(tr =>"
                            " [tr.dataset.month, tr.cells[1].textContent])")
        await b.goto(base + "/device/hall-01?lang=en&era=be")  # English pages keep Common Era years
        header_en = await b.js("document.querySelector('main p').textContent")
    be = "%02d/%02d/%d" % (d.day, d.month, d.year + 543)
    assert be in header and str(d.year) not in header
    assert len(nav) == 5 and all("era=be" in href for href in nav)  # the choice follows the links
    assert d.strftime("%Y-%m-%d") in header_ce and str(d.year + 543) not in header_ce
    assert months and all(shown.startswith("%s/%d" % (m[5:7], int(m[:4]) + 543)) for m, shown in months)
    assert d.strftime("%Y-%m-%d") in header_en
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/device/hall-01?lang=th&era=bc") as r:
            assert r.status == 400 and "era must be one of" in await r.text()
