"""What /job and /info share: auth at connect, one guarded dispatch, errors as acks."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs

import socketio

from ..auth import Auth, Identity, Unauthorized
from ..authhook import HookUnavailable, describe, environ_headers
from ..engine import ack_requested, from_client
from ..errors import ApiError, forbidden, invalid_payload, unavailable
from ..hub import Hub
from ..jobs import JobService
from ..limits import TokenBucket
from ..metrics import Metrics
from ..models import Member, Payload, RefreshIn
from ..ordering import JobOrder
from ..settings import Settings
from ..storage import StoreUnavailable
from ..tokens import Sessions, iso

log = logging.getLogger("switchboard.socket")


def expiring(identity: Identity) -> dict[str, Any]:
    """`token:expiring`'s body, and a refresh's ack: when the token in force expires."""
    if identity.exp is None:
        return {"expires_at": None, "expires_in": None}
    return {"expires_at": iso(identity.exp), "expires_in": round(identity.exp - time.time(), 3)}


RoomAction = Callable[[str], Awaitable[None]]
Notify = Callable[[str, Any], Awaitable[None]]  # send one event to this client
HangUp = Callable[[str], Awaitable[None]]  # why (an error code): rate_limited, unauthorized


@dataclass
class Connection:
    """One client in one namespace, whether it came over Socket.IO or a plain WebSocket."""

    identity: Identity
    member: Member
    bucket: TokenBucket
    enter: RoomAction  # start receiving what is emitted to a room
    exit: RoomAction
    notify: Notify
    hang_up: HangUp
    subscriptions: set[str] = field(default_factory=set)
    rooms: set[str] = field(default_factory=set)
    described: dict[str, Any] = field(default_factory=dict)  # for the auth webhook


@dataclass(frozen=True)
class Context:
    """What every namespace needs, built once by create_app."""

    hub: Hub
    auth: Auth
    metrics: Metrics
    settings: Settings
    order: JobOrder
    sessions: Sessions
    jobs: JobService


Handler = Callable[[str, Connection, Any], Awaitable[dict[str, Any]]]


class BaseNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    # event name -> (payload model, method name)
    events: ClassVar[dict[str, tuple[type[Payload], str]]] = {"refresh": (RefreshIn, "refresh")}

    def __init__(self, namespace: str, context: Context) -> None:
        super().__init__(namespace)
        self.ctx = context
        self.conns: dict[str, Connection] = {}

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        transport = parse_qs(environ.get("QUERY_STRING", "")).get("transport", ["?"])[0]
        described = describe(environ_headers(environ), environ.get("REMOTE_ADDR"), transport)
        described["auth"] = auth if isinstance(auth, dict) else {}
        try:
            identity = await self.ctx.auth.authenticate(auth, described)
        except (Unauthorized, HookUnavailable) as exc:
            code = "unauthorized" if isinstance(exc, Unauthorized) else "unavailable"
            self.ctx.metrics.rejected.labels(code).inc()
            log.info(
                "refused %s on %s: %s",
                sid,
                self.namespace,
                exc,
                extra={"namespace": self.namespace, "sid": sid, "code": code},
            )
            raise socketio.exceptions.ConnectionRefusedError(code) from None

        async def enter(room: str) -> None:
            await self.enter_room(sid, room)

        async def exit(room: str) -> None:
            await self.leave_room(sid, room)

        async def notify(event: str, body: Any) -> None:
            await self.emit(event, body, to=sid)

        async def hang_up(why: str) -> None:
            await self.disconnect(sid)

        conn = self.attach(sid, identity, enter, exit, notify, hang_up)
        conn.described = described
        self.track(f"{self.namespace} {sid}", conn)
        log.debug(
            "connected %s to %s",
            sid,
            self.namespace,
            extra={"namespace": self.namespace, "sid": sid, "sub": identity.sub},
        )

    def attach(
        self,
        sid: str,
        identity: Identity,
        enter: RoomAction,
        exit: RoomAction,
        notify: Notify,
        hang_up: HangUp,
    ) -> Connection:
        settings = self.ctx.settings
        conn = Connection(
            identity=identity,
            member={"id": identity.sub or sid, "name": identity.name},
            bucket=TokenBucket(settings.rate_per_second, settings.rate_burst),
            enter=enter,
            exit=exit,
            notify=notify,
            hang_up=hang_up,
        )
        self.conns[sid] = conn
        return conn

    def track(self, key: str, conn: Connection) -> None:
        """Watch the connection's token: a notice before it expires, the end when it does
        or is revoked. A /ws session tracks itself (one token for both namespaces)."""

        async def warn(identity: Identity) -> None:
            await conn.notify("token:expiring", expiring(identity))

        async def end(why: ApiError) -> None:
            await conn.notify("error", {"ok": False, **why.body()})
            await conn.hang_up(why.code)

        self.ctx.sessions.track(key, conn.identity, warn, end)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.ctx.sessions.forget(f"{self.namespace} {sid}")
        conn = self.conns.pop(sid, None)
        if conn is not None:
            await self.closed(sid, conn)

    async def closed(self, sid: str, conn: Connection) -> None:
        """Hook for cleanup when a connection goes away."""

    async def refresh(self, sid: str, conn: Connection, payload: RefreshIn) -> dict[str, Any]:
        """A new token for a live connection: its grants replace the old ones."""
        identity = self.renewed(conn, payload.token)
        ended = await self.regrant(sid, conn, identity)
        self.track(f"{self.namespace} {sid}", conn)
        return {**expiring(identity), "ended": ended}

    def renewed(self, conn: Connection, token: str) -> Identity:
        """The identity behind a refresh's token: the same `sub`, or an error."""
        try:
            identity = self.ctx.auth.identify({"token": token, "name": conn.identity.name})
        except Unauthorized as exc:
            raise ApiError(401, "unauthorized", f"the new token is refused: {exc}") from None
        if identity.sub != conn.identity.sub:
            raise forbidden("a refreshed token must have the same sub")
        return identity

    async def regrant(self, sid: str, conn: Connection, identity: Identity) -> list[str]:
        """Replace the connection's identity; end what its new grants do not cover (each
        with a notice to the client) and say what ended."""
        conn.identity = identity
        return []

    async def trigger_event(self, event: Any, *args: Any) -> Any:
        if event in ("connect", "disconnect") and not from_client.get():
            return await super().trigger_event(event, *args)
        return await self.handle(event, args[0], args[1:])

    async def handle(self, event: Any, sid: str, payload: tuple[Any, ...]) -> dict[str, Any]:
        """Run one client event; the answer is the ack body, errors included."""
        try:
            return {"ok": True, **await self._dispatch(event, sid, payload)}
        except ApiError as exc:
            error = exc
        except StoreUnavailable as exc:
            error = unavailable(str(exc))
        except Exception:
            log.exception("handler for %r on %s failed", event, self.namespace)
            error = unavailable("internal error, try again")
        return await self._refuse(sid, event, error)

    async def _dispatch(self, event: Any, sid: str, payload: tuple[Any, ...]) -> dict[str, Any]:
        conn = self.conns.get(sid)
        if conn is None:
            raise unavailable("not connected")
        if not conn.bucket.take():
            if conn.bucket.flooding:
                log.warning("disconnecting %s on %s: flooding", sid, self.namespace)
                await conn.hang_up("rate_limited")
            raise ApiError(429, "rate_limited", "too many events, slow down")
        spec = self.events.get(event) if isinstance(event, str) else None
        if spec is None:
            known = ", ".join(sorted(self.events))
            raise invalid_payload(f"unknown event {event!r} on {self.namespace} (use {known})")
        if len(payload) > 1:
            raise invalid_payload("send one payload object")
        model, method = spec
        handler: Handler = getattr(self, method)
        return await handler(sid, conn, model.parse(payload[0] if payload else {}))

    async def _refuse(self, sid: str, event: Any, error: ApiError) -> dict[str, Any]:
        self.ctx.metrics.rejected.labels(error.code).inc()
        body: dict[str, Any] = {"ok": False, **error.body()}
        if not ack_requested.get():
            notice = {**body, "event": event if isinstance(event, str) else repr(event)}
            await self.emit("error", notice, to=sid)
        return body
