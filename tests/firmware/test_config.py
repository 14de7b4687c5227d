# runs on: cpython, micropython
"""config.json validation: the shipped example passes; each mistake gets one line naming the key and the fix."""
import json

try:
    from airwatt.firmware import config
except ImportError:  # MicroPython: firmware/ is on MICROPYPATH
    import config

EXAMPLE = __file__[: __file__.rfind("/tests/")] + "/firmware/config.example.json"


def _example():
    with open(EXAMPLE) as f:
        return json.load(f)


def _error(raw):
    try:
        config.validate(raw)
    except config.ConfigError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert msg.startswith("config.json: "), msg
        return msg
    raise AssertionError("accepted a bad config: %r" % (raw,))


def test_example_config_is_valid_and_defaults_are_filled():
    cfg = config.load(EXAMPLE)
    assert cfg["device"] == "kk-city-hall-01"
    assert (cfg["host"], cfg["port"], cfg["prefix"]) == ("192.168.1.10", 8400, "")
    assert [s["kind"] for s in cfg["sensors"]] == ["energy", "pm", "co2"]
    assert cfg["sensors"][0]["addr"] == 0xF8 and cfg["sensors"][2]["addr"] == 0x62
    assert cfg["sensors"][2]["freq"] == 100000  # default filled in
    assert cfg["sensors"][1]["stuck_n"] == 120
    assert cfg["data_dir"] == "/data" and cfg["batch_max"] == 50


def test_minimal_config_gets_defaults():
    raw = {"device": "d1", "key": "ab" * 16, "wifi": {"ssid": "x"}, "agent_url": "http://10.0.0.2:80/api/",
           "sensors": [{"kind": "co2", "i2c": 0, "scl": 22, "sda": 21}]}
    cfg = config.validate(raw)
    assert cfg["password"] == "" and cfg["prefix"] == "/api"
    assert cfg["sensors"][0]["interval_s"] == 30 and cfg["sensors"][0]["addr"] == 0x62
    assert cfg["capacity"] == 0 and cfg["commit_s"] == 60 and cfg["wdt_s"] == 60 and cfg["ntp"] == ""


def _mutated(path, value):
    raw = _example()
    obj = raw
    for k in path[:-1]:
        obj = obj[k]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return raw


# (where to change, new value or KeyError to delete, text the message must hold)
BAD = (
    (("device",), "Kk City", "device: expected only the characters"),
    (("device",), KeyError, "device: expected a string of 1..32 characters (missing)"),
    (("key",), "xyz", "key: expected a string of 32..128 characters"),
    (("key",), "g" * 32, "key: expected only the characters"),
    (("key",), "a" * 33, "key: expected an even number of hex digits"),
    (("wifi",), "cityhall", "wifi: expected an object"),
    (("wifi", "ssid"), "", "wifi.ssid: expected a string of 1..32 characters"),
    (("wifi", "pass"), "x", "wifi.pass: expected no such key"),
    (("agent_url",), "https://agent:8400", "agent_url: expected http://HOST:PORT"),
    (("agent_url",), "http://agent", "agent_url: expected http://HOST:PORT with an explicit port"),
    (("agent_url",), "http://agent:99999", "agent_url: expected a port 1..65535"),
    (("agent_url",), KeyError, "agent_url: expected http://HOST:PORT (missing)"),
    (("sensors",), [], "sensors: expected a non-empty list"),
    (("sensors", 0, "kind"), "dust", "sensors[0].kind: expected one of energy, pm, co2"),
    (("sensors", 1, "kind"), "energy", "sensors[1].kind: expected each kind at most once"),
    (("sensors", 0, "uart"), 3, "sensors[0].uart: expected an integer 1..2, got 3"),
    (("sensors", 0, "uart"), "2", "sensors[0].uart: expected an integer 1..2, got \"2\""),
    (("sensors", 0, "tx"), KeyError, "sensors[0].tx: expected an integer 0..48 (missing)"),
    (("sensors", 0, "addr"), 0, "sensors[0].addr: expected an integer 1..248"),
    (("sensors", 0, "interval_s"), 2, "sensors[0].interval_s: expected an integer 5..86400"),
    (("sensors", 0, "interval"), 10, "sensors[0].interval: expected no such key"),
    (("sensors", 0, "scl"), 22, "sensors[0].scl: expected no I2C keys on a UART sensor"),
    (("sensors", 2, "uart"), 1, "sensors[2].uart: expected no UART keys on an I2C sensor"),
    (("sensors", 2, "warmup_s"), 5, "sensors[2].warmup_s: expected warmup_s only for kind pm"),
    (("sensors", 1, "uart"), 2, "sensors: expected a different uart id for each UART sensor (uart 2"),
    (("capacity",), 5, "capacity: expected 0 (size from the flash) or an integer 10..10000000, got 5"),
    (("batch_max",), 101, "batch_max: expected an integer 1..100, got 101"),
    (("batch_max",), True, "batch_max: expected an integer 1..100, got true"),
    (("ntp",), 5, "ntp: expected an NTP host name"),
    (("data_dir",), "data", "data_dir: expected an absolute path"),
    (("capacty",), 100, "capacty: expected no such key"),
)


def test_each_mistake_names_the_key_and_what_is_expected():
    for path, value, expected in BAD:
        msg = _error(_mutated(path, value))
        assert expected in msg, (path, value, msg)


def test_top_level_must_be_an_object():
    assert "(top level): expected a JSON object" in _error([])


def _nonce():
    import os
    return "".join("%02x" % b for b in os.urandom(4))


def test_missing_file_and_bad_json_say_so():
    for path, text, expected in (
        ("/nonexistent/airwatt-config.json", None, "not found"),
        ("/tmp/airwatt-config-%s.json" % _nonce(), "{\"device\": ", "is not valid JSON"),
    ):
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
        try:
            config.load(path)
        except config.ConfigError as e:
            assert expected in str(e), str(e)
        else:
            raise AssertionError("loaded " + path)
        finally:
            if text is not None:
                import os
                os.remove(path)


def _with_meters(meters, protocol=2):
    raw = _example()
    raw["protocol"] = protocol
    e = raw["sensors"][0]
    del e["addr"]
    e["meters"] = meters
    return raw


THREE_PHASE = [{"addr": 1, "name": "L1", "phase": "L1"}, {"addr": 2, "name": "L2", "phase": "L2"},
               {"addr": 3, "name": "L3", "phase": "L3"}]


def test_meters_on_one_bus_supply_defaults_to_the_phases():
    cfg = config.validate(_with_meters(THREE_PHASE + [{"addr": 4, "name": "aircon", "circuit": "aircon"}]))
    ms = cfg["sensors"][0]["meters"]
    assert [m["addr"] for m in ms] == [1, 2, 3, 4]
    assert [m["supply"] for m in ms] == [True, True, True, False]
    assert ms[3]["circuit"] == "aircon" and "phase" not in ms[3]
    # A lone meter is the supply; a sub-circuit can be declared the supply, and a phase declared not to be.
    assert config.validate(_with_meters([{"addr": 7, "name": "main", "circuit": "main"}]))["sensors"][0][
        "meters"][0]["supply"] is True
    two = [{"addr": 1, "name": "main", "circuit": "main", "supply": True}, {"addr": 2, "name": "ac", "circuit": "ac"}]
    assert [m["supply"] for m in config.validate(_with_meters(two))["sensors"][0]["meters"]] == [True, False]


def test_meter_mistakes_name_the_key():
    assert "sensors[0].meters[1].addr" in _error(_with_meters([THREE_PHASE[0], dict(THREE_PHASE[1], addr=1)]))
    assert "1..247" in _error(_with_meters([dict(THREE_PHASE[0], addr=248)]))
    assert "one meter per phase" in _error(_with_meters([THREE_PHASE[0], dict(THREE_PHASE[1], phase="L1")]))
    assert "not both or neither" in _error(_with_meters([{"addr": 1, "name": "x"}]))
    assert "L1, L2, L3" in _error(_with_meters([dict(THREE_PHASE[0], phase="L4")]))
    assert "protocol" in _error(_with_meters(THREE_PHASE, protocol=1))
    raw = _with_meters(THREE_PHASE)
    raw["sensors"][0]["addr"] = 1
    assert "no addr beside meters" in _error(raw)
    raw = _with_meters(THREE_PHASE)
    raw["sensors"][1]["meters"] = THREE_PHASE
    assert "only for kind energy" in _error(raw)
