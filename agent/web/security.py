"""Browser-facing protection for every answer of the agent: security headers, and a same-origin check on actions.

- Every answer says nosniff, may not be framed (CSP frame-ancestors and X-Frame-Options) and sends a Referer only
  to the agent itself. Pages get a Content-Security-Policy that runs only their own scripts (a per-answer nonce,
  see `page_policy`); anything else gets `default-src 'none'`.
- An action (any method but GET/HEAD/OPTIONS) must come from the agent's own pages: its Origin, or without one
  its Referer, names this host. Browsers send Origin with every form POST, so a page elsewhere cannot make an
  operator's browser act. Board uploads (/v1/batches: signed, no browser involved) and scripts that send the
  operator token as `Authorization: Bearer` (a header no other site can make a browser send) are exempt.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

EXEMPT = ("/v1/batches",)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
PAGE_CSP = ("default-src 'none'; script-src 'nonce-%s'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def page_policy() -> tuple[str, str]:
    """(nonce, Content-Security-Policy) for one page: put the nonce on each of its <script> elements."""
    nonce = secrets.token_urlsafe(16)
    return nonce, PAGE_CSP % nonce


def same_origin(request: web.Request) -> bool:
    """True when the request's Origin (or, lacking one, its Referer) is this agent as the browser addressed it."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


@web.middleware
async def protect(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    if (request.method not in SAFE_METHODS and request.path not in EXEMPT
            and not request.headers.get("Authorization", "").startswith("Bearer ") and not same_origin(request)):
        resp: web.StreamResponse = web.HTTPForbidden(
            text="refused: an action must come from the agent's own pages (Origin or Referer %s)" % request.host)
    else:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # errors and redirects get the headers too
            resp = exc
    for name, value in HEADERS.items():
        resp.headers.setdefault(name, value)
    resp.headers.setdefault("Content-Security-Policy", OTHER_CSP)
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


def setup_security(app: web.Application) -> None:
    """Add the headers and the same-origin check to every route of the app."""
    app.middlewares.append(protect)
