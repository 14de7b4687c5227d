"""Several meters per board: --meters parsing, the supply, and the city's "power now" through the supply."""

from __future__ import annotations

import argparse

import pytest

from airwatt.agent import flash_cmd, meters, rollup, store


def test_parse_gives_the_board_config_meters_with_the_supply():
    got = meters.parse("1:L1,2:L2,3:L3,4:aircon")
    assert [(m["addr"], m.get("phase"), m.get("circuit"), m["supply"]) for m in got] == [
        (1, "L1", None, True), (2, "L2", None, True), (3, "L3", None, True), (4, None, "aircon", False)]
    assert [m["supply"] for m in meters.parse("5:main,6:pumps", supply="5")] == [True, False]
    assert [m["supply"] for m in meters.parse("9:main")] == [True]  # a lone meter is the supply
    for bad, why in (("1:L1,1:L2", "used twice"), ("L1", "ADDRESS:PHASE-OR-CIRCUIT"), ("0:L1", "1..247"),
                     ("1:L1,2:main,3:L1", "used twice")):
        with pytest.raises(ValueError, match=why):
            meters.parse(bad)
    with pytest.raises(ValueError, match="--supply names meter addresses"):
        meters.parse("1:L1,2:L2", supply="7")


def test_flash_three_phase_and_meters_make_one_board_config():
    def args(**kw):
        return argparse.Namespace(**{"meters": None, "three_phase": False, "supply": None, **kw})

    three = flash_cmd.meters_from_args(args(three_phase=True))
    assert [(m["addr"], m["phase"]) for m in three] == [(1, "L1"), (2, "L2"), (3, "L3")]
    assert flash_cmd.meters_from_args(args()) is None
    with pytest.raises(flash_cmd.FlashError, match="one or the other"):
        flash_cmd.meters_from_args(args(three_phase=True, meters="1:L1"))
    with pytest.raises(flash_cmd.FlashError, match="needs --meters"):
        flash_cmd.meters_from_args(args(supply="1"))
    config = flash_cmd.board_config("tp-01", "", "net:password1", "http://127.0.0.1:9400", ["energy", "pm"],
                                    meters=meters.parse("1:L1,2:L2,3:L3,4:aircon"))
    energy = config["sensors"][0]
    assert config["protocol"] == 2 and "addr" not in energy and len(energy["meters"]) == 4
    with pytest.raises(flash_cmd.FlashError, match="energy sensor"):
        flash_cmd.board_config("tp-01", "", "net:password1", "http://127.0.0.1:9400", ["pm"], meters=three)


def test_power_now_is_the_supply_s_sum_not_the_sub_circuits(data_dir):
    db = store.open_db(data_dir)
    store.add_device(db, "tp", sensors=["energy"])
    store.add_device(db, "one", sensors=["energy"])
    meters.set_meters(db, "tp", meters.parse("1:L1,2:L2,3:L3,4:aircon"))
    rows = [{"device": "tp", "seq": i, "boot": "0a1b2c3d", "sensor": "energy", "instance": i, "t": 1000.0 + i,
             "t_source": "board", "ticks": i, "received": 1010.0, "flags": "", "power": 100.0 * i}
            for i in (1, 2, 3, 4)]
    rows.append(dict(rows[0], seq=5, t=1006.0, flags="stuck", power=5000.0))  # not good: left out
    with store.transaction(db):
        store.insert_readings(db, rows)
    assert meters.supply_power(db, "tp", 900, 1100, rollup.GOOD_FLAGS_SQL) == 600.0
    assert meters.supply_power(db, "tp", 1003.5, 1100, rollup.GOOD_FLAGS_SQL) is None
    assert meters.supply_power(db, "one", 900, 1100, rollup.GOOD_FLAGS_SQL) is False
    assert [m["name"] for m in meters.of_device(db, "tp")] == ["L1", "L2", "L3", "aircon"]
    assert meters.is_supply(meters.by_device(db)["tp"], 4) is False and meters.is_supply(None, 0)
