"""What the HIL tests share besides fixtures (conftest.py names clash across test folders, so not there)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

AIRWATT = str(Path(sys.executable).with_name("airwatt"))


def flash(board, agent, device: str, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`airwatt flash` as a technician runs it."""
    cmd = [AIRWATT, "flash", "--port", board.port, "--device", device, "--wifi", "hil-test:hil-pass",
           "--agent", agent.url, "--data-dir", str(agent.data_dir), "--intervals", "energy=5,pm=5,co2=5",
           "--upload-s", "3", "--wdt-s", "8", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
