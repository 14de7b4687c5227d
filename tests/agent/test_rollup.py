"""Rollups against the raw readings they come from: counts, min/max/mean per hour, energy per day."""

from __future__ import annotations

import random
import time

import pytest

from airwatt.agent import carbon, rollup, store, sync_store

T0 = 1_790_000_000.0  # 2026-09-21


def _rows(device: str, n: int, rng: random.Random) -> list[dict]:
    """n readings of each sensor, 7 minutes apart, with a counter that wraps, resets and jumps; some flagged."""
    rows = []
    counter = 4294967295 - 3000
    for k in range(n):
        t = T0 + k * 420
        flags = rng.choice(["", "", "", "retried", "stuck", "out_of_range"])
        if k == n // 3:
            counter = 40  # reset
        elif k == n // 2:
            counter += 50_000_000  # a used meter swapped in
        else:
            counter = (counter + rng.randint(0, 300)) % 4294967296
        base = {"device": device, "boot": "0a1b2c3d", "t_source": "board", "ticks": k, "received": T0 + k * 420 + 3}
        rows.append(dict(base, seq=3 * k + 1, sensor="energy", t=t, flags=flags, energy_wh=counter,
                         power=float(rng.randint(0, 3000)), voltage=229.5))
        rows.append(dict(base, seq=3 * k + 2, sensor="pm", t=t + 1, flags=rng.choice(["", "stuck"]),
                         pm1=1, pm25=rng.randint(0, 200), pm10=rng.randint(0, 300)))
        rows.append(dict(base, seq=3 * k + 3, sensor="co2", t=None if k % 50 == 7 else t + 2, flags="",
                         co2=rng.randint(400, 3000), temperature=25.5, humidity=60.0))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_match_the_raw_readings_whatever_the_arrival_order(data_dir, seed):
    rng = random.Random(seed)
    db = store.open_db(data_dir)
    rows = _rows("a", 400, rng) + _rows("b", 150, rng)
    # arrival order: mostly in order, with a board's old buffer (a run of earlier readings) arriving late
    late = rows[100:160]
    arrival = rows[:100] + rows[160:] + late
    rng.shuffle(arrival[400:500])
    for start in range(0, len(arrival), 97):  # ingest and the roller interleave, in small chunks
        with store.transaction(db):
            store.insert_readings(db, arrival[start:start + 97])
        if rng.random() < 0.5:
            rollup.catch_up(db.conn, chunk=rng.randint(1, 300))
    rollup.catch_up(db.conn, chunk=250)
    assert store.reading_counts(db) == {"a": 1200, "b": 450}

    for device in ("a", "b"):
        raw = store.readings(db, device)
        energy = [r for r in raw if r["sensor"] == "energy"]
        days = rollup.daily_wh(db, 0, 2e9, device)[device]
        assert days == pytest.approx(carbon.daily_wh(energy), abs=1e-6)
        assert sum(days.values()) > 0
        hours = rollup.hours(db, device, ("pm25", "co2", "power"), 0, 2e9)
        for metric in ("pm25", "co2", "power"):
            want: dict[int, list[float]] = {}
            for r in raw:
                if r[metric] is None or r["t"] is None or {"stuck", "out_of_range"} & set(r["flags"].split(",")):
                    continue
                want.setdefault(int(r["t"] // 3600 * 3600), []).append(r[metric])
            got = {start: (n, lo, hi, mean) for start, n, lo, hi, mean in hours[metric]}
            assert sorted(got) == sorted(want)
            for h, v in want.items():
                assert got[h] == pytest.approx((len(v), min(v), max(v), sum(v) / len(v))), (metric, h)
    # the daily rows are the sums of their hours
    for device, metric, start, n, total in db.execute(
            "select device, metric, start, n, sum from rollup_day").fetchall():
        n_h, sum_h = db.execute("select sum(n), sum(sum) from rollup_hour where device = ? and metric = ?"
                                " and start >= ? and start < ?", [device, metric, start, start + 86400]).fetchone()
        assert (n, total) == (n_h, pytest.approx(sum_h))
    # nothing new: a second run takes nothing in and changes nothing
    before = db.execute("select * from rollup_hour order by 1, 2, 3").fetchall()
    assert rollup.catch_up(db.conn) == 0
    assert db.execute("select * from rollup_hour order by 1, 2, 3").fetchall() == before
    db.close()


def test_counts_include_readings_the_roller_has_not_seen_yet(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "a")
    with store.transaction(db):
        store.insert_readings(db, _rows("a", 10, random.Random(0)))
    assert [(d["id"], d["readings"]) for d in store.list_devices(db)] == [("a", 30)]
    rollup.catch_up(db.conn)
    with store.transaction(db):
        store.insert_readings(db, _rows("a", 12, random.Random(0))[30:])
    assert store.reading_counts(db) == {"a": 36}
    assert sync_store.sync_state(db)["pending"] == 36
    db.close()


async def test_the_running_agent_rolls_up_what_it_ingests(data_dir, devices, monkeypatch):
    """Signed uploads to a live agent: its roller takes them in within moments, and the device page's daily kWh
    are then carbon.daily_wh of the stored counter readings."""
    import asyncio
    import re

    from aiohttp.test_utils import TestClient, TestServer

    from airwatt.agent.app import make_app
    from agent_helpers import body, headers, reading

    monkeypatch.setattr(rollup, "EVERY_S", 0.1)
    now = int(time.time())
    async with TestClient(TestServer(make_app(data_dir), host="127.0.0.1")) as client:
        for b in range(4):
            seqs = range(b * 30 + 1, b * 30 + 31)
            readings = [reading(s, ("energy", "pm", "co2")[s % 3], now - 7200 + s * 60,
                                values={"voltage": 230.0, "current": 1.0, "power": 230.0, "energy_wh": 1000 + s * 4,
                                        "frequency": 50.0, "pf": 1.0} if s % 3 == 0 else None) for s in seqs]
            data = body("dev-1", seqs, readings=readings)
            resp = await client.post("/v1/batches", data=data, headers=headers("dev-1", devices["dev-1"], data))
            assert resp.status == 200
        for _ in range(100):
            metrics = await (await client.get("/metrics")).text()
            if "\nairwatt_rollup_behind_readings 0\n" in metrics:
                break
            await asyncio.sleep(0.05)
        assert "\nairwatt_rollup_behind_readings 0\n" in metrics
        page = await (await client.get("/device/dev-1?lang=en&range=24h")).text()
    bars = {d: float(v) for d, v in re.findall(r'class="bar" data-day="([\d-]+)" data-value="([\d.]+)"', page)}
    db = store.open_db(data_dir)
    energy = [r for r in store.readings(db, "dev-1") if r["sensor"] == "energy"]
    assert store.reading_counts(db) == {"dev-1": 120}
    db.close()
    want = carbon.daily_wh(energy)
    assert sum(want.values()) == 4 * (len(energy) - 1) * 3 > 0
    # the bars carry kWh to 6 places: a day with a third of a Wh (readings on both sides of ICT midnight) is 3e-7 off
    assert {d: v for d, v in bars.items() if v} == pytest.approx({d: wh / 1000 for d, wh in want.items()}, abs=1e-6)


def _metered(device: str, n: int, rng: random.Random) -> tuple[list[dict], dict[int, list[dict]]]:
    """A three-phase board with an aircon sub-circuit: 4 meters (instances 1..4) read in turn every 10 minutes;
    meter 2's counter resets half-way and meter 3 is replaced by a used one (its counter jumps up)."""
    rows: list[dict] = []
    per: dict[int, list[dict]] = {1: [], 2: [], 3: [], 4: []}
    counters = {1: 1000, 2: 5000, 3: 200, 4: 700}
    seq = 0
    for k in range(n):
        for inst in (1, 2, 3, 4):
            if k == n // 2 and inst == 2:
                counters[2] = 3
            elif k == n // 3 and inst == 3:
                counters[3] += 9_000_000
            else:
                counters[inst] += rng.randint(50, 400) // (3 if inst == 4 else 1)
            seq += 1
            r = {"device": device, "boot": "0a1b2c3d", "t_source": "board", "ticks": seq, "received": T0 + k * 600,
                 "seq": seq, "sensor": "energy", "instance": inst, "t": T0 + k * 600 + inst, "flags": "",
                 "energy_wh": counters[inst], "power": 1000.0 * inst, "voltage": 229.0 + inst}
            rows.append(r)
            per[inst].append(r)
    return rows, per


def test_carbon_counts_the_supply_once_each_meter_on_its_own_counter(data_dir):
    from airwatt.agent import meters

    db = store.open_db(data_dir)
    store.add_device(db, "tp", name="three-phase", site="s", sensors=["energy"])
    meters.set_meters(db, "tp", meters.parse("1:L1,2:L2,3:L3,4:aircon"))
    rows, per = _metered("tp", 300, random.Random(5))
    late = rows[200:260]  # an old buffer arriving after the rest
    for chunk in (rows[:200], rows[260:], late):
        with store.transaction(db):
            store.insert_readings(db, chunk)
        rollup.catch_up(db.conn, chunk=77)
    days = rollup.daily_wh(db, 0, 2e9, "tp")["tp"]
    supply = {}
    for inst in (1, 2, 3):  # the phases: the supply; the aircon circuit is inside it
        for day, v in carbon.daily_wh(per[inst]).items():
            supply[day] = supply.get(day, 0.0) + v
    assert days == pytest.approx(supply, abs=1e-6)
    aircon = carbon.daily_wh(per[4])
    assert sum(aircon.values()) > 0
    got = dict(db.execute("SELECT metric, sum(sum) FROM rollup_day WHERE device = 'tp' AND metric LIKE 'wh:%'"
                          " GROUP BY metric").fetchall())
    assert got["wh:4"] == pytest.approx(sum(aircon.values()), abs=1e-6)
    assert sum(got["wh:%d" % i] for i in (1, 2, 3)) == pytest.approx(sum(supply.values()), abs=1e-6)
    # per-meter aggregates are apart: the phase powers, never mixed into one "power"
    means = {m: s / n for m, n, s in db.execute(
        "SELECT metric, sum(n), sum(sum) FROM rollup_day WHERE device = 'tp' AND metric LIKE 'power%'"
        " GROUP BY metric")}
    assert means == {"power:1": 1000.0, "power:2": 2000.0, "power:3": 3000.0, "power:4": 4000.0}
