"""The agent's pydantic models give the settings vectors' verdicts and paths (the reference is protocol/check)."""

import json

import pytest

from airwatt.protocol import check, models
from golden import vectors

VECTORS = vectors("settings.json")


@pytest.mark.parametrize("vec", VECTORS["answers"], ids=[v["name"] for v in VECTORS["answers"]])
def test_answer_model(vec):
    if vec["valid"]:
        models.validate_answer(vec["message"])
    else:
        with pytest.raises(check.ProtocolError) as err:
            models.validate_answer(vec["message"])
        assert err.value.path == vec["error_at"], str(err.value)


@pytest.mark.parametrize("vec", VECTORS["statuses"], ids=[v["name"] for v in VECTORS["statuses"]])
def test_status_model(vec):
    batch = json.loads(VECTORS["batches"][0]["canonical"])
    batch["status"] = vec["message"]
    if vec["valid"]:
        models.validate_batch(batch)
    else:
        with pytest.raises(check.ProtocolError) as err:
            models.validate_batch(batch)
        assert err.value.path == vec["error_at"], str(err.value)


def test_batch_with_humid_flag_and_acknowledgement():
    batch = models.parse_batch(VECTORS["batches"][0]["canonical"].encode())
    assert batch.readings[0].flags == ["humid"] and batch.status.settings.frc == -50
