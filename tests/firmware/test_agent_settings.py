# runs on: cpython, micropython
"""The board's side of the agent's settings (firmware/agent_settings.py) against small stand-ins for the sampler
and the uplink: a rev is applied once and kept for the next boot; a file of another device or a broken one is
ignored; care without an SCD4x is acknowledged with the reason."""
import asyncio
import os
from binascii import hexlify

try:
    from airwatt.firmware import agent_settings
except ImportError:  # MicroPython: firmware/ is on MICROPYPATH
    import agent_settings


class Sensor:
    def __init__(self, kind, driver=None):
        self.kind = kind
        self.driver = driver


class Sampler:
    def __init__(self, kinds):
        self.sensors = [Sensor(k) for k in kinds]
        self.intervals = {}

    def set_interval(self, kind, s):
        self.intervals[kind] = s


class Uplink:
    batch_max = 50
    upload_ms = 30000


class Board:
    def __init__(self, device="kk-1", kinds=("energy", "pm")):
        self.cfg = {"device": device}
        self.sampler = Sampler(kinds)
        self.uplink = Uplink()


def _path(name):
    path = "/tmp/airwatt-test-settings-%s-%s.json" % (name, hexlify(os.urandom(6)).decode())
    try:
        os.remove(path)
    except OSError:
        pass
    return path


def test_a_rev_is_applied_once_and_kept_for_the_next_boot():
    path = _path("keep")
    said = []
    b = Board()
    s = agent_settings.Settings(b, path, said.append)
    assert s.applied is None
    s.take({"rev": 3, "intervals": {"energy": 7}, "upload_s": 12, "batch_max": 20, "humid_rh": 80})
    assert b.sampler.intervals == {"energy": 7} and b.uplink.upload_ms == 12000 and b.uplink.batch_max == 20
    assert s.applied == {"rev": 3, "frc": None, "error": ""} and s.humid_rh == 80
    b.sampler.intervals = {}
    s.take({"rev": 3, "intervals": {"energy": 9}})  # the same rev again: nothing happens
    assert b.sampler.intervals == {}
    s.take({"intervals": {"energy": 9}})  # no rev (an older agent): the uplink alone handles it
    assert b.sampler.intervals == {}
    again = Board()
    kept = agent_settings.Settings(again, path, said.append)
    assert kept.applied == {"rev": 3, "frc": None, "error": ""}
    assert again.sampler.intervals == {"energy": 7} and again.uplink.upload_ms == 12000
    assert "SETTINGS rev 3 kept from %s" % path in said
    # flashed as another device: the kept revs are not its own
    other = Board("kk-2")
    assert agent_settings.Settings(other, path, said.append).applied is None and other.sampler.intervals == {}
    os.remove(path)


def test_a_broken_file_is_ignored():
    path = _path("broken")
    with open(path, "w") as f:
        f.write('{"rev": 3, "appl')
    assert agent_settings.Settings(Board(), path, print).applied is None
    os.remove(path)


def test_care_without_an_scd4x_is_acknowledged_with_the_reason():
    path = _path("care")
    s = agent_settings.Settings(Board(), path, print)
    s.take({"rev": 5, "co2": {"asc": False, "frc": 420}})
    assert s.applied is None  # the care task applies it

    async def care_once():
        task = asyncio.create_task(s.run())
        for _ in range(40):
            await asyncio.sleep(0.05)
            if s.applied is not None:
                break
        task.cancel()

    asyncio.run(care_once())
    assert s.applied == {"rev": 5, "frc": None, "error": "no co2 sensor on this board"}
    assert agent_settings.load(path)["co2"] == {"asc": False}  # the FRC is not kept: it is done once
    os.remove(path)
