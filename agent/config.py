"""The agent's configuration: `airwatt.toml` in the data dir, validated by pydantic; CLI flags override it.

Example (every key optional; a missing file means all defaults):

    host = "0.0.0.0"          # listen address (default 127.0.0.1: boards need the LAN address or 0.0.0.0)
    port = 8080
    operator_token = "..."    # for the pages' actions; generated into the data dir when unset
    language = "th"           # the pages' default language ("th" or "en"; ?lang= switches)
    thai_era = "ce"           # years on the Thai pages: "ce" (2026) or "be", Buddhist Era (2569); ?era= switches
    emission_factor = 0.4750  # grid kgCO2e/kWh for emission_factor_year (unset: agent/carbon.py's TGO table)
    emission_factor_year = 2026
    idle_timeout_s = 10.0     # a connection's time to send a request's headers, and to idle between requests
    body_timeout_s = 30.0     # a request body's time to arrive in full (a board's 32 KB on a weak link)

    [platform]
    url = "https://city.example/ngsi-ld/v1"
    kind = "ngsi-ld"          # or "http-json", "sensorthings", "mqtt" (url mqtt://HOST:PORT/PREFIX)
    token = "..."             # sent as "Authorization: Bearer ..." when set
    tenant = "khonkaen"       # NGSILD-Tenant header when set
    batch_size = 100
    timeout_s = 10.0

    [alerts]                  # every key optional: these are the defaults
    co2_ppm = 1000            # CO2 above 1000 ppm for co2_minutes = 15
    pm25_aqi_level = 3        # the 24-h PM2.5 Thai AQI orange (3) or worse (4: red)
    offline_intervals = 3     # no upload for 3 reading intervals
    buffer_fraction = 0.5     # a board's flash buffer over half full (of buffer_capacity = 20000 readings)
    sync_lag_s = 3600         # the oldest unsynced reading older than an hour (when a platform is set)
    meter_missing_intervals = 10  # a board with a meter and no energy reading for 10 intervals
    webhook_url = "http://127.0.0.1:9093/airwatt"  # optional: alerts firing and resolved are POSTed here

    [store]
    keep_synced_days = 90     # raw readings are deleted this long after the platform confirmed them (never
                              # before); hourly and daily rollups are kept for good
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airwatt.agent.adapters.base import KINDS

CONFIG_NAME = "airwatt.toml"


class PlatformConfig(BaseModel):
    """Where and how the sync worker sends readings."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, pattern=r"^(https?|mqtt)://", description="Platform base URL; unset: no sync")
    kind: Literal[KINDS] = "ngsi-ld"  # type: ignore[valid-type]
    token: str | None = None
    tenant: str | None = None
    batch_size: int = Field(default=100, ge=1, le=1000)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    poll_s: float = Field(default=2.0, gt=0, le=3600, description="Idle wait between sync rounds")
    backoff_max_s: float = Field(default=300.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _url_fits_kind(self) -> PlatformConfig:
        if self.url and (self.kind == "mqtt") != self.url.startswith("mqtt://"):
            want = "mqtt://HOST:PORT/PREFIX" if self.kind == "mqtt" else "http:// or https://"
            raise ValueError("kind %s needs a URL starting %s, not %r" % (self.kind, want, self.url))
        return self


class StoreConfig(BaseModel):
    """How long raw readings stay (agent/retention.py); rollups are kept for good."""

    model_config = ConfigDict(extra="forbid")
    keep_synced_days: float = Field(default=90.0, gt=0, le=36500,
                                    description="Days a raw reading stays after the platform confirmed it")
    prune_every_s: float = Field(default=600.0, gt=0, le=86400, description="Seconds between retention passes")


class AlertsConfig(BaseModel):
    """The alert rules' thresholds (agent/alerts.py) and where to send alerts."""

    model_config = ConfigDict(extra="forbid")
    co2_ppm: float = Field(default=1000, gt=0, description="CO2 above this ...")
    co2_minutes: float = Field(default=15, gt=0, le=1440, description="... for this long")
    pm25_aqi_level: int = Field(default=3, ge=1, le=4, description="Thai AQI level index (3: orange) or worse")
    offline_intervals: float = Field(default=3, gt=0, description="No upload for this many reading intervals")
    buffer_capacity: int = Field(default=20000, ge=10, description="The boards' flash buffer (firmware default)")
    buffer_fraction: float = Field(default=0.5, gt=0, le=1, description="Buffer fuller than this")
    sync_lag_s: float = Field(default=3600, gt=0, description="Oldest unsynced reading older than this")
    meter_missing_intervals: float = Field(default=10, gt=0,
                                           description="A board with a meter sends no energy reading this long")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://", description="POST alerts here (JSON)")
    every_s: float = Field(default=30, gt=0, le=3600, description="Seconds between evaluations")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    operator_token: str | None = Field(default=None, min_length=16)
    language: Literal["th", "en"] = "th"
    thai_era: Literal["ce", "be"] = "ce"
    emission_factor: float | None = Field(default=None, ge=0, le=5)
    emission_factor_year: int = Field(default=2026, ge=2000, le=2100)
    idle_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    platform: PlatformConfig = PlatformConfig()
    store: StoreConfig = StoreConfig()
    alerts: AlertsConfig = AlertsConfig()


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
