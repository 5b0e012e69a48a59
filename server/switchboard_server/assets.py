"""The files a browser loads: the dashboard, /switchboard.js with its types and its
socket.io-client copy, and (with --admin-ui) the Socket.IO Admin UI.

The browser module is public code with no secrets in it, so it is served to every origin
(`Access-Control-Allow-Origin: *`, no credentials): an app on its own origin imports it
whatever `--cors-origins` says. The sockets it opens are what `--cors-origins` guards.
Unversioned URLs revalidate by ETag on every load; `/v/<version>/…` never changes and is
cached for a year. The module imports its vendor file by a relative URL, so behind a
TLS-terminating proxy everything stays on https.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from . import __version__
from .errors import not_found

log = logging.getLogger("switchboard")

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"  # socket.io-client, copied from npm by `make static`
ADMIN_UI = STATIC / "admin-ui"  # the Socket.IO Admin UI's prebuilt files, likewise
MODULE = ("switchboard.js", "switchboard.d.ts")
DASHBOARD = ("dashboard.css", "dashboard.js")
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".ts": "application/typescript; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"


def add_routes(app: web.Application, *, admin_ui: bool) -> None:
    """Register the browser files on `app` (the Admin UI only when it is on)."""
    vendor = _listing(VENDOR, "/vendor/")
    module = {name: STATIC / name for name in MODULE}
    versioned = {**module, **{f"vendor/{name}": path for name, path in vendor.items()}}
    prefix = f"/v/{__version__}/"
    router = app.router
    router.add_get("/", dashboard)
    router.add_get("/static/{name}", _files({n: STATIC / n for n in DASHBOARD}, REVALIDATE))
    for name in MODULE:
        router.add_get(f"/{name}", _files(module, REVALIDATE, name))
    router.add_get("/vendor/{name}", _files(vendor, REVALIDATE))
    router.add_get(prefix + "{name:.+}", _files(versioned, IMMUTABLE))
    if admin_ui:
        router.add_get("/admin-ui", admin_ui_redirect)
        router.add_get("/admin-ui/", admin_ui_page)
        if _listing(ADMIN_UI, "/admin-ui/"):
            router.add_static("/admin-ui/", ADMIN_UI)


def _listing(directory: Path, prefix: str) -> dict[str, Path]:
    """The files `make static` built into `directory`; absent from a bare checkout."""
    if not directory.is_dir():
        log.warning("%s is missing (run `make static`): %s is not served", directory, prefix)
        return {}
    return {path.name: path for path in directory.iterdir() if path.is_file()}


def _files(
    files: dict[str, Path], cache: str, fixed: str | None = None
) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    """A handler for exactly these files (no path is ever joined from the URL)."""
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": cache,
    }

    async def serve(request: web.Request) -> web.FileResponse:
        name = fixed or request.match_info["name"]
        path = files.get(name)
        if path is None:
            raise not_found(f"no file {request.path!r} (this server is version {__version__})")
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        return web.FileResponse(path, headers={**headers, "Content-Type": content_type})

    return serve


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": REVALIDATE})


async def admin_ui_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(ADMIN_UI / "index.html")


async def admin_ui_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin-ui/")
