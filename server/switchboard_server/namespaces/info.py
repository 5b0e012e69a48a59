"""/info: announcements to everyone, and chat rooms with presence and recent history."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from ..auth import Identity
from ..authhook import check_hook
from ..errors import forbidden, unavailable
from ..hub import chat_room
from ..models import MessageIn, Payload, RecentIn, RoomIn
from ..storage import StoreUnavailable
from .base import BaseNamespace, Connection, Context

log = logging.getLogger("switchboard.socket")


class InfoNamespace(BaseNamespace):
    events: ClassVar[dict[str, tuple[type[Payload], str]]] = {
        **BaseNamespace.events,
        "join": (RoomIn, "join"),
        "leave": (RoomIn, "leave"),
        "message": (MessageIn, "message"),
        "recent": (RecentIn, "recent"),
    }

    def __init__(self, namespace: str, context: Context) -> None:
        super().__init__(namespace, context)
        # token sub -> room -> how many of its connections on this process hold the room
        self.held: dict[str, dict[str, int]] = {}
        # One join, leave or disconnect at a time per connection (Socket.IO runs events
        # concurrently): a room is in conn.rooms only once the store has admitted it.
        self._locks: dict[str, asyncio.Lock] = {}

    async def join(self, sid: str, conn: Connection, payload: RoomIn) -> dict[str, Any]:
        room = payload.room
        if not conn.identity.may_join(room):
            raise forbidden(f"your token does not grant room {room!r}")
        await check_hook(self.ctx.auth.hook, conn, "join", "room", room)
        async with self._locks.setdefault(sid, asyncio.Lock()):
            if self.conns.get(sid) is not conn:
                raise unavailable("not connected")
            if room not in conn.rooms:
                await self._enter(sid, conn, room)
        return await self.ctx.hub.room_state(room)

    async def leave(self, sid: str, conn: Connection, payload: RoomIn) -> dict[str, Any]:
        async with self._locks.setdefault(sid, asyncio.Lock()):
            if payload.room in conn.rooms:
                await self._part(sid, conn, payload.room)
        return {}

    async def message(self, sid: str, conn: Connection, payload: MessageIn) -> dict[str, Any]:
        if payload.room not in conn.rooms:
            raise forbidden(f"join room {payload.room!r} before sending to it")
        message = await self.ctx.hub.post_message(payload.room, payload.text, conn.member, sid)
        return {"message": message}

    async def recent(self, sid: str, conn: Connection, payload: RecentIn) -> dict[str, Any]:
        found = await self.ctx.hub.recent_announcements(payload.limit, conn.rooms)
        return {"announcements": found}

    async def regrant(self, sid: str, conn: Connection, identity: Identity) -> list[str]:
        await super().regrant(sid, conn, identity)
        ended = []
        async with self._locks.setdefault(sid, asyncio.Lock()):
            for room in sorted(conn.rooms):
                if not identity.may_join(room):
                    await self._part(sid, conn, room)
                    why = forbidden(f"your new token does not grant room {room!r}")
                    await conn.notify("left", {"room": room, **why.body()})
                    ended.append(room)
        return ended

    async def closed(self, sid: str, conn: Connection) -> None:
        async with self._locks.setdefault(sid, asyncio.Lock()):
            for room in list(conn.rooms):
                try:
                    await self._part(sid, conn, room)
                except StoreUnavailable as exc:
                    log.warning("could not record that %s left %s: %s", sid, room, exc)
        self._locks.pop(sid, None)

    async def _enter(self, sid: str, conn: Connection, room: str) -> None:
        limit = self.ctx.settings.max_rooms
        if len(conn.rooms) >= limit:
            raise forbidden(f"at most {limit} rooms per connection")
        self._hold(conn, room)  # before the await: other connections of this sub count it
        try:
            await self.ctx.hub.enter_room(room, sid, conn.member)
        except BaseException:
            self._release(conn, room)
            raise
        conn.rooms.add(room)
        await conn.enter(chat_room(room))

    async def _part(self, sid: str, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        self._release(conn, room)
        await conn.exit(chat_room(room))
        await self.ctx.hub.exit_room(room, sid, conn.member)

    def _hold(self, conn: Connection, room: str) -> None:
        """Count the room against the connection's identity; anonymous ones have none."""
        sub = conn.identity.sub
        if sub is None:
            return
        held = self.held.setdefault(sub, {})
        limit = self.ctx.settings.max_rooms_per_identity
        if room not in held and len(held) >= limit:
            raise forbidden(f"at most {limit} rooms per identity ({sub!r}), across its connections")
        held[room] = held.get(room, 0) + 1

    def _release(self, conn: Connection, room: str) -> None:
        sub = conn.identity.sub
        held = self.held.get(sub, {}) if sub is not None else {}
        if room not in held:
            return
        held[room] -= 1
        if held[room] == 0:
            del held[room]
        if not held and sub is not None:
            self.held.pop(sub, None)
