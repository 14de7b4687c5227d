"""Thai AQI against a table computed by hand (arithmetic in the comments)."""

from decimal import Decimal

import pytest

from airwatt.agent import aqi

# (pollutant, 24-h mean, expected AQI, expected level) ; I = (Ij - Ii) / (Xj - Xi) * (X - Xi) + Ii, half up
HAND = [
    # PM2.5 band 0: 0.0-15.0 -> 0-25
    ("pm25", 0.0, 0, 0),      # 25/15 * 0 + 0 = 0
    ("pm25", 7.5, 13, 0),     # 25/15 * 7.5 = 12.5 -> 13 (half up)
    ("pm25", 15.0, 25, 0),    # 25/15 * 15 = 25
    ("pm25", 15.05, 25, 0),   # truncated to 15.0 (table precision 0.1) -> 25, not between bands
    # PM2.5 band 1: 15.1-25.0 -> 26-50
    ("pm25", 15.1, 26, 1),    # 24/9.9 * 0 + 26 = 26
    ("pm25", 15.19, 26, 1),   # truncated to 15.1 -> 26
    ("pm25", 20.0, 38, 1),    # 24/9.9 * 4.9 + 26 = 11.878787.. + 26 = 37.88 -> 38
    ("pm25", 25.0, 50, 1),    # 24/9.9 * 9.9 + 26 = 50
    # PM2.5 band 2: 25.1-37.5 -> 51-100
    ("pm25", 25.1, 51, 2),
    ("pm25", 30.0, 70, 2),    # 49/12.4 * 4.9 + 51 = 19.3629.. + 51 = 70.36 -> 70
    ("pm25", 37.5, 100, 2),   # 49/12.4 * 12.4 + 51 = 100
    # PM2.5 band 3: 37.6-75.0 -> 101-200
    ("pm25", 37.6, 101, 3),
    ("pm25", 37.55, 100, 2),  # truncated to 37.5 -> 100
    ("pm25", 50.0, 134, 3),   # 99/37.4 * 12.4 + 101 = 32.8235.. + 101 = 133.82 -> 134
    ("pm25", 75.0, 200, 3),   # 99/37.4 * 37.4 + 101 = 200
    # PM2.5 red band (our documented upper end): 75.1-500.0 -> 201-500
    ("pm25", 75.1, 201, 4),
    ("pm25", 100.0, 219, 4),  # 299/424.9 = 0.703695..; x 24.9 = 17.52201..; + 201 = 218.522 -> 219
    ("pm25", 500.0, 500, 4),
    ("pm25", 750.0, 500, 4),  # above the scale: capped at 500
    # PM10 (table precision 1 ug/m3)
    ("pm10", 0, 0, 0),
    ("pm10", 50, 25, 0),      # 25/50 * 50 = 25
    ("pm10", 50.9, 25, 0),    # truncated to 50 -> 25
    ("pm10", 51, 26, 1),
    ("pm10", 65, 38, 1),      # 24/29 = 0.827586..; x 14 = 11.58621..; + 26 = 37.586 -> 38
    ("pm10", 80, 50, 1),
    ("pm10", 100, 75, 2),     # 49/39 = 1.256410..; x 19 = 23.87179..; + 51 = 74.872 -> 75
    ("pm10", 120, 100, 2),
    ("pm10", 150, 150, 3),    # 99/59 = 1.677966..; x 29 = 48.66102..; + 101 = 149.661 -> 150
    ("pm10", 180, 200, 3),
    ("pm10", 181, 201, 4),
    ("pm10", 390.5, 350, 4),  # truncated to 390; 299/419 = 0.713604..; x 209 = 149.14081..; + 201 = 350.141 -> 350
    ("pm10", 600, 500, 4),
]

@pytest.mark.parametrize("pollutant,value,expected,level", HAND)
def test_sub_index_hand_table(pollutant, value, expected, level):
    s = aqi.sub_index(pollutant, value)
    assert (s.aqi, s.level) == (expected, level)
    assert s.above_scale == (value > (500 if pollutant == "pm25" else 600))


def test_truncation_not_rounding_and_float_noise():
    assert aqi.truncate("pm25", 15.05) == Decimal("15.0")
    assert aqi.truncate("pm25", 15.099) == Decimal("15.0")
    # 37.6 computed as a float mean must stay 37.6, not be cut to 37.5 by float noise
    noisy = sum([37.6] * 3) / 3
    assert aqi.truncate("pm25", noisy) == Decimal("37.6")
    assert aqi.sub_index("pm25", noisy).aqi == 101
    assert aqi.truncate("pm10", 180.99) == Decimal("180")


def test_every_truncated_value_lies_in_one_band_and_index_is_monotonic():
    last = -1
    for tenth in range(0, 5100):
        s = aqi.sub_index("pm25", tenth / 10)
        assert s.aqi >= last
        last = s.aqi
        assert aqi.LEVELS[s.level][0] <= s.aqi <= aqi.LEVELS[s.level][1]


def test_overall_is_highest_sub_index():
    # pm25 20.0 -> 38 (above); pm10 100 -> 75: PM10 dominates
    best, subs = aqi.overall(20.0, 100)
    assert (best.pollutant, best.aqi, best.level) == ("pm10", 75, 2)
    assert subs["pm25"].aqi == 38
    # pm25 50.0 -> 134, pm10 150 -> 150: PM10 dominates
    best, _ = aqi.overall(50.0, 150)
    assert (best.pollutant, best.aqi) == ("pm10", 150)
    # only PM2.5 known
    best, subs = aqi.overall(30.0, None)
    assert (best.pollutant, best.aqi, list(subs)) == ("pm25", 70, ["pm25"])
    # tie (25 and 25) names PM2.5
    best, _ = aqi.overall(15.0, 50)
    assert (best.pollutant, best.aqi) == ("pm25", 25)
    assert aqi.overall(None, None) == (None, {})


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="negative"):
        aqi.sub_index("pm25", -1)
    with pytest.raises(ValueError, match="finite"):
        aqi.sub_index("pm10", float("nan"))
    with pytest.raises(ValueError, match="unknown pollutant"):
        aqi.sub_index("o3", 10)


def test_colours_and_level_of():
    assert aqi.colour(0) == "rgb(0,191,243)"
    assert aqi.colour(4) == "rgb(205,0,0)"
    assert [aqi.level_of(a) for a in (0, 25, 26, 50, 51, 100, 101, 200, 201, 500)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert aqi.pm25_bands()[1] == (15.1, 25.1, "rgb(0,166,81)")


def test_daily_mean_is_mean_of_hourly_means_and_skips_flagged():
    end = 1_790_000_000.0
    start = end - 86400
    rows = [
        # hour 0: readings 10 and 20 -> hourly mean 15
        {"t": start + 60, "pm25": 10, "flags": ""},
        {"t": start + 120, "pm25": 20, "flags": ""},
        # hour 1: one reading 30 -> 30; a stuck reading 999 in the same hour does not count
        {"t": start + 3600 + 5, "pm25": 30, "flags": ""},
        {"t": start + 3600 + 6, "pm25": 999, "flags": "stuck"},
        # retried readings count: hour 23 (t == end is inside the window) -> 45
        {"t": end, "pm25": 45, "flags": "retried"},
        # outside the window, unknown time, missing value: ignored
        {"t": start, "pm25": 500, "flags": ""},
        {"t": None, "pm25": 500, "flags": ""},
        {"t": start + 7200, "pm25": None, "flags": "out_of_range"},
    ]
    mean, hours = aqi.daily_mean(rows, "pm25", end)
    # (15 + 30 + 45) / 3 = 30 over 3 hours (not (10+20+30+45)/4 = 26.25)
    assert (mean, hours) == (30.0, 3)
    assert aqi.daily_mean([], "pm25", end) == (None, 0)
