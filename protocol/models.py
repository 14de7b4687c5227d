"""Pydantic models of the AirWatt messages, built from the field table (CPython only).

`parse_batch` is what the agent calls on an upload body: strict validation whose errors name the reading, the
field and the reason, with the same paths as `check.check_batch` (the reference the board side runs).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, create_model, field_validator

from . import fields, settings, v2
from .check import ProtocolError, parse_body

_STRICT = ConfigDict(extra="forbid", strict=True)
_TEXT = r"^[ !#-\[\]-~]*$"  # printable ASCII without quote or backslash


def _values_model(sensor: str) -> type[BaseModel]:
    columns = {}
    for _, name, unit, _code, kind, lo, hi, decimals in fields.metrics(sensor):
        typ = StrictInt if kind == "int" else StrictFloat  # strict floats still take JSON integers
        columns[name] = (
            typ,
            Field(default=None, ge=lo, le=hi, description="%s, resolution %s" % (unit, 10**-decimals)),
        )
    return create_model("%sValues" % sensor.capitalize(), __config__=_STRICT, **columns)


VALUES_MODELS: dict[str, type[BaseModel]] = {sensor: _values_model(sensor) for sensor in fields.SENSORS}

Flag = Literal[fields.FLAGS]  # type: ignore[valid-type]
SensorKind = Literal[fields.SENSORS]  # type: ignore[valid-type]
Seq = Annotated[StrictInt, Field(ge=1, le=fields.MAX_SEQ)]
WallTime = Annotated[StrictInt, Field(ge=fields.MIN_WALL_TIME, le=fields.MAX_WALL_TIME)]
Ticks = Annotated[StrictInt, Field(ge=0, le=fields.MAX_TICKS)]
BootId = Annotated[str, Field(pattern="^[0-9a-f]{%d}$" % fields.BOOT_ID_LEN)]
Count = Annotated[StrictInt, Field(ge=0, le=4294967295)]


class _ReadingBase(BaseModel):
    model_config = _STRICT
    seq: Seq
    t: WallTime | None = Field(description="Unix seconds when the board had wall time, else null")
    ticks: Ticks = Field(description="Milliseconds since this reading's boot")
    boot: BootId
    flags: list[Flag]
    instance: Annotated[StrictInt, Field(ge=1, le=fields.MAX_INSTANCE)] = Field(
        0, description="v2 only: which sensor of this kind (several meters on one bus); absent for the first")

    @field_validator("flags")
    @classmethod
    def _unique(cls, flags: list[str]) -> list[str]:
        if len(set(flags)) != len(flags):
            raise ValueError("a flag is repeated")
        return flags


def _reading_model(sensor: str) -> type[BaseModel]:
    return create_model(
        "%sReading" % sensor.capitalize(),
        __base__=_ReadingBase,
        sensor=(Literal[sensor], ...),
        values=(VALUES_MODELS[sensor], ...),
    )


READING_MODELS = {sensor: _reading_model(sensor) for sensor in fields.SENSORS}
Reading = Annotated[Union[tuple(READING_MODELS.values())], Field(discriminator="sensor")]  # type: ignore[misc]


class Applied(BaseModel):
    """The board's acknowledgement of the agent's settings (status.settings)."""

    model_config = _STRICT
    rev: Annotated[StrictInt, Field(ge=settings.APPLIED[0][1], le=settings.APPLIED[0][2])] = Field(
        description="The settings revision applied")
    frc: Annotated[StrictInt, Field(ge=settings.APPLIED[1][1], le=settings.APPLIED[1][2])] | None = Field(
        description="ppm correction of the last forced recalibration of this rev, else null")
    error: Annotated[str, Field(max_length=settings.APPLIED[2][2], pattern=_TEXT)] = Field(
        description="What could not be applied, or empty")


class FirmwareReport(BaseModel):
    """The board's firmware and where its update stands (status.fw)."""

    model_config = _STRICT
    run: Annotated[str, Field(min_length=1, max_length=fields.FIRMWARE_MAX, pattern=_TEXT)] = Field(
        description="The version the board runs")
    target: Annotated[str, Field(max_length=fields.FIRMWARE_MAX, pattern=_TEXT)] = Field(
        description="The version the update works towards (or rolled back from), else empty")
    state: Literal[settings.FW_STATES] = Field(description="Where the update stands")  # type: ignore[valid-type]
    error: Annotated[str, Field(max_length=settings.FW_ERROR_MAX, pattern=_TEXT)] = Field(
        description="Why the update failed or was rolled back, or empty")


class Offer(BaseModel):
    """A firmware release the agent offers the board (answer.firmware); the board fetches its signed manifest."""

    model_config = _STRICT
    version: Annotated[str, Field(min_length=1, max_length=fields.FIRMWARE_MAX, pattern=_TEXT)]
    size: Annotated[StrictInt, Field(ge=settings.OFFER[0][1], le=settings.OFFER[0][2])] = Field(
        description="Bytes of the release's files")
    probation_s: Annotated[StrictInt, Field(ge=settings.OFFER[1][1], le=settings.OFFER[1][2])] = Field(
        description="Seconds the new version has to pass its self-test and get an upload acknowledged")


class Status(BaseModel):
    """What the board reports of itself with each upload."""

    model_config = _STRICT
    uptime_s: Count
    free_heap: Count
    rssi: Annotated[StrictInt, Field(ge=-127, le=0)] | None
    buffer_depth: Count
    dropped: Count = Field(description="Readings the flash buffer dropped (oldest first) when full")
    errors: dict[SensorKind, Count] = Field(description="Bad frames, timeouts and missing-sensor reads per sensor")
    time_sync: Literal[fields.TIME_SYNC]  # type: ignore[valid-type]
    settings: Applied | None = None
    fw: FirmwareReport | None = None


class Batch(BaseModel):
    """An upload: POST /v1/batches, signed with the device key."""

    model_config = _STRICT
    v: Literal[fields.VERSION]  # type: ignore[valid-type]
    device: Annotated[str, Field(min_length=1, max_length=fields.DEVICE_ID_MAX, pattern=fields.DEVICE_PATTERN)]
    fw: Annotated[str, Field(min_length=1, max_length=fields.FIRMWARE_MAX, pattern=_TEXT)]
    boot: BootId
    sent_ticks: Ticks = Field(description="The board's ticks (ms since boot) when it sent the batch")
    readings: Annotated[list[Reading], Field(min_length=1, max_length=fields.MAX_READINGS)]
    status: Status | None = None

    @field_validator("v", mode="before")
    @classmethod
    def _no_bool(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("protocol version must be an integer")
        return v


class BatchV2(BaseModel):
    """A v2 upload: the readings packed (protocol/packed.py) and base64-encoded in `data`, seqs first_seq on."""

    model_config = _STRICT
    v: Literal[2]
    device: Annotated[str, Field(min_length=1, max_length=fields.DEVICE_ID_MAX, pattern=fields.DEVICE_PATTERN)]
    fw: Annotated[str, Field(min_length=1, max_length=fields.FIRMWARE_MAX, pattern=_TEXT)]
    boot: BootId
    sent_ticks: Ticks = Field(description="The board's ticks (ms since boot) when it sent the batch")
    first_seq: Seq = Field(description="Seq of the first reading in data; the others follow with no gap")
    n: Annotated[StrictInt, Field(ge=1, le=fields.MAX_READINGS_V2)] = Field(description="Readings in data")
    data: str = Field(description="Base64 of packed frames (protocol/packed.py): integer quanta, deltas, CRC-32")
    status: Status | None = None


class DecodedBatch(Batch):
    """A v2 upload after its data is decoded: a Batch with up to MAX_READINGS_V2 readings."""

    v: Literal[2]  # type: ignore[assignment]
    readings: Annotated[list[Reading], Field(min_length=1, max_length=fields.MAX_READINGS_V2)]


def _care_model() -> type[BaseModel]:
    columns: dict = {}
    for name, lo, hi, kind in settings.CO2_CARE:
        typ = {"bool": bool, "int": StrictInt, "float": StrictFloat}[kind]
        columns[name] = (Annotated[typ, Field(ge=lo, le=hi)] if kind != "bool" else typ) | None, None
    return create_model("Co2Care", __config__=_STRICT, **columns)


Co2Care = _care_model()


def _settings_model() -> type[BaseModel]:
    columns: dict = {name: (Annotated[StrictInt, Field(ge=lo, le=hi)] | None, None)
                     for name, lo, hi in settings.SETTINGS}
    lo, hi = settings.SETTINGS[-1][1:]
    columns["intervals"] = (dict[SensorKind, Annotated[StrictInt, Field(ge=lo, le=hi)]] | None, None)
    columns["co2"] = (Co2Care | None, None)
    return create_model("Settings", __config__=_STRICT, **columns)


Settings = _settings_model()


class Answer(BaseModel):
    """The agent's answer to a stored upload."""

    model_config = _STRICT
    v: Literal[fields.VERSIONS]  # type: ignore[valid-type]
    stored_seq: Annotated[StrictInt, Field(ge=0, le=fields.MAX_SEQ)] = Field(
        description="Highest sequence number stored for this device: the board may forget readings up to it"
    )
    server_time: WallTime
    settings: Settings | None = None
    firmware: Offer | None = None


def _path(loc: tuple) -> str:
    path = ""
    for i, key in enumerate(loc):
        if isinstance(key, int):
            path += "[%d]" % key
        elif i >= 2 and loc[i - 2] == "readings" and isinstance(loc[i - 1], int) and key in fields.SENSORS:
            continue  # the discriminated union's tag
        elif key != "[key]":  # pydantic's marker for an invalid dict key
            path = key if not path else path + "." + key
    return path


def _first_error(err: ValidationError) -> ProtocolError:
    e = err.errors()[0]
    path = _path(e["loc"])
    if e["type"] == "union_tag_invalid":
        return ProtocolError(path + ".sensor", "must be one of %s" % ", ".join(fields.SENSORS))
    if e["type"] == "value_error":
        return ProtocolError(path, str(e["ctx"]["error"]))
    return ProtocolError(path, e["msg"])


def validate_batch(data: object) -> Batch:
    """A parsed upload as a Batch; raises ProtocolError(path, why) on the first problem."""
    if isinstance(data, Batch):
        batch = data
    else:
        try:
            batch = Batch.model_validate(data)
        except ValidationError as err:
            raise _first_error(err) from None
    last = 0
    for i, r in enumerate(batch.readings):
        if batch.v == 1 and "instance" in r.model_fields_set:
            raise ProtocolError("readings[%d].instance" % i, "is not a known field")
        if r.seq <= last:
            raise ProtocolError("readings[%d].seq" % i, "must be greater than the previous reading's %d" % last)
        last = r.seq
        if r.boot == batch.boot and r.ticks > batch.sent_ticks:
            raise ProtocolError("readings[%d].ticks" % i, "is later than the batch's sent_ticks")
        if not r.values.model_fields_set and not r.flags:
            raise ProtocolError("readings[%d].values" % i, "is empty and no flag says why")
    return batch


def validate_answer(data: object) -> Answer:
    """A parsed upload answer as an Answer; raises ProtocolError(path, why) on the first problem (the agent
    checks the settings it is about to send with it)."""
    try:
        answer = Answer.model_validate(data)
    except ValidationError as err:
        raise _first_error(err) from None
    care = answer.settings.co2 if answer.settings is not None else None
    if care is not None and care.altitude is not None and care.pressure is not None:
        raise ProtocolError("settings.co2.pressure", "give altitude or pressure, not both")
    return answer


def parse_batch(body: bytes) -> Batch:
    """Parse and validate an upload body; raises ProtocolError for anything the agent must refuse."""
    data = parse_body(body)
    if isinstance(data, dict) and data.get("v") == 2 and not isinstance(data["v"], bool) and "data" in data:
        return validate_batch_v2(data)
    return validate_batch(data)


def validate_batch_v2(data: dict) -> Batch:
    """A parsed v2 upload, decoded, as a DecodedBatch; ProtocolError(path, why) on the first problem."""
    try:
        BatchV2.model_validate(data)
    except ValidationError as err:
        raise _first_error(err) from None
    try:
        readings = v2.readings_v2(data)
    except ValueError as err:
        raise ProtocolError("data", str(err)) from None
    if len(readings) != data["n"]:
        raise ProtocolError("n", "says %d readings, data holds %d" % (data["n"], len(readings)))
    decoded = {k: v for k, v in data.items() if k not in ("data", "first_seq", "n")}
    decoded["readings"] = readings
    try:
        batch = DecodedBatch.model_validate(decoded)
    except ValidationError as err:
        raise _first_error(err) from None
    return validate_batch(batch)
