"""The OFFICIAL Smart Data Models JSON Schemas (copies in ../shared/sdm, see its SOURCES.md) as a validator of the
keyValues form of the NGSI-LD entities the agent sends."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SDM = Path(__file__).resolve().parents[2].parent / "shared" / "sdm"
# AirQualityObserved's airQualityLevel points at a raw URL of Environment-schema.json, not at that file's $id.
_ALIASES = {
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/Environment-schema.json":
        "Environment-schema.json",
}
MODELS = ("AirQualityObserved", "ACMeasurement")


def _load(name: str) -> dict:
    path = SDM / name
    if not path.exists():
        raise FileNotFoundError("official Smart Data Models schema %s is missing: shared/sdm must sit beside the "
                                "repository (CI lays it there)" % path)
    return json.loads(path.read_text())


def _validators() -> dict[str, Draft202012Validator]:
    docs = [_load("common-schema.json"), _load("Environment-schema.json")]
    resources = [(d["$id"], Resource.from_contents(d)) for d in docs]
    resources += [(alias, Resource.from_contents(_load(name))) for alias, name in _ALIASES.items()]
    registry = Registry().with_resources(resources)
    return {
        model: Draft202012Validator(_load(model + "/schema.json"), registry=registry,
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)
        for model in MODELS
    }


_VALIDATORS: dict[str, Draft202012Validator] = {}


def key_values(entity: dict) -> dict:
    """The keyValues form of a normalized entity: each attribute's value (a Relationship's object), with a
    JSON-LD typed DateTime literal as its lexical string, and no @context."""
    out: dict = {}
    for name, attr in entity.items():
        if name == "@context":
            continue
        if name in ("id", "type"):
            out[name] = attr
            continue
        value = attr["object"] if attr.get("type") == "Relationship" else attr["value"]
        if isinstance(value, dict) and value.get("@type") == "DateTime":
            value = value["@value"]
        out[name] = value
    return out


def errors(entity: dict) -> list[str]:
    """Every way the entity's keyValues form fails its official model schema (empty: it validates)."""
    if not _VALIDATORS:
        _VALIDATORS.update(_validators())
    validator = _VALIDATORS[entity["type"]]
    return ["%s: %s" % ("/".join(map(str, e.absolute_path)) or "(entity)", e.message)
            for e in validator.iter_errors(key_values(entity))]
