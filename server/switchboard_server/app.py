"""create_app(settings): builds the aiohttp app with Socket.IO, the HTTP API and the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from .auth import Auth
from .errors import unavailable
from .http_api import (
    AUTH,
    HUB,
    MAX_BODY,
    METRICS,
    Idempotency,
    access_middleware,
    admin_middleware,
    error_response,
    errors_middleware,
    respond,
    routes,
)
from .hub import INFO_NS, JOB_NS, Hub
from .manager import LocalManager, RedisManager
from .metrics import Metrics
from .namespaces import Context, InfoNamespace, JobNamespace, SwitchboardServer
from .settings import Settings
from .storage import StoreUnavailable, open_store
from .streams import MANAGER, NAMESPACES, plain_websocket

log = logging.getLogger("switchboard")

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
SIO: web.AppKey[SwitchboardServer] = web.AppKey("sio", SwitchboardServer)
STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"  # socket.io-client, copied from npm by `make static`
ADMIN_UI = STATIC / "admin-ui"  # the Socket.IO Admin UI's prebuilt files, likewise


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings()
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            access_middleware,
            errors_middleware,
            admin_middleware,
            Idempotency().middleware,
        ],
    )
    metrics = Metrics()
    auth = Auth(settings)
    manager = (
        RedisManager(
            settings.store, f"{settings.redis_prefix}socketio", metrics, settings.max_pending
        )
        if settings.store.startswith(("redis://", "rediss://"))
        else LocalManager(metrics, settings.max_pending)
    )
    sio = SwitchboardServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=settings.cors_origins or None,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_packet_bytes,
    )
    sio.attach(app)
    metrics.watch_connections(sio)
    store = open_store(settings.store, history=settings.history, prefix=settings.redis_prefix)
    hub = Hub(store, sio, metrics, settings)
    manager.on_resubscribe = hub.resync
    context = Context(hub=hub, auth=auth, metrics=metrics, settings=settings)
    namespaces = {JOB_NS: JobNamespace(JOB_NS, context), INFO_NS: InfoNamespace(INFO_NS, context)}
    for namespace in namespaces.values():
        sio.register_namespace(namespace)

    app[SETTINGS] = settings
    app[SIO] = sio
    app[HUB] = hub
    app[AUTH] = auth
    app[METRICS] = metrics
    app[MANAGER] = manager
    app[NAMESPACES] = namespaces
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_drop_sockets)
    app.add_routes(routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/ws", plain_websocket)
    app.router.add_get("/", dashboard)
    app.router.add_get("/switchboard.js", switchboard_js)
    if settings.admin_ui:
        instrumented = sio.instrument(auth={"username": "admin", "password": auth.admin_token})

        async def uninstrument(app: web.Application) -> None:
            # python-socketio patches Engine.IO classes process-wide; undo it with the app.
            instrumented.uninstrument()

        app.on_cleanup.append(uninstrument)
        app.router.add_get("/admin-ui", admin_ui_redirect)
        app.router.add_get("/admin-ui/", admin_ui)
        _add_built(app, "/admin-ui/", ADMIN_UI)
    app.router.add_static("/static/", STATIC)
    _add_built(app, "/vendor/", VENDOR)
    return app


def _add_built(app: web.Application, prefix: str, directory: Path) -> None:
    """Serve files that `make static` copies from npm; they are absent from a bare checkout."""
    if directory.is_dir():
        app.router.add_static(prefix, directory)
    else:
        log.warning("%s is missing (run `make static`): %s is not served", directory, prefix)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.store.open()
    await hub.start()
    yield
    await hub.stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):
            await app[MANAGER].flush()
    await hub.store.close()


async def _drop_sockets(app: web.Application) -> None:
    """On shutdown, end every transport without a goodbye packet.

    Clients then see a dropped connection and reconnect (to another node behind nginx),
    where a Socket.IO-level disconnect would tell them to stay away.
    """
    sio = app[SIO]
    for socket in list(sio.eio.sockets.values()):
        await socket.close(wait=False, abort=True)
        socket.queue.put_nowait(None)  # answers a pending long-poll, or closes the websocket


async def healthz(request: web.Request) -> web.Response:
    return respond({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[HUB].store.ping()
    except StoreUnavailable as exc:
        return error_response(unavailable(f"store unreachable: {exc}"))
    return respond({"status": "ready"})


async def metrics_page(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def admin_ui(request: web.Request) -> web.FileResponse:
    return web.FileResponse(ADMIN_UI / "index.html")


async def admin_ui_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin-ui/")


async def switchboard_js(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "switchboard.js")
