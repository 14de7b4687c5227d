"""Sample values of a reading, written once for the tests: plausible for each sensor, within protocol's ranges."""

from __future__ import annotations

VALUES = {
    "energy": {"voltage": 229.8, "current": 1.254, "power": 287.5, "energy_wh": 123456, "frequency": 50.0, "pf": 0.97},
    "pm": {"pm1": 8, "pm25": 27, "pm10": 41},
    "co2": {"co2": 812, "temperature": 26.55, "humidity": 55.12},
}


def values(sensor: str, seq: int) -> dict:
    """VALUES[sensor] varied by seq, deterministically: a series whose readings differ."""
    if sensor == "energy":
        return dict(VALUES["energy"], energy_wh=120000 + seq)
    if sensor == "pm":
        return {"pm1": 5 + seq % 7, "pm25": 12 + seq % 11, "pm10": 20 + seq % 13}
    return dict(VALUES["co2"], co2=600 + seq % 50)
