"""A real agent app on 127.0.0.1 over a real SQLite store filled with a known day of readings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from airwatt.agent import store, sync
from airwatt.agent.app import make_app
from airwatt.agent.config import Config
from pages_fixture import TOKEN, fill
from serving import serve


@pytest.fixture
async def agent(tmp_path):
    """(base URL, data dir, facts) of a running agent with the pages, on 127.0.0.1."""
    data_dir = tmp_path / "data"
    now = float(int(time.time()))
    db = store.open_db(data_dir)
    facts = fill(db, now)
    db.close()
    app = make_app(data_dir, Config(operator_token=TOKEN))
    if sync.SYNC_NOW not in app:  # the sync worker's keys (no platform url: no worker task)
        sync.setup_sync(app, data_dir, Config().platform)
    facts["app"] = app
    async with serve(app) as base:
        yield base, data_dir, facts


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: $AIRWATT_SCREENSHOTS if set (to look at them), else the test's tmp dir."""
    path = Path(os.environ.get("AIRWATT_SCREENSHOTS") or tmp_path / "shots")
    path.mkdir(parents=True, exist_ok=True)
    return path
