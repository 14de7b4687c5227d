"""`airwatt demo`'s own verdicts, quick ones (the whole demo from a fresh clone: tests/e2e/test_quickstart.py)."""

from __future__ import annotations

import subprocess

from airwatt.agent import demo, store
from serving import AIRWATT, free_port



def test_a_demo_in_which_a_board_delivered_nothing_exits_1_and_says_why(tmp_path):
    port = free_port()
    out = subprocess.run([AIRWATT, "demo", "--data-dir", "d", "--duration", "0.5", "--port", str(port)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out
    assert out.stdout.splitlines()[0] == "dashboard: http://127.0.0.1:%d/   (Ctrl-C stops the demo)" % port
    assert "airwatt demo: city-hall-01 never delivered a reading: " in out.stdout, out.stdout
    assert (tmp_path / "d" / "airwatt.db").exists()  # the relative --data-dir is the caller's


def test_the_demo_refuses_a_store_with_devices_it_did_not_make(tmp_path):
    db = store.open_db(tmp_path)
    store.add_device(db, "kk-city-hall-01")
    db.close()
    out = subprocess.run([AIRWATT, "demo", "--data-dir", str(tmp_path), "--duration", "1", "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "holds devices the demo did not make (kk-city-hall-01)" in out.stderr, out


def test_every_board_is_a_building_of_its_own():
    configs = [demo.board_config(i, 10) for i in range(5)]
    sites = {demo._building(i)["site"] for i in range(5)}
    assert len(sites) == 5
    for key in ("pzem", "pms", "scd4x"):
        assert len({str(c["sensors"][key]) for c in configs}) == 5  # own loads, air, occupancy, noise
    assert demo._building(5)["id"] == "city-hall-02" and demo._building(5)["site"] == demo._building(0)["site"]


async def test_the_demo_reports_a_board_that_keeps_rebooting_and_fails(tmp_path):
    import asyncio

    from airwatt.emulator.esp32 import EmulatedBoard

    said: list[str] = []
    db = store.open_db(tmp_path)
    db.close()
    progress = demo._Progress(["city-hall-01"], said.append)
    board = EmulatedBoard(tmp_path / "b.flash", heap="2k")  # too little heap to boot: it dies at every boot
    boards = {"city-hall-01": board.start()}
    try:
        watch = asyncio.create_task(demo._watch(progress, boards, store.db_path(tmp_path)))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if progress.crash_loops:
                break
        watch.cancel()
    finally:
        board.stop()
    report = "\n".join(said)
    assert "airwatt demo: board city-hall-01 keeps rebooting: 3 resets within" in report, report
    assert "| MemoryError" in report  # its last lines, without the ROM banner
    assert progress.summary(boards) == 1
    assert "airwatt demo: city-hall-01 never delivered a reading: it kept rebooting (see above)" in said[-1]
