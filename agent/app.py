"""The site agent's aiohttp application: ingest, health, metrics, and the hooks for sync and pages.

`make_app(data_dir, config)` builds it and hands each part (alerts, sync, pages) what it needs; `airwatt serve`
runs it. The app keys below are for this module's handlers and for tests (`app[DB_KEY]` is a sqlite-utils
Database on the event loop's thread: keep work on it short, or open your own connection with
`store.open_db(data_dir)` in a worker thread).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from pathlib import Path

import sqlite_utils
from aiohttp import web

from airwatt.protocol import fields

from . import alerts, firmware, metrics, rollup, server, store
from .adapters import KINDS
from .commands import add_data_dir
from .config import Config, ConfigError, load_config
from .ingest import Ingest, make_handler
from .sync import setup_sync
from .web import setup_pages

DB_KEY = web.AppKey("airwatt_db", sqlite_utils.Database)
CONFIG_KEY = web.AppKey("airwatt_config", Config)
DATA_DIR_KEY = web.AppKey("airwatt_data_dir", Path)
INGEST_KEY = web.AppKey("airwatt_ingest", Ingest)


async def healthz(request: web.Request) -> web.Response:
    """200 {"ok": true} when the database answers a query and the ingest writer runs; 503 otherwise."""
    db_file = store.db_path(request.app[DATA_DIR_KEY])

    def probe() -> int:
        conn = sqlite3.connect("file:%s?mode=ro" % db_file, uri=True, timeout=2)
        try:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        finally:
            conn.close()

    try:
        version = await asyncio.get_running_loop().run_in_executor(None, probe)
    except (sqlite3.Error, TypeError) as err:
        return web.json_response({"ok": False, "db": "unreachable: %s" % err}, status=503)
    if not request.app[INGEST_KEY].writer.alive():
        return web.json_response({"ok": False, "db": "ok", "writer": "down"}, status=503)
    return web.json_response({"ok": True, "db": "ok", "schema_version": version, "protocol": fields.VERSION})


async def metrics_handler(request: web.Request) -> web.Response:
    text = await metrics.metrics_text(request.app[INGEST_KEY].stats, store.db_path(request.app[DATA_DIR_KEY]))
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def _start_writer(app: web.Application) -> None:
    await app[INGEST_KEY].writer.start()


async def _stop(app: web.Application) -> None:
    await app[INGEST_KEY].writer.stop()  # finishes queued batches: nothing acknowledged is dropped
    app[DB_KEY].close()


def make_app(data_dir: str | Path, config: Config | None = None) -> web.Application:
    """The agent's aiohttp app for a data dir (created and migrated if needed)."""
    data_dir = Path(data_dir)
    config = config or Config()
    db = store.open_db(data_dir)
    db_file = store.db_path(data_dir)
    # Bodies are read and size-checked by the ingest handler itself; this only caps request.read() elsewhere.
    app = web.Application(client_max_size=fields.MAX_BODY_BYTES + 1024)
    app[DATA_DIR_KEY] = data_dir
    app[CONFIG_KEY] = config
    app[DB_KEY] = db
    app[INGEST_KEY] = Ingest(db, db_file, config.body_timeout_s)
    app.router.add_post("/v1/batches", make_handler(INGEST_KEY))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    firmware.setup_firmware(app, DB_KEY, INGEST_KEY)  # the boards fetch offered releases here
    app.on_startup.append(_start_writer)
    roller = rollup.Roller(str(db_file), rollup.EVERY_S, keep_synced_s=config.store.keep_synced_days * 86400,
                           prune_every_s=config.store.prune_every_s)
    app.on_startup.append(roller.start)
    app.on_cleanup.append(roller.stop)
    # Each part gets what it needs here; none reads the app's keys to find its inputs. Their cleanups run
    # before _stop below, so the database is still open for them.
    alerts.setup_alerts(app, str(db_file), config.alerts, config.platform.url is not None)
    setup_sync(app, data_dir, config.platform)  # agent/sync.py: the sync worker to the city platform
    setup_pages(app, db, config, data_dir)  # agent/web/: the operators' pages
    app.on_cleanup.append(_stop)
    return app


# -- airwatt serve -------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    try:
        config = load_config(
            args.data_dir,
            {
                "host": args.host,
                "port": args.port,
                "platform.url": args.platform_url,
                "platform.kind": args.platform_kind,
            },
        )
    except ConfigError as err:
        print("airwatt: %s" % err, file=sys.stderr)
        return 2
    asyncio.run(serve(args.data_dir, config))
    return 0


async def serve(data_dir: str | Path, config: Config) -> None:
    """Run the agent until SIGINT/SIGTERM; prints one line with the URL it listens on (port 0 = any free)."""
    app = make_app(data_dir, config)
    runner = web.AppRunner(app, shutdown_timeout=5, **server.runner_options(config.idle_timeout_s))
    await runner.setup()
    listener, host, port = await server.start(runner, config.host, config.port)
    store.tune_gc()
    print("airwatt: listening on http://%s:%d (data dir %s)" % (host, port, data_dir), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`airwatt serve`, on the `airwatt` command's subparsers."""
    serve_p = subparsers.add_parser("serve", help="run the site agent (ingest, sync, pages)")
    add_data_dir(serve_p)
    serve_p.add_argument("--host", help="listen address (default from airwatt.toml, else 127.0.0.1)")
    serve_p.add_argument("--port", type=int, help="listen port (default from airwatt.toml, else 8080; 0: any)")
    serve_p.add_argument("--platform-url", help="city platform base URL (overrides airwatt.toml)")
    serve_p.add_argument("--platform-kind", choices=KINDS, help="city platform API")
    serve_p.set_defaults(func=_serve)
