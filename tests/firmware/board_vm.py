"""CPython side: run the MicroPython scenario functions of a tests/firmware/board_*.py file, one VM process each."""
from __future__ import annotations

from pathlib import Path

from micropython_plugin import run_micropython

HERE = Path(__file__).resolve().parent
RUNNER = HERE.parent / "vm" / "runner.py"


def scenarios(script: str) -> list[str]:
    """The test_* functions of a board script, listed by the VM itself (so a script that fails to import fails)."""
    result = run_micropython([str(RUNNER), "list", str(HERE / script)], extra_paths=(HERE,))
    assert result.returncode == 0, result.stdout + result.stderr
    return [line[5:] for line in result.stdout.splitlines() if line.startswith("TEST ")]


def run_scenario(script: str, name: str, heapsize: str | None = None) -> str:
    result = run_micropython([str(RUNNER), "run", str(HERE / script), name], extra_paths=(HERE,), heapsize=heapsize)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and result.stdout.rstrip().endswith("PASS"), "MicroPython says:\n" + out
    return out
