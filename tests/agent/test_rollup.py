"""Rollups against the raw readings they come from: counts, min/max/mean per hour, energy per day."""

from __future__ import annotations

import random

import pytest

from airwatt.agent import carbon, rollup, store

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
            db["readings"].insert_all(arrival[start:start + 97])
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
        db["readings"].insert_all(_rows("a", 10, random.Random(0)))
    assert [(d["id"], d["readings"]) for d in store.list_devices(db)] == [("a", 30)]
    rollup.catch_up(db.conn)
    with store.transaction(db):
        db["readings"].insert_all(_rows("a", 12, random.Random(0))[30:])
    assert store.reading_counts(db) == {"a": 36}
    assert store.sync_state(db)["pending"] == 36
    db.close()
