"""End to end: three emulated boards, a real agent process and the emulated city platform through a scripted
(compressed) day of faults. Afterwards every reading a board took is in the platform exactly once, with
plausible, consistent timestamps, including readings taken before a board had wall time.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from airwatt.agent import flash_cmd, store
from airwatt.agent.adapters.ngsi_ld import entity_id
from airwatt.emulator.esp32 import EmulatedBoard
from airwatt.agent.bench.serve import start_agent
from serving import AIRWATT, free_port

DEVICES = ("e2e-01", "e2e-02", "e2e-03")
INTERVALS = {"energy": 5, "pm": 5, "co2": 5}


def start_platform(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port_file = data_dir / "platform.url"
    proc = subprocess.Popen([AIRWATT, "platform", "--port", "0", "--data-dir", str(data_dir),
                             "--port-file", str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not port_file.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the emulated platform did not start"
        time.sleep(0.1)
    return proc, port_file.read_text().strip()


def post_json(url: str, body: dict) -> None:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def rows(db_path: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql, params).fetchall()


def wait_until(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.5)


def test_a_day_of_faults_loses_and_duplicates_nothing(tmp_path):
    agent_dir, platform_dir = tmp_path / "agent", tmp_path / "platform"
    agent_dir.mkdir()
    platform_dir.mkdir()
    platform, platform_url = start_platform(platform_dir)
    (agent_dir / "airwatt.toml").write_text(
        '[platform]\nurl = "%s"\nkind = "ngsi-ld"\ntimeout_s = 3\npoll_s = 1\nbackoff_max_s = 4\n' % platform_url)
    db = store.open_db(agent_dir)
    for i, device in enumerate(DEVICES):
        store.add_device(db, device, site="Khon Kaen City Hall", lat=16.44 + i / 1000, lon=102.83, interval_s=5)
    db.close()
    port = free_port()
    agent_url = "http://127.0.0.1:%d" % port
    agent, _ = start_agent(agent_dir, ["--port", str(port)])  # a fixed port: the board's config names it
    image = flash_cmd.firmware_image()
    boards: dict[str, EmulatedBoard] = {}
    started = time.time()
    try:
        # e2e-02 starts with Wi-Fi down: its first readings have no wall time. e2e-03's RTC ignores every setting.
        initial = {"e2e-01": {}, "e2e-02": {"wifi_down": True}, "e2e-03": {"clock_unset": True}}
        for i, device in enumerate(DEVICES):
            board = EmulatedBoard(tmp_path / (device + ".flash"), faults=initial[device],
                                  config={"clock": "unset", "day_scale": 240, "unique_id": "a4cf000000%02x" % i},
                                  log_path=tmp_path / (device + ".log"))
            boards[device] = board.start()
            config = flash_cmd.board_config(device, "", "e2e:password", agent_url, list(INTERVALS), INTERVALS,
                                            upload_s=4, wdt_s=30)
            config["key"], _ = flash_cmd.device_key(str(agent_dir), device, list(INTERVALS), None, None)
            flash_cmd.provision(board.port, {**image, "/config.json": json.dumps(config).encode()},
                                lambda line: None, None)

        def at(second: float) -> None:
            time.sleep(max(0.0, started + second - time.time()))

        at(15)
        post_json(platform_url + "/_faults", {"5xx": 2, "429": 1, "partial": 2, "drop": 1, "timeout": 1,
                                              "retry_after": 1, "timeout_s": 5})
        boards["e2e-01"].set_fault("power_cut_at_write", 4)
        at(25)
        boards["e2e-02"].set_fault("wifi_down", False)
        boards["e2e-03"].set_fault("pms", {"corrupt": 3})
        boards["e2e-03"].set_fault("pzem", {"unplugged": True})
        at(35)
        agent.send_signal(signal.SIGKILL)  # the agent crashes mid-day and comes back
        agent.wait()
        boards["e2e-01"].set_fault("wifi_down", True)
        at(40)
        agent, _ = start_agent(agent_dir, ["--port", str(port)])
        boards["e2e-03"].set_fault("pzem", {"unplugged": False})
        at(50)
        boards["e2e-01"].set_fault("wifi_down", False)
        boards["e2e-02"].set_fault("power_cut_at_write", 2)
        at(75)
        for board in boards.values():  # end of the day: every board has uploaded its backlog by now
            board.stop()
        stopped = time.time()

        db_path = agent_dir / "airwatt.db"
        wait_until("the agent to sync everything",
                   lambda: rows(db_path, "SELECT count(*) FROM readings WHERE synced_at IS NULL")[0][0] == 0, 60)
    finally:
        for board in boards.values():
            board.stop()
        agent.terminate()
        agent.wait(timeout=10)
        platform.terminate()
        platform.wait(timeout=10)

    readings = rows(db_path, "SELECT r.device, r.seq, r.sensor, b.boot, r.t, r.t_source, r.ticks FROM readings r"
                              " JOIN boot_ids b ON b.id = r.boot_id ORDER BY r.device, r.seq")
    assert boards["e2e-01"].resets["powercut"] == 1 and boards["e2e-02"].resets["powercut"] == 1
    for device in DEVICES:
        seqs = [r[1] for r in readings if r[0] == device]
        assert len(seqs) >= 20, "%s took only %d readings" % (device, len(seqs))
        # Every reading the board took reached the agent: seq numbers come from the board's flash, so a loss
        # leaves a gap and a duplicate would repeat one (UNIQUE(device, seq) refuses it).
        assert seqs == list(range(1, len(seqs) + 1)), "%s: gaps in %r" % (device, seqs)

    # The platform holds every reading exactly once, under its deterministic id.
    platform_db = platform_dir / "platform.db"
    stored = dict(rows(platform_db, "SELECT id, body FROM records WHERE api = 'ngsi-ld'"))
    expected = {entity_id({"sensor": r[2], "device": r[0], "seq": r[1]}) for r in readings}
    assert set(stored) == expected
    assert rows(platform_db, "SELECT count(*) FROM records")[0][0] == len(readings)
    faults_seen = {f for (f,) in rows(platform_db, "SELECT DISTINCT fault FROM requests WHERE fault IS NOT NULL")}
    assert {"5xx", "429", "partial", "drop", "timeout"} <= faults_seen

    # Timestamps: all known, within the day, in step with the board's ticks within each boot.
    assert all(r[4] is not None for r in readings), "a reading's time was left unknown"
    assert all(started - 5 < r[4] < stopped + 5 for r in readings)
    # Readings taken before a board had wall time (each boot until its first answer; e2e-02's first 25 s
    # offline) are timed by the agent from the board's ticks.
    ticks_timed = {d: sum(1 for r in readings if r[0] == d and r[5] == "ticks") for d in DEVICES}
    assert all(ticks_timed.values()), ticks_timed
    assert ticks_timed["e2e-02"] >= 9, ticks_timed
    by_boot: dict[tuple, list] = {}
    for r in readings:
        by_boot.setdefault((r[0], r[3]), []).append(r)
    for boot_rows in by_boot.values():
        for a, b in zip(boot_rows, boot_rows[1:]):
            assert abs((b[4] - a[4]) - (b[6] - a[6]) / 1000) < 2.5, (a, b)
    for r in readings[:: max(1, len(readings) // 20)]:
        body = json.loads(stored[entity_id({"sensor": r[2], "device": r[0], "seq": r[1]})])
        observed = body["dateObserved"]["value"]
        observed = observed["@value"] if isinstance(observed, dict) else observed  # NGSI-LD DateTime
        assert abs(datetime.fromisoformat(observed.replace("Z", "+00:00")).timestamp() - r[4]) < 0.01
