"""/info: announcements to everyone, and chat rooms with presence and recent history."""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import forbidden
from ..hub import chat_room
from ..models import MessageIn, Payload, RecentIn, RoomIn
from .base import BaseNamespace, Connection


class InfoNamespace(BaseNamespace):
    events: ClassVar[dict[str, tuple[type[Payload], str]]] = {
        "join": (RoomIn, "join"),
        "leave": (RoomIn, "leave"),
        "message": (MessageIn, "message"),
        "recent": (RecentIn, "recent"),
    }

    async def join(self, sid: str, conn: Connection, payload: RoomIn) -> dict[str, Any]:
        room = payload.room
        if not conn.identity.may_join(room):
            raise forbidden(f"your token does not grant room {room!r}")
        limit = self.ctx.settings.max_rooms
        if room not in conn.rooms and len(conn.rooms) >= limit:
            raise forbidden(f"at most {limit} rooms per connection")
        if room not in conn.rooms:
            conn.rooms.add(room)
            await conn.enter(chat_room(room))
            await self.ctx.hub.enter_room(room, sid, conn.member)
        return await self.ctx.hub.room_state(room)

    async def leave(self, sid: str, conn: Connection, payload: RoomIn) -> dict[str, Any]:
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

    async def closed(self, sid: str, conn: Connection) -> None:
        for room in list(conn.rooms):
            await self._part(sid, conn, room)

    async def _part(self, sid: str, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        await conn.exit(chat_room(room))
        await self.ctx.hub.exit_room(room, sid, conn.member)
