"""Downloads in headless Chromium, in both languages: each plot's readings as `airwatt export` writes them, the
tables as CSV/JSON, and the monthly City Carbon Footprint report, against values computed from the database."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import urljoin

import aiohttp
import pytest

from airwatt.agent import carbon, commands, store
from airwatt.agent.web import downloads
from cdp_browser import Browser
from pages_fixture import expect_errors

LINKS = """Object.fromEntries(Array.from(document.querySelectorAll('h2')).filter(h => h.nextElementSibling &&
    h.nextElementSibling.matches('svg.plot')).map(h => { let el = h.nextElementSibling;
    while (el && !el.querySelector('.downloads')) el = el.nextElementSibling;
    return [h.nextElementSibling.id, Array.from(el.querySelectorAll('a.dl')).map(a => [a.dataset.format,
        a.getAttribute('href')])]; }))"""


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _as_csv(rows: list[dict]) -> list[dict]:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    names = [c[0] for c in commands.EXPORT_COLUMNS]
    w.writerow(names)
    for r in rows:
        w.writerow(["" if r[n] is None else r[n] for n in names])
    return _csv_rows(out.getvalue())


@pytest.mark.parametrize("lang", ["en", "th"])
async def test_each_plot_downloads_its_readings_as_export_writes_them(agent, shots, lang):
    base, data_dir, facts = agent
    now = facts["now"]
    async with Browser() as b:
        await b.goto(base + "/device/hall-01?lang=%s&end=%d" % (lang, now))
        links = await b.js(LINKS)
        problems = b.problems()
    assert problems == []
    assert set(links) == {"plot-pm25", "plot-co2", "plot-temperature", "plot-humidity", "plot-power", "plot-kwh"}
    db = store.open_db(data_dir)
    async with aiohttp.ClientSession() as http:
        for plot, sensor in (("plot-pm25", "pm"), ("plot-co2", "co2"), ("plot-power", "energy")):
            urls = dict(links[plot])
            assert set(urls) == {"csv", "json", "csvw"}
            query = dict(p.split("=", 1) for p in urls["csv"].split("?", 1)[1].split("&"))
            want = list(commands.export_rows(db, float(query["from"]), float(query["to"]), "hall-01", sensor))
            assert len(want) == 24 * 3600 // 300 + 1 or len(want) == 24 * 3600 // 300  # the plotted day
            async with http.get(urljoin(base, urls["csv"])) as r:
                assert r.status == 200 and r.content_type == "text/csv"
                got = _csv_rows(await r.text())
            assert got == _as_csv(want)
            async with http.get(urljoin(base, urls["json"])) as r:
                doc = json.loads(await r.text())
            assert [c["name"] for c in doc["columns"]] == [c[0] for c in commands.EXPORT_COLUMNS]
            assert doc["readings"] == json.loads(json.dumps(want))
            async with http.get(urljoin(base, urls["csvw"])) as r:
                meta = await r.json(content_type=None)
            assert meta == commands.csvw_metadata(urls["csv"].split("/")[-1])
    db.close()


async def test_bad_download_parameters_are_400s(agent):
    base, _, _ = agent
    async with aiohttp.ClientSession() as http:
        await expect_errors(http, base, [
            ("/download/readings.csv?from=nope", 400, "from must be"),
            ("/download/readings.csv?from=1790000000&to=1780000000", 400, "from must be before"),
            ("/download/readings.json?sensor=gas", 400, "sensor must be one of"),
            ("/download/readings.csv?from=1600000000&to=1790000000", 400, "from must be at most 400 days before to"),
            ("/download/readings.csv?device=nope", 404, "unknown device"),
            ("/carbon/report.csv?month=2026-13", 400, "month must be YYYY-MM")])


def expected_footprint(db, month: str) -> dict:
    """kWh per site over the month from the raw counters (carbon.daily_wh), and the city's sum."""
    sites: dict = {}
    for d in store.list_devices(db):
        energy = [r for r in store.readings(db, d["id"]) if r["sensor"] == "energy"]
        wh = sum(v for day, v in carbon.daily_wh(energy).items() if day[:7] == month)
        sites[d["site"] or ""] = sites.get(d["site"] or "", 0.0) + wh / 1000
    sites[None] = sum(sites.values())
    return sites


@pytest.mark.parametrize("lang", ["en", "th"])
async def test_monthly_carbon_footprint_report_page_and_csv(agent, shots, lang):
    base, data_dir, facts = agent
    month = carbon.local_day(facts["now"])[:7]
    async with Browser() as b:
        await b.goto(base + "/carbon?lang=" + lang)
        await b.click_and_wait("#report-link")
        await b.screenshot(shots / ("carbon-report-%s.png" % lang))
        cells = await b.js("""Array.from(document.querySelectorAll('#carbon-report tbody tr')).map(tr => ({
            site: tr.id === 'report-city' ? null : tr.dataset.site,
            kwh: parseFloat(tr.cells[1].dataset.value), factor: parseFloat(tr.cells[2].textContent),
            year: parseInt(tr.cells[3].textContent), t: parseFloat(tr.cells[4].dataset.value)}))""")
        title = await b.js("document.querySelector('h1').textContent")
        table_csv = await b.js("document.getElementById('carbon-report').airwattDownload.csv()")
        problems = b.problems()
    assert problems == []
    assert month in title and ("City Carbon Footprint" in title) == (lang == "en")
    db = store.open_db(data_dir)
    want = expected_footprint(db, month)
    db.close()
    factor, year = carbon.factor_for(int(month[:4]), carbon.factors_table())
    assert {c["site"] for c in cells} == set(want)
    for c in cells:
        assert c["kwh"] == pytest.approx(want[c["site"]], abs=1e-6) and (c["factor"], c["year"]) == (factor, year)
        assert c["t"] == pytest.approx(want[c["site"]] * factor / 1000, abs=1e-9)
    assert want[None] > 0
    # the table's own CSV button: its header and the rows as shown
    rows = list(csv.reader(io.StringIO(table_csv)))
    assert len(rows) == len(cells) + 1 and len(rows[0]) == 5
    assert [float(r[1]) for r in rows[1:]] == [pytest.approx(c["kwh"], abs=0.05) for c in cells]
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/carbon/report.csv?month=" + month) as r:
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
            got = _csv_rows(await r.text())
    assert list(got[0]) == list(downloads.REPORT_COLUMNS)
    for row in got:
        site = row["site"] if row is not got[-1] else None
        assert float(row["kwh"]) == pytest.approx(want[site], abs=1e-6)
        assert float(row["tco2e"]) == pytest.approx(want[site] * factor / 1000, abs=1e-9)
        assert (float(row["factor_kgco2e_per_kwh"]), int(row["factor_year"])) == (factor, year)
