# Sampler scenarios, run on the MicroPython VM one per process by tests/firmware/test_sampler.py.
import asyncio
import json

import sampler
from clock import Clock
from board_fakes import FakeDriver, HangingDriver, ListStore, ManualTicks
from protocol import check

CO2 = {"co2": 612, "temperature": 23.41, "humidity": 48.2}
PM = {"pm1": 3, "pm25": 5, "pm10": 9}
ENERGY = {"voltage": 229.8, "current": 1.234, "power": 250.1, "energy_wh": 10234, "frequency": 50.0, "pf": 0.88}


def _setup(drivers, intervals, stuck_n=1000, ticks=None):
    ticks = ticks or ManualTicks(1000)
    clock = Clock(ticks)
    store = ListStore()
    sensors = [sampler.Sensor(d.KIND, d, iv, stuck_n) for d, iv in zip(drivers, intervals)]
    s = sampler.Sampler(sensors, store, clock, "0a1b2c3d", log=lambda *a: None)
    return s, store, clock, ticks


def _run(s, ticks, steps, step_ms):
    async def go():
        for _ in range(steps):
            await s.step()
            ticks.advance(step_ms)

    asyncio.run(go())


def _readings(store):
    out = []
    for seq, payload in store.records:
        r = json.loads(payload)
        check.check_reading(r, "r")
        assert r["seq"] == seq
        out.append(r)
    return out


def test_failing_sensors_count_errors_and_the_fine_one_keeps_producing():
    bad_bus = FakeDriver("energy", [OSError(110)])
    bad_frame = FakeDriver("pm", [ValueError("PMS5003: checksum")])
    fine = FakeDriver("co2", [CO2, {"co2": 613, "temperature": 23.4, "humidity": 48.1}])
    s, store, clock, ticks = _setup([bad_bus, bad_frame, fine], [1000, 1000, 1000])
    _run(s, ticks, 10, 1000)
    rs = _readings(store)
    assert [r["sensor"] for r in rs] == ["co2"] * 10, rs
    assert [r["seq"] for r in rs] == list(range(1, 11))
    assert s.errors == {"energy": 10, "pm": 10, "co2": 0}, s.errors
    assert rs[0]["values"] == {"co2": 612, "humidity": 48.2, "temperature": 23.41}
    assert rs[0]["boot"] == "0a1b2c3d" and rs[0]["t"] is None
    assert bad_bus.starts == 10, "a sensor that does not answer is started again before the next read"
    assert bad_frame.starts == 1, "a bad frame means the sensor answers: no restart"
    sensors = {x.kind: x for x in s.sensors}
    assert sensors["energy"].last_error == "OSError 110"
    assert sensors["pm"].last_error == "ValueError PMS5003: checksum"
    assert sensors["co2"].outcome[0] is True and sensors["pm"].outcome == (False, "ValueError PMS5003: checksum")


def test_a_sensor_that_recovers_produces_again_and_errors_stay_counted():
    flaky = FakeDriver("pm", [OSError(5), ValueError("bad length"), PM, OSError(110), PM])
    s, store, clock, ticks = _setup([flaky], [1000])
    _run(s, ticks, 5, 1000)
    rs = _readings(store)
    assert [r["values"] for r in rs] == [PM, PM]
    assert [r["seq"] for r in rs] == [1, 2]
    assert s.errors == {"pm": 3}


def test_each_sensor_on_its_own_schedule():
    fast = FakeDriver("energy", [ENERGY])
    slow = FakeDriver("co2", [CO2])
    s, store, clock, ticks = _setup([fast, slow], [10000, 30000])
    _run(s, ticks, 90, 1000)  # 90 s
    kinds = [r["sensor"] for r in _readings(store)]
    assert kinds.count("energy") == 9 and kinds.count("co2") == 3, kinds
    ticks_of = [r["ticks"] for r in _readings(store) if r["sensor"] == "co2"]
    assert ticks_of == [0, 30000, 60000], ticks_of


def test_no_value_yet_is_asked_again_soon_then_counted_when_it_never_comes():
    warm = FakeDriver("co2", [None, None, CO2])
    s, store, clock, ticks = _setup([warm], [60000])
    _run(s, ticks, 3, 1000)
    assert [r["ticks"] for r in _readings(store)] == [2000], _readings(store)
    assert s.errors == {"co2": 0}, s.errors
    never = FakeDriver("co2", [None])
    s, store, clock, ticks = _setup([never], [60000])
    _run(s, ticks, 61, 1000)  # gives up 30 s after the first "not yet", starts again at the next slot (60 s)
    assert store.records == [] and s.errors == {"co2": 1}, s.errors
    assert s.sensors[0].last_error == "no data" and never.starts == 2


def test_stuck_values_are_flagged_from_the_nth_identical_reading():
    d = FakeDriver("co2", [CO2, dict(CO2), {"co2": 700, "temperature": 22.0, "humidity": 40.0}, CO2, CO2, CO2, CO2])
    s, store, clock, ticks = _setup([d], [1000], stuck_n=3)
    _run(s, ticks, 7, 1000)
    flags = [r["flags"] for r in _readings(store)]
    assert flags == [[], [], [], [], [], ["stuck"], ["stuck"]], flags


def test_driver_flags_and_out_of_range_values_are_kept_extra_metrics_left_out():
    d = FakeDriver("energy", [dict(ENERGY, voltage=999.0, alarm=True)], flags=["alarm"])
    d.script = [{"voltage": 999.0, "current": 1.0, "power": 230.0, "energy_wh": 5, "frequency": 50.0, "pf": 1.0,
                 "alarm": True}]
    s, store, clock, ticks = _setup([d], [1000])
    _run(s, ticks, 1, 1000)
    r = _readings(store)[0]
    assert r["flags"] == ["alarm", "out_of_range"], r
    assert "voltage" not in r["values"] and "alarm" not in r["values"] and r["values"]["power"] == 230


def test_a_driver_that_never_returns_is_timed_out_and_others_go_on():
    hang = HangingDriver()
    fine = FakeDriver("pm", [PM])
    s, store, clock, ticks = _setup([hang, fine], [1000, 1000])
    sampler._READ_TIMEOUT_MS = 50
    _run(s, ticks, 3, 1000)
    assert s.errors == {"co2": 3, "pm": 0}
    assert s.sensors[0].last_error == "timeout"
    assert len(store.records) == 3


def test_a_missing_driver_and_a_driver_bug_are_counted_and_nothing_is_stored():
    buggy = FakeDriver("pm", [TypeError("unsupported types")])
    s, store, clock, ticks = _setup([buggy], [1000])
    s.sensors.append(sampler.Sensor("energy", None, 1000, 10))
    s.errors["energy"] = 0
    _run(s, ticks, 2, 1000)
    assert store.records == []
    assert s.errors == {"pm": 2, "energy": 2}, s.errors
    assert s.sensors[0].last_error == "TypeError unsupported types" and s.sensors[1].last_error == "no driver"


def test_wall_time_only_once_known_and_ticks_survive_the_wrap():
    start = ManualTicks(0)
    start.advance(-1500)  # 1.5 s before ticks_ms wraps
    d = FakeDriver("pm", [PM])
    s, store, clock, ticks = _setup([d], [1000], ticks=start)
    _run(s, ticks, 3, 1000)
    assert clock.set_wall(1000, "agent") is False, "a time before 2020 is not a valid wall time"
    assert clock.set_wall(1790000000, "agent") is True and clock.sync == "agent"
    _run(s, ticks, 2, 1000)
    rs = _readings(store)
    assert [r["ticks"] for r in rs] == [0, 1000, 2000, 3000, 4000], rs
    assert [r["t"] for r in rs] == [None, None, None, 1790000000, 1790000001], rs


def test_agent_interval_setting_takes_effect():
    d = FakeDriver("co2", [CO2])
    s, store, clock, ticks = _setup([d], [60000])
    _run(s, ticks, 10, 1000)
    s.set_interval("co2", 5)
    _run(s, ticks, 10, 1000)
    assert [r["ticks"] for r in _readings(store)] == [0, 10000, 15000], [r["ticks"] for r in _readings(store)]


def test_a_resting_sensor_is_told_its_period_and_woken_its_warmup_early():
    d = FakeDriver("pm", [PM])
    ticks = ManualTicks(0)
    clock = Clock(ticks)
    store = ListStore()
    sen = sampler.Sensor("pm", d, 60000, 1000, warmup_ms=10000)
    s = sampler.Sampler([sen], store, clock, "0a1b2c3d")
    assert d.period_ms == 60000  # the driver decides to sleep between readings (the PMS5003 does)
    _run(s, ticks, 121, 1000)
    assert len(store.records) == 3
    # woken (first read attempt) 11 s before each slot
    assert sen.due == 180000 - 11000, sen.due
    s.set_interval("pm", 30)
    assert d.period_ms == 30000


def test_rtc_round_trips_rtc_datetime():
    import rtc

    for t in (1577836800, 1790000123, 951782400, 4102444799):
        dt = rtc.datetime_from_unix(t)
        assert rtc.unix_from_datetime(dt) == t, (t, dt)
    assert rtc.datetime_from_unix(1790000123)[:3] == (2026, 9, 21)
    assert rtc.datetime_from_unix(0)[3] == 3  # 1970-01-01 was a Thursday (Monday = 0)


def test_boot_id_is_8_hex_and_random():
    import clock
    a, b = clock.boot_id(), clock.boot_id()
    assert len(a) == 8 and a != b
    for ch in a:
        assert ch in "0123456789abcdef"


def test_meters_on_one_bus_each_carry_their_address_and_fail_alone():
    l1 = FakeDriver("energy", [ENERGY])
    l2 = FakeDriver("energy", [OSError(110)])
    l3 = FakeDriver("energy", [dict(ENERGY, power=99.5)])
    ticks = ManualTicks(1000)
    store = ListStore()
    sensors = [sampler.Sensor("energy", d, 1000, 1000, 0, addr, "energy:L%d" % addr)
               for addr, d in ((1, l1), (2, l2), (3, l3))]
    s = sampler.Sampler(sensors, store, Clock(ticks), "0a1b2c3d", log=lambda *a: None)
    _run(s, ticks, 2, 1000)
    rs = []
    for seq, payload in store.records:
        r = json.loads(payload)
        check.check_reading(r, "r", True)
        rs.append(r)
    assert [r["instance"] for r in rs] == [1, 3, 1, 3]  # read in turn; the silent meter alone is missing
    assert rs[1]["values"]["power"] == 99.5
    assert s.errors == {"energy": 2} and sensors[1].last_error == "OSError 110"
    assert sensors[0].outcome[0] and sensors[1].outcome == (False, "OSError 110")
