"""End to end, a three-phase building: `airwatt emulate --meters 3` (three byte-exact PZEM-004T on one Modbus bus,
each with its own load), flashed with `airwatt flash --three-phase`, a real agent process syncing to the emulated
city platform. The platform receives threePhase ACMeasurements that validate against the official Smart Data
Models schema, whose totals are the sums of their phases; a meter unplugged is flagged on its own while the others
keep going; the agent's kWh (and so its carbon) is the supply's, each meter's counter followed on its own."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airwatt.agent import carbon, rollup, store
from airwatt.agent.bench.serve import start_agent
from serving import AIRWATT, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
import sdm  # noqa: E402  (the official schemas' validator, shared with the sync tests)
from test_day_of_faults import start_platform, wait_until  # noqa: E402


def start_board(tmp_path: Path, fault_file: Path) -> tuple[subprocess.Popen, str]:
    port_file = tmp_path / "board.port"
    proc = subprocess.Popen([AIRWATT, "emulate", "--meters", "3", "--flash", str(tmp_path / "flash.bin"),
                             "--port-file", str(port_file), "--fault-file", str(fault_file),
                             "--log", str(tmp_path / "board.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None, "airwatt emulate did not start"
        time.sleep(0.1)
    return proc, port_file.read_text().strip()


def entities(platform_db: Path) -> list[dict]:
    with sqlite3.connect(platform_db) as conn:
        return [json.loads(body) for (body,) in conn.execute("SELECT body FROM records WHERE type = 'ACMeasurement'")]


def test_three_phase_board_gives_schema_valid_three_phase_measurements_and_counts_the_supply_once(tmp_path):
    agent_dir, platform_dir = tmp_path / "agent", tmp_path / "platform"
    agent_dir.mkdir()
    platform_dir.mkdir()
    fault_file = tmp_path / "faults.json"
    fault_file.write_text("{}")
    procs = []
    try:
        platform, platform_url = start_platform(platform_dir)
        procs.append(platform)
        (agent_dir / "airwatt.toml").write_text(
            '[platform]\nurl = "%s"\nkind = "ngsi-ld"\ntimeout_s = 3\npoll_s = 1\n' % platform_url)
        port = free_port()
        procs.append(start_agent(agent_dir, ["--port", str(port)])[0])
        board, pty = start_board(tmp_path, fault_file)
        procs.append(board)
        flashed = subprocess.run(
            [AIRWATT, "flash", "--port", pty, "--device", "tp-hospital-01", "--wifi", "hospital-iot:password1",
             "--agent", "http://127.0.0.1:%d" % port, "--data-dir", str(agent_dir), "--sensors", "energy",
             "--three-phase", "--intervals", "energy=5", "--upload-s", "3", "--lat", "16.43", "--lon", "102.82",
             "--site", "Khon Kaen Hospital", "--timeout", "60"],
            capture_output=True, text=True, timeout=180)
        assert flashed.returncode == 0, flashed.stdout + flashed.stderr
        for phase in ("L1", "L2", "L3"):  # one self-test line per meter
            assert "energy:%s PASS" % phase in flashed.stdout, flashed.stdout
        db_path = platform_dir / "platform.db"

        def three_phase(n: int, flag: str | None = None) -> list[dict]:
            got = [e for e in entities(db_path) if e["phaseType"]["value"] == "threePhase"]
            if flag is not None:
                got = [e for e in got if flag in e.get("airwattFlags", {}).get("value", [])]
            return got if len(got) >= n else []

        wait_until("three threePhase ACMeasurements on the platform", lambda: three_phase(3), 90)
        complete = [e for e in three_phase(3) if "airwattFlags" not in e]
        assert complete
        for ent in complete:
            assert sdm.errors(ent) == [], ent
            power = ent["activePower"]["value"]
            assert set(power) == {"L1", "L2", "L3"}
            assert len(set(power.values())) == 3  # each meter its own load
            assert set(ent["phaseVoltage"]["value"]) == set(ent["current"]["value"]) == {"L1", "L2", "L3"}
            assert set(ent["powerFactor"]["value"]) == {"L1", "L2", "L3"}
            # totals equal the sums of the phases within the table's resolution (0.1 W; 1 Wh = 0.001 kWh)
            assert abs(ent["totalActivePower"]["value"] - sum(power.values())) <= 0.05 + 1e-9
            kwh = ent["activeEnergyImport"]["value"]
            assert abs(ent["totalActiveEnergyImport"]["value"] - sum(kwh.values())) <= 0.0005 + 1e-9
            assert ent["refDevice"]["object"] == ["urn:ngsi-ld:Device:tp-hospital-01"]

        # One meter unplugged: flagged on its own (its phase missing), the other two keep going.
        fault_file.write_text(json.dumps({"pzem2": {"unplugged": True}}))
        wait_until("a round without L2", lambda: three_phase(2, "missing_L2"), 60)
        for ent in three_phase(2, "missing_L2"):
            assert set(ent["activePower"]["value"]) == {"L1", "L3"} and sdm.errors(ent) == []

        # kWh and carbon: the supply's meters, each counter on its own, as far as the roller has got.
        db = store.open_db(agent_dir)
        try:
            wait_until("the rollups", lambda: rollup.watermark(db.conn) >= db.execute(
                "SELECT max(id) FROM readings").fetchone()[0], 30)
            upto = rollup.watermark(db.conn)
            expected = 0.0
            for inst in (1, 2, 3):
                rows = [dict(zip(("seq", "t", "energy_wh", "flags"), r)) for r in db.execute(
                    "SELECT seq, t, energy_wh, flags FROM readings WHERE device = 'tp-hospital-01' AND instance = ?"
                    " AND id <= ? ORDER BY seq", (inst, upto))]
                expected += sum(carbon.daily_wh(rows).values())
            got = sum(rollup.daily_wh(db, 0, 2e9, "tp-hospital-01")["tp-hospital-01"].values())
            assert expected > 0 and got == pytest.approx(expected, rel=1e-9, abs=1e-6)
            assert db.execute("SELECT count(*) FROM meters WHERE device = 'tp-hospital-01' AND supply = 1"
                              ).fetchone()[0] == 3
        finally:
            db.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
