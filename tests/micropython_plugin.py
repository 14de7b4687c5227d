"""Run marked test modules on the real MicroPython VM as well as under CPython.

A test module whose first lines hold the comment `# runs on: cpython, micropython` is collected twice: once by
pytest as usual and once here, where each of its test functions becomes an item `NAME[micropython]` that runs
in its own `micropython` process and reports the MicroPython traceback when it fails. A missing VM is an error.
Such modules import nothing CPython-only at top level; a test function that takes pytest fixtures is marked
`test_x.cpython_only = True` (MicroPython cannot inspect signatures) and runs under CPython only.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from airwatt.emulator.esp32 import find_micropython  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parent.parent
# Outside tests/ itself, so that the script folder MicroPython puts first on sys.path hides no package.
RUNNER = Path(__file__).resolve().parent / "vm" / "runner.py"
MARKER = "# runs on: cpython, micropython"
TIMEOUT_S = 120


def micropython_env(*extra_paths: Path) -> dict[str, str]:
    """Environment whose MICROPYPATH sees the frozen modules (asyncio), protocol/ and firmware/."""
    paths = [".frozen", *map(str, extra_paths), str(ROOT), str(ROOT / "firmware")]
    return {**os.environ, "MICROPYPATH": ":".join(paths)}


def run_micropython(args: list[str], *, cwd: Path | None = None, extra_paths: tuple[Path, ...] = (),
                    timeout: float = TIMEOUT_S, heapsize: str | None = None,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the VM with `args`, capturing output as text; `env` adds to its environment."""
    cmd = [find_micropython()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    return subprocess.run(cmd + args, cwd=cwd, env={**micropython_env(*extra_paths), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def case_output(result: subprocess.CompletedProcess) -> str:
    """The stdout of a VM case script (tests/firmware/*_cases.py), after checking that it exited 0 and ended
    with "OK"."""
    out = result.stdout + result.stderr
    assert result.returncode == 0 and result.stdout.rstrip().endswith("OK"), out[-3000:]
    return result.stdout


def run_micropython_shards(args: list[str], **kwargs) -> list[subprocess.CompletedProcess]:
    """Run a power-cut campaign split over one VM per core, side by side: VM k of n gets AIRWATT_SHARD=k/n and
    cuts at every n-th flash write from the (k+1)-th. The campaigns are the suite's longest tests, and each VM
    uses one core."""
    n = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda k: run_micropython(args, env={"AIRWATT_SHARD": "%d/%d" % (k, n)}, **kwargs),
                             range(n)))


class MicroPythonFailure(Exception):
    pass


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("test_"):
        with open(file_path) as f:
            head = [f.readline() for _ in range(5)]
        if any(line.strip() == MARKER for line in head):
            return MicroPythonModule.from_parent(parent, path=file_path, name=file_path.name + "::micropython")
    return None


class MicroPythonModule(pytest.File):
    def collect(self):
        result = run_micropython([str(RUNNER), "list", str(self.path)])
        if result.returncode != 0:
            raise MicroPythonFailure("could not import %s on MicroPython:\n%s%s" % (self.path, result.stdout, result.stderr))
        for line in result.stdout.splitlines():
            if line.startswith("TEST "):
                name = line[5:]
                yield MicroPythonItem.from_parent(self, name=name + "[micropython]", test=name)


class MicroPythonItem(pytest.Item):
    def __init__(self, *, test: str, **kwargs):
        super().__init__(**kwargs)
        self.test = test
        self.add_marker("micropython")

    def runtest(self):
        result = run_micropython([str(RUNNER), "run", str(self.path), self.test])
        if result.returncode != 0 or not result.stdout.rstrip().endswith("PASS"):
            raise MicroPythonFailure(result.stdout + result.stderr)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return "MicroPython says:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, "%s[micropython]" % self.test


def pytest_configure(config):
    config.addinivalue_line("markers", "micropython: runs on the MicroPython VM")
