# runs on: cpython, micropython
"""The protocol's portable half (wire, check), run on both runtimes against RFC 4231 and the golden vectors."""
import json

try:
    from airwatt.protocol import check, fields, v2, wire
except ImportError:  # MicroPython: the repository root is on MICROPYPATH
    from protocol import check, fields, v2, wire
from golden import vectors


def _vectors():
    return vectors("batches.json")


def _h(s):
    return bytes(int(s[i : i + 2], 16) for i in range(0, len(s), 2))


# RFC 4231 section 4, test cases 1-4 (HMAC-SHA-256 column).
RFC4231 = (
    ("0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    ("4a656665", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    ("0102030405060708090a0b0c0d0e0f10111213141516171819", b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
)


def test_hmac_rfc4231_cases_1_to_4():
    for key, data, mac in RFC4231:
        assert wire.sign(_h(key), data) == mac, key


def test_hmac_key_longer_than_block_is_hashed_first():
    # RFC 4231 test case 6.
    mac = wire.sign(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert mac == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_verify_accepts_only_the_exact_signature():
    key, body = b"k" * 32, b'{"v":1}'
    sig = wire.sign(key, body)
    assert wire.verify(key, body, sig)
    assert not wire.verify(key, body + b" ", sig)
    assert not wire.verify(b"x" * 32, body, sig)
    assert not wire.verify(key, body, sig[:-2])
    assert not wire.verify(key, body, "not hex")


def test_signature_vector():
    vec = _vectors()["signature"]
    assert wire.sign(_h(vec["key_hex"]), vec["body"].encode()) == vec["signature"]


def test_render_uses_field_decimals_exactly():
    assert wire.render(230.14, 1) == "230.1"
    assert wire.render(230.0, 1) == "230.0"
    assert wire.render(0.001, 3) == "0.001"
    assert wire.render(-0.05, 2) == "-0.05"
    assert wire.render(-0.004, 2) == "0.0"
    assert wire.render(1234567, 0) == "1234567"


def test_golden_vectors_verdicts():
    for vec in _vectors()["vectors"]:
        try:
            check.check_batch(vec["message"])
            verdict, path = True, None
        except check.ProtocolError as err:
            verdict, path = False, err.path
        assert verdict == vec["valid"], vec["name"]
        if not vec["valid"]:
            assert path == vec["error_at"], "%s: %s" % (vec["name"], path)


def test_golden_vectors_canonical_bytes():
    for vec in _vectors()["vectors"]:
        if vec["valid"]:
            assert wire.canonical_batch(vec["message"]).decode() == vec["canonical"], vec["name"]


def test_golden_bodies_are_refused_where_and_why_the_vectors_say():
    for vec in _vectors()["bodies"]:
        body = bytes(ord(ch) for ch in vec["body"])
        try:
            check.check_batch(check.parse_body(body))
            assert False, "%s: accepted" % vec["name"]
        except check.ProtocolError as err:
            assert err.path == vec["error_at"] and vec["why"] in err.why, "%s: %s" % (vec["name"], err)


def test_parse_body_takes_plain_utf8_json():
    for vec in _vectors()["vectors"]:
        if vec["valid"]:
            assert check.parse_body(vec["canonical"].encode()) == vec["message"], vec["name"]
    assert check.parse_body('{"fw":"caf\u00e9"}'.encode()) == {"fw": "caf\u00e9"}  # UTF-8 itself is fine


def test_built_batch_parses_back_and_checks():
    readings = [
        wire.encode_reading(7, 1790000000, 10, "00c0ffee", "energy",
                            {"voltage": 231.04, "current": 0.0125, "power": 2.9, "energy_wh": 5, "frequency": 49.96,
                             "pf": 0.5}),
        wire.encode_reading(8, None, 20, "00c0ffee", "pm", {"pm1": 1, "pm25": 2000, "pm10": 3}),
    ]
    status = wire.encode_status(1, 2, None, 3, 4, {"pm": 1}, "none")
    body = wire.batch_body("dev-1", "0.1.0", "00c0ffee", 30, readings, status)
    batch = json.loads(body)
    check.check_batch(batch)
    assert batch["readings"][0]["values"]["voltage"] == 231.0
    assert batch["readings"][0]["values"]["frequency"] == 50.0
    assert batch["readings"][1]["values"] == {"pm1": 1, "pm10": 3}
    assert batch["readings"][1]["flags"] == ["out_of_range"]
    assert wire.canonical_batch(batch) == body


def test_batch_size_limits():
    reading = wire.encode_reading(1, None, 0, "00c0ffee", "pm", {"pm1": 1, "pm25": 2, "pm10": 3})
    try:
        wire.batch_body("dev-1", "0.1.0", "00c0ffee", 0, [reading] * (fields.MAX_READINGS + 1))
        assert False, "more than MAX_READINGS accepted"
    except ValueError:
        pass
    huge = b'{"pad":"' + b"x" * fields.MAX_BODY_BYTES + b'"}'
    try:
        wire.batch_body("dev-1", "0.1.0", "00c0ffee", 0, [huge])
        assert False, "oversized body accepted"
    except ValueError as err:
        assert "exceeds" in str(err)


def test_unknown_metric_is_refused_when_building():
    try:
        wire.encode_reading(1, None, 0, "00c0ffee", "pm", {"pm4": 1})
        assert False
    except ValueError as err:
        assert "pm4" in str(err)


def _vectors_v2():
    return vectors("batches_v2.json")["vectors"]


def test_golden_v2_vectors_verdicts_and_canonical_bytes():
    for vec in _vectors_v2():
        try:
            readings = check.check_batch(vec["message"])
            verdict, path = True, None
        except check.ProtocolError as err:
            verdict, path = False, err.path
        assert verdict == vec["valid"], vec["name"]
        if vec["valid"]:
            assert v2.canonical_batch_v2(vec["message"], readings).decode() == vec["canonical"], vec["name"]
        else:
            assert path == vec["error_at"], "%s: %s" % (vec["name"], path)


def test_v2_full_batch_is_at_most_16_bytes_per_reading_and_8_kb():
    full = [v for v in _vectors_v2() if v["name"] == "v2_full_batch_500_readings"][0]
    assert len(full["canonical"]) <= 16 * full["message"]["n"] and len(full["canonical"]) <= fields.MAX_BODY_V2


def test_v2_carries_sensor_instances():
    vec = _vectors_v2()[0]
    readings = check.check_batch(vec["message"])
    meters = [(r["seq"], r.get("instance", 0)) for r in readings if r["sensor"] == "energy"]
    assert meters == [(41, 0), (42, 2), (45, 0)]
    assert readings[1]["values"]["energy_wh"] == 98765 and readings[4]["values"]["energy_wh"] == 1234570
