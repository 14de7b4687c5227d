"""The agent's HTTP listener: bounded connections and time limits, so idle or slow clients cannot lock others out.

- A connection gets `idle_timeout_s` to send a request's headers (from connecting, or from the previous answer
  on a kept-alive connection); aiohttp's keep-alive timer is started at connection_made and only fires while
  the handler waits for a complete request, so one setting bounds both.
- A request body gets `body_timeout_s` to arrive (`read_limited` below; the ingest and the pages' forms use it).
- At most `connection_limit()` connections are open, below RLIMIT_NOFILE so accept() keeps working: a new
  connection beyond it closes the one that has been quiet longest (an idle flood pushes out only itself).
  Should accept() still run out of descriptors (the limit lowered later, descriptors held elsewhere), the cap
  is taken from the limit again and the quietest connections (SHED at least) are closed, so the retry a second
  later gets in.
- accept() failures (EMFILE and the like) are one log line per 10 s, not a traceback per try (asyncio's own
  retry loop logs up to 100 per tick); a malformed request is one line naming the peer and what was wrong.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import resource
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("airwatt.server")

# asyncio accepts up to `backlog` connections per loop pass before any reaches the guard, and the ones closed
# to make room free their descriptors only on the next pass: so the listen backlog stays small, and twice it
# is kept free, beside the ~25 descriptors of the agent's own (SQLite files, the writer's pipes, logs) and the
# sync worker's sockets.
ACCEPT_BATCH = 100
FILES_RESERVED = 2 * ACCEPT_BATCH + 56
MAX_CONNECTIONS = 4096  # above this, memory rather than file descriptors is the limit
SHED = 64  # connections closed when accept() finds no descriptor left


def connection_limit() -> int:
    """Open connections allowed: the file limit minus what the agent needs besides sockets."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - FILES_RESERVED))


class _Tracked(asyncio.Protocol):
    """An aiohttp request handler seen through the guard: it notes when data last came in."""

    def __init__(self, guard: "_Guard", inner: asyncio.Protocol) -> None:
        self.guard, self.inner = guard, inner
        self.transport: asyncio.Transport | None = None
        self.heard = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.guard.admit(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.open.discard(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _Guard:
    """The protocol factory given to loop.create_server: aiohttp's server, with a cap on open connections."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server, self.limit = server, limit
        self.open: set[_Tracked] = set()
        self.evicted = 0
        self._said = self._shed = 0.0

    def __call__(self) -> _Tracked:
        return _Tracked(self, self.server())

    def admit(self, conn: _Tracked) -> None:
        self.open.add(conn)
        if len(self.open) > self.limit:
            self._close_quietest(len(self.open) - self.limit, keep=conn)

    def out_of_files(self) -> None:
        """accept() failed for want of descriptors (the limit was lowered, or something else holds them): take
        the cap from the limit as it is now, and make room."""
        now = time.monotonic()
        if now - self._shed < 1:  # asyncio reports each of up to 100 failed accept() calls of one tick
            return
        self._shed = now
        self.limit = min(self.limit, connection_limit())
        self._close_quietest(max(SHED, len(self.open) - self.limit))

    def _close_quietest(self, n: int, keep: _Tracked | None = None) -> None:
        for quiet in heapq.nsmallest(n, (c for c in self.open if c is not keep), key=lambda c: c.heard):
            self.open.discard(quiet)
            if quiet.transport is not None:
                quiet.transport.abort()  # frees its descriptor now; aiohttp's handler sees connection_lost
            self.evicted += 1
        now = time.monotonic()
        if now - self._said >= 10:
            self._said = now
            log.warning("%d connections open (the limit under RLIMIT_NOFILE): closed the quietest; %d so far",
                        self.limit, self.evicted)


async def read_limited(request: web.Request, max_bytes: int, timeout_s: float) -> bytes | None:
    """The request body, or None when it exceeds max_bytes (checked as it arrives, chunked bodies included).
    Raises 408 when it has not all arrived within timeout_s."""
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    return bytes(buf)
                buf += chunk
                if len(buf) > max_bytes:
                    return None
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the body did not arrive within %g s" % timeout_s) from None


class _OneLine(logging.Filter):
    """aiohttp logs a malformed request as an ERROR with a traceback: make it one line with the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = " ".join(str(exc.message).split())[:200]
            record.msg, record.args = "%s: bad request (%d): %s", (record.getMessage(), exc.code, reason)
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.INFO, "INFO"
        return True


def _loop_errors(loop: asyncio.AbstractEventLoop, guard: _Guard) -> None:
    last = [0.0]

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
            return
        guard.out_of_files()  # asyncio retries accept() a second later; this makes room for it
        now = time.monotonic()
        if now - last[0] >= 10:
            last[0] = now
            log.warning("accept() failed: %s; now at most %d connections", context.get("exception"), guard.limit)

    loop.set_exception_handler(handle)


async def start(runner: web.AppRunner, host: str, port: int) -> tuple[asyncio.Server, str, int]:
    """Listen on host:port for a set-up AppRunner; returns the asyncio server and the address it got."""
    loop = asyncio.get_running_loop()
    guard = _Guard(runner.server, connection_limit())
    _loop_errors(loop, guard)
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())
    server = await loop.create_server(guard, host, port, backlog=ACCEPT_BATCH, reuse_address=True)
    got = server.sockets[0].getsockname()
    return server, got[0], got[1]


def runner_options(idle_timeout_s: float) -> dict[str, Any]:
    """AppRunner keyword arguments for the agent's request handlers."""
    return {"access_log": None, "keepalive_timeout": idle_timeout_s}
