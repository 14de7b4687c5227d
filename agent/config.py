"""The agent's configuration: `airwatt.toml` in the data dir, validated by pydantic; CLI flags override it.

Example (every key optional; a missing file means all defaults):

    host = "0.0.0.0"          # listen address (default 127.0.0.1: boards need the LAN address or 0.0.0.0)
    port = 8080
    operator_token = "..."    # for the pages' actions; generated into the data dir when unset
    language = "th"           # the pages' default language ("th" or "en"; ?lang= switches)
    emission_factor = 0.4750  # grid kgCO2e/kWh for emission_factor_year (unset: agent/carbon.py's TGO table)
    emission_factor_year = 2026
    idle_timeout_s = 10.0     # a connection's time to send a request's headers, and to idle between requests
    body_timeout_s = 30.0     # a request body's time to arrive in full (a board's 32 KB on a weak link)

    [platform]
    url = "https://city.example/ngsi-ld/v1"
    kind = "ngsi-ld"          # or "http-json"
    token = "..."             # sent as "Authorization: Bearer ..." when set
    tenant = "khonkaen"       # NGSILD-Tenant header when set
    batch_size = 100
    timeout_s = 10.0
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_NAME = "airwatt.toml"
PLATFORM_KINDS = ("ngsi-ld", "http-json")


class PlatformConfig(BaseModel):
    """Where and how the sync worker sends readings."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, pattern=r"^https?://", description="Platform base URL; unset: no sync")
    kind: Literal["ngsi-ld", "http-json"] = "ngsi-ld"
    token: str | None = None
    tenant: str | None = None
    batch_size: int = Field(default=100, ge=1, le=1000)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    poll_s: float = Field(default=2.0, gt=0, le=3600, description="Idle wait between sync rounds")
    backoff_max_s: float = Field(default=300.0, gt=0, le=86400)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    operator_token: str | None = Field(default=None, min_length=16)
    language: Literal["th", "en"] = "th"
    emission_factor: float | None = Field(default=None, ge=0, le=5)
    emission_factor_year: int = Field(default=2026, ge=2000, le=2100)
    idle_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    platform: PlatformConfig = PlatformConfig()


class ConfigError(ValueError):
    """A bad airwatt.toml: the message names the file, the key and what is wrong."""


def _path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def load_config(data_dir: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read `airwatt.toml` from data_dir (missing file = defaults) and apply overrides, whose keys are dotted
    paths ("port", "platform.url"); None values are ignored so unset CLI flags leave the file's value."""
    path = Path(data_dir) / CONFIG_NAME
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError("%s: not valid TOML: %s" % (path, err)) from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            "%s: %s" % (_path(e["loc"]) or "(top level)", "unknown key" if e["type"] == "extra_forbidden" else e["msg"])
            for e in err.errors()
        )
        raise ConfigError("%s: %s" % (path, problems)) from None
