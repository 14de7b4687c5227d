"""The columns of a stored reading, in the one order the ingest builds rows, the writer inserts them and the
benchmarks insert them raw. Code that handles a row as a tuple names its fields with the indexes below."""

from __future__ import annotations

from airwatt.protocol import fields

# One nullable column per metric of the protocol's field table (never retyped here), in its order.
METRIC_COLUMNS: tuple[str, ...] = tuple(row[1] for row in fields.METRICS)
# A row in flight (ingest to writer) carries its boot's text at BOOT; the writer stores the boot's id there.
HEAD = ("device", "seq", "boot_id", "sensor", "t", "t_source", "ticks", "received", "flags")
COLUMNS: tuple[str, ...] = HEAD + METRIC_COLUMNS + ("instance",)
DEVICE, SEQ, BOOT, SENSOR, T, T_SOURCE, TICKS, RECEIVED, FLAGS = range(len(HEAD))


def with_time(row: tuple, t: float | None, source: str) -> tuple:
    """The row with its time `t` and t_source `source` (for a reading the board sent without a time)."""
    return row[:T] + (t, source) + row[T_SOURCE + 1 :]
