"""Settings in the upload answer until the board's status acknowledges them (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import sqlite3

import pytest

from agent_helpers import body, headers
from airwatt.agent import device_settings, store
from airwatt.protocol import check, wire


async def post(client, device, key, seqs, applied=None):
    status = wire.encode_status(60, 81234, -67, 0, 0, {}, "agent", applied)
    data = body(device, seqs, status=status)
    resp = await client.post("/v1/batches", data=data, headers=headers(device, key, data))
    assert resp.status == 200
    answer = await resp.json()
    check.check_answer(answer)
    return answer


def test_parse_intervals_and_change_refuse_bad_input(data_dir, devices):
    assert device_settings.parse_intervals("energy=10, co2=30,pm=60") == {"energy": 10, "co2": 30, "pm": 60}
    for text, said in [("energy", "KIND=SECONDS"), ("radon=5", "KIND=SECONDS"), ("pm=fast", "whole number"),
                       ("", "give KIND=SECONDS")]:
        with pytest.raises(ValueError, match=said):
            device_settings.parse_intervals(text)
    db = store.open_db(data_dir)
    for changes, said in [({}, "nothing to change"), ({"colour": 1}, "no setting colour"),
                          ({"upload_s": 0}, "settings.upload_s"), ({"frc": 5000}, "settings.co2.frc"),
                          ({"altitude": 10, "pressure": 100000}, "not both")]:
        with pytest.raises(ValueError, match=said):
            device_settings.change(db, "dev-1", changes, by="cli")
    with pytest.raises(ValueError, match="no device nope"):
        device_settings.change(db, "nope", {"upload_s": 5}, by="cli")
    assert device_settings.state(db, "dev-1") is None
    # altitude and pressure replace each other; intervals merge per kind
    device_settings.change(db, "dev-1", {"altitude": 180, "intervals": {"pm": 60}}, by="cli")
    got = device_settings.change(db, "dev-1", {"pressure": 100800, "intervals": {"co2": 30}}, by="ann")
    assert got["settings"] == {"co2": {"pressure": 100800}, "intervals": {"pm": 60, "co2": 30}}
    assert got["rev"] == 2 and got["changed"]["intervals.co2"]["by"] == "ann"


async def test_answer_carries_settings_until_acknowledged(client, data_dir, devices):
    key = devices["dev-2"]
    assert "settings" not in await post(client, "dev-2", key, [1])  # nothing set: the answer is as before
    db = store.open_db(data_dir)
    device_settings.change(db, "dev-2", {"intervals": {"pm": 30}, "upload_s": 45, "frc": 420}, by="cli")
    want = {"rev": 1, "intervals": {"pm": 30}, "upload_s": 45, "co2": {"frc": 420}}
    assert (await post(client, "dev-2", key, [2]))["settings"] == want  # a board that reports nothing yet
    assert (await post(client, "dev-2", key, [3], {"rev": 0, "frc": None, "error": ""}))["settings"] == want
    assert device_settings.state(db, "dev-2")["state"] == "pending"
    answer = await post(client, "dev-2", key, [4], {"rev": 1, "frc": -12, "error": ""})
    assert "settings" not in answer and answer["stored_seq"] == 4
    got = device_settings.state(db, "dev-2")
    assert got["state"] == "applied" and got["frc"]["correction"] == -12 and got["frc_pending"] is None
    assert store.get_device(db, "dev-2")["interval_s"] == 45  # the thresholds follow the acknowledged settings
    # the same acknowledgement again writes nothing
    await post(client, "dev-2", key, [5], {"rev": 1, "frc": -12, "error": ""})
    assert device_settings.state(db, "dev-2")["applied_at"] == got["applied_at"]
    # a new rev without FRC: the FRC is not sent again
    device_settings.change(db, "dev-2", {"intervals": {"pm": 90}}, by="cli")
    assert (await post(client, "dev-2", key, [6], {"rev": 1, "frc": -12, "error": ""}))["settings"] == {
        "rev": 2, "intervals": {"pm": 90}, "upload_s": 45}
    await post(client, "dev-2", key, [7], {"rev": 2, "frc": None, "error": ""})
    assert store.get_device(db, "dev-2")["interval_s"] == 90


async def test_a_store_trouble_in_the_exchange_never_costs_the_upload(client, data_dir, devices, monkeypatch):
    def broken(*args, **kw):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(device_settings, "exchange", broken)
    answer = await post(client, "dev-1", devices["dev-1"], [1, 2])
    assert answer["stored_seq"] == 2 and "settings" not in answer
