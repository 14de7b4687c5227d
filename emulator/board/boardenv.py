# Start-up of an emulated ESP32 board (the MicroPython VM's main script; emulator/esp32.py runs it).
# Like the ESP32 port's main.c: mount the LittleFS flash at "/" (formatting it and writing the stock boot.py on
# first start), run boot.py, then main.py unless the soft reset came from the raw REPL, then the REPL on
# stdin/stdout with MicroPython's own protocol (shared/runtime/pyexec.c): friendly REPL with line editing and
# paste mode, raw REPL (Ctrl-A), raw-paste with its flow-control window (Ctrl-E 'A' Ctrl-A), soft reset (Ctrl-D on
# an empty line, or sys.exit()) which prints "MPY: soft reboot" and ends the VM so the bridge boots a fresh one.
# Ctrl-C while code runs arrives as SIGINT from the bridge (the VM raises KeyboardInterrupt); while the REPL
# waits for input it arrives as the byte 0x03. The bridge learns which through boardstate.ctl("S B"/"S I").
import sys
import os
import gc
import builtins

import boardstate as bs

# Everything the board needs from the host must be imported before the flash hides the host's files.
import time
import machine  # noqa: F401
import network  # noqa: F401
import socket  # noqa: F401
import sensors  # noqa: F401
import flashdev
import io
import json  # noqa: F401
import select  # noqa: F401
import errno  # noqa: F401
import hashlib  # noqa: F401
import binascii  # noqa: F401
import struct  # noqa: F401

EMU_DIR = sys.path[0]
BANNER = b"MicroPython v1.29.0 on 2026-07-05; Generic ESP32 module with ESP32\r\nType \"help()\" for more information.\r\n"
STOCK_BOOT = (
    "# This file is executed on every boot (including wake-boot from deepsleep)\n"
    "#import esp\n#esp.osdebug(None)\n#import webrepl\n#webrepl.start()\n"
)
FLASH_BLOCKS = 512  # 2 MiB "vfs" partition of a 4 MiB ESP32 module, 4 KiB sectors

_write = sys.stdout.buffer.write
_stdin = sys.stdin.buffer


def _cooked_print(*args, sep=" ", end="\n", file=None):
    # The ESP32's console turns every LF that print() sends into CRLF (mp_hal_stdout_tx_strn_cooked), while
    # sys.stdout.buffer stays raw (mpremote's mount protocol relies on it). Files get exactly what was printed.
    if file is not None and file is not sys.stdout and file is not sys.stderr:
        return _raw_print(*args, sep=sep, end=end, file=file)
    if sep is None:
        sep = " "
    if end is None:
        end = "\n"
    text = sep.join([a if isinstance(a, str) else str(a) for a in args]) + end
    _write(text.replace("\n", "\r\n").encode())


_raw_print = builtins.print
builtins.print = _cooked_print

import micropython as _mp  # noqa: E402


class _Micropython:
    """The `micropython` module as user code sees it: kbd_intr() also tells the bridge whether 0x03 from the host
    is Ctrl-C (SIGINT) or data (mpremote mount turns it off while it moves file bytes over the serial line)."""


_kbd = [3]


def kbd_intr(c):
    _mp.kbd_intr(c)
    if _kbd[0] != c:
        _kbd[0] = c
        bs.ctl("K %d" % c)


_upy = _Micropython()
for _name in dir(_mp):
    if not _name.startswith("__"):
        setattr(_upy, _name, getattr(_mp, _name))
_upy.kbd_intr = kbd_intr
sys.modules["micropython"] = _upy
_G = {"__name__": "__main__"}
_state = [None]


def _say(state):
    if _state[0] != state:
        _state[0] = state
        bs.ctl("S " + state)


def rx():
    _say("I")
    b = _stdin.read(1)
    if not b:
        raise SystemExit(0)  # the bridge closed the serial line: the board is switched off
    return b[0]


def mount_flash():
    path = os.getenv("AIRWATT_BOARD_FLASH") or "/tmp/airwatt-board-flash.bin"
    dev = flashdev.FlashDev(path, 4096, int(os.getenv("AIRWATT_BOARD_FLASH_BLOCKS") or FLASH_BLOCKS))
    fresh = dev.fresh
    try:
        vfs = os.VfsLfs2(dev)
    except OSError:
        fresh = True
    if fresh:
        _write(b"Performing initial setup\r\n")  # what the ESP32 port's inisetup prints
        os.VfsLfs2.mkfs(dev)
        vfs = os.VfsLfs2(dev)
    os.umount("/")
    os.mount(vfs, "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    if fresh:
        with open("boot.py", "w") as f:
            f.write(STOCK_BOOT)


def _print_exc(e):
    # The traceback as the board prints it: frames of the emulator's own modules are C code on a real ESP32.
    buf = io.StringIO()
    sys.print_exception(e, buf)
    for line in buf.getvalue().split("\n"):
        if line and EMU_DIR not in line and "boardenv.py" not in line:
            _write(line.encode() + b"\r\n")


def execute(src, filename, mode):
    """Run code as the board's REPL does; returns the exception it ended with, or None."""
    try:
        kbd_intr(3)  # pyexec enables Ctrl-C for every execution
        _say("B")
        if not isinstance(src, str):
            src = bytes(src).decode()
        if mode == "single":
            try:
                code = compile(src, filename, "eval")
            except SyntaxError:
                code = None
            if code is not None:  # an expression: the REPL shows its value (cooked, like print)
                value = eval(code, _G)
                _say("I")
                if value is not None:
                    _cooked_print(repr(value))
                return None
        exec(compile(src, filename, mode), _G)
        _say("I")
        return None
    except BaseException as e:  # noqa: B036 - KeyboardInterrupt and SystemExit are reported like on a board
        # The code is over: from now on a Ctrl-C from the host is a byte for the REPL, not a SIGINT. Said before
        # any output the host could react to, so the bridge knows it before it sees the host's next keys.
        _say("I")
        return e


def soft_reset(raw):
    _G.clear()
    gc.collect()  # files the code left open are closed (and flushed) by their finalisers, as on soft reset
    _write(b"MPY: soft reboot\r\n")
    bs.ctl("X %d soft %s" % (bs.EXIT_SOFT, "raw" if raw else "friendly"))
    raise SystemExit(bs.EXIT_SOFT)


def run_file(name):
    """Run boot.py or main.py if present; True unless it raised."""
    try:
        os.stat(name)
    except OSError:
        return True
    with open(name) as f:
        src = f.read()
    e = execute(src, name, "exec")
    if e is None:
        return True
    if isinstance(e, SystemExit):
        soft_reset(False)
    _print_exc(e)
    return False


# ---- friendly REPL -------------------------------------------------------------------------------------------

_KEYWORDS = ("if", "while", "for", "try", "with", "def", "class", "async")


def continue_with_input(text):
    """py/repl.c mp_repl_continue_with_input: does the REPL need another line?"""
    if not text:
        return False
    first = text.split("\n", 1)[0]
    word = first.split(None, 1)[0] if first.split() else ""
    for k in _KEYWORDS:
        if word == k or word.startswith(k + ":") or word.startswith(k + "("):
            compound = True
            break
    else:
        compound = first.startswith("@")
    depth = 0
    quote = None
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith('"""', i) or text.startswith("'''", i):
            quote = text[i : i + 3]
            i += 2
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "\n" and quote in ("'", '"'):
            quote = None
        i += 1
    if quote in ('"""', "'''"):
        return True
    if depth > 0:
        return True
    if text.endswith("\\"):
        return True
    return compound and not text.endswith("\n")


def readline(prompt):
    """shared/readline: returns the line (str), or a control code (int) for Ctrl-A/B/C/D/E."""
    _write(prompt)
    line = bytearray()
    last = 0
    while True:
        c = rx()
        if c == 3:
            return 3
        if c in (1, 2, 4, 5) and not line:
            return c
        if c == 13 or (c == 10 and last != 13):
            _write(b"\r\n")
            return line.decode()
        last = c
        if c in (8, 127):
            if line:
                line = line[:-1]  # MicroPython's bytearray has no pop()
                _write(b"\x08 \x08")
        elif c == 27:  # escape sequence (arrow keys): consume and ignore
            c = rx()
            if c in (91, 79):
                while True:
                    c = rx()
                    if 64 <= c <= 126:
                        break
        elif c >= 32 or c == 9:
            line.append(c)
            _write(bytes((c,)))


def paste_mode():
    _write(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    buf = bytearray()
    while True:
        c = rx()
        if c == 3:
            _write(b"\r\n")
            return None
        if c == 4:
            _write(b"\r\n")
            return buf.decode()
        buf.append(c)
        if c == 13:
            _write(b"\r\n=== ")
        else:
            _write(bytes((c,)))


def friendly():
    """The friendly REPL; returns when the host asks for the raw REPL."""
    _write(BANNER)
    while True:
        try:
            r = readline(b">>> ")
            mode = "single"
            if r == 1:
                _write(b"\r\n")
                return
            if r == 2:
                _write(b"\r\n" + BANNER)
                continue
            if r == 3:
                _write(b"\r\n")
                continue
            if r == 4:
                _write(b"\r\n")
                soft_reset(False)
            if r == 5:
                r = paste_mode()
                if r is None:
                    continue
                mode = "exec"
            elif not r.strip():
                continue
            else:
                while continue_with_input(r):
                    more = readline(b"... ")
                    if more == 3:
                        _write(b"\r\n")
                        r = None
                        break
                    if more == 4:
                        break
                    if isinstance(more, int):
                        continue
                    r += "\n" + more
                if r is None:
                    continue
            e = execute(r, "<stdin>", mode)
            if isinstance(e, SystemExit):
                soft_reset(False)
            if e is not None:
                _print_exc(e)
        except KeyboardInterrupt:
            _write(b"\r\n")  # a Ctrl-C that raced the end of the code


# ---- raw REPL ------------------------------------------------------------------------------------------------

def _run_framed(src):
    e = execute(src, "<stdin>", "exec")
    _write(b"\x04")
    if isinstance(e, SystemExit):
        _write(b"\x04")
        soft_reset(True)
    if e is not None:
        _print_exc(e)
    _write(b"\x04")


def raw_paste(cmd):
    if cmd != 65:  # 'A'
        _write(b"R\x00")
        return
    _write(b"R\x01")
    window = 128  # half of MICROPY_REPL_STDIN_BUFFER_MAX (256)
    _write(bytes((window & 0xFF, window >> 8, 1)))
    remain = window
    buf = bytearray()
    while True:
        c = rx()
        if c == 3 or c == 4:
            _write(b"\x04")  # end of data acknowledged
            if c == 3:
                _write(b"\x04")
                _print_exc(KeyboardInterrupt())
                _write(b"\x04")
                return
            break
        buf.append(c)
        remain -= 1
        if remain == 0:
            _write(b"\x01")
            remain = window
    _run_framed(buf)


def raw():
    """The raw REPL; returns when the host asks for the friendly REPL."""
    _write(b"raw REPL; CTRL-B to exit\r\n")
    line = bytearray()
    _write(b">")
    while True:
        try:
            c = rx()
            if c == 1:
                if len(line) == 2 and line[0] == 5:
                    raw_paste(line[1])
                    line = bytearray()
                    _write(b">")
                    continue
                line = bytearray()
                _write(b"raw REPL; CTRL-B to exit\r\n>")
            elif c == 2:
                _write(b"\r\n")
                return
            elif c == 3:
                line = bytearray()
            elif c == 4:
                _write(b"OK")
                if not line:
                    _write(b"\r\n")
                    soft_reset(True)
                src = line
                line = bytearray()
                _run_framed(src)
                _write(b">")
            else:
                line.append(c)
        except KeyboardInterrupt:
            line = bytearray()


def main():
    mount_flash()
    raw_mode = os.getenv("AIRWATT_BOARD_MODE") == "raw"
    bs.booted = True
    network._used[0] = True  # on the board, sockets only work over the emulated Wi-Fi
    ok = run_file("boot.py")
    if ok and not raw_mode:
        run_file("main.py")
    while True:
        if raw_mode:
            raw()
        else:
            friendly()
        raw_mode = not raw_mode


main()
