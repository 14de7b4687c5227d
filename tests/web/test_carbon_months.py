"""The carbon page over more than 31 days: the months table, a bar per month, the days left to the report;
the months as SQLite sums them equal the days summed."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import aiohttp
import pytest

from airwatt.agent import carbon, rollup, store
from airwatt.agent.app import make_app
from airwatt.agent.config import Config
from airwatt.agent.tz import THAILAND
from pages_fixture import _row
from serving import serve

STEP = 6 * 3600  # a meter reading every 6 hours, 100 days back


def _fill(db, now: float) -> None:
    store.add_device(db, "hall-01", site="city-hall")
    store.add_device(db, "hall-02", site="city-hall")
    store.add_device(db, "school-01", site="school")
    rows = []
    for n, dev in enumerate(("hall-01", "hall-02", "school-01")):
        counter = 1000
        for k in range(100 * 86400 // STEP):
            counter += 600 + 100 * n + (k * 37) % 250  # Wh in 6 h: well under what the meter can deliver
            rows.append(_row(dev, k + 1, "energy", now - 100 * 86400 + k * STEP + n * 7, energy_wh=counter,
                             voltage=230.0, current=1.0, power=100.0, frequency=50.0, pf=0.9))
    with store.transaction(db):
        store.insert_readings(db, rows)
    rollup.catch_up(db.conn)


def _months_between(start: datetime, end: datetime) -> list[str]:
    out, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        out.append("%04d-%02d" % (year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def test_months_summed_by_sqlite_equal_the_days_summed(tmp_path):
    db = store.open_db(tmp_path)
    now = float(int(time.time()))
    _fill(db, now)
    for days in (1, 31, 45, 92):
        today = datetime.fromtimestamp(now, THAILAND).replace(hour=0, minute=0, second=0, microsecond=0)
        since = (today - timedelta(days=days - 1)).timestamp()
        daily, monthly = rollup.carbon_report(db, since, now, carbon.FACTORS)
        months = rollup.carbon_months(db, since, now, carbon.FACTORS)
        assert [(r.site, r.period) for r in months] == [(r.site, r.period) for r in monthly]
        for r, m in zip(months, monthly):
            days_kwh = sum(d.kwh for d in daily if d.site == r.site and d.period[:7] == r.period)
            assert r.kwh == pytest.approx(m.kwh, rel=1e-12) == pytest.approx(days_kwh, rel=1e-12)
            assert (r.kgco2e, r.factor, r.factor_year) == pytest.approx((r.kwh * m.factor, m.factor, m.factor_year))
        if days > 1:  # a reading every 6 h: the first hours of a Thai day may hold none yet
            assert {r.site for r in months} == {"city-hall", "school"} and months[0].kwh > 0
    db.close()


async def test_a_long_period_is_shown_by_month(tmp_path):
    data_dir = tmp_path / "d"
    db = store.open_db(data_dir)
    now = float(int(time.time()))
    _fill(db, now)
    today = datetime.fromtimestamp(now, THAILAND).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=91)
    months = rollup.carbon_months(db, start.timestamp(), now, carbon.FACTORS)
    db.close()
    app = make_app(data_dir, Config(language="en"))
    async with serve(app) as base, aiohttp.ClientSession() as http:
        async with http.get(base + "/carbon?days=92") as r:
            assert r.status == 200
            html = await r.text()
        async with http.get(base + "/carbon?days=31") as r:
            short = await r.text()
        async with http.get(base + "/carbon?days=92&lang=th&era=be") as r:
            thai = await r.text()
    # the months table: every site-month of the period, as SQLite summed it
    rows = re.findall(r'<tr data-site="([^"]*)" data-month="([\d-]+)">.*?data-kwh="([\d.]+)"', html)
    assert [(s, m) for s, m, _ in rows] == [(r.site, r.period) for r in months]
    assert [float(k) for _s, _m, k in rows] == pytest.approx([r.kwh for r in months], abs=1e-6)
    # a bar per month of the period for each site, the days left to the report
    period = _months_between(start, today)
    for n, site in enumerate(("city-hall", "school")):
        plot = re.search(r'<svg[^>]*id="plot-kwh-%d".*?</svg>' % n, html, re.S).group(0)
        bars = re.findall(r'data-month="([\d-]+)" data-value="([\d.]+)"', plot)
        assert [m for m, _v in bars] == period
        want = {r.period: r.kwh for r in months if r.site == site}
        assert [float(v) for _m, v in bars] == pytest.approx([want.get(m, 0.0) for m in period], abs=1e-6)
    assert 'id="carbon-days"' not in html and 'id="days-by-month"' in html and "by month" in html
    # up to 31 days: day by day as before
    assert 'id="carbon-days"' in short and 'id="days-by-month"' not in short and "data-day=" in short
    # the months under the bars in the page's era (Buddhist Era: 2026 is 2569)
    be = ["%s/%d" % (m[5:7], int(m[:4]) + 543) for m in period]
    assert all(">%s</text>" % label in thai for label in be)
