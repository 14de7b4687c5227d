"""Serving for a test, written once: any aiohttp app (the agent's, a stand-in platform) in this process on
127.0.0.1 (`serve`), the installed CLI (`AIRWATT`) and a free port. `airwatt serve` in a process of its own is
agent/bench/serve.py's `start_agent` (the benchmarks start it the same way)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from airwatt.emulator.real_servers import free_port  # noqa: F401  (the tests import it from here)

AIRWATT = str(Path(sys.executable).with_name("airwatt"))  # the CLI installed beside this python


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve an app on 127.0.0.1 (a free port); yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield "http://127.0.0.1:%d" % site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
