"""The agent's pydantic models agree with the field table, the reference checker and the golden vectors."""

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airwatt.protocol import check, fields, models, schema, wire
from golden import vectors

VECTORS = vectors("batches.json")["vectors"]


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_models_give_the_vectors_verdict_and_path(vec):
    if vec["valid"]:
        models.validate_batch(vec["message"])
        models.parse_batch(vec["canonical"].encode())
    else:
        with pytest.raises(check.ProtocolError) as err:
            models.validate_batch(vec["message"])
        assert err.value.path == vec["error_at"], str(err.value)


BODIES = json.loads((schema.SCHEMA_DIR.parent / "vectors" / "batches.json").read_text())["bodies"]


@pytest.mark.parametrize("vec", BODIES, ids=[v["name"] for v in BODIES])
def test_parse_batch_refuses_the_golden_bodies_like_the_checker(vec):
    with pytest.raises(check.ProtocolError) as err:
        models.parse_batch(vec["body"].encode("latin-1"))
    assert err.value.path == vec["error_at"] and vec["why"] in err.value.why, str(err.value)


def test_parse_batch_refuses_16000_nested_lists():
    with pytest.raises(check.ProtocolError, match="deeper than 8 levels"):
        models.parse_batch(b"[" * 16000 + b"]" * 16000)


def test_models_follow_the_field_table():
    """Fails when someone edits models or the table without the other."""
    for sensor, model in models.VALUES_MODELS.items():
        table = {row[1]: row for row in fields.metrics(sensor)}
        assert set(model.model_fields) == set(table)
        props = model.model_json_schema()["properties"]
        for name, row in table.items():
            prop = props[name]
            assert (prop["minimum"], prop["maximum"]) == (row[5], row[6]), name
            assert prop["type"] == ("integer" if row[4] == "int" else "number"), name
    assert set(models.Status.model_fields) == {r[0] for r in fields.STATUS_FIELDS} | {"errors", "time_sync", "settings", "fw"}


def test_errors_name_reading_field_and_reason():
    msg = json.loads(VECTORS[0]["canonical"])
    msg["readings"][1]["values"]["pm25"] = 5000
    with pytest.raises(check.ProtocolError) as err:
        models.validate_batch(msg)
    assert str(err.value) == "readings[1].values.pm25: Input should be less than or equal to 1000"


def test_parse_batch_refuses_broken_json():
    with pytest.raises(check.ProtocolError, match="not valid JSON"):
        models.parse_batch(b'{"v":1,')


def test_schema_files_are_up_to_date():
    for name, text in schema.render_schemas().items():
        path = schema.SCHEMA_DIR / name
        assert path.exists() and path.read_text() == text, \
            "run `airwatt schema export --out protocol/schema` and commit %s" % name


@given(key=st.binary(max_size=200), msg=st.binary(max_size=300))
@settings(max_examples=200)
def test_hmac_matches_the_standard_library(key, msg):
    assert wire.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


_pm = st.integers(min_value=-5, max_value=1100)
_temp = st.floats(min_value=-20, max_value=70, allow_nan=False)


@given(pm=st.tuples(_pm, _pm, _pm), temp=_temp, hum=st.floats(min_value=-1, max_value=101, allow_nan=False),
       co2=st.integers(min_value=0, max_value=50000))
@settings(max_examples=200)
def test_whatever_the_board_builds_the_agent_accepts(pm, temp, hum, co2):
    readings = [
        wire.encode_reading(1, None, 5, "00c0ffee", "pm", dict(zip(("pm1", "pm25", "pm10"), pm))),
        wire.encode_reading(2, 1790000000, 6, "00c0ffee", "co2", {"co2": co2, "temperature": temp, "humidity": hum}),
    ]
    body = wire.batch_body("dev", "1", "00c0ffee", 9, readings)
    batch = json.loads(body)
    check.check_batch(batch)
    models.parse_batch(body)
    assert wire.canonical_batch(batch) == body


VECTORS_V2 = vectors("batches_v2.json")["vectors"]


@pytest.mark.parametrize("vec", VECTORS_V2, ids=[v["name"] for v in VECTORS_V2])
def test_models_give_the_v2_vectors_verdict_and_path(vec):
    body = json.dumps(vec["message"]).encode()
    if vec["valid"]:
        batch = models.parse_batch(vec["canonical"].encode())
        assert batch.v == 2 and len(batch.readings) == vec["message"]["n"]
        assert [r.seq for r in batch.readings] == list(range(vec["message"]["first_seq"],
                                                             vec["message"]["first_seq"] + vec["message"]["n"]))
    else:
        with pytest.raises(check.ProtocolError) as err:
            models.parse_batch(body)
        assert err.value.path == vec["error_at"], str(err.value)
