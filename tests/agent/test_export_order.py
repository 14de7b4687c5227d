"""The CSV export of a time range: in sequence order per device, also when a board's clock stepped back, and
every value as the database holds it, into a file or a pipe, by one process or several."""

from __future__ import annotations

import csv
import io

import pytest

from airwatt.agent import commands, store

T0 = 1_790_000_000.0


class Pipe(io.StringIO):
    """An output that cannot seek back (stdout into a pipe)."""

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise io.UnsupportedOperation("not seekable")


def _store(tmp_path):
    db = store.open_db(tmp_path)
    store.add_device(db, "a", site="Hall, A", lat=16.43, lon=102.83)
    store.add_device(db, "b", site="School")
    rows = []
    # a: its clock stepped back 50 s after seq 3 (seq 4 and 5 are earlier than seq 3 by t)
    for seq, dt in ((1, 10.0), (2, 20.5), (3, 100.25), (4, 50.125), (5, 60.0), (6, 200.0)):
        rows.append({"device": "a", "seq": seq, "boot": "0a1b2c3d", "sensor": "energy", "t": T0 + dt,
                     "t_source": "board", "ticks": seq, "received": T0 + 300, "flags": "stuck,retried" if seq == 2
                     else "", "voltage": round(229.8 + seq / 10, 1), "current": 1.234, "power": 281.5 + seq,
                     "energy_wh": 4294967295 - seq, "frequency": 50.0, "pf": 0.97})
    for seq in range(1, 5):
        rows.append({"device": "b", "seq": seq, "boot": "00000001", "sensor": "co2", "t": T0 + seq * 7.5,
                     "t_source": "board", "ticks": seq, "received": T0 + 300, "flags": "", "co2": 400 + seq,
                     "temperature": -9.99 + seq, "humidity": 61.5})
    with store.transaction(db):
        store.insert_readings(db, rows)
    return db


@pytest.mark.parametrize("jobs", [1, 2])
def test_time_range_export_is_in_sequence_order_and_equals_the_database(tmp_path, jobs):
    db = _store(tmp_path)
    for out in (io.StringIO(), Pipe()):
        n = commands.export_csv(db, out, T0, T0 + 1000, jobs)
        want = io.StringIO()
        w = csv.writer(want, lineterminator="\n")
        names = [c[0] for c in commands.EXPORT_COLUMNS]
        w.writerow(names)
        for row in commands.export_rows(db, T0, T0 + 1000):
            w.writerow(commands._csv(row[k]) for k in names)
        assert out.getvalue() == want.getvalue() and n == 10
        got = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert [(r["device"], int(r["seq"])) for r in got] == [("a", s) for s in range(1, 7)] + [
            ("b", s) for s in range(1, 5)]
        for r, d in zip(got, [x for dev in ("a", "b") for x in store.readings(db, dev)]):
            assert float(r["t"]) == d["t"] and r["flags"] == d["flags"]
            for m in store.METRIC_COLUMNS:
                assert (r[m] == "") == (d[m] is None) and (d[m] is None or float(r[m]) == d[m]), (m, r, d)
    db.close()


def test_download_path_day_chunks_match_the_export(tmp_path):
    """The pages' download (one device, one sensor, a day at a time) writes the same lines as the export."""
    db = _store(tmp_path)
    out = io.StringIO()
    commands._device_csv(db, store.get_device(db, "a") | {"id": "a"}, T0, T0 + 1000, out, "energy")
    full = io.StringIO()
    commands.export_csv(db, full, T0, T0 + 1000, 1)
    assert out.getvalue() and full.getvalue().splitlines()[1:7] == out.getvalue().splitlines()
    db.close()
