"""create_app(settings): builds the aiohttp app with Socket.IO, the HTTP API and the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import assets
from .auth import Auth
from .authhook import AuthWebhook
from .engine import SwitchboardServer
from .errors import unavailable
from .http_api import (
    AUTH,
    HUB,
    MAX_BODY,
    METRICS,
    REVOKER,
    Idempotency,
    access_middleware,
    admin_middleware,
    error_response,
    errors_middleware,
    respond,
    routes,
)
from .hub import INFO_NS, JOB_NS, Hub
from .jobs import JobService
from .logs import library_loggers
from .manager import LocalDelivery, RedisRelay
from .metrics import Metrics
from .namespaces import Context, InfoNamespace, JobNamespace
from .ordering import job_order
from .origins import ORIGINS, Origins
from .redis_conn import SCHEMES
from .settings import Settings
from .sticky import Stickiness
from .storage import LogLimits, RoomLimits, StoreUnavailable, open_store
from .streams import (
    JOBS,
    MANAGER,
    NAMESPACES,
    PLAIN_SOCKETS,
    SESSIONS,
    close_plain_websockets,
    job_stream,
    plain_websocket,
)
from .tokens import RevocationList, Revoker, Sessions
from .webhooks import WEBHOOKS, Dispatcher, webhook_status

log = logging.getLogger("switchboard")

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
SIO: web.AppKey[SwitchboardServer] = web.AppKey("sio", SwitchboardServer)


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings()
    origins = Origins(settings.cors_origins)
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            access_middleware,
            errors_middleware,
            origins.preflight,
            admin_middleware,
            Idempotency().middleware,
        ],
    )
    metrics = Metrics()
    auth = Auth(settings)
    relay = (
        RedisRelay(settings.store, settings.redis_prefix, metrics)
        if settings.store.startswith(SCHEMES)
        else None
    )
    manager = LocalDelivery(metrics, settings.max_pending, relay)
    sio_logger, eio_logger = library_loggers()
    sio = SwitchboardServer(
        metrics,
        manager,
        async_mode="aiohttp",
        logger=sio_logger,
        engineio_logger=eio_logger,
        cors_allowed_origins=settings.cors_origins or None,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_packet_bytes,
    )
    sio.attach(app)
    metrics.watch_connections(sio.engine)
    rooms = RoomLimits(settings.max_rooms_total, settings.max_members_per_room, settings.room_ttl)
    store = open_store(
        settings.store,
        history=settings.history,
        prefix=settings.redis_prefix,
        rooms=rooms,
        redis_pool=(settings.redis_pool_size, settings.redis_pool_timeout),
        redis_replicas=settings.redis_replicas,
        logs=LogLimits(settings.log_lines, settings.log_bytes),
    )
    sio.engine.node = store.node
    sticky = Stickiness(sio.engine.node, sio.engine.has_session, store.node_alive)
    app.middlewares.append(sticky.middleware)
    hub = Hub(store, sio, metrics, settings)
    webhooks = Dispatcher(settings, store, metrics)
    hub.on_commit.append(webhooks.notify)
    order = job_order(store, manager, settings.history, metrics)
    manager.order = order
    manager.on_resubscribe = order.resync
    sessions = Sessions(RevocationList())
    auth.is_revoked = sessions.revocations.matches
    if settings.auth_webhook:
        auth.hook = AuthWebhook(
            settings.auth_webhook,
            timeout=settings.auth_webhook_timeout,
            cache=settings.auth_webhook_cache,
            per_subscribe=settings.auth_webhook_subscribe,
        )
    jobs = JobService(hub, order, auth.hook, settings.max_subscriptions)
    context = Context(hub=hub, auth=auth, metrics=metrics, settings=settings, order=order,
                      sessions=sessions, jobs=jobs)  # fmt: skip
    namespaces = {JOB_NS: JobNamespace(JOB_NS, context), INFO_NS: InfoNamespace(INFO_NS, context)}
    for namespace in namespaces.values():
        sio.register_namespace(namespace)

    app[SETTINGS] = settings
    app[ORIGINS] = origins
    app.on_response_prepare.append(origins.add_headers)
    app[SIO] = sio
    app[HUB] = hub
    app[AUTH] = auth
    app[METRICS] = metrics
    app[MANAGER] = manager
    app[NAMESPACES] = namespaces
    app[REVOKER] = Revoker(store, sessions, sio, manager)
    app[SESSIONS] = sessions
    app[WEBHOOKS] = webhooks
    app[JOBS] = jobs
    app.cleanup_ctx.append(_lifetime)
    app[PLAIN_SOCKETS] = set()
    app.on_shutdown.append(_drop_sockets)
    app.on_shutdown.append(close_plain_websockets)
    app.add_routes(routes)
    app.router.add_get("/api/webhooks/status", webhook_status, name="webhook-status")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/api/jobs/{job_id}/stream", job_stream, name="job-stream")  # any token
    app.router.add_get("/ws", plain_websocket)
    assets.add_routes(app, admin_ui=settings.admin_ui)
    if settings.admin_ui:
        instrumented = sio.instrument(auth=auth.is_admin_ui_login)
        sio.engine.direct_writes = False  # see engine.EngineServer

        async def uninstrument(app: web.Application) -> None:
            # python-socketio patches Engine.IO classes process-wide; undo it with the app.
            instrumented.uninstrument()

        app.on_cleanup.append(uninstrument)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.store.open()
    await hub.start()
    app[SIO].engine.start()
    await app[REVOKER].start()
    await app[WEBHOOKS].start()
    yield
    await app[WEBHOOKS].stop()
    await app[REVOKER].stop()
    if (hook := app[AUTH].hook) is not None:
        await hook.close()
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
    await app[SIO].engine.drop_all()


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
