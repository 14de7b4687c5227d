"""Run the agent as its own process (`airwatt serve` on 127.0.0.1) for the benchmarks and the tests: one way to
start one, learn its URL and stop it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def start_agent(data_dir: Path, extra: list[str] | None = None,
                preexec_fn: Any = None) -> tuple[subprocess.Popen, str]:
    """Run `airwatt serve` on 127.0.0.1, port 0; returns the process and its base URL once it listens.
    Its log goes to serve.log in the data dir (a pipe nobody reads could fill up and stall the agent)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    log_path = Path(data_dir) / "serve.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airwatt.agent.cli", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
             "--port", "0", *(extra or [])],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            preexec_fn=preexec_fn,  # e.g. resource limits for the agent process alone
        )
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        proc.wait()
        raise RuntimeError("agent did not start: %r\n%s" % (line, log_path.read_text(errors="replace")[-4000:]))
    # Keep draining stdout so that nothing the agent prints later can fill the pipe and stall it.
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
    return proc, "http://127.0.0.1:%s" % match.group(1)


def stop_agent(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
