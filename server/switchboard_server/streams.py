"""Ways in for clients without a Socket.IO library: Server-Sent Events and a plain WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import WSCloseCode, WSMsgType, web

from .auth import Identity, Unauthorized
from .authhook import Described, HookUnavailable, describe
from .errors import ApiError, invalid_payload, unavailable
from .http_api import AUTH, HUB, REQUEST_ID, path_job_id
from .hub import INFO_NS, JOB_NS, Hub, LogCatchUp
from .jobs import JobService
from .manager import LocalManager, Tap
from .models import TERMINAL, Job, LogLine, RefreshIn, new_id
from .namespaces.base import BaseNamespace, expiring
from .origins import ORIGINS
from .tokens import Sessions

log = logging.getLogger("switchboard.streams")

NAMESPACES: web.AppKey[dict[str, BaseNamespace]] = web.AppKey("namespaces", dict)
MANAGER: web.AppKey[LocalManager] = web.AppKey("manager", LocalManager)
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)
JOBS: web.AppKey[JobService] = web.AppKey("jobs", JobService)
PLAIN_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("plain_sockets", set)
KEEPALIVE = 15.0
# Why a /ws session is hung up -> its close code and reason
CLOSE_CODES = {"rate_limited": (4029, b"flooding"), "unauthorized": (4401, b"unauthorized"),
               "unavailable": (4503, b"unavailable")}  # fmt: skip
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


async def _identify(request: web.Request, auth: dict[str, Any], described: Described) -> Identity:
    """The identity of an event stream or /ws session (the auth webhook's, with one)."""
    try:
        return await request.app[AUTH].authenticate(auth, {**described, "auth": auth})
    except Unauthorized:
        raise ApiError(401, "unauthorized", "a valid admin or client token is needed") from None
    except HookUnavailable as exc:
        raise unavailable(str(exc)) from None


# -- Server-Sent Events ---------------------------------------------------------


async def job_stream(request: web.Request) -> web.StreamResponse:
    """One `job:update` per event with `id: <seq>`; resumes from Last-Event-ID or ?since=.

    With ?log_since= (an offset; empty: from now on) also a `job:log` per batch of lines,
    and every id is `<seq>:<offset>` (0 for no event yet), which Last-Event-ID resumes.
    """
    request.app[ORIGINS].check(request)
    job_id = path_job_id(request)
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    token = bearer.strip() if scheme.lower() == "bearer" else request.query.get("token")
    described = describe(request.headers, request.remote, "sse")
    identity = await _identify(request, {"token": token}, described)
    resumed, _, resumed_offset = request.headers.get("Last-Event-ID", "").partition(":")
    since = _since(resumed or request.query.get("since"), "since / Last-Event-ID")
    logs = bool(resumed_offset) or "log_since" in request.query
    log_since = _since(resumed_offset or request.query.get("log_since"), "log_since")

    jobs, sessions = request.app[JOBS], request.app[SESSIONS]
    follower = _TapFollower(identity, described, request.app[MANAGER], Tap(f"sse-{new_id()}"))
    tap = follower.tap

    async def warn(identity: Identity) -> None:  # no refresh here: reconnect with a new token
        tap.deliver("token:expiring", expiring(identity))

    async def end(why: ApiError) -> None:
        tap.deliver("error", {"ok": False, **why.body()})

    sessions.track(tap.sid, identity, warn, end)
    try:
        ack = await jobs.subscribe(follower, job_id, since, logs, log_since)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Request-Id": request[REQUEST_ID],
            }
        )
        await response.prepare(request)
        stream = _EventStream(response, request.app[HUB], job_id, since)
        await response.write(b"retry: 1000\n\n")
        if ack["reset"]:
            await response.write(b"event: reset\ndata: {}\n\n")
            stream.last = None
        with contextlib.suppress(ConnectionError):
            if logs:
                await stream.begin_lines(cast(LogCatchUp, ack))
            if not await stream.send_all([*ack["missed"], *([ack["job"]] if ack["job"] else [])]):
                if logs:
                    await stream.put_lines(ack["logs"])
                    await stream.fill_lines()
                await stream.follow(tap)
        return response
    finally:
        sessions.forget(tap.sid)
        await jobs.leave_all(follower)


@dataclass(eq=False)
class _TapFollower:
    """An event stream's follower: the rooms it enters are taps on the manager."""

    identity: Identity
    described: dict[str, Any]
    manager: LocalManager
    tap: Tap
    subscriptions: set[str] = field(default_factory=set)

    async def enter(self, room: str) -> None:
        self.manager.add_tap(JOB_NS, room, self.tap)

    async def exit(self, room: str) -> None:
        self.manager.remove_tap(JOB_NS, room, self.tap)


def _since(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    # ASCII digits only (str.isdigit takes "²"), and short enough for int() and JSON.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 16):
        raise invalid_payload(f"{name}: must be an integer from 0 to 2**53")
    return int(raw)


class _EventStream:
    def __init__(self, response: web.StreamResponse, hub: Hub, job_id: str, since: int | None):
        self.response = response
        self.hub = hub
        self.job_id = job_id
        self.last = since
        self.log_last: int | None = None  # the last offset sent, on a stream with log lines

    def _id(self) -> str:
        return str(self.last) if self.log_last is None else f"{self.last or 0}:{self.log_last}"

    async def _write(self, event: str, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        await self.response.write(f"id: {self._id()}\nevent: {event}\ndata: {data}\n\n".encode())

    async def send_all(self, events: list[Job]) -> bool:
        """Write the events not sent yet, in order; True once a terminal event went out."""
        for event in events:
            if self.last is not None and event["seq"] <= self.last:
                continue
            self.last = event["seq"]
            await self._write("job:update", event)
            if event["status"] in TERMINAL:
                await self.fill_lines()  # the lines written before the end, on their way
                return True
        return False

    async def begin_lines(self, caught: LogCatchUp) -> None:
        """Start sending log lines from where subscribe's ack would (it says so if reset)."""
        if caught["logs_reset"]:
            await self.response.write(b"event: logs_reset\ndata: {}\n\n")
        lines = caught["logs"]
        self.log_last = lines[0]["offset"] - 1 if lines else caught["log_offset"]

    async def fill_lines(self) -> None:
        """Every kept line not sent yet, from the store."""
        if self.log_last is not None:
            for batch in await self.hub.store.log_batches(self.job_id, self.log_last):
                await self.put_lines(batch["lines"])

    async def put_lines(self, lines: list[LogLine]) -> None:
        if self.log_last is None:
            return
        fresh = [line for line in lines if line["offset"] > self.log_last]
        if fresh:
            self.log_last = fresh[-1]["offset"]
            await self._write("job:log", {"job_id": self.job_id, "lines": fresh})

    async def follow(self, tap: Tap) -> None:
        while not tap.overflowed.is_set():
            try:
                kind, body = await asyncio.wait_for(tap.queue.get(), KEEPALIVE)
            except TimeoutError:
                await self.response.write(b": keep-alive\n\n")
                continue
            if kind == "job:log":  # in offset order, like events in seq order (ordering.py)
                await self.put_lines(body["lines"])
                continue
            if kind in ("token:expiring", "error"):
                await self._write(kind, body)
                if kind == "error":  # the token expired or was revoked
                    return
                continue
            if await self.send_all([body]):
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
            if op == "refresh":
                await self._refresh(ref, body)
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
        auth = {"token": token, "name": name}
        described = describe(self.request.headers, self.request.remote, "ws")
        try:
            identity = await _identify(self.request, auth, described)
        except ApiError as exc:
            await self._answer(ref, exc)
            await self._hang_up(exc.code)
            return False
        for namespace in self.namespaces.values():
            conn = namespace.attach(self.sid, identity, self._enter(namespace.namespace),
                                    self._exit(namespace.namespace), self._notify,
                                    self._hang_up)  # fmt: skip
            conn.described = {**described, "auth": auth}
        self.namespaces[JOB_NS].track(self.sid, self.namespaces[JOB_NS].conns[self.sid])
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

    async def _refresh(self, ref: Any, body: dict[str, Any]) -> None:
        """A new token for the session, for both namespaces at once."""
        job = self.namespaces[JOB_NS]
        try:
            identity = job.renewed(job.conns[self.sid], RefreshIn.parse(body).token)
        except ApiError as exc:
            await self._answer(ref, exc)
            return
        ended: list[str] = []
        for namespace in self.namespaces.values():
            ended += await namespace.regrant(self.sid, namespace.conns[self.sid], identity)
        job.track(self.sid, job.conns[self.sid])
        if not self.ws.closed:
            await self.ws.send_json({"ref": ref, "ok": True, **expiring(identity), "ended": ended})

    async def _notify(self, event: str, data: Any) -> None:
        if not self.ws.closed:
            await self.ws.send_json({"event": event, "data": data})

    async def _hang_up(self, why: str) -> None:
        code, message = CLOSE_CODES.get(why, (4000, why.encode()))
        await self.ws.close(code=code, message=message)

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
        self.request.app[SESSIONS].forget(self.sid)
        if self.pusher is not None:
            self.pusher.cancel()
        for namespace in self.namespaces.values():
            await namespace.on_disconnect(self.sid)
        for name, room in list(self.rooms):
            self.manager.remove_tap(name, room, self.tap)
