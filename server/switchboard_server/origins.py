"""Which web pages may use the API, the event stream and /ws: the --cors-origins list.

The same rule as Engine.IO's for /socket.io/: with no list, only the server's own
origin (judged by Host, or X-Forwarded-Host/-Proto from a proxy); with a list, exactly
those origins; "*" allows every origin. A request without an Origin header does not
come from a web page's cross-origin script and is not judged here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ApiError, forbidden

ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
EXPOSE_HEADERS = "X-Request-Id, Idempotent-Replayed"
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Origins:
    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.listed = frozenset(allowed)

    def allows(self, request: web.BaseRequest) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or self.any:
            return True
        if self.listed:
            return origin in self.listed
        return origin in _own_origins(request)

    def check(self, request: web.BaseRequest) -> None:
        """Refuse a page from another origin (for /ws and the event stream)."""
        if not self.allows(request):
            raise forbidden(f"origin {request.headers['Origin']!r} is not allowed")

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer the browser's OPTIONS preflight for /api calls from allowed origins."""
        if request.method != "OPTIONS" or not request.path.startswith("/api/"):
            return await handler(request)
        if "Origin" not in request.headers or not self.allows(request):
            raise ApiError(403, "forbidden", "this origin may not call the API")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: CORS headers on /api answers (the event stream included)."""
        if not request.path.startswith("/api/"):
            return
        response.headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if origin is not None and self.allows(request):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name to listen on) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _own_origins(request: web.BaseRequest) -> set[str]:
    host = request.headers.get("Host")
    if host is None:
        return set()
    found = {f"{request.scheme}://{host}"}
    forwarded_host = request.headers.get("X-Forwarded-Host")
    forwarded_proto = request.headers.get("X-Forwarded-Proto")
    if forwarded_host or forwarded_proto:
        scheme = (forwarded_proto or request.scheme).split(",")[0].strip()
        found.add(f"{scheme}://{(forwarded_host or host).split(',')[0].strip()}")
    return found


ORIGINS: web.AppKey[Origins] = web.AppKey("origins", Origins)
