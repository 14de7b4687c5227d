"""The agent's `airwatt` verbs (through cli.main, and `airwatt serve` as a real process) and airwatt.toml."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import urllib.request

import csvw
import pytest

from airwatt.agent import ingest, store, sync_store, writer
from airwatt.agent.bench import serve
from airwatt.agent.cli import main
from airwatt.agent.config import Config, ConfigError, load_config
from airwatt.agent.commands import EXPORT_COLUMNS, LICENCE, parse_time
from airwatt.protocol import fields
from airwatt.protocol.models import parse_batch

from agent_helpers import T0, body, headers


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _seed(data_dir):
    """Two devices; dev-1 holds 6 readings timed by the board, one of them synced; dev-2 one without time."""
    db = store.open_db(data_dir)
    store.add_device(db, "dev-1", name="Hall meter", site="City Hall", lat=16.43, lon=102.83)
    store.add_device(db, "dev-2")
    for device, seqs, t0 in (("dev-1", range(1, 7), T0), ("dev-2", [1], None)):
        job = ingest.job_from_batch(parse_batch(body(device, seqs, t0=t0, boot="000000ee")), 1_790_000_100.0)
        with store.transaction(db):
            writer.write_job(db.conn, job, writer.Known())
    # dev-2's board had no clock and the agent no offset for its boot: time unknown.
    db.execute("UPDATE readings SET t = NULL, t_source = 'unknown' WHERE device = 'dev-2'")
    sync_store.mark_synced(db, [1], 1_790_000_200.0)
    db.close()


def test_device_add_prints_the_key_once_and_list_never_shows_it(tmp_path, capsys):
    d = str(tmp_path / "data")
    code, out, err = run(capsys, "device", "add", "hall-01", "--data-dir", d, "--name", "Hall", "--site", "City Hall",
                         "--lat", "16.43", "--lon", "102.83", "--sensors", "energy,pm", "--interval", "30")
    assert code == 0
    key = out.split("key: ")[1].split()[0]
    assert len(bytes.fromhex(key)) == 32 and "shown once" in err
    db = store.open_db(d)
    dev = store.get_device(db, "hall-01")
    assert (store.device_key(db, "hall-01").hex(), json.loads(dev["sensors"]), dev["interval_s"]) == (
        key, ["energy", "pm"], 30)
    assert "keys.db (mode 0600)" in err
    code, out, _ = run(capsys, "device", "list", "--data-dir", d)
    assert code == 0 and "hall-01" in out and "City Hall" in out and "16.43000,102.83000" in out and key not in out
    code, out, _ = run(capsys, "device", "list", "--data-dir", d, "--format", "json")
    listed = json.loads(out)
    assert listed[0]["id"] == "hall-01" and "key" not in listed[0] and listed[0]["sensors"] == ["energy", "pm"]
    # A second add of the same id, or a bad sensor list, is refused with a message and no new key.
    code, out, err = run(capsys, "device", "add", "hall-01", "--data-dir", d)
    assert code == 1 and "already exists" in err and "key" not in out
    code, out, err = run(capsys, "device", "add", "hall-02", "--data-dir", d, "--sensors", "pm,radon")
    assert code == 1 and "radon" in err


@pytest.mark.parametrize("extra, message", [
    (("--lat", "16.43"), "give both --lat and --lon"),
    (("--lon", "102.83"), "give both --lat and --lon"),
    (("--lat", "16.43", "--lon", "-200"), "lon must be within -180..180"),
    (("--lat", "-90.5", "--lon", "102.83"), "lat must be within -90..90"),
    (("--lat", "inf", "--lon", "102.83"), "lat must be within -90..90"),
])
def test_device_add_refuses_half_a_location_or_one_out_of_range(tmp_path, capsys, extra, message):
    d = str(tmp_path / "data")
    code, out, err = run(capsys, "device", "add", "hall-01", "--data-dir", d, *extra)
    assert code == 1 and message in err and "key" not in out
    assert len(err.strip().splitlines()) == 1
    assert store.list_devices(store.open_db(d)) == []


def test_device_set_edits_a_registered_board(tmp_path, capsys):
    d = str(tmp_path / "data")
    assert run(capsys, "device", "add", "hall-01", "--data-dir", d, "--name", "Hall")[0] == 0
    code, out, err = run(capsys, "device", "set", "hall-01", "--data-dir", d, "--lat", "16.43", "--lon", "102.83",
                         "--site", "City Hall")
    assert code == 0 and "16.43,102.83" in out and "City Hall" in out
    dev = store.get_device(store.open_db(d), "hall-01")
    assert (dev["name"], dev["site"], dev["lat"], dev["lon"]) == ("Hall", "City Hall", 16.43, 102.83)
    code, out, err = run(capsys, "device", "set", "hall-01", "--data-dir", d, "--name", "Hall, floor 2",
                         "--interval", "120")
    dev = store.get_device(store.open_db(d), "hall-01")
    assert code == 0 and (dev["name"], dev["site"], dev["lat"], dev["interval_s"]) == (
        "Hall, floor 2", "City Hall", 16.43, 120)
    for argv, message in [
        (("hall-01", "--lat", "17"), "give both --lat and --lon"),
        (("hall-01", "--lat", "17", "--lon", "181"), "lon must be within"),
        (("hall-01", "--sensors", "radon"), "sensors must be some of"),
        (("hall-01", "--interval", "0"), "interval must be 1..86400"),
        (("hall-01",), "nothing to change"),
        (("hall-09", "--name", "x"), "no device hall-09: register it with `airwatt device add hall-09`"),
    ]:
        code, out, err = run(capsys, "device", "set", *argv, "--data-dir", d)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert store.get_device(store.open_db(d), "hall-01")["lat"] == 16.43  # nothing changed by a refusal


def test_data_dir_comes_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AIRWATT_DATA_DIR", str(tmp_path / "env-data"))
    code, _, _ = run(capsys, "device", "add", "env-dev")
    assert code == 0 and store.db_path(tmp_path / "env-data").exists()
    monkeypatch.delenv("AIRWATT_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert store.data_dir_default() == "airwatt-data"


def test_readings_table_csv_json_and_time_filters(tmp_path, capsys):
    d = str(tmp_path / "data")
    _seed(d)
    code, out, _ = run(capsys, "readings", "--device", "dev-1", "--data-dir", d)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["seq", "time", "from", "sensor", "values", "flags", "synced"]
    assert len(lines) == 7 and "2026-09-21T14:13:21.000Z" in lines[1] and "pm1=8 pm25=27 pm10=41" in lines[1]
    assert lines[1].endswith("yes") and lines[2].endswith("no")
    code, out, _ = run(capsys, "readings", "--device", "dev-1", "--data-dir", d, "--format", "csv",
                       "--since", "2026-09-21T14:13:22Z", "--until", str(T0 + 5))
    got = list(csv.DictReader(io.StringIO(out)))
    assert [r["seq"] for r in got] == ["2", "3", "4"]
    assert got[1]["sensor"] == "energy" and got[1]["voltage"] == "229.8" and got[1]["pm25"] == ""
    code, out, _ = run(capsys, "readings", "--device", "dev-1", "--data-dir", d, "--format", "json",
                       "--since", "2026-09-21 21:13:25+07:00")
    got = json.loads(out)
    assert [r["seq"] for r in got] == [5, 6] and got[0]["time"] == "2026-09-21T14:13:25.000Z"
    code, _, err = run(capsys, "readings", "--device", "nope", "--data-dir", d)
    assert code == 1 and "no device nope" in err


def test_parse_time_accepts_iso_and_unix_and_refuses_the_rest():
    assert parse_time("1790000000") == 1790000000.0
    assert parse_time("2026-09-21T14:13:20Z") == parse_time("2026-09-21T14:13:20") == 1790000000.0
    assert parse_time("2026-09-21T21:13:20+07:00") == 1790000000.0
    with pytest.raises(Exception, match="ISO 8601"):
        parse_time("yesterday")


def test_export_csv_and_json_are_open_data_without_keys(tmp_path, capsys):
    d = str(tmp_path / "data")
    _seed(d)
    keys = [store.device_key(store.open_db(d), dev).hex() for dev in ("dev-1", "dev-2")]
    out_file = tmp_path / "open.csv"
    code, out, err = run(capsys, "export", "--format", "csv", "--out", str(out_file), "--data-dir", d)
    meta = tmp_path / "open.csv-metadata.json"
    assert code == 0 and out == "" and err == "wrote 7 readings to %s (csv)\nwrote its CSV on the Web metadata to %s\n" % (
        out_file, meta)
    # the CSVW metadata, read by a CSVW library: the CSV's own columns, typed, each value valid for its datatype
    table = csvw.Table.from_file(meta)
    assert [c.name for c in table.tableSchema.columns] == [c[0] for c in EXPORT_COLUMNS]
    assert table.common_props["dc:license"] == {"@id": LICENCE}
    units = {c.name: c.common_props.get("schema:unitText") for c in table.tableSchema.columns}
    assert all(units[row[1]] == row[2] for row in fields.METRICS)
    typed = list(table.iterdicts())
    assert len(typed) == 7 and typed[0]["pm25"] == 27 and typed[0]["lat"] == 16.43 and typed[6]["time"] is None
    assert typed[0]["time"].isoformat().startswith("2026-09-21T14:13:21")
    text = out_file.read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [c[0] for c in EXPORT_COLUMNS]
    assert len(rows) == 7 and not any(k in text for k in keys) and "000000ee" not in text  # no keys, no boot ids
    assert (rows[0]["device"], rows[0]["site"], rows[0]["lat"], rows[0]["time"], rows[0]["pm25"]) == (
        "dev-1", "City Hall", "16.43", "2026-09-21T14:13:21.000Z", "27")
    assert (rows[6]["device"], rows[6]["time"], rows[6]["t_source"]) == ("dev-2", "", "unknown")
    code, out, _ = run(capsys, "export", "--format", "json", "--data-dir", d)
    doc = json.loads(out)
    assert [c["name"] for c in doc["columns"]] == [c[0] for c in EXPORT_COLUMNS]
    units = {c["name"]: c["unit"] for c in doc["columns"]}
    assert all(units[row[1]] == row[2] for row in fields.METRICS)
    assert len(doc["readings"]) == 7 and doc["readings"][2]["voltage"] == 229.8
    assert not any(k in out for k in keys)


def test_a_reader_that_stops_early_ends_the_command_without_a_traceback(tmp_path):
    d = str(tmp_path / "data")
    _seed(d)
    db = store.open_db(d)
    for i in range(800):  # more than a pipe holds (64 KiB), so the write meets the closed pipe every time
        store.add_device(db, "dev-x%03d" % i, name="Meter %d, a long name to fill the pipe sooner" % i, site="Site")
    airwatt = os.path.join(os.path.dirname(sys.executable), "airwatt")
    for argv in (["device", "list", "--format", "json"], ["export", "--format", "csv"]):
        # `| head -1`: the pipe closes after one line, before the command has written the rest
        shell = "%s %s --data-dir %s | head -1" % (airwatt, " ".join(argv), d)
        out = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60)
        assert out.stderr == "" and out.stdout.count("\n") == 1, out
        assert out.returncode in (0, 141), out  # 141: stopped by the closed pipe, as `cat` is


def test_flash_help_names_the_agents_real_default_port(capsys):
    with pytest.raises(SystemExit):
        main(["flash", "--help"])
    out = capsys.readouterr().out
    assert "http://192.168.1.10:%d" % Config().port in " ".join(out.split())


def test_sync_status_text_and_json(tmp_path, capsys):
    d = str(tmp_path / "data")
    _seed(d)
    db = store.open_db(d)
    sync_store.log_sync(db, False, 429, 5, "rate limited")
    sync_store.log_sync(db, True, 201, 1)
    db.close()
    code, out, _ = run(capsys, "sync", "status", "--data-dir", d)
    assert code == 0
    assert "pending:    6" in out and "synced:     1" in out and "rate limited" in out and "never" not in out
    code, out, _ = run(capsys, "sync", "status", "--data-dir", d, "--format", "json")
    state = json.loads(out)
    assert (state["pending"], state["synced"], state["last_errors"][0]["status"]) == (6, 1, 429)


def test_verbs_on_a_missing_data_dir_say_so(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no database"):
        main(["device", "list", "--data-dir", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()


# -- airwatt.toml ----------------------------------------------------------------------------------------


def test_config_defaults_file_and_overrides(tmp_path):
    assert load_config(tmp_path) == Config()
    (tmp_path / "airwatt.toml").write_text(
        'port = 9000\nhost = "0.0.0.0"\n[platform]\nurl = "http://127.0.0.1:1026/ngsi-ld/v1"\nkind = "http-json"\n'
    )
    cfg = load_config(tmp_path)
    assert (cfg.port, cfg.host, cfg.platform.kind, cfg.platform.url) == (
        9000, "0.0.0.0", "http-json", "http://127.0.0.1:1026/ngsi-ld/v1")
    cfg = load_config(tmp_path, {"port": 9100, "host": None, "platform.kind": "ngsi-ld"})
    assert (cfg.port, cfg.host, cfg.platform.kind) == (9100, "0.0.0.0", "ngsi-ld")  # None = flag not given


@pytest.mark.parametrize(
    "text, names",
    [
        ("prot = 80\n", "prot: unknown key"),
        ("port = 70000\n", "port: Input should be less than or equal to 65535"),
        ('[platform]\nkind = "amqp"\n', "platform.kind: Input should be 'ngsi-ld', 'http-json', 'sensorthings' or 'mqtt'"),
        ('[platform]\nurl = "ftp://x"\n', "platform.url: String should match pattern"),
        ('[platform]\nurl = "mqtt://h/city"\n', "platform: Value error, kind ngsi-ld needs a URL starting http"),
        ('[platform]\nurl = "http://h"\nkind = "mqtt"\n', "kind mqtt needs a URL starting mqtt://HOST:PORT/PREFIX"),
        ('[platform]\nbatchsize = 5\n', "platform.batchsize: unknown key"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, text, names):
    (tmp_path / "airwatt.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(tmp_path / "airwatt.toml") in str(err.value) and names in str(err.value)


def test_serve_refuses_a_bad_config_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "airwatt.toml").write_text("colour = 'blue'\n")
    code, _, err = run(capsys, "serve", "--data-dir", str(tmp_path))
    assert code == 2 and "colour: unknown key" in err


def test_serve_runs_as_a_process_takes_flags_over_the_file_and_stops_cleanly(tmp_path):
    d = tmp_path / "data"
    db = store.open_db(d)
    key = bytes.fromhex(store.add_device(db, "dev-1"))
    db.close()
    (d / "airwatt.toml").write_text('port = 1\n[platform]\nkind = "http-json"\n')  # --port 0 overrides port 1
    proc, url = serve.start_agent(d, ["--platform-kind", "ngsi-ld"])
    try:
        assert json.load(urllib.request.urlopen(url + "/healthz", timeout=10))["ok"] is True
        data = body("dev-1", [1, 2])
        req = urllib.request.Request(url + "/v1/batches", data=data, headers=headers("dev-1", key, data))
        assert json.load(urllib.request.urlopen(req, timeout=10))["stored_seq"] == 2
    finally:
        serve.stop_agent(proc)
    assert proc.returncode == 0
    assert len(store.readings(store.open_db(d), "dev-1")) == 2


def test_bench_ingest_runs_end_to_end_on_a_tiny_workload(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run(
        [sys.executable, "-m", "airwatt.agent.cli", "bench", "ingest", "--uploaders", "3", "--batch", "5",
         "--batches", "2", "--rounds", "2", "--data-dir", str(tmp_path / "bench")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "3 uploaders x batches of 5, 30 readings, best of 2 round(s)" in out.stdout
    for label in ("durable ingest over HTTP", "raw executemany, ONE transaction", "ratio HTTP / raw"):
        assert label in out.stdout
    # The bench checked the agent stored every reading (warm-up batch + 2 per uploader).
    for n in (0, 1):
        conn = store.open_db(tmp_path / "bench" / ("round-%d" % n) / "agent")
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 3 * 3 * 5
