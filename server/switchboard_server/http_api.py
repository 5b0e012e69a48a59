"""/api routes and the middlewares around them; thin: parse, call the hub, answer."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .auth import Auth
from .errors import ApiError, invalid_payload, not_found, unavailable
from .hub import Hub
from .metrics import Metrics
from .models import (
    STATUSES,
    AnnouncementIn,
    JobCreate,
    JobUpdate,
    LogsIn,
    Revocation,
    RevokeIn,
    TokenIn,
    check_job_id,
    check_tag,
    new_id,
)
from .openapi import build_openapi
from .storage import StoreUnavailable, log_response
from .tokens import Revoker, iso

log = logging.getLogger("switchboard.http")

MAX_BODY = 1024 * 1024
IDEMPOTENCY_KEY = web.RequestKey("idempotency_key", str)
IDEMPOTENCY_STORED = web.RequestKey("idempotency_stored", bool)
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
AUTH: web.AppKey[Auth] = web.AppKey("auth", Auth)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
REVOKER: web.AppKey[Revoker] = web.AppKey("revoker", Revoker)

PUBLIC_ROUTES = {"job-stream", "openapi"}  # the stream checks tokens itself
# POSTs that replay their first answer for a repeated Idempotency-Key. Minting a token is
# not one of them: a token is never stored, and a second one does no harm.
IDEMPOTENT_ROUTES = {"create-job", "update-job", "append-logs", "announce"}
HTTP_CODES = {
    400: "invalid_payload",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
}


def respond(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error_response(error: ApiError) -> web.Response:
    return respond(error.body(), error.status)


# -- middlewares --------------------------------------------------------------

REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("switchboard.access")


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An access line per /api request, and a request id echoed in X-Request-Id."""
    started = time.perf_counter()
    given = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = request_id = given if REQUEST_ID_PATTERN.match(given) else new_id()
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    if request.path.startswith("/api"):
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        access_log.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,  # never the query string: it may carry ?token=
            response.status,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": duration_ms,
                "request_id": request_id,
            },
        )
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as {"error": {...}}; nothing leaves as a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        error = exc
    except StoreUnavailable as exc:
        log.error("store unavailable during %s %s: %s", request.method, request.path, exc)
        error = unavailable()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "invalid_request")
        message = "request body is over 1 MiB" if exc.status == 413 else exc.reason
        error = ApiError(exc.status, code, message)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        error = ApiError(500, "internal", "internal error")
    request.app[METRICS].rejected.labels(error.code).inc()
    return error_response(error)


@web.middleware
async def admin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api call needs the admin bearer token (the SSE stream checks its own)."""
    public = request.match_info.route.name in PUBLIC_ROUTES
    if (request.path.startswith("/api/") or request.path == "/api") and not public:
        auth = request.app[AUTH]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <admin token>")
        if not auth.is_admin(token):
            if auth.is_client_token(token):
                raise ApiError(403, "forbidden", "client tokens cannot call the admin API")
            raise ApiError(401, "unauthorized", "wrong admin token")
    return await handler(request)


class Idempotency:
    """Replays the first successful answer to a POST for a given Idempotency-Key."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if key is None or request.match_info.route.name not in IDEMPOTENT_ROUTES:
            return await handler(request)
        if not KEY_PATTERN.match(key):
            raise invalid_payload("Idempotency-Key: 1-255 visible ASCII characters")
        scoped = f"{request.path}\n{key}"
        lock = self._locks.get(scoped)
        if lock is None:
            lock = self._locks[scoped] = asyncio.Lock()
        async with lock:
            hub = request.app[HUB]
            stored = await hub.replay(scoped)
            if stored is not None:
                replay = respond(stored["body"], stored["status"])
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
            request[IDEMPOTENCY_KEY] = scoped
            response = await handler(request)
            if (
                isinstance(response, web.Response)
                and 200 <= response.status < 300
                and not request.get(IDEMPOTENCY_STORED)
                and response.body is not None
            ):
                body = json.loads(response.body) if response.body else None  # type: ignore[arg-type]
                await hub.remember(scoped, {"status": response.status, "body": body})
            return response


# -- helpers ------------------------------------------------------------------


async def read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", "request body is over 1 MiB")
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_payload(f"{name}: must be an integer") from None
    if not low <= value <= high:
        raise invalid_payload(f"{name}: must be between {low} and {high}")
    return value


def path_job_id(request: web.Request) -> str:
    return check_job_id(request.match_info["job_id"], allow_all=False)


# -- routes ---------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.post("/api/jobs", name="create-job")
async def create_job(request: web.Request) -> web.Response:
    payload = JobCreate.parse(await read_json(request))
    job = await _write(request, payload.id or new_id(), payload, create=True)
    return respond(job, 201)


@routes.post("/api/jobs/{job_id}/updates", name="update-job")
async def update_job(request: web.Request) -> web.Response:
    job_id = path_job_id(request)
    payload = JobUpdate.parse(await read_json(request))
    job = await _write(request, job_id, payload, create=False)
    return respond(job, 201 if job["seq"] == 1 else 200)


async def _write(
    request: web.Request, job_id: str, payload: JobCreate | JobUpdate, *, create: bool
) -> Any:
    key = _key_for_the_store(request)
    return await request.app[HUB].write_job(job_id, payload, create=create, idempotency_key=key)


def _key_for_the_store(request: web.Request) -> str | None:
    """The Idempotency-Key, for a write that commits its answer in the same transaction
    (so the middleware does not store it again)."""
    key = request.get(IDEMPOTENCY_KEY)
    request[IDEMPOTENCY_STORED] = key is not None
    return key


@routes.post("/api/jobs/{job_id}/logs", name="append-logs")
async def append_logs(request: web.Request) -> web.Response:
    """Append log lines to a job (finished or not): 201 with their offsets."""
    job_id = path_job_id(request)
    payload = LogsIn.parse(await read_json(request))
    lines = await request.app[HUB].append_logs(job_id, payload, _key_for_the_store(request))
    answer = log_response(job_id, lines)
    return respond(answer["body"], answer["status"])


@routes.post("/api/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Ask the job's worker to stop (the admin may cancel any job)."""
    return respond(await request.app[HUB].cancel_job(path_job_id(request), by="admin"))


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = path_job_id(request)
    job = await request.app[HUB].get_job(job_id)
    if job is None:
        raise not_found(f"no job {job_id!r}")
    return respond(job)


@routes.get("/api/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.Response:
    job_id = path_job_id(request)
    since = query_int(request, "since", 0, 0, 2**53)
    limit = query_int(request, "limit", 1000, 1, 1000)
    job, events, reset = await request.app[HUB].catch_up(job_id, since, limit)
    if job is None:
        raise not_found(f"no job {job_id!r}")
    return respond({"events": events, "reset": reset})


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise invalid_payload(f"status: must be one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 100, 1, 1000)
    tag, parent = request.query.get("tag"), request.query.get("parent")
    if tag is not None:
        check_tag(tag)
    if parent is not None:
        check_job_id(parent, allow_all=False)
    jobs = await request.app[HUB].list_jobs(status, limit, tag=tag, parent=parent)
    return respond({"jobs": jobs})


@routes.get("/api/jobs/{job_id}/children")
async def children(request: web.Request) -> web.Response:
    """A parent's children summary: counts by status and mean progress (404: none)."""
    summary = await request.app[HUB].children(path_job_id(request))
    if summary is None:
        raise not_found("no children")
    return respond(summary)


@routes.delete("/api/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    job_id = path_job_id(request)
    if not await request.app[HUB].delete_job(job_id):
        raise not_found(f"no job {job_id!r}")
    return web.Response(status=204)


@routes.post("/api/announcements", name="announce")
async def announce(request: web.Request) -> web.Response:
    payload = AnnouncementIn.parse(await read_json(request))
    return respond(await request.app[HUB].announce(payload), 201)


@routes.get("/api/announcements")
async def announcements(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 50, 1, 1000)
    found = await request.app[HUB].recent_announcements(limit)
    return respond({"announcements": found})


@routes.get("/api/openapi.json", name="openapi")
async def openapi(request: web.Request) -> web.Response:
    return respond(build_openapi())


@routes.post("/api/tokens")
async def mint_token(request: web.Request) -> web.Response:
    payload = TokenIn.parse(await read_json(request))
    auth = request.app[AUTH]
    if auth.client_secret is None:
        raise ApiError(400, "no_client_secret", "set SWITCHBOARD_CLIENT_SECRET to mint tokens")
    token, expires_at, jti = auth.mint(
        payload.sub,
        name=payload.name,
        jobs=payload.jobs,
        rooms=payload.rooms,
        cancel=payload.cancel,
        tags=payload.tags,
        ttl=payload.ttl,
    )
    return respond({"token": token, "expires_at": expires_at, "jti": jti}, 201)


@routes.post("/api/tokens/revoke", name="revoke-tokens")
async def revoke_tokens(request: web.Request) -> web.Response:
    """Refuse a token (`jti`) or a user's tokens (`sub`) from now on, on every node, and
    disconnect the connections that hold them."""
    payload = RevokeIn.parse(await read_json(request))
    now = time.time()
    revocation: Revocation = {"jti": payload.jti, "sub": payload.sub, "at": now,
                              "until": now + payload.ttl}  # fmt: skip
    ended = await request.app[REVOKER].revoke(revocation)
    shown = {**revocation, "at": iso(now), "until": iso(revocation["until"])}
    return respond({"revoked": shown, "disconnected_here": ended})
