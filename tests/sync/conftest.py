"""Fixtures for the sync tests: a real store in a temp data dir, the emulated platform on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from airwatt.agent import store
from airwatt.emulator.platform import PLATFORM, start_platform
from sync_helpers import SITE, STARTED


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """Kill what a test started (an agent, a server) even when its assertion failed first."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent"


@pytest.fixture
def db(data_dir: Path):
    db = store.open_db(data_dir)
    for device, (lat, lon, site) in SITE.items():
        store.add_device(db, device, name=device, site=site, lat=lat, lon=lon)
    yield db
    db.conn.close()


@pytest.fixture
async def platform(tmp_path: Path):
    """The emulated platform in this event loop, over real HTTP on 127.0.0.1: (base URL, Platform)."""
    runner, url = await start_platform("127.0.0.1", 0, tmp_path / "platform.db")
    yield url, runner.app[PLATFORM]
    await runner.cleanup()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s
