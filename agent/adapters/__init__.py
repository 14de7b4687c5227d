"""Adapters turn store rows into one platform request and the platform's answer into per-reading outcomes.

Both halves are pure functions (no I/O), so they are tested byte for byte; the sync worker (agent/sync.py)
does the HTTP, the timing and the database writes.

    adapter = make_adapter(kind, url, token, tenant)
    prepared = adapter.prepare(rows)                 # rows: dicts from sync_store.pending()
    outcome = adapter.interpret(prepared, status, body_bytes)
"""

from __future__ import annotations

from . import http_json, mqtt, ngsi_ld, sensorthings
from .base import KINDS, Adapter, Outcome, Prepared, SendError, flag_list, iso_time

__all__ = ["KINDS", "Adapter", "Outcome", "Prepared", "SendError", "flag_list", "iso_time", "make_adapter"]


def make_adapter(kind: str, url: str, token: str | None = None, tenant: str | None = None) -> Adapter:
    """The adapter for `kind` (one of KINDS) sending to base `url`."""
    headers: dict[str, str] = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    if kind == "ngsi-ld":
        if tenant:
            headers["NGSILD-Tenant"] = tenant
        endpoint = ngsi_ld.endpoint(url)
        return Adapter(
            kind, url, lambda rows: ngsi_ld.prepare(endpoint, rows, headers), ngsi_ld.interpret, needs_location=True,
            tail=ngsi_ld.round_tail,
        )
    if kind == "http-json":
        endpoint = http_json.endpoint(url)
        return Adapter(
            kind, url, lambda rows: http_json.prepare(endpoint, rows, headers), http_json.interpret
        )
    if kind == "sensorthings":
        return sensorthings.make(url, headers)
    if kind == "mqtt":
        return mqtt.make(url, token)
    raise ValueError("platform kind must be one of %s, not %r" % (", ".join(KINDS), kind))
