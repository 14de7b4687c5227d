"""One SQLite connection used from one worker thread of its own: the roller, the alert evaluator and the pages'
reader each keep one, so their queries never stall the event loop and the connection stays on its thread."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class DbThread:
    """`call(fn, *args)` runs fn on the thread; `connection()` (on the thread) opens the connection with `connect`
    the first time; `close(task)` cancels the caller's background task, then closes the connection there."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._open = connect
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = self._open()
        return self.conn

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def close(self, task: asyncio.Task | None = None) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        def shut() -> None:
            if self.conn is not None:
                self.conn.close()

        await self.call(shut)
        self.pool.shutdown(wait=True)
