"""The device page of a three-phase board with a sub-circuit, in headless Chromium against a real agent and a
real SQLite store: the phases now (voltage balance, power per phase), power per meter, energy by circuit."""

from __future__ import annotations

import time

import pytest

from airwatt.agent import meters, rollup, store
from airwatt.agent.app import make_app
from airwatt.agent.config import Config
from airwatt.agent.web.i18n import label
from cdp_browser import Browser
from pages_fixture import TOKEN
from serving import serve

STEP = 60
VOLTS = {1: 231.0, 2: 226.5, 3: 229.0}
WATTS = {1: 900.0, 2: 600.0, 3: 1200.0, 4: 400.0}  # 4: the aircon circuit, fed from the phases


@pytest.fixture
async def three_phase(tmp_path):
    data_dir = tmp_path / "data"
    now = float(int(time.time()))
    db = store.open_db(data_dir)
    store.add_device(db, "tp-01", name="Hospital main board", site="hospital", sensors=["energy"], interval_s=STEP)
    meters.set_meters(db, "tp-01", meters.parse("1:L1,2:L2,3:L3,4:aircon"))
    rows, seq = [], 0
    for k in range(120):
        t = now - 7200 + k * STEP
        for inst in (1, 2, 3, 4):
            seq += 1
            if inst == 2 and k == 119:
                continue  # L2's last read failed: the page shows its last good one
            rows.append({"device": "tp-01", "seq": seq, "boot": "0a1b2c3d", "sensor": "energy", "instance": inst,
                         "t": t + inst * 0.1, "t_source": "board", "ticks": seq * 100, "received": t + 5,
                         "flags": "", "voltage": VOLTS.get(inst, 229.0) + (k % 2) * 0.1,
                         "current": round(WATTS[inst] / 230, 3), "power": WATTS[inst] + k % 3,
                         "energy_wh": 1000 * inst + int(k * WATTS[inst] * STEP / 3600), "frequency": 50.0, "pf": 0.95})
    with store.transaction(db):
        store.insert_readings(db, rows)
    rollup.catch_up(db.conn)
    db.close()
    app = make_app(data_dir, Config(operator_token=TOKEN))
    async with serve(app) as base:
        yield base, data_dir, now


async def test_device_page_shows_phases_balance_and_circuits(three_phase, shots):
    base, data_dir, now = three_phase
    async with Browser() as b:
        await b.goto(base + "/device/tp-01?lang=en&end=%d" % now)
        await b.screenshot(shots / "device-three-phase-en.png")
        phases = await b.js("""Array.from(document.querySelectorAll('#phase-table tr[data-phase]')).map(tr =>
            [tr.dataset.phase].concat(Array.from(tr.querySelectorAll('td.num')).map(td => td.textContent)))""")
        total = await b.js("document.getElementById('phase-total').textContent")
        unbalance = await b.js("document.querySelector('#voltage-balance b').dataset.unbalance")
        series = await b.js("""Array.from(new Set(Array.from(document.querySelectorAll(
            '#plot-meter-power circle.pt')).map(c => c.dataset.series)))""")
        points = await b.js("document.querySelectorAll('#plot-meter-power circle.pt').length")
        circuits = await b.js("""Array.from(document.querySelectorAll('#circuit-table tr[data-circuit]')).map(tr =>
            [tr.dataset.circuit, tr.querySelectorAll('td')[1].textContent])""")
        power_plot = await b.js("document.getElementById('plot-power')")
        heading = await b.js("document.getElementById('phases').textContent")
        await b.goto(base + "/device/tp-01?lang=th&end=%d" % now)
        await b.screenshot(shots / "device-three-phase-th.png")
        th_heading = await b.js("document.getElementById('phases').textContent")
        th_circuits = await b.js("document.querySelector('#circuits').textContent")
    db = store.open_db(data_dir)
    try:
        last = {inst: db.execute("SELECT voltage, power FROM readings WHERE device = 'tp-01' AND instance = ?"
                                 " ORDER BY t DESC LIMIT 1", (inst,)).fetchone() for inst in (1, 2, 3)}
        supply_wh = db.execute("SELECT total(sum) FROM rollup_day WHERE device = 'tp-01' AND metric = 'wh'"
                               ).fetchone()[0]
        aircon_wh = db.execute("SELECT total(sum) FROM rollup_day WHERE device = 'tp-01' AND metric = 'wh:4'"
                               ).fetchone()[0]
    finally:
        db.close()
    assert [p[0] for p in phases] == ["L1", "L2", "L3"]
    for p, inst in zip(phases, (1, 2, 3)):
        assert float(p[1]) == pytest.approx(last[inst][0]) and float(p[3]) == pytest.approx(last[inst][1])
    assert float(total) == pytest.approx(sum(last[i][1] for i in (1, 2, 3)), abs=0.05)
    volts = [last[i][0] for i in (1, 2, 3)]
    mean = sum(volts) / 3
    assert float(unbalance) == pytest.approx(max(abs(v - mean) for v in volts) / mean * 100, abs=0.005)
    assert sorted(series) == ["power-1", "power-2", "power-3", "power-4"]  # one series per meter
    assert points == 4 * 120 - 1
    assert power_plot is None  # no single plot mixing every meter's readings
    got = dict(circuits)
    assert float(got["aircon"]) == pytest.approx(aircon_wh / 1000, abs=0.005)
    assert float(got["(supply)"]) == pytest.approx(supply_wh / 1000, abs=0.005)
    assert float(got["(rest)"]) == pytest.approx((supply_wh - aircon_wh) / 1000, abs=0.006)
    assert supply_wh > aircon_wh > 0
    assert heading == label("en", "phases") and th_heading == label("th", "phases")
    assert label("th", "by_circuit") in th_circuits
