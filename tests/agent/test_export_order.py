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


def _sorted_query_export(db, since, until):
    """The export as each device's own query sorted by seq writes it: what the one pass must equal."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([c[0] for c in commands.EXPORT_COLUMNS])
    for d in store.list_devices(db):
        commands._device_csv(db, d, since, until, out)
    return out.getvalue()


def _interleaved(tmp_path, order):
    """Three devices whose readings are stored interleaved in time (as boards uploading side by side are), with
    whole-second, millisecond and unknown times; `order` rearranges the rows before they are stored."""
    db = store.open_db(tmp_path)
    for dev, site in (("a", "Hall, A"), ("b", 'School "B"'), ("c", None)):
        store.add_device(db, dev, site=site, lat=16.43 if site else None, lon=102.83 if site else None)
    rows = []
    for k in range(60):
        for n, dev in enumerate(("a", "b", "c")):
            t = None if (dev == "c" and k == 7) else T0 + k * 20 + n * 0.37 if k % 4 == 1 else T0 + k * 20 + n
            kind = ("energy", "pm", "co2")[(k + n) % 3]
            values = {"energy": {"voltage": 229.3 + k % 5, "current": 0.838, "power": 180.0 + k, "frequency": 50.0,
                                 "energy_wh": 2496627 + k, "pf": 0.9},
                      "pm": {"pm1": k, "pm25": k + 4, "pm10": k + 12},
                      "co2": {"co2": 420 + k, "temperature": -9.99 + k / 4, "humidity": 72.33}}[kind]
            rows.append({"device": dev, "seq": k + 1, "boot": "0a1b2c3d", "sensor": kind, "t": t,
                         "t_source": "board" if t else "unknown", "ticks": k, "received": T0 + 3000,
                         "flags": "stuck,retried" if k == 9 else "retried" if k == 10 else "", **values})
    with store.transaction(db):
        for row in order(rows):
            store.insert_readings(db, [row])
    return db


@pytest.mark.parametrize("jobs", [1, 2, 3])
@pytest.mark.parametrize("since,until", [(None, None), (T0 + 100, T0 + 900), (T0 + 100, None)])
def test_one_pass_over_interleaved_devices_writes_the_sorted_querys_bytes(tmp_path, jobs, since, until):
    db = _interleaved(tmp_path, lambda rows: rows)
    span = commands._rowid_span(db, store.list_devices(db), since, until)
    assert span is not None  # the one pass, not the per-device queries
    out = io.StringIO()
    n = commands.export_csv(db, out, since, until, jobs)
    assert out.getvalue() == _sorted_query_export(db, since, until)
    assert n == len(out.getvalue().splitlines()) - 1 > 0
    db.close()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_backlog_stored_after_newer_readings_still_comes_out_in_sequence_order(tmp_path, jobs):
    # b's seqs 11-30 arrive after everything else (a board catching up after an outage): in the table's order b
    # goes 1-10, 31-60, 11-30; the pass finds it and reads b again with its sorted query
    def backlog(rows):
        late = [r for r in rows if r["device"] == "b" and 11 <= r["seq"] <= 30]
        return [r for r in rows if r not in late] + late
    db = _interleaved(tmp_path, backlog)
    out = io.StringIO()
    n = commands.export_csv(db, out, T0, T0 + 2000, jobs)
    assert out.getvalue() == _sorted_query_export(db, T0, T0 + 2000) and n == 179
    got = [(r["device"], int(r["seq"])) for r in csv.DictReader(io.StringIO(out.getvalue()))]
    assert [s for d, s in got if d == "b"] == list(range(1, 61))
    db.close()


def test_readings_scattered_over_the_table_are_read_device_by_device(tmp_path):
    # c's seq 50 (t in range) was stored first, the rest of the range last: the pass would read the whole table
    # for a few rows in range, so each device's own query is used
    db = _interleaved(tmp_path, lambda rows: [r for r in rows if r["device"] == "c" and r["seq"] == 50]
                      + [r for r in rows if not (r["device"] == "c" and r["seq"] == 50)])
    since, until = T0 + 970, T0 + 1010
    assert commands._rowid_span(db, store.list_devices(db), since, until) == (1, 153)  # within FETCH's margin
    commands.FETCH, fetch = 2, commands.FETCH
    try:
        assert commands._rowid_span(db, store.list_devices(db), since, until) is None
        out = io.StringIO()
        n = commands.export_csv(db, out, since, until, 2)
    finally:
        commands.FETCH = fetch
    assert out.getvalue() == _sorted_query_export(db, since, until) and n == 6
    assert [(r["device"], r["seq"]) for r in csv.DictReader(io.StringIO(out.getvalue()))] == [
        (d, s) for d in "abc" for s in ("50", "51")]
    db.close()


def test_whole_second_times_cut_from_the_day_blobs_equal_strftime():
    """The CSV's time and t columns for whole-second times (the date and the time of day cut from bound blobs)
    are the bytes strftime and the REAL's text give, across midnights, years and the bounds of the days blob;
    other times (fractions, before 1970, none) go through strftime itself."""
    import random
    import sqlite3

    rng = random.Random(15)
    first, last = 946_684_800.0 - 1, 4_102_444_800.0  # 1999-12-31T23:59:59 to 2100-01-01
    ts = [first, last, 1_790_000_000.0, 1_789_999_999.0, 951_782_400.0, 951_868_799.0]  # 2000-02-29, leap day
    ts += [float(86400 * rng.randrange(11_000, 47_000) + rng.choice((0, 1, 86399, rng.randrange(86400))))
           for _ in range(3000)]
    ts += [first - 1, last + 1, 1_790_000_000.5, 1_790_000_000.001, -86400.0, 0.0, None]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE r (t REAL)")
    conn.executemany("INSERT INTO r VALUES (?)", [(t,) for t in ts])
    got = conn.execute("SELECT %s FROM r ORDER BY rowid" % commands._CSV_TIME_T,
                       commands._time_params(first, last)).fetchall()
    want = conn.execute("SELECT printf('%s,%s', strftime('%Y-%m-%dT%H:%M:%fZ', t, 'unixepoch'), t) FROM r"
                        " ORDER BY rowid").fetchall()
    assert got == want and got[2] == ("2026-09-21T14:13:20.000Z,1790000000.0",)
    blank = commands._time_params(first, last)
    blank[2] = b"#" * len(blank[2])  # the whole-second rows really are cut from the blob
    cut = conn.execute("SELECT %s FROM r ORDER BY rowid" % commands._CSV_TIME_T, blank).fetchall()
    assert cut[2] == ("###########14:13:20.000Z,1790000000.0",) and cut[-5:] == want[-5:]
    assert commands._time_params(None, None) == commands._time_params(-5.0, 10.0) == [1, 0, b"", 0, b""]
