"""kWh from cumulative counters and kgCO2e, against tables computed by hand (arithmetic in the comments)."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airwatt.agent import carbon

ICT = timezone(timedelta(hours=7))


def at(day: str, hhmm: str) -> float:
    """Unix time of a Thai local date and time."""
    return datetime.strptime(day + " " + hhmm, "%Y-%m-%d %H:%M").replace(tzinfo=ICT).timestamp()


def reading(seq, day, hhmm, wh, flags=""):
    return {"seq": seq, "t": at(day, hhmm), "energy_wh": wh, "flags": flags}


D = "2026-03-10"


def test_normal_rises_sum():
    rows = [reading(1, D, "00:00", 1000), reading(2, D, "01:00", 1500), reading(3, D, "02:00", 2100)]
    # (1500 - 1000) + (2100 - 1500) = 500 + 600 = 1100 Wh
    assert carbon.daily_wh(rows) == {D: 1100.0}
    assert [d.kind for d in carbon.deltas(rows)] == ["normal", "normal"]


def test_32_bit_wrap_counts_the_rise_round_the_top():
    rows = [reading(1, D, "10:00", 4294967000), reading(2, D, "10:01", 200), reading(3, D, "10:02", 450)]
    # wrap: (4294967296 - 4294967000) + 200 = 296 + 200 = 496 Wh, within 30000 W x 60 s = 500 Wh (+1)
    # then 450 - 200 = 250 Wh; total 746 Wh
    assert [(d.kind, d.wh) for d in carbon.deltas(rows)] == [("wrap", 496.0), ("normal", 250.0)]
    assert carbon.daily_wh(rows) == {D: 746.0}


def test_reset_counts_energy_since_reset_never_negative():
    rows = [reading(1, D, "12:00", 5000), reading(2, D, "12:01", 30), reading(3, D, "12:02", 80)]
    # 30 < 5000 and the wrap (4294967296 - 5000 + 30) is impossible in 60 s: a reset; 30 Wh since the reset
    # then 80 - 30 = 50; total 80 Wh (not 80 - 5000 = -4920)
    assert [(d.kind, d.wh) for d in carbon.deltas(rows)] == [("reset", 30.0), ("normal", 50.0)]
    assert carbon.daily_wh(rows) == {D: 80.0}


def test_replaced_meter_is_a_new_baseline_not_a_spike():
    up = [reading(1, D, "12:00", 5000), reading(2, D, "12:01", 9_000_000), reading(3, D, "12:02", 9_000_100)]
    # 9,000,000 - 5000 Wh in 60 s would be 539 MW: a used meter swapped in; counted 0, then 100 Wh
    assert [(d.kind, d.wh) for d in carbon.deltas(up)] == [("jump", 0.0), ("normal", 100.0)]
    down = [reading(1, D, "12:00", 5000), reading(2, D, "12:01", 3000), reading(3, D, "12:02", 3010)]
    # 3000 < 5000, not a wrap, and 3000 Wh since a reset 60 s ago is impossible (> 501): new baseline, then 10
    assert [(d.kind, d.wh) for d in carbon.deltas(down)] == [("jump", 0.0), ("normal", 10.0)]
    assert carbon.daily_wh(down) == {D: 10.0}


def test_duplicates_out_of_order_and_flagged_readings():
    rows = [
        reading(1, D, "08:00", 1000),
        reading(2, D, "08:10", 1100),
        reading(3, D, "08:20", 1100, "stuck"),  # frozen value: left out
        reading(4, D, "08:30", 1400, "retried"),  # a good value after a bad frame: used
        {"seq": 5, "t": at(D, "08:40"), "energy_wh": None, "flags": "out_of_range"},
        {"seq": 6, "t": None, "energy_wh": 1450, "flags": ""},  # no wall time: left out
        reading(7, D, "08:50", 1500, "alarm"),
    ]
    # 1100 - 1000 = 100; 1400 - 1100 = 300 (across the stuck one); 1500 - 1400 = 100; total 500 Wh
    expected = {D: 500.0}
    assert carbon.daily_wh(rows) == expected
    shuffled = rows + [dict(rows[1]), dict(rows[3])]  # the same seq twice counts once
    random.Random(7).shuffle(shuffled)
    assert carbon.daily_wh(shuffled) == expected


def test_gap_across_midnight_is_split_by_time():
    d2 = "2026-03-11"
    rows = [reading(1, D, "22:30", 0), reading(2, d2, "00:30", 2000)]
    # 2 h gap, 2000 Wh: 1.5 h on the 10th -> 1500 Wh, 0.5 h on the 11th -> 500 Wh
    assert carbon.daily_wh(rows) == {D: 1500.0, d2: 500.0}
    # a gap of 3 whole days and a bit: 06:00 on the 10th to 06:00 on the 13th = 72 h, 7200 Wh (100 W)
    rows = [reading(1, D, "06:00", 0), reading(2, "2026-03-13", "06:00", 7200)]
    # 18 h -> 1800, 24 h -> 2400, 24 h -> 2400, 6 h -> 600
    assert carbon.daily_wh(rows) == {D: 1800.0, "2026-03-11": 2400.0, "2026-03-12": 2400.0,
                                     "2026-03-13": 600.0}


def test_days_are_thai_local_days_and_months_split():
    # 23:00 on 31 March to 01:00 on 1 April, Thai time (16:00Z to 18:00Z on 31 March UTC)
    rows = [reading(1, "2026-03-31", "23:00", 10_000), reading(2, "2026-04-01", "01:00", 12_000)]
    daily = carbon.daily_wh(rows)
    assert daily == {"2026-03-31": 1000.0, "2026-04-01": 1000.0}
    assert carbon.monthly(daily) == {"2026-03": 1000.0, "2026-04": 1000.0}


def test_clock_going_back_gives_the_later_readings_day():
    # seq order says 2 came after 1, but its time is earlier (clock corrected): whole delta to the later day
    rows = [{"seq": 1, "t": at(D, "10:00"), "energy_wh": 100, "flags": ""},
            {"seq": 2, "t": at(D, "09:00"), "energy_wh": 101, "flags": ""}]
    assert carbon.daily_wh(rows) == {D: 1.0}


def test_kgco2e_per_site_with_factor_and_year():
    per_day = {"a": {D: 1100.0}, "b": {D: 900.0, "2026-03-11": 500.0}, "c": {D: 250.0}}
    site_of = {"a": "hall", "b": "hall", "c": "school"}
    rows = carbon.site_rows(per_day, site_of, carbon.factors_table())
    # hall 10 March: 1100 + 900 = 2000 Wh = 2.0 kWh x 0.4750 = 0.95 kgCO2e
    # hall 11 March: 0.5 kWh x 0.4750 = 0.2375; school: 0.25 kWh x 0.4750 = 0.11875
    got = [(r.site, r.period, r.kwh, round(r.kgco2e, 6), r.factor, r.factor_year) for r in rows]
    assert got == [("hall", D, 2.0, 0.95, 0.475, 2026), ("hall", "2026-03-11", 0.5, 0.2375, 0.475, 2026),
                   ("school", D, 0.25, 0.11875, 0.475, 2026)]


def test_factor_table_keeps_past_years_reproducible():
    table = carbon.factors_table({2027: 0.46})
    assert carbon.factor_for(2026, table) == (0.475, 2026)
    assert carbon.factor_for(2027, table) == (0.46, 2027)
    assert carbon.factor_for(2030, table) == (0.46, 2027)  # latest earlier year
    assert carbon.factor_for(2024, table) == (0.475, 2026)  # none earlier: the earliest known
    # a 2027 report with a 2026 day keeps the 2026 factor: 1 kWh -> 0.475, 1 kWh in 2027 -> 0.46
    rows = carbon.site_rows({"a": {"2026-12": 1000.0, "2027-01": 1000.0}}, {"a": "s"}, table)
    assert [(r.period, r.kgco2e) for r in rows] == [("2026-12", 0.475), ("2027-01", 0.46)]
    with pytest.raises(ValueError, match="non-negative"):
        carbon.factors_table({2026: -1})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 7200), st.one_of(st.integers(0, 4294967295), st.integers(0, 3000))),
                min_size=2, max_size=30))
def test_never_negative_never_more_than_the_meter_can_deliver(steps):
    t, rows = at(D, "00:00"), []
    for n, (gap, counter) in enumerate(steps):
        t += gap
        rows.append({"seq": n, "t": t, "energy_wh": counter, "flags": ""})
    for d in carbon.deltas(rows):
        assert 0 <= d.wh <= carbon.MAX_POWER_W * (d.t1 - d.t0) / 3600 + 1
    total = sum(carbon.daily_wh(rows).values())
    assert total == pytest.approx(sum(d.wh for d in carbon.deltas(rows)))
