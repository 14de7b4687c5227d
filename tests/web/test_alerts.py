"""Alerts: each rule against a store built to sit just over and just under it; /alerts, /metrics, the webhook,
and the fleet page in headless Chromium in both languages, acknowledged with the operator token."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web

from airwatt.agent import alerts, meters, rollup, store
from airwatt.agent.app import make_app
from airwatt.agent.config import AlertsConfig, Config
from cdp_browser import Browser
from pages_fixture import TOKEN
from serving import serve


def _row(device, seq, sensor, t, **values):
    row = {"device": device, "seq": seq, "boot": "0a1b2c3d", "sensor": sensor, "t": t, "t_source": "board",
           "ticks": seq, "received": t + 2, "flags": "", "synced_at": t + 30, "instance": 0}
    row.update(values)
    return row


def build(db, now: float) -> dict:
    """Pairs of boards: one just over each rule's threshold, one just under. Returns what should fire."""
    status = lambda depth: json.dumps({"buffer_depth": depth, "rssi": -60})  # noqa: E731
    boards = {  # id: (sensors, seconds since last upload, buffer depth)
        "co2-hi": (["co2"], 10, 0), "co2-dip": (["co2"], 10, 0),
        "pm-bad": (["pm"], 10, 0), "pm-ok": (["pm"], 10, 0),
        "off": (["pm"], 4 * 60 + 1, 0), "on": (["pm"], 150, 0),
        "buf": (["pm"], 10, 10_001), "buf-ok": (["pm"], 10, 10_000),
        "meter-gone": (["energy", "pm"], 10, 0), "meter-ok": (["energy"], 10, 0),
        "phase-gone": (["energy"], 10, 0), "phase-ok": (["energy"], 10, 0),
    }
    for dev, (sensors, age, depth) in boards.items():
        store.add_device(db, dev, site="city-hall", sensors=sensors, interval_s=60)
    for dev in ("phase-gone", "phase-ok"):  # three-phase boards: one meter silent on the first (L2)
        meters.set_meters(db, dev, meters.parse(meters.THREE_PHASE))
    rows = []
    for k in range(21):  # the last 20 minutes, a reading a minute
        t = now - 1200 + k * 60
        rows.append(_row("co2-hi", k + 1, "co2", t, co2=1001 + k, temperature=25.0, humidity=50.0))
        rows.append(_row("co2-dip", k + 1, "co2", t, co2=999 if k == 15 else 1500, temperature=25.0, humidity=50.0))
        rows.append(_row("meter-ok", k + 1, "energy", t, energy_wh=1000 + k, power=100.0))
        for inst in (1, 2, 3):
            rows.append(_row("phase-ok", 3 * k + inst, "energy", t, instance=inst, energy_wh=k, power=10.0))
            if inst != 2:
                rows.append(_row("phase-gone", 3 * k + inst, "energy", t, instance=inst, energy_wh=k, power=10.0))
    for h in range(24):  # a PM reading every 10 min for 24 h: 80 ug/m3 is AQI red, 20 is green
        for m in range(6):
            t = now - 86400 + h * 3600 + m * 600 + 30
            rows.append(_row("pm-bad", h * 6 + m + 1, "pm", t, pm1=70, pm25=80, pm10=90))
            rows.append(_row("pm-ok", h * 6 + m + 1, "pm", t, pm1=15, pm25=20, pm10=30))
    rows.append(_row("meter-gone", 1, "energy", now - 11 * 60, energy_wh=5, power=1.0))  # 11 intervals ago
    pending = _row("on", 1, "pm", now - 3700, pm1=1, pm25=2, pm10=3)
    pending["synced_at"] = None
    rows.append(pending)
    with store.transaction(db):
        store.insert_readings(db, rows)
        for dev, (_s, age, depth) in boards.items():
            db.execute("update devices set last_seen = ?, first_seen = ?, last_status = ? where id = ?",
                       [now - age, now - 86400, status(depth), dev])
    rollup.catch_up(db.conn)
    return {("co2", "co2-hi"), ("pm25_aqi", "pm-bad"), ("offline", "off"), ("buffer", "buf"),
            ("meter_missing", "meter-gone"), ("meter_missing", "phase-gone"), ("sync_lag", "")}


def test_each_rule_fires_just_over_its_threshold_and_clears(tmp_path):
    data_dir = tmp_path / "data"
    db = store.open_db(data_dir)
    now = time.time()
    want = build(db, now)
    cfg = AlertsConfig()
    got = alerts.evaluate(db.conn, now, cfg, platform=True)
    assert {(f.rule, f.device) for f in got} == want
    assert {(f.rule, f.device) for f in alerts.evaluate(db.conn, now, cfg, platform=False)} == want - {
        ("sync_lag", "")}
    by = {(f.rule, f.device): f for f in got}
    assert (by[("co2", "co2-hi")].value, by[("co2", "co2-hi")].threshold) == (1001 + 6, 1000)  # lowest in the last 15 min
    assert by[("pm25_aqi", "pm-bad")].value > 200 and by[("buffer", "buf")].value == 10_001
    # changed defaults: CO2 over 1600 never held, the buffer at 80%: neither fires
    strict = AlertsConfig(co2_ppm=1600, buffer_fraction=0.8, pm25_aqi_level=4)
    names = {(f.rule, f.device) for f in alerts.evaluate(db.conn, now, strict, platform=True)}
    assert ("co2", "co2-hi") not in names and ("buffer", "buf") not in names and ("pm25_aqi", "pm-bad") in names
    # the table follows: fired once, kept while firing, cleared when not
    fired, cleared = alerts.refresh(db.conn, got, now)
    assert {(a["rule"], a["device"]) for a in fired} == want and cleared == []
    again, cleared = alerts.refresh(db.conn, got, now + 30)
    assert again == [] and cleared == []
    assert alerts.acknowledge(db.conn, fired[0]["id"], now + 40)
    rest = [f for f in got if (f.rule, f.device) != ("offline", "off")]
    fired2, cleared = alerts.refresh(db.conn, rest, now + 60)
    assert fired2 == [] and [(a["rule"], a["device"], a["cleared_at"]) for a in cleared] == [
        ("offline", "off", now + 60)]
    assert len(alerts.open_alerts(db)) == len(want) - 1
    assert not alerts.acknowledge(db.conn, cleared[0]["id"], now + 70)  # cleared: nothing to acknowledge
    db.close()


@pytest.fixture
async def alerting(tmp_path):
    """A running agent (pages, alerts every 0.2 s, a webhook on 127.0.0.1) over the store of build()."""
    data_dir = tmp_path / "data"
    db = store.open_db(data_dir)
    want = build(db, time.time())
    db.close()
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    sink = web.Application()
    sink.router.add_post("/hook", hook)
    async with serve(sink) as hook_url:
        cfg = Config(operator_token=TOKEN, alerts=AlertsConfig(webhook_url=hook_url + "/hook", every_s=0.2),
                     platform={"url": "http://127.0.0.1:9/unused"})
        app = make_app(data_dir, cfg)
        async with serve(app) as base:
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.05)
            yield base, data_dir, want, received


async def test_alerts_json_metrics_webhook_and_ack(alerting):
    base, data_dir, want, received = alerting
    assert {(a["rule"], a["device"]) for a in received[0]["firing"]} == want
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/alerts") as r:
            doc = await r.json()
        db = store.open_db(data_dir)
        rows = alerts.open_alerts(db)
        db.close()
        assert doc["alerts"] == rows and {(a["rule"], a["device"]) for a in rows} == want
        async with http.get(base + "/metrics") as r:
            text = await r.text()
        for rule, dev in want:
            assert 'airwatt_alert_active{rule="%s",device="%s",acked="0"} 1' % (rule, dev) in text
        assert "\nairwatt_rollup_behind_readings 0\n" in text  # the agent rolled the store up at start
        ident = rows[0]["id"]
        page = {"Origin": base}  # a form posted from the agent's own pages
        for headers, data in [(page, {"id": str(ident)}), (page, {"id": str(ident), "token": "nope"}),
                              ({}, {"id": str(ident), "token": TOKEN})]:  # the token, but not from the pages
            async with http.post(base + "/alerts/ack", data=data, headers=headers, allow_redirects=False) as r:
                assert r.status == 403
        async with http.post(base + "/alerts/ack", data={"id": "x", "token": TOKEN}, headers=page,
                             allow_redirects=False) as r:
            assert r.status == 400 and "open alert" in await r.text()
        async with http.post(base + "/alerts/ack", data={"id": "99999", "token": TOKEN}, headers=page,
                             allow_redirects=False) as r:
            assert r.status == 404
        async with http.post(base + "/alerts/ack", data={"id": str(ident)},
                             headers={"Authorization": "Bearer " + TOKEN, "Accept": "application/json"}) as r:
            assert r.status == 200 and (await r.json()) == {"id": ident, "acked": True}
        async with http.get(base + "/metrics") as r:
            text = await r.text()
        assert 'airwatt_alert_active{rule="%s",device="%s",acked="1"} 1' % (rows[0]["rule"], rows[0]["device"]) \
            in text


@pytest.mark.parametrize("lang", ["th", "en"])
async def test_fleet_page_shows_alerts_and_acknowledges_them(alerting, shots, lang):
    base, data_dir, want, _received = alerting
    async with Browser() as b:
        await b.goto(base + "/fleet?lang=%s" % lang)
        await b.screenshot(shots / ("alerts-%s.png" % lang))
        shown = await b.js("""Array.from(document.querySelectorAll('#alerts tbody tr')).map(tr => ({
            id: tr.dataset.alertId, rule: tr.dataset.rule, device: tr.dataset.device, acked: tr.dataset.acked,
            text: tr.cells[0].textContent}))""")
        title = await b.js("document.getElementById('alerts-title').textContent")
        first = shown[0]["id"]
        await b.js("document.querySelector('tr[data-alert-id=\"%s\"] .ack-token').value = %s"
                   % (first, json.dumps(TOKEN)))
        await b.click_and_wait("tr[data-alert-id=\"%s\"] button.ack" % first)
        notice = await b.js("(document.getElementById('ack-ok') || {}).textContent")
        acked = await b.js("document.querySelector('tr[data-alert-id=\"%s\"]').dataset.acked" % first)
    assert {(a["rule"], a["device"]) for a in shown} == want
    assert title == ("การแจ้งเตือน (%d)" if lang == "th" else "Alerts (%d)") % len(want)
    co2 = next(a for a in shown if a["rule"] == "co2")["text"]
    assert co2 == ("CO2 เกิน 1000 ppm นาน 15 นาที" if lang == "th" else "CO2 over 1000 ppm for 15 min")
    assert notice == ("บันทึกการรับทราบแล้ว" if lang == "th" else "Alert acknowledged") and acked == "1"
    db = store.open_db(data_dir)
    assert db.execute("select acked_at is not null from alerts where id = ?", [first]).fetchone()[0] == 1
    db.close()
