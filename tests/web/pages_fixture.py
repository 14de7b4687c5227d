"""The known store the page tests run against: devices in every state and 26 h of readings."""

from __future__ import annotations

import json
import math

from airwatt.agent import store

TOKEN = "operator-token-for-tests-0123456789"
HALL_STEP = 300  # hall-01 reads every 5 minutes
WH_PER_STEP = 25  # 300 W for 5 minutes
WRAP_START = 4294967295 - 1000  # the counter wraps after 40 steps
RESET_AT = 200  # the meter's energy was reset before this step; it then shows the 25 Wh used since


def _row(device, seq, sensor, t, flags="", synced_at=None, **values):
    row = {"device": device, "seq": seq, "boot": "0a1b2c3d", "sensor": sensor, "t": t, "t_source": "board",
           "ticks": seq * 1000, "received": t + 5, "flags": flags, "synced_at": synced_at}
    row.update(values)
    return row


def fill(db, now: float) -> dict:
    """Devices in every state and 26 h of readings; returns what the tests need to know."""
    store.add_device(db, "hall-01", name="City hall floor 1", site="city-hall", interval_s=HALL_STEP)
    store.add_device(db, "hall-02", name="City hall floor 2", site="city-hall", sensors=["pm"], interval_s=60)
    store.add_device(db, "school-01", name="School A", site="school", interval_s=60)
    store.add_device(db, "new-01", name="Not yet installed", site="school", interval_s=60)
    statuses = {
        "hall-01": ("0.1.0", now - 30, {"uptime_s": 93600, "free_heap": 81234, "rssi": -61, "buffer_depth": 3,
                                        "dropped": 0, "errors": {"pm": 2}, "time_sync": "agent"}),
        "hall-02": ("0.1.0", now - 5 * 60, {"uptime_s": 4000, "free_heap": 60500, "rssi": -79, "buffer_depth": 40,
                                            "dropped": 7, "errors": {"pm": 1, "co2": 4, "energy": 0},
                                            "time_sync": "ntp"}),
        "school-01": ("0.0.9", now - 7200, {"uptime_s": 120, "free_heap": 95000, "rssi": None, "buffer_depth": 0,
                                            "dropped": 0, "errors": {}, "time_sync": "none"}),
    }
    with store.transaction(db):
        for dev, (fw, seen, status) in statuses.items():
            db.execute("update devices set firmware = ?, last_seen = ?, first_seen = ?, last_status = ? where id = ?",
                       [fw, seen, seen - 86400, json.dumps(status), dev])
    rows = []
    steps = 26 * 3600 // HALL_STEP
    counter = WRAP_START
    for k in range(steps + 1):
        t = now - 26 * 3600 + k * HALL_STEP - 5  # every reading a few seconds before `now`
        pm25 = int(5 + (k * 7) % 90)
        rows.append(_row("hall-01", 3 * k + 1, "pm", t, "stuck" if k % 17 == 5 else "",
                         t + 10 if k < 250 else None, pm1=max(pm25 - 2, 0), pm25=pm25, pm10=pm25 + 12))
        rows.append(_row("hall-01", 3 * k + 2, "co2", t + 1, "retried" if k % 23 == 4 else "",
                         t + 10 if k < 250 else None, co2=420 + (k * 37) % 1600,
                         temperature=round(26 + 3 * math.sin(k / 20), 2),
                         humidity=round(55 + 10 * math.cos(k / 30), 2)))
        if k == RESET_AT:
            counter = WH_PER_STEP
        elif k:
            counter = (counter + WH_PER_STEP) % 4294967296
        rows.append(_row("hall-01", 3 * k + 3, "energy", t + 2, "alarm" if k % 31 == 7 else "",
                         t + 10 if k < 250 else None, voltage=229.5, current=1.3, power=300.0 + (k % 10) * 10,
                         energy_wh=counter, frequency=50.0, pf=0.98))
    for k in range(24 * 60 + 1):  # hall-02: one PM reading a minute, more than the plot draws one by one
        t = now - 86400 + k * 60
        pm25 = 20 + (k % 50)
        rows.append(_row("hall-02", k + 1, "pm", t, "stuck" if k % 400 == 99 else "", None,
                         pm1=pm25 - 3, pm25=pm25, pm10=pm25 + 30))
    for k in range(5):
        rows.append(_row("school-01", k + 1, "co2", now - 9000 + k * 60, "", None, co2=600 + k,
                         temperature=24.0, humidity=50.0))
    with store.transaction(db):
        store.insert_readings(db, rows)
        for at, ok, status, count, detail in [
            (now - 900, 1, 201, 50, ""),
            (now - 600, 0, 503, 50, "platform answered 503 Service Unavailable, Retry-After 30"),
            (now - 300, 0, 207, 48, "2 of 50 entities failed: urn:ngsi-ld:AirQualityObserved:hall-01:751 "
                                    "BadRequestData"),
        ]:
            db.execute("insert into sync_log(at, ok, status, count, detail) values (?, ?, ?, ?, ?)",
                       [at, ok, status, count, detail])
        db.execute("insert or replace into meta(key, value) values ('last_sync_ok', ?)", [repr(now - 900)])
    return {"now": now, "steps": steps}


async def expect_errors(http, base: str, cases: list[tuple[str, int, str]]) -> None:
    """Each (path, status, text) of `cases`: GET base + path answers that status, with text in its body."""
    for path, status, text in cases:
        async with http.get(base + path) as r:
            assert r.status == status and text in await r.text(), path
