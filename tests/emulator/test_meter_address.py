"""`airwatt meter address` against emulated boards (the MicroPython VM behind a pty) with byte-exact PZEM-004T
meters on their bus: it sets and reads back the address of the only meter, and refuses when several answer."""

from __future__ import annotations

import subprocess

from airwatt.emulator.esp32 import EmulatedBoard, meters_wiring
from serving import AIRWATT



def address(board: EmulatedBoard, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AIRWATT, "meter", "address", "--port", board.port, *args], capture_output=True, text=True,
                          timeout=120)


def test_sets_and_reads_back_the_address_of_the_only_meter(tmp_path):
    with EmulatedBoard(tmp_path / "flash.bin", config=meters_wiring(1)) as board:
        done = address(board, "--from", "248", "--to", "2")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "meter address 1 -> 2: read back 2 from the new address" in done.stdout
        again = address(board, "--to", "2")  # --from defaults to the general address
        assert again.returncode == 0 and "already has address 2" in again.stdout, again.stdout + again.stderr
        moved = address(board, "--from", "2", "--to", "5")
        assert moved.returncode == 0 and "2 -> 5" in moved.stdout, moved.stdout + moved.stderr
        gone = address(board, "--from", "2", "--to", "6")  # nobody at 2 any more
        assert gone.returncode == 2 and "no meter answered on address 2" in gone.stderr
        assert "Traceback" not in gone.stderr and len(gone.stderr.strip().splitlines()) == 1


def test_refuses_when_more_than_one_meter_answers_the_general_address(tmp_path):
    with EmulatedBoard(tmp_path / "flash.bin", config=meters_wiring(3)) as board:
        refused = address(board, "--from", "248", "--to", "7")
        assert refused.returncode == 2
        assert "more than one meter answers on the general address" in refused.stderr, refused.stderr
        assert "nothing was changed" in refused.stderr
        # nothing changed: the three still answer at 1, 2, 3, and 2 is taken
        taken = address(board, "--from", "1", "--to", "2")
        assert taken.returncode == 2 and "already answers on address 2" in taken.stderr, taken.stderr
        ok = address(board, "--from", "3", "--to", "9")
        assert ok.returncode == 0 and "3 -> 9" in ok.stdout, ok.stdout + ok.stderr


def test_bad_addresses_are_refused_before_the_board_is_touched(tmp_path):
    out = subprocess.run([AIRWATT, "meter", "address", "--port", str(tmp_path / "nothing"), "--to", "248"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--to is the meter's new address: 1..247" in out.stderr
    out = subprocess.run([AIRWATT, "meter", "address", "--port", str(tmp_path / "nothing"), "--to", "3"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no board at" in out.stderr
