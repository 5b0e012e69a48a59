"""/job: subscribe to one job (with resume by seq) or to all of them."""

from __future__ import annotations

from typing import Any, ClassVar

from ..auth import Identity
from ..errors import forbidden, invalid_payload
from ..hub import ALL_JOBS_ROOM, is_log_room, job_room, log_room
from ..models import CancelIn, Payload, SubscribeIn, UnsubscribeIn, WhoAmIIn, check_job_id
from .base import BaseNamespace, Connection

RECENT_JOBS = 100


class JobNamespace(BaseNamespace):
    events: ClassVar[dict[str, tuple[type[Payload], str]]] = {
        **BaseNamespace.events,
        "subscribe": (SubscribeIn, "subscribe"),
        "unsubscribe": (UnsubscribeIn, "unsubscribe"),
        "cancel": (CancelIn, "cancel"),
        "whoami": (WhoAmIIn, "whoami"),
    }

    async def subscribe(self, sid: str, conn: Connection, payload: SubscribeIn) -> dict[str, Any]:
        job_id = check_job_id(payload.job_id, allow_all=True)
        logs = "log_since" in payload.model_fields_set
        if logs and job_id == "*":
            raise invalid_payload("log_since: log lines are per job, not for '*'")
        if job_id == "*":
            if not conn.identity.may_watch_all():
                raise forbidden("your token does not grant every job")
            await conn.hook_allows(self.ctx.auth.hook, "subscribe", "job_id", job_id)
            await self._join(sid, conn, ALL_JOBS_ROOM)
            return {"jobs": await self.ctx.hub.list_jobs(None, RECENT_JOBS)}
        if not conn.identity.may_watch(job_id):
            raise forbidden(f"your token does not grant job {job_id!r}")
        await conn.hook_allows(self.ctx.auth.hook, "subscribe", "job_id", job_id)
        # Join first, then read: an event committed meanwhile arrives live or in `missed`
        # (or both; the client drops seqs it has seen), never in neither.
        await self._join(sid, conn, job_room(job_id))
        if logs:  # its lines too, until unsubscribe (the log room counts with the job's)
            await self._join(sid, conn, log_room(job_id))
        job, missed, reset = await self.ctx.hub.catch_up(job_id, payload.since)
        ack = {"job": job, "missed": missed, "reset": reset}
        if logs:
            return {**ack, **await self.ctx.hub.catch_up_logs(job_id, payload.log_since)}
        return ack

    async def cancel(self, sid: str, conn: Connection, payload: CancelIn) -> dict[str, Any]:
        job_id = check_job_id(payload.job_id, allow_all=False)
        if not conn.identity.may_cancel(job_id):
            raise forbidden(f"your token does not grant cancelling job {job_id!r}")
        by = conn.identity.sub or conn.member["id"]
        return {"job": await self.ctx.hub.cancel_job(job_id, by=by)}

    async def whoami(self, sid: str, conn: Connection, payload: WhoAmIIn) -> dict[str, Any]:
        """Who this connection is and what it may do, e.g. to show a Cancel button."""
        return {"sub": conn.identity.sub, "name": conn.identity.name, **conn.identity.grants()}

    async def unsubscribe(
        self, sid: str, conn: Connection, payload: UnsubscribeIn
    ) -> dict[str, Any]:
        job_id = check_job_id(payload.job_id, allow_all=True)
        rooms = [ALL_JOBS_ROOM] if job_id == "*" else [job_room(job_id), log_room(job_id)]
        for room in rooms:
            if room in conn.subscriptions:
                await self._part(conn, room)
        return {}

    async def closed(self, sid: str, conn: Connection) -> None:
        for room in list(conn.subscriptions):
            await self._part(conn, room)

    async def regrant(self, sid: str, conn: Connection, identity: Identity) -> list[str]:
        await super().regrant(sid, conn, identity)
        ended = []
        for room in sorted(conn.subscriptions):
            if is_log_room(room):
                continue
            job_id = "*" if room == ALL_JOBS_ROOM else room.removeprefix("job:")
            if identity.may_watch_all() if job_id == "*" else identity.may_watch(job_id):
                continue
            await self.unsubscribe(sid, conn, UnsubscribeIn(job_id=job_id))
            why = forbidden(f"your new token does not grant job {job_id!r}")
            await conn.notify("unsubscribed", {"job_id": job_id, **why.body()})
            ended.append(job_id)
        return ended

    async def _join(self, sid: str, conn: Connection, room: str) -> None:
        if room in conn.subscriptions:
            return
        limit = self.ctx.settings.max_subscriptions
        # A log room is joined only with its job's room, and does not count on its own.
        jobs = sum(not is_log_room(joined) for joined in conn.subscriptions)
        if not is_log_room(room) and jobs >= limit:
            raise forbidden(f"at most {limit} subscriptions per connection")
        conn.subscriptions.add(room)
        if room != ALL_JOBS_ROOM:
            try:  # before entering the room: its events then reach this client in order
                await self.ctx.order.watch(room)
            except BaseException:
                conn.subscriptions.discard(room)
                raise
        await conn.enter(room)

    async def _part(self, conn: Connection, room: str) -> None:
        conn.subscriptions.discard(room)
        if room != ALL_JOBS_ROOM:
            self.ctx.order.unwatch(room)
        await conn.exit(room)
