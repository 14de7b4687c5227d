"""Board life on the MicroPython VM with the emulated ESP32 (emulator/board: machine, network, socket, time and
byte-exact sensors behind the buses): boot, self-test lines, uploads to a loopback server, Wi-Fi backoff, watchdog.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from micropython_plugin import ROOT, run_micropython
from test_uplink import KEY, Server, answer

HERE = Path(__file__).resolve().parent
EMULATOR = ROOT / "emulator" / "board"
PATHS = (HERE, EMULATOR)


def write_config(tmp_path: Path, port: int = 9, **over) -> Path:
    cfg = json.loads((ROOT / "firmware" / "config.example.json").read_text())
    cfg.update(device="kk-test-01", key=KEY.hex(), agent_url="http://127.0.0.1:%d" % port,
               data_dir=str(tmp_path / "data"), upload_s=1, batch_max=10)
    cfg["sensors"][0]["interval_s"] = 5
    cfg["sensors"][1].update(interval_s=5, warmup_s=1)
    cfg["sensors"][2]["interval_s"] = 5
    cfg.update(over)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def vm(args: list[str], monkeypatch, faults=None, board_config=None, timeout=60):
    if faults is not None:
        monkeypatch.setenv("AIRWATT_BOARD_FAULTS", json.dumps(faults))
    if board_config is not None:
        monkeypatch.setenv("AIRWATT_BOARD_CONFIG", json.dumps(board_config))
    return run_micropython(args, extra_paths=PATHS, timeout=timeout)


def selftest_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("SELFTEST")]


def test_selftest_passes_with_every_sensor_answering(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    r = vm(["-c", "import board; print('RESULT', board.selftest(%r))" % str(path)], monkeypatch)
    lines = selftest_lines(r.stdout)
    assert len(lines) == 4, r.stdout + r.stderr
    assert re.fullmatch(r"SELFTEST energy PASS voltage=\d+\.\d current=[\d.]+ power=[\d.]+ energy_wh=\d+ "
                        r"frequency=\d+\.\d pf=[\d.]+", lines[0]), lines[0]
    assert re.fullmatch(r"SELFTEST pm PASS pm1=\d+ pm25=\d+ pm10=\d+", lines[1]), lines[1]
    assert re.fullmatch(r"SELFTEST co2 PASS co2=\d+ temperature=[\d.]+ humidity=[\d.]+", lines[2]), lines[2]
    assert lines[3] == "SELFTEST PASS" and "RESULT True" in r.stdout


def test_selftest_names_each_failing_sensor(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    r = vm(["-c", "import board; print('RESULT', board.selftest(%r))" % str(path)], monkeypatch,
           faults={"pzem": "unplugged", "pms": {"corrupt": 1.0}})
    lines = selftest_lines(r.stdout)
    assert len(lines) == 4, r.stdout + r.stderr
    by_kind = {line.split()[1]: line for line in lines[:3]}
    assert by_kind["energy"].startswith("SELFTEST energy FAIL OSError"), lines
    assert by_kind["pm"].startswith("SELFTEST pm FAIL "), lines
    assert by_kind["co2"].startswith("SELFTEST co2 PASS co2="), lines
    assert lines[3] == "SELFTEST FAIL" and "RESULT False" in r.stdout


def test_selftest_and_main_report_a_bad_config(tmp_path, monkeypatch):
    path = write_config(tmp_path, batch_max=0)
    r = vm(["-c", "import board; print('RESULT', board.selftest(%r)); board.main(%r); print('AT REPL')"
            % (str(path), str(path))], monkeypatch)
    assert "SELFTEST FAIL config.json: batch_max: expected an integer 1..100, got 0" in r.stdout, r.stdout
    assert "CONFIG ERROR config.json: batch_max: expected an integer 1..100, got 0" in r.stdout
    assert "AT REPL" in r.stdout, "a bad config leaves the board at the REPL for the technician"


def test_board_boots_samples_and_uploads_signed_batches_with_status(tmp_path, monkeypatch):
    server = Server([answer()])
    try:
        path = write_config(tmp_path, port=server.port)
        r = vm([str(HERE / "board_life.py"), "boot", str(path), "8000"], monkeypatch)
    finally:
        server.close()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    boot = re.search(r"^AIRWATT firmware 0\.2\.0 device kk-test-01 boot ([0-9a-f]{8}) reset PWRON_RESET "
                     r"clock unset$", r.stdout, re.M)
    assert boot, out
    lines = selftest_lines(r.stdout)
    assert lines[-1] == "SELFTEST PASS" and len(lines) == 4, out
    batches = server.batches()  # signature and protocol checked
    assert batches, out
    readings = [x for b in batches for x in b["readings"]]
    assert [x["seq"] for x in readings] == list(range(1, len(readings) + 1)), "oldest first, none twice"
    assert {x["sensor"] for x in readings} == {"energy", "pm", "co2"}
    assert all(x["boot"] == boot.group(1) for x in readings)
    first, last = batches[0], batches[-1]
    assert first["status"]["time_sync"] == "none" and last["status"]["time_sync"] == "agent"
    assert all(x["t"] is None for x in first["readings"]), "no wall time before the agent's answer"
    assert any(x["t"] is not None and x["t"] >= 1790000123 for x in readings), "wall time once the clock is set"
    assert -127 <= last["status"]["rssi"] <= 0 and last["status"]["free_heap"] > 0
    assert last["status"]["errors"] == {"energy": 0, "pm": 0, "co2": 0}
    assert "RTC year 2026" in r.stdout, "the RTC was set from the agent's server_time (2026-09-21)"
    end = re.search(r"^END uplink (.*) sent (\d+) depth (\d+) sync agent", r.stdout, re.M)
    assert end and int(end.group(2)) == len(readings), out


def test_board_keeps_readings_on_flash_while_the_agent_refuses(tmp_path, monkeypatch):
    server = Server([("answer", 503, {"Retry-After": "30"}, 0, 0, {})])
    try:
        path = write_config(tmp_path, port=server.port)
        r = vm([str(HERE / "board_life.py"), "boot", str(path), "6000"], monkeypatch, faults={"pzem": "unplugged"})
        assert r.returncode == 0, r.stdout + r.stderr
        end = re.search(r"^END uplink busy 503 sent 0 depth (\d+) sync none errors (.*)$", r.stdout, re.M)
        assert end and int(end.group(1)) >= 2, r.stdout
        errors = eval(end.group(2))
        assert errors["energy"] >= 1 and errors["pm"] == 0 and errors["co2"] == 0, errors
        assert len(server.requests) == 1, "Retry-After 30 s: no second attempt within the run"
        # the next boot (same flash) uploads the kept readings, oldest first, after a new boot id
        server.plan[:] = [answer()]
        r2 = vm([str(HERE / "board_life.py"), "boot", str(path), "4000"], monkeypatch)
        assert r2.returncode == 0, r2.stdout + r2.stderr
        assert re.search(r"^STORE .* next seq %d pending %d dropped 0 capacity \d+$" % (int(end.group(1)) + 1, int(end.group(1))),
                         r2.stdout, re.M), r2.stdout
    finally:
        server.close()
    readings = [x for b in server.batches()[1:] for x in b["readings"]]
    assert [x["seq"] for x in readings][:int(end.group(1))] == list(range(1, int(end.group(1)) + 1))
    assert len({x["boot"] for x in readings}) == 2, "readings of both boots, each with its boot id"


def test_wifi_backs_off_and_reconnects(monkeypatch):
    r = vm([str(HERE / "board_life.py"), "wifi"], monkeypatch,
           board_config={"wifi": {"ssid": "cityhall-iot", "key": "secret"}})
    assert r.returncode == 0 and "WIFI-OK" in r.stdout, r.stdout + r.stderr
    waits = [int(m) for m in re.findall(r"^WIFI wrong-ssid not reachable \(attempt \d\): next try in (\d+) ms$",
                                        r.stdout, re.M)]
    assert len(waits) >= 4
    for k, w in enumerate(waits):
        full = min(200 * 2 ** k, 800)  # exponential up to the cap, jittered between half and full
        assert full // 2 <= w <= full, waits
    assert "WIFI lost" in r.stdout and r.stdout.count("WIFI up") == 2
    assert re.search(r"^WIFI cityhall-iot not reachable \(attempt 1\)", r.stdout, re.M), "count starts again"


def test_watchdog_is_fed_only_while_both_loops_progress(monkeypatch):
    r = vm([str(HERE / "board_life.py"), "watchdog"], monkeypatch)
    assert r.returncode == 0 and "WATCHDOG-OK" in r.stdout, r.stdout + r.stderr
    assert "WDT sampler loop made no progress for 200 ms: not feeding the watchdog" in r.stdout


def test_board_uploads_to_the_real_agent(tmp_path, monkeypatch):
    """The firmware against the real site agent (`airwatt serve`, SQLite): every reading lands once, with time."""
    import socket
    import subprocess
    import sys
    import time

    from airwatt.agent import store

    airwatt = str(Path(sys.executable).with_name("airwatt"))
    agent_dir = tmp_path / "agent"
    db = store.open_db(str(agent_dir))
    key = store.add_device(db, "kk-test-01", sensors=["energy", "pm", "co2"])
    db.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "agent.log"
    with open(log, "w") as f:  # a file, not a pipe: the agent's log can never fill a buffer and block it
        agent = subprocess.Popen([airwatt, "serve", "--data-dir", str(agent_dir), "--port", str(port)],
                                 stdout=f, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(300):
            if "listening on" in log.read_text() or agent.poll() is not None:
                break
            time.sleep(0.1)
        assert "listening on" in log.read_text(), "the agent did not start:\n" + log.read_text()
        path = write_config(tmp_path, port=port)
        cfg = json.loads(path.read_text())
        cfg["key"] = key
        path.write_text(json.dumps(cfg))
        r = vm([str(HERE / "board_life.py"), "boot", str(path), "8000"], monkeypatch)
        assert r.returncode == 0, r.stdout + r.stderr
        end = re.search(r"^END uplink ok \d+ sent (\d+) depth 0 sync agent", r.stdout, re.M)
        assert end, r.stdout
        out = subprocess.run([airwatt, "readings", "--device", "kk-test-01", "--data-dir", str(agent_dir),
                              "--format", "json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    finally:
        agent.terminate()
        agent.wait(10)
    rows = json.loads(out.stdout)
    assert [row["seq"] for row in rows] == list(range(1, int(end.group(1)) + 1)), rows
    assert {row["sensor"] for row in rows} == {"energy", "pm", "co2"}
    assert all(row["t"] for row in rows), "every reading has a time: the board's, or the agent's from ticks"
    assert {row["t_source"] for row in rows} >= {"board"}


def test_v2_board_offline_through_an_outage_delivers_every_reading_with_no_gap(tmp_path, monkeypatch):
    # The agent is unreachable for the first uploads (connections dropped), then answers: a board speaking
    # protocol v2 delivers everything it read meanwhile, oldest first, in packed batches, no seq missing.
    server = Server([("drop",), ("drop",), answer()])
    try:
        path = write_config(tmp_path, port=server.port, protocol=2, commit_s=5)
        r = vm([str(HERE / "board_life.py"), "boot", str(path), "16000"], monkeypatch)
    finally:
        server.close()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert len(server.plan) == 1, "both dropped connections were tried"
    raw = [json.loads(q[2]) for q in server.requests if q[3] == "answer"]
    assert raw and all(b["v"] == 2 for b in raw), "the board speaks v2"
    batches = server.batches()  # signature, protocol and canonical bytes checked
    readings = [x for b in batches if b["v"] == 2 for x in b["readings"]]
    seqs = [x["seq"] for x in readings]
    assert seqs == list(range(1, len(seqs) + 1)), "oldest first, none twice, no gap: %s" % seqs
    first = [x for x in batches if x["v"] == 2][0]
    assert len(first["readings"]) >= 3, "the first batch after the outage carries the backlog"
    end = re.search(r"^END uplink (.*) sent (\d+) depth (\d+)", r.stdout, re.M)
    assert end and int(end.group(2)) == len(seqs), out
