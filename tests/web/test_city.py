"""The city view (`/`) in headless Chromium, in both languages: each site's and the city's figures against values
computed here from the raw readings of the database (not the rollups the page reads), and the map's markers."""

from __future__ import annotations

import aiohttp
import pytest

from airwatt.agent import aqi, carbon, store
from airwatt.agent.web import city, pages
from airwatt.agent.web.i18n import label
from cdp_browser import Browser

LOCATIONS = {"hall-01": (13.7563, 100.5018), "hall-02": (13.7570, 100.5030), "school-01": (13.7400, 100.5200)}
CELLS = """Object.fromEntries(Array.from(document.querySelectorAll('#city tbody tr, #city-total')).map(tr =>
    [tr.id || tr.dataset.site, Object.fromEntries(Array.from(tr.querySelectorAll('td[data-key]')).map(td =>
        [td.dataset.key, td.dataset.value === '' ? null : parseFloat(td.dataset.value)]).concat(
        Array.from(tr.querySelectorAll('span[data-state]')).map(s => [s.dataset.state,
            parseInt(s.textContent.replace(/[^0-9]/g, ''))])))]))"""
SHOWN = """Array.from(document.querySelectorAll('#city td.num[data-key]')).filter(td => td.dataset.value !== '')
    .map(td => [td.dataset.key, parseFloat(td.dataset.value), td.textContent])"""
MARKERS = """(() => { const m = document.getElementById('map').getBoundingClientRect();
    return Array.from(document.querySelectorAll('#map path.board')).map(p => { const r = p.getBoundingClientRect();
        return {dev: Array.from(p.classList).find(c => c.startsWith('board-')).slice(6), stroke: p.getAttribute('stroke'), fill: p.getAttribute('fill'),
                inside: r.width > 0 && r.left >= m.left && r.right <= m.right && r.top >= m.top &&
                        r.bottom <= m.bottom}; }); })()"""


def good(r) -> bool:
    return not {"stuck", "out_of_range"} & set(r["flags"].split(","))


def expected(db, now: float) -> dict:
    """Per site and for the city, from the raw readings."""
    devices = {d["id"]: d for d in store.list_devices(db)}
    today = carbon.local_day(now)
    factor, _year = carbon.factor_for(int(today[:4]), carbon.factors_table())
    first, last = aqi.clock_hours(now)
    per: dict[str, dict] = {}
    for dev, d in devices.items():
        rows = store.readings(db, dev)
        daily = carbon.daily_wh([r for r in rows if r["sensor"] == "energy"])
        window = now - pages.ONLINE_INTERVALS * d["interval_s"]

        def newest(metric):
            fresh = [r for r in rows if r[metric] is not None and good(r) and window < r["t"] <= now]
            return max(fresh, key=lambda r: r["t"])[metric] if fresh else None

        def hourly(metric):
            hours: dict[int, list] = {}
            for r in rows:
                if r[metric] is not None and good(r) and first <= int(r["t"] // 3600 * 3600) <= last:
                    hours.setdefault(int(r["t"] // 3600 * 3600), []).append(r[metric])
            return aqi.mean_of_hours([sum(v) / len(v) for v in hours.values()])[0]

        best, _ = aqi.overall(hourly("pm25"), hourly("pm10"))
        power = newest("power")
        per[dev] = {"site": d["site"], "state": pages.device_state(d["last_seen"], d["interval_s"], now),
                    "kw": None if power is None else power / 1000, "co2": newest("co2"),
                    "kwh_today": daily.get(today, 0) / 1000,
                    "kwh_month": sum(v for k, v in daily.items() if k[:7] == today[:7]) / 1000,
                    "aqi": None if best is None else best.aqi}
    groups = {s: [b for b in per.values() if b["site"] == s] for s in {b["site"] for b in per.values()}}
    groups["city-total"] = list(per.values())
    out = {}
    for key, boards in groups.items():
        def worst(k):
            vs = [b[k] for b in boards if b[k] is not None]
            return max(vs) if vs else None
        kws = [b["kw"] for b in boards if b["kw"] is not None]
        o = {"kw": sum(kws) if kws else None, "co2": worst("co2"), "aqi": worst("aqi"),
             "kwh_today": sum(b["kwh_today"] for b in boards), "kwh_month": sum(b["kwh_month"] for b in boards)}
        o["kg_today"], o["kg_month"] = o["kwh_today"] * factor, o["kwh_month"] * factor
        for state in ("online", "late", "offline"):
            o[state] = sum(1 for b in boards if b["state"] == state)
        out[key] = o
    return out, per


@pytest.mark.parametrize("lang", ["en", "th"])
async def test_city_view_figures_and_map_match_database(agent, shots, lang):
    base, data_dir, facts = agent
    db = store.open_db(data_dir)
    for dev, (lat, lon) in LOCATIONS.items():
        store.set_device(db, dev, lat=lat, lon=lon)
    db.close()
    async with Browser() as b:
        await b.goto(base + "/?lang=" + lang)
        await b.js("new Promise(r => setTimeout(r, 300))")  # Leaflet draws after load
        await b.screenshot(shots / ("city-%s.png" % lang))
        cells = await b.js(CELLS)
        heads = await b.js("Array.from(document.querySelectorAll('#city thead th')).map(th => th.textContent)")
        markers = await b.js(MARKERS)
        shown = await b.js(SHOWN)
        title = await b.js("document.querySelector('h1').textContent")
        note = await b.js("document.getElementById('city-note').textContent")
        problems = b.problems()  # the map's scripts run under the pages' CSP (nonce), nothing refused
    db = store.open_db(data_dir)
    want, per = expected(db, facts["now"])
    db.close()
    assert problems == []
    assert title == label(lang, "city")
    assert heads[1] == label(lang, "kw_now") and heads[-1] == label(lang, "boards_state")
    assert set(cells) == set(want) == {"city-hall", "school", "city-total"}
    for key, w in want.items():
        got = cells[key]
        for k in ("kwh_today", "kwh_month", "kg_today", "kg_month"):
            assert got[k] == pytest.approx(w[k], abs=1e-4), (key, k)
        for k in ("kw", "co2"):
            assert (got[k] is None) == (w[k] is None) and (w[k] is None or got[k] == pytest.approx(w[k])), (key, k)
        assert (got["aqi"] is None) == (w["aqi"] is None) and abs((got["aqi"] or 0) - (w["aqi"] or 0)) <= 2, key
        assert {s: got[s] for s in ("online", "late", "offline")} == {s: w[s] for s in ("online", "late", "offline")}
    # every kW, kWh and kgCO2e cell written by the one precision rule
    amounts = [(k, v, text) for k, v, text in shown if k != "co2"]
    assert len(amounts) >= 4 * len(cells), amounts
    for _k, v, text in amounts:  # v is data-value, rounded to 6 decimals: a 5 at the cut may round either way
        places = len(city.amount(v).partition(".")[2])
        assert len(text.partition(".")[2]) == places and abs(float(text) - v) <= 0.5 * 10 ** -places + 1e-6, text
    # the fixture's boards: something in every column, so nothing above passed on blanks
    assert want["city-total"]["kwh_today"] > 0 and want["city-total"]["kw"] and want["city-total"]["aqi"]
    assert (want["city-total"]["online"], want["city-total"]["late"], want["city-total"]["offline"]) == (1, 1, 1)
    assert ("ICT" in note) and ("TGO" in note)
    # one vector marker per located board, inside the map, its ring the board's state colour, with no tile server
    assert sorted(m["dev"] for m in markers) == sorted(LOCATIONS)
    assert all(m["inside"] for m in markers)
    for m in markers:
        dev = m["dev"]
        assert m["stroke"] == pages.STATE_COLOURS[per[dev]["state"]]
        assert m["fill"] == (aqi.colour(aqi.level_of(per[dev]["aqi"])) if per[dev]["aqi"] is not None else "#bbb")


async def test_city_view_is_the_first_page_and_serves_leaflet(agent):
    base, _, _ = agent
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/?lang=en", allow_redirects=False) as r:
            text = await r.text()
            assert r.status == 200 and 'id="city"' in text and 'id="map"' in text
        src = text.split('" src="')[1].split('"')[0]
        async with http.get(base + src) as r:
            assert r.status == 200 and "leafletjs.com" in (await r.text())[:400]
        async with http.get(base + "/fleet?lang=en") as r:
            assert r.status == 200 and 'id="fleet"' in await r.text()


def test_city_amounts_share_one_precision_rule():
    """A new site's first kWh reads the same today and this month (not "today 0.01, month 0.0")."""
    assert [city.amount(v) for v in (0.0, 0.012, 2.345, 9.994, 9.996, 23.46, 99.96, 234.6, 12345.4, -0.5)] == [
        "0.00", "0.01", "2.35", "9.99", "10.0", "23.5", "100", "235", "12345", "-0.50"]
    s = {"kw": 0.4, "kwh_today": 0.012, "kwh_month": 0.012, "kg_today": 0.006, "kg_month": 0.006, "aqi": None,
         "co2": None, "online": 1, "late": 0, "offline": 0, "never": 0}
    cells = city._row("en", s)
    texts = {k: cells.split('data-key="%s"' % k)[1].split(">")[1].split("<")[0]
             for k in ("kw", "kwh_today", "kwh_month", "kg_today", "kg_month")}
    assert texts == {"kw": "0.40", "kwh_today": "0.01", "kwh_month": "0.01", "kg_today": "0.01", "kg_month": "0.01"}
