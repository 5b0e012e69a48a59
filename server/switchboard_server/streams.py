"""Ways in for clients without a Socket.IO library: Server-Sent Events and a plain WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from .auth import Identity, Unauthorized
from .errors import ApiError, forbidden, invalid_payload
from .http_api import AUTH, HUB, REQUEST_ID, path_job_id, routes
from .hub import INFO_NS, JOB_NS, job_room
from .manager import LocalManager, Tap
from .models import TERMINAL, Job, new_id
from .namespaces.base import BaseNamespace
from .origins import ORIGINS

log = logging.getLogger("switchboard.streams")

NAMESPACES: web.AppKey[dict[str, BaseNamespace]] = web.AppKey("namespaces", dict)
MANAGER: web.AppKey[LocalManager] = web.AppKey("manager", LocalManager)
PLAIN_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("plain_sockets", set)
KEEPALIVE = 15.0
# /ws op -> (namespace, Socket.IO event)
OPS = {
    "subscribe": (JOB_NS, "subscribe"),
    "unsubscribe": (JOB_NS, "unsubscribe"),
    "cancel": (JOB_NS, "cancel"),
    "whoami": (JOB_NS, "whoami"),
    "join": (INFO_NS, "join"),
    "leave": (INFO_NS, "leave"),
    "message": (INFO_NS, "message"),
    "recent": (INFO_NS, "recent"),
}


def _identify(request: web.Request, token: str | None, name: str | None = None) -> Identity:
    try:
        return request.app[AUTH].identify({"token": token, "name": name})
    except Unauthorized:
        raise ApiError(401, "unauthorized", "a valid admin or client token is needed") from None


# -- Server-Sent Events ---------------------------------------------------------


@routes.get("/api/jobs/{job_id}/stream", name="job-stream")  # takes client tokens too
async def job_stream(request: web.Request) -> web.StreamResponse:
    """One `job:update` per event with `id: <seq>`; resumes from Last-Event-ID or ?since=."""
    request.app[ORIGINS].check(request)
    job_id = path_job_id(request)
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    token = bearer.strip() if scheme.lower() == "bearer" else request.query.get("token")
    if not _identify(request, token).may_watch(job_id):
        raise forbidden(f"your token does not grant job {job_id!r}")
    since = _since(request.headers.get("Last-Event-ID", request.query.get("since")))

    hub, manager = request.app[HUB], request.app[MANAGER]
    tap = Tap(f"sse-{new_id()}")
    room = job_room(job_id)
    manager.add_tap(JOB_NS, room, tap)  # listen first, then read: nothing falls between
    try:
        job, missed, reset = await hub.catch_up(job_id, since)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Request-Id": request[REQUEST_ID],
            }
        )
        await response.prepare(request)
        stream = _EventStream(response, since)
        await response.write(b"retry: 1000\n\n")
        if reset:
            await response.write(b"event: reset\ndata: {}\n\n")
            stream.last = None
        with contextlib.suppress(ConnectionError):
            if not await stream.send_all([*missed, *([job] if job else [])]):
                await stream.follow(tap, lambda: hub.catch_up(job_id, stream.last))
        return response
    finally:
        manager.remove_tap(JOB_NS, room, tap)


def _since(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    # ASCII digits only (str.isdigit takes "²"), and short enough for int() and JSON.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 16):
        raise invalid_payload("since / Last-Event-ID: must be an integer from 0 to 2**53")
    return int(raw)


class _EventStream:
    def __init__(self, response: web.StreamResponse, since: int | None) -> None:
        self.response = response
        self.last = since

    async def send_all(self, events: list[Job]) -> bool:
        """Write the events not sent yet, in order; True once a terminal event went out."""
        for event in events:
            if self.last is not None and event["seq"] <= self.last:
                continue
            self.last = event["seq"]
            data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
            frame = f"id: {event['seq']}\nevent: job:update\ndata: {data}\n\n"
            await self.response.write(frame.encode())
            if event["status"] in TERMINAL:
                return True
        return False

    async def follow(self, tap: Tap, catch_up: Any) -> None:
        while not tap.overflowed.is_set():
            try:
                _, event = await asyncio.wait_for(tap.queue.get(), KEEPALIVE)
            except TimeoutError:
                await self.response.write(b": keep-alive\n\n")
                continue
            if self.last is not None and event["seq"] > self.last + 1:
                _, missed, _ = await catch_up()  # a gap (events crossing processes): fill it
                if await self.send_all(missed):
                    return
            if await self.send_all([event]):
                return
        log.info("ending a slow SSE stream; the client resumes with Last-Event-ID")


# -- plain WebSocket ----------------------------------------------------------------


async def plain_websocket(request: web.Request) -> web.WebSocketResponse:
    """JSON frames: {"op", "ref", ...fields} in, {"ref", "ok", ...} and {"event", "data"} out."""
    request.app[ORIGINS].check(request)  # browsers let any page open a websocket
    settings = request.app[HUB].settings
    ws = web.WebSocketResponse(
        heartbeat=settings.ping_interval, max_msg_size=settings.max_packet_bytes
    )
    await ws.prepare(request)
    session = _PlainSession(request, ws)
    open_sockets = request.app[PLAIN_SOCKETS]
    open_sockets.add(ws)
    try:
        await session.run()
    finally:
        open_sockets.discard(ws)
        await session.close()
    return ws


async def close_plain_websockets(app: web.Application) -> None:
    """On shutdown: 1001 "going away" to every /ws client, which then reconnects."""
    sockets: set[web.WebSocketResponse] = app[PLAIN_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


class _PlainSession:
    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.ws = ws
        self.sid = f"ws-{new_id()}"
        self.tap = Tap(self.sid)
        self.rooms: set[tuple[str, str | None]] = set()
        self.namespaces = request.app[NAMESPACES]
        self.manager = request.app[MANAGER]
        self.attached = False
        self.pusher: asyncio.Task[None] | None = None

    async def run(self) -> None:
        query = self.request.query
        upfront = "token" in query or self.request.app[AUTH].client_secret is None
        if upfront and not await self._authenticate(query.get("token"), query.get("name"), None):
            return
        async for frame in self.ws:
            if frame.type != WSMsgType.TEXT:
                await self._answer(None, invalid_payload("frames must be JSON text"))
                continue
            try:
                body = json.loads(frame.data)
            except ValueError:
                await self._answer(None, ApiError(400, "invalid_json", "the frame is not JSON"))
                continue
            if not isinstance(body, dict):
                await self._answer(None, invalid_payload("a frame must be a JSON object"))
                continue
            ref, op = body.pop("ref", None), body.pop("op", None)
            if not self.attached:
                if op != "auth":
                    await self._answer(ref, ApiError(401, "unauthorized", "send op auth first"))
                    await self.ws.close(code=4401, message=b"unauthorized")
                    return
                if not await self._authenticate(body.get("token"), body.get("name"), ref):
                    return
                continue
            route = OPS.get(op) if isinstance(op, str) else None
            if route is None:
                known = ", ".join(OPS)
                await self._answer(ref, invalid_payload(f"unknown op {op!r} (use {known})"))
                continue
            namespace, event = route
            ack = await self.namespaces[namespace].handle(event, self.sid, (body,))
            if not self.ws.closed:
                await self.ws.send_json({"ref": ref, **ack})

    async def _authenticate(self, token: Any, name: Any, ref: Any) -> bool:
        try:
            identity = self.request.app[AUTH].identify({"token": token, "name": name})
        except Unauthorized:
            await self._answer(ref, ApiError(401, "unauthorized", "unauthorized"))
            await self.ws.close(code=4401, message=b"unauthorized")
            return False
        for namespace in self.namespaces.values():
            namespace.attach(self.sid, identity, self._enter(namespace.namespace),
                             self._exit(namespace.namespace), self._hang_up)  # fmt: skip
        self.attached = True
        await self._enter(INFO_NS)(None)  # announcements to everyone
        self.pusher = asyncio.create_task(self._push())
        if ref is not None:
            await self.ws.send_json({"ref": ref, "ok": True})
        return True

    def _enter(self, namespace: str) -> Any:
        async def enter(room: str | None) -> None:
            self.rooms.add((namespace, room))
            self.manager.add_tap(namespace, room, self.tap)

        return enter

    def _exit(self, namespace: str) -> Any:
        async def exit(room: str) -> None:
            self.rooms.discard((namespace, room))
            self.manager.remove_tap(namespace, room, self.tap)

        return exit

    async def _hang_up(self) -> None:
        await self.ws.close(code=4029, message=b"flooding")

    async def _push(self) -> None:
        while not self.ws.closed:
            get = asyncio.ensure_future(self.tap.queue.get())
            overflow = asyncio.ensure_future(self.tap.overflowed.wait())
            done, _ = await asyncio.wait({get, overflow}, return_when=asyncio.FIRST_COMPLETED)
            if overflow in done:
                get.cancel()
                await self.ws.close(code=4008, message=b"too slow: events were dropped")
                return
            overflow.cancel()
            event, data = get.result()
            with contextlib.suppress(ConnectionError):
                await self.ws.send_json({"event": event, "data": data})

    async def _answer(self, ref: Any, error: ApiError) -> None:
        if not self.ws.closed:
            await self.ws.send_json({"ref": ref, "ok": False, **error.body()})

    async def close(self) -> None:
        if self.pusher is not None:
            self.pusher.cancel()
        for namespace in self.namespaces.values():
            await namespace.on_disconnect(self.sid)
        for name, room in list(self.rooms):
            self.manager.remove_tap(name, room, self.tap)
