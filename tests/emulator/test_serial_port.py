"""The emulated board behind its pty, driven by UNMODIFIED mpremote subprocesses as a technician would, plus the
resets a board goes through: soft reset, machine.reset, watchdog, power cut, deep sleep, and Ctrl-C."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airwatt.emulator.esp32 import EmulatedBoard

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def hard_reset(board: EmulatedBoard) -> None:
    """`mpremote reset`, then wait until the board is back at its prompt (a command sent sooner could interrupt
    the reset with its Ctrl-C, as on hardware)."""
    start, hard = board.log_offset(), board.resets["hard"]
    mp(board, "reset")
    board.wait_for("rst:0xc (SW_CPU_RESET)", timeout=20, since=start)
    board.wait_for(">>> ", timeout=20, since=start)
    assert board.resets["hard"] == hard + 1


def mp(board: EmulatedBoard, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([MPREMOTE, "connect", board.port, *args], capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, "mpremote %s failed:\n%s%s\nboard printed:\n%s" % (
            " ".join(args), result.stdout, result.stderr, board.output()[-2000:])
    return result


@contextlib.contextmanager
def running(*args, **kwargs):
    """A started board at its first prompt; at the end, the VM must never have crashed (a bug in the emulator)."""
    with EmulatedBoard(*args, **kwargs) as b:
        b.wait_for(">>> ", timeout=20)
        yield b
        assert b.resets["crash"] == 0, "the emulated board's VM crashed:\n" + b.output()[-3000:]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    with running(tmp_path_factory.mktemp("flash") / "flash.bin") as b:
        yield b


def test_fresh_board_has_the_stock_boot_py_and_fs_commands_work(board, tmp_path):
    assert "boot.py" in mp(board, "fs", "ls").stdout
    local = tmp_path / "data.bin"
    payload = bytes(range(256)) * 9 + b"tail\n"
    local.write_bytes(payload)
    mp(board, "fs", "mkdir", "lib")
    mp(board, "fs", "cp", str(local), ":lib/data.bin")
    listing = mp(board, "fs", "ls", "lib").stdout
    assert "%d data.bin" % len(payload) in listing, listing
    out = mp(board, "fs", "sha256sum", "lib/data.bin").stdout
    assert hashlib.sha256(payload).hexdigest() in out
    back = tmp_path / "back.bin"
    mp(board, "fs", "cp", ":lib/data.bin", str(back))
    assert back.read_bytes() == payload
    text = tmp_path / "note.txt"
    text.write_text("line one\nline two\n")
    mp(board, "fs", "cp", str(text), ":note.txt")
    assert mp(board, "fs", "cat", "note.txt").stdout.replace("\r\n", "\n").endswith("line one\nline two\n")
    assert mp(board, "fs", "rmdir", "lib", check=False).returncode != 0  # not empty
    mp(board, "fs", "rm", "lib/data.bin")
    mp(board, "fs", "rmdir", "lib")
    mp(board, "fs", "rm", "note.txt")
    listing = mp(board, "fs", "ls").stdout
    assert "lib" not in listing and "note.txt" not in listing


def test_exec_eval_run_and_errors(board, tmp_path):
    assert mp(board, "exec", "print(6 * 7)").stdout.strip() == "42"
    assert mp(board, "eval", "sum(range(10))").stdout.strip() == "45"
    assert mp(board, "exec", "import sys; print(sys.path)").stdout.strip() == "['', '.frozen', '/lib']"
    # frozen modules (asyncio) import from the board as on an ESP32, the host's files do not
    assert "asyncio" in mp(board, "exec", "import asyncio; print(asyncio.__name__)").stdout
    assert "ImportError" in mp(board, "exec", "import pzem004t", check=False).stdout
    script = tmp_path / "script.py"
    script.write_text("import os\nfor i in range(3):\n    print('row', i)\nprint(os.getcwd())\n" + "# pad\n" * 80)
    assert mp(board, "run", str(script)).stdout.replace("\r\n", "\n") == "row 0\nrow 1\nrow 2\n/\n"
    err = mp(board, "exec", "1/0", check=False)
    assert err.returncode != 0 and "ZeroDivisionError" in err.stdout + err.stderr
    assert "boardenv" not in err.stdout + err.stderr  # tracebacks show no emulator frames


def test_soft_reset_reboots_and_reruns_boot_py_and_resume_does_not(board, tmp_path):
    boot = tmp_path / "boot.py"
    boot.write_text("print('BOOT RAN')\nbooted = 1\n")
    mp(board, "fs", "cp", str(boot), ":boot.py")
    pid = board.vm_pid
    start = board.log_offset()
    mp(board, "soft-reset")
    out = board.output(start)
    assert "MPY: soft reboot" in out and "BOOT RAN" in out
    assert board.vm_pid != pid  # a fresh VM: the heap and modules are new
    # `resume` skips the soft reset: state set by one mpremote call is still there for the next
    mp(board, "exec", "marker = 12345")
    assert mp(board, "resume", "exec", "print(marker)").stdout.strip() == "12345"
    # the default (soft reset on connect) clears it
    cleared = mp(board, "exec", "print(marker)", check=False)
    assert "NameError" in cleared.stdout + cleared.stderr
    # Ctrl-D in the friendly REPL also soft-reboots and prints the banner after boot.py
    start = board.log_offset()
    fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"\r\x04")  # mpremote left the board in the friendly REPL
        out = board.wait_for("MPY: soft reboot", timeout=10, since=start)
        board.wait_for("Type \"help()\" for more information.", timeout=10, since=start + out.index("MPY"))
    finally:
        os.close(fd)
    out = board.output(start)
    assert out.index("MPY: soft reboot") < out.index("BOOT RAN") < out.index("MicroPython v1.29.0")
    mp(board, "fs", "rm", "boot.py")


def test_reset_runs_main_py_and_ctrl_c_interrupts_it(board, tmp_path):
    main = tmp_path / "main.py"
    main.write_text("import time, machine\nprint('MAIN cause', machine.reset_cause())\n"
                    "while True:\n    time.sleep_ms(50)\n")
    mp(board, "fs", "cp", str(main), ":main.py")
    start = board.log_offset()
    hard = board.resets["hard"]
    mp(board, "reset")
    board.wait_for("MAIN cause 2", timeout=10, since=start)  # HARD_RESET
    assert board.resets["hard"] == hard + 1
    assert "rst:0xc (SW_CPU_RESET)" in board.output(start)
    # main.py loops forever; mpremote's Ctrl-C (SIGINT to the VM) stops it and the command runs
    assert mp(board, "exec", "print('got in')").stdout.strip() == "got in"
    assert "KeyboardInterrupt" in board.output(start)
    mp(board, "fs", "rm", "main.py")


def test_ctrl_c_interrupts_a_running_exec(board):
    start = board.log_offset()
    proc = subprocess.Popen([MPREMOTE, "connect", board.port, "exec", "print('LOOPING')\nn = 0\nwhile True:\n    n += 1\n"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    board.wait_for("LOOPING", timeout=20, since=start)
    time.sleep(0.3)
    assert proc.poll() is None  # still looping
    proc.kill()
    proc.wait()
    fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"\x03")
        board.wait_for("KeyboardInterrupt", timeout=10, since=start)
    finally:
        os.close(fd)
    # the loop really ran on the board and the board is usable again
    assert mp(board, "exec", "print('alive')").stdout.strip() == "alive"


def test_flash_survives_stop_and_a_new_board_on_the_same_image(tmp_path):
    flash = tmp_path / "flash.bin"
    data = tmp_path / "keep.txt"
    data.write_text("kept across power-off\n")
    with running(flash) as b:
        mp(b, "fs", "cp", str(data), ":keep.txt")
    assert flash.stat().st_size == 2 * 1024 * 1024
    with running(flash) as b:
        assert "kept across power-off" in mp(b, "fs", "cat", "keep.txt").stdout


def test_watchdog_resets_a_hung_board(tmp_path):
    with running(tmp_path / "flash.bin") as b:
        main = tmp_path / "main.py"
        main.write_text(
            "import machine, time\nprint('MAIN cause', machine.reset_cause())\n"
            "if machine.reset_cause() != machine.WDT_RESET:\n"
            "    wdt = machine.WDT(timeout=1000)\n"
            "    u = machine.UART(2, baudrate=9600, tx=17, rx=16, timeout=100)\n"
            "    for i in range(10):\n"
            "        u.write(b'\\xf8\\x04\\x00\\x00\\x00\\x0a\\x64\\x64'); u.read(25); wdt.feed(); time.sleep_ms(100)\n"
            "    print('FED 10 TIMES')\n"
            "    while True:\n"
            "        u.any()\n"  # the 'hang' fault makes this hardware access never return
            "        wdt.feed()\n"
            "        time.sleep_ms(50)\n")
        mp(b, "fs", "cp", str(main), ":main.py")
        start = b.log_offset()
        mp(b, "reset")
        b.wait_for("FED 10 TIMES", timeout=10, since=start)
        assert b.resets["wdt"] == 0  # fed in time: no reset
        b.set_fault("hang", True)
        b.wait_for("MAIN cause 3", timeout=10, since=start)  # WDT_RESET
        out = b.output(start)
        assert "task_wdt: Task watchdog got triggered" in out and "Rebooting..." in out
        assert b.resets["wdt"] == 1 and "hang" not in b.faults  # the hang was one-shot


def test_power_cut_at_a_flash_write_restarts_the_board_and_keeps_the_filesystem(tmp_path):
    with running(tmp_path / "flash.bin") as b:
        older = tmp_path / "older.txt"
        older.write_text("written before the cut\n")
        mp(b, "fs", "cp", str(older), ":older.txt")
        mp(b, "exec", "import machine; machine.RTC().datetime((2026, 11, 22, 6, 8, 0, 0, 0))")
        b.set_fault("power_cut_at_write", 3)
        start = b.log_offset()
        # mpremote waits for an answer that never comes, as with a real board losing power under it
        proc = subprocess.Popen([MPREMOTE, "connect", b.port, "exec",
                                 "f = open('new.txt', 'w')\nfor i in range(200):\n    f.write('x' * 100)\nf.close()"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            b.wait_for("rst:0x1 (POWERON_RESET)", timeout=20, since=start)
        finally:
            proc.kill()
            proc.wait()
        assert b.resets["powercut"] == 1 and "power_cut_at_write" not in b.faults
        b.wait_for(">>> ", timeout=10, since=start)
        assert "written before the cut" in mp(b, "fs", "cat", "older.txt").stdout
        assert mp(b, "eval", "__import__('machine').reset_cause()").stdout.strip() == "1"
        # the RTC was lost with the power
        assert mp(b, "eval", "__import__('time').gmtime()[0]").stdout.strip() == "2000"


def test_rtc_survives_machine_reset_and_deepsleep_wakes_with_its_cause(tmp_path):
    with running(tmp_path / "flash.bin") as b:
        mp(b, "exec", "import machine; machine.RTC().datetime((2026, 11, 22, 6, 8, 0, 0, 0))")
        hard_reset(b)
        assert mp(b, "eval", "__import__('time').gmtime()[:3]").stdout.strip() == "(2026, 11, 22)"
        start = b.log_offset()
        mp(b, "exec", "--no-follow", "import machine; machine.deepsleep(300)")
        b.wait_for("rst:0x5 (DEEPSLEEP_RESET)", timeout=10, since=start)
        b.wait_for(">>> ", timeout=10, since=start)
        assert mp(b, "eval", "__import__('machine').reset_cause()").stdout.strip() == "4"
        assert b.resets["deepsleep"] == 1


def test_power_cycle_and_reset_button_from_the_api(tmp_path):
    with running(tmp_path / "flash.bin", config={"clock": "host"}) as b:
        # clock "host": the board starts with wall time (2000-epoch seconds of now)
        now = int(mp(b, "eval", "__import__('time').time()").stdout.strip()) + 946684800
        assert abs(now - time.time()) < 5
        start, boots = b.log_offset(), b.boots
        b.power_cycle()
        b.wait_for("rst:0x1 (POWERON_RESET)", timeout=10, since=start)
        b.wait_for(">>> ", timeout=10, since=start)
        assert b.resets["powercut"] == 1 and b.boots == boots + 1
        start = b.log_offset()
        b.press_reset()
        b.wait_for(">>> ", timeout=10, since=start)
        assert b.boots == boots + 2 and b.last_reset == "hard"
        assert mp(b, "eval", "__import__('machine').reset_cause()").stdout.strip() == "1"


def test_the_energy_meter_keeps_its_counter_across_board_resets(tmp_path):
    from airwatt.emulator.board.sensors import modbus_crc

    reset_energy = bytes([0xF8, 0x42])
    reset_energy += modbus_crc(reset_energy).to_bytes(2, "little")
    read = "import machine\nu = machine.UART(2, 9600, tx=17, rx=16, timeout=300)\n" \
           "u.write(b'\\xf8\\x04\\x00\\x00\\x00\\x0a\\x64\\x64')\nr = u.read(25)\n" \
           "print(r[13] << 24 | r[14] << 16 | r[11] << 8 | r[12])"  # energy Wh: low word first
    with running(tmp_path / "flash.bin", config={"sensors": {"pzem": {"energy_wh": 50000}}}) as b:
        assert int(mp(b, "exec", read).stdout.strip()) >= 50000
        mp(b, "exec", "import machine\nu = machine.UART(2, 9600, tx=17, rx=16, timeout=300)\n"
                      "u.write(%r)\nprint(u.read(4))" % reset_energy)
        hard_reset(b)
        # the meter (powered from the mains) kept its reset counter: it does not read 50000 again
        assert int(mp(b, "exec", read).stdout.strip()) < 100


def test_friendly_repl_echo_continuation_paste_mode_and_ctrl_c(board):
    fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        def session(keys: bytes, until: str) -> str:
            start = board.log_offset()
            os.write(fd, keys)
            return board.wait_for(until, timeout=10, since=start)

        session(b"\r", ">>> ")
        assert "6 * 7\r\n42\r\n>>> " in session(b"6 * 7\r", "42\r\n>>> ")
        out = session(b"for i in range(2):\r    print('row', i)\r\r", "row 1\r\n>>> ")
        assert "... " in out and "row 0\r\nrow 1\r\n" in out
        out = session(b"undefined_name\r", "isn't defined\r\n>>> ")
        assert "Traceback (most recent call last):" in out
        out = session(b"abc\x7f\x7f\x03", "\x08 \x08\r\n>>> ")  # typing, backspace, then Ctrl-C drops the line
        assert out == "abc\x08 \x08\x08 \x08\r\n>>> ", repr(out)
        session(b"x = 2\x7f1\r", "x = 2\x08 \x081\r\n>>> ")
        assert session(b"x\r", "\r\n>>> ") == "x\r\n1\r\n>>> "
        out = session(b"\x05", "=== ")
        assert "paste mode; Ctrl-C to cancel, Ctrl-D to finish" in out
        out = session(b"a = 20\rb = 22\rprint('sum', a + b)\x04", "sum 42\r\n>>> ")
        assert "=== b = 22" in out
        assert board.resets["crash"] == 0
    finally:
        os.close(fd)


def test_unknown_faults_are_refused():
    from airwatt.emulator.esp32 import check_faults

    check_faults({"wifi_down": True, "pms": {"corrupt": 0.2}, "power_cut_at_write": 4})
    with pytest.raises(ValueError, match="unknown fault 'wifi_off'"):
        EmulatedBoard(faults={"wifi_off": True})
    board = EmulatedBoard()
    with pytest.raises(ValueError, match="unknown pms fault 'unpluged'"):
        board.set_fault("pms", {"unpluged": True})
    with pytest.raises(ValueError, match="unknown fault"):
        board.set_faults({"hangs": True})


def test_mpremote_mount_moves_binary_bytes_with_ctrl_c_in_them(board, tmp_path):
    payload = bytes(range(256)) * 8  # 0x03 (Ctrl-C) and 0x04 among the bytes: kbd_intr(-1) makes them data
    (tmp_path / "blob.bin").write_bytes(payload)
    (tmp_path / "helper.py").write_text("def answer():\n    return 42\n")
    code = ("import hashlib, binascii, helper\nd = open('/remote/blob.bin', 'rb').read()\n"
            "print(len(d), binascii.hexlify(hashlib.sha256(d).digest()).decode(), helper.answer())")
    out = mp(board, "mount", str(tmp_path), "exec", code).stdout
    assert "%d %s 42" % (len(payload), hashlib.sha256(payload).hexdigest()) in out
    assert board.resets["crash"] == 0
