"""Fixtures for the agent's ingest, store and CLI tests: real SQLite files, real HTTP on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from airwatt.agent import store
from airwatt.agent.app import make_app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def devices(data_dir: Path) -> dict[str, bytes]:
    """Two registered devices and their keys."""
    db = store.open_db(data_dir)
    keys = {
        "dev-1": bytes.fromhex(
            store.add_device(db, "dev-1", name="Hall meter", site="City Hall", lat=16.43, lon=102.83)
        ),
        "dev-2": bytes.fromhex(store.add_device(db, "dev-2", site="Library", sensors=["pm", "co2"])),
    }
    db.close()
    return keys


@pytest.fixture
async def client(data_dir: Path, devices: dict[str, bytes]):
    """An aiohttp test client on a real server on 127.0.0.1 running the agent's app."""
    app = make_app(data_dir)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c
