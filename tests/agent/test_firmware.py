"""Releases and rollouts in the agent's store (agent/firmware.py): build refuses what it cannot make a release
of, saying why; the offer follows each board's status.fw, canaries first, and a rollback halts the rollout."""

from __future__ import annotations

import subprocess

import pytest

from airwatt.agent import firmware, store
from airwatt.protocol.models import FirmwareReport
from serving import AIRWATT



def report(run, target="", state="idle", error=""):
    return FirmwareReport(run=run, target=target, state=state, error=error)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fw")
    db = store.open_db(data_dir)
    got = firmware.build(db, "0.3.0")
    db.close()
    return data_dir, got


def fresh(tmp_path, built):
    data_dir = tmp_path / "d"
    db = store.open_db(data_dir)
    src = store.open_db(built[0])
    with store.transaction(db):
        for table in ("firmware_releases", "firmware_files"):
            rows = list(src[table].rows)
            db[table].insert_all(rows)
    for d in ("kk-a", "kk-b", "kk-c"):
        store.add_device(db, d)
    db.execute("UPDATE devices SET firmware = '0.2.0'")
    return db


def test_release_is_the_compiled_firmware_with_its_version(built):
    _, got = built
    paths = [f[0] for f in got["files"]]
    assert "board.mpy" in paths and "ota.mpy" in paths and "protocol/wire.mpy" in paths
    assert "boot.py" not in paths and "main.py" not in paths and "boot.mpy" not in paths  # never replaced
    db = store.open_db(built[0])
    data = db.execute("SELECT data FROM firmware_files WHERE path = 'board.mpy'").fetchone()[0]
    assert data[:1] == b"M" and b"0.3.0" in data  # board.VERSION says the release's version
    assert got["size"] == sum(f[1] for f in got["files"])


def test_cli_refuses_with_reasons(tmp_path, built):
    def run(*args):
        p = subprocess.run([AIRWATT, "firmware", *args, "--data-dir", str(tmp_path / "d")], capture_output=True,
                           text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    assert run("build", "--version", "0.3 beta") == (2, "firmware build: version '0.3 beta': use 1 to 16 of "
                                                        "0-9 A-Z a-z . _ + -, e.g. 0.3.0\n")
    code, out = run("build", "--version", "0.4.0", "--from", str(tmp_path))
    assert code == 2 and "is not a firmware folder (no board.py, uplink.py, ota.py)" in out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "board.py").write_text('VERSION = "0.1"\ndef broken(:\n')
    for name in ("uplink.py", "ota.py"):
        (bad / name).write_text("X = 1\n")
    code, out = run("build", "--version", "0.4.0", "--from", str(bad))
    assert code == 2 and "mpy-cross failed on" in out and "board.py" in out
    code, out = run("rollout", "0.9.0", "--all")
    assert code == 2 and "no release 0.9.0: build it with `airwatt firmware build --version 0.9.0`" in out
    code, out = run("rollout", "0.9.0")
    assert code == 2 and "one of the arguments --devices --all is required" in out
    code, out = run("status")
    assert code == 0 and out.split() == ["device", "running", "target", "state", "error"]


def test_canaries_first_then_the_rest_and_states_follow_the_boards(tmp_path, built):
    db = fresh(tmp_path, built)
    with pytest.raises(ValueError, match="no device kk-z"):
        firmware.rollout(db, "0.3.0", ["kk-a", "kk-z"])
    with pytest.raises(ValueError, match="--canary 4: give 0 to 3"):
        firmware.rollout(db, "0.3.0", None, canary=4)
    firmware.rollout(db, "0.3.0", None, canary=1, probation_s=60)
    offer = firmware.exchange(db, "kk-a", report("0.2.0"))
    assert offer == {"version": "0.3.0", "size": built[1]["size"], "probation_s": 60}
    assert firmware.exchange(db, "kk-a", None) is None  # no status.fw: no updater on that board
    assert firmware.exchange(db, "kk-b", report("0.2.0")) is None  # waits for the canary
    firmware.exchange(db, "kk-a", report("0.2.0", "0.3.0", "failed", "ota.mpy: SHA-256 does not match"))
    rows = {r["device"]: r for r in firmware.status(db)}
    assert rows["kk-a"]["state"] == "failed" and "SHA-256" in rows["kk-a"]["error"]
    assert firmware.exchange(db, "kk-a", report("0.2.0", "0.3.0", "downloading")) is not None  # retried
    assert firmware.exchange(db, "kk-a", report("0.3.0", "0.3.0", "probation")) is None
    assert firmware.status(db)[0]["state"] == "probation"
    assert firmware.exchange(db, "kk-a", report("0.3.0", "0.3.0", "confirmed")) is None
    assert firmware.exchange(db, "kk-b", report("0.2.0"))["version"] == "0.3.0"
    assert [r["state"] for r in firmware.status(db)] == ["confirmed", "pending", "pending"]


def test_a_rollback_halts_the_rollout(tmp_path, built):
    db = fresh(tmp_path, built)
    firmware.rollout(db, "0.3.0", ["kk-a", "kk-b", "kk-c"], canary=2)
    firmware.exchange(db, "kk-a", report("0.3.0", "0.3.0", "confirmed"))
    assert firmware.exchange(db, "kk-b", report("0.2.0", "0.3.0", "rolled-back", "cannot start: boom")) is None
    rows = {r["device"]: r for r in firmware.status(db)}
    assert rows["kk-a"]["state"] == "confirmed"
    assert rows["kk-b"]["state"] == "rolled-back" and rows["kk-b"]["error"] == "cannot start: boom"
    assert rows["kk-c"]["state"] == "halted" and "kk-b rolled back: cannot start: boom" in rows["kk-c"]["error"]
    assert firmware.exchange(db, "kk-c", report("0.2.0")) is None
    assert firmware.progress(db)["states"] == {"confirmed": 1, "rolled-back": 1, "halted": 1}
    # A new rollout (say, of a fixed release) takes the boards over again.
    firmware.rollout(db, "0.3.0", ["kk-c"])
    assert firmware.exchange(db, "kk-c", report("0.2.0"))["version"] == "0.3.0"
