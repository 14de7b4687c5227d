"""Helpers for the agent's ingest, store and CLI tests (a module of its own: test folders each have a conftest.py,
and `from conftest import` would find whichever was imported first)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from airwatt.protocol import wire
from samples import VALUES

BOOT = "0a1b2c3d"
T0 = 1790000000  # a plausible board wall time (2026-09-21)



def reading(seq: int, sensor: str = "pm", t: int | None = None, ticks: int | None = None, boot: str = BOOT,
            values: dict | None = None, flags: tuple = ()) -> bytes:
    return wire.encode_reading(
        seq,
        t,
        seq * 1000 if ticks is None else ticks,
        boot,
        sensor,
        VALUES[sensor] if values is None else values,
        flags,
    )


def body(device: str, seqs: list[int] | range, boot: str = BOOT, sent_ticks: int | None = None, t0: int | None = T0,
         sensor: str | None = None, readings: list[bytes] | None = None, status: bytes | None = None) -> bytes:
    """A valid batch body: readings for seqs (sensor cycling energy/pm/co2 unless given), board time t0 + seq."""
    if readings is None:
        readings = [
            reading(s, sensor or ("energy", "pm", "co2")[s % 3], None if t0 is None else t0 + s, boot=boot)
            for s in seqs
        ]
    if sent_ticks is None:
        sent_ticks = (max(seqs) if seqs else 1) * 1000 + 500
    if status is None:
        status = wire.encode_status(600, 81234, -67, len(readings), 0, {"pm": 2}, "none")
    return wire.batch_body(device, "0.1.0", boot, sent_ticks, readings, status)


def headers(device: str, key: bytes, data: bytes) -> dict:
    return {
        "Content-Type": "application/json",
        "X-AirWatt-Device": device,
        "X-AirWatt-Signature": wire.sign(key, data),
    }


def dump(db_file: Path) -> str:
    """The whole database as SQL text (a plain sqlite3 connection: what another tool would see)."""
    conn = sqlite3.connect(db_file)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()
