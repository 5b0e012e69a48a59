"""/job: subscribe to one job (with resume by seq) or to all of them; cancel; whoami."""

from __future__ import annotations

from typing import Any, ClassVar

from ..auth import Identity
from ..errors import forbidden
from ..models import CancelIn, Payload, SubscribeIn, UnsubscribeIn, WhoAmIIn, check_job_id
from .base import BaseNamespace, Connection


class JobNamespace(BaseNamespace):
    events: ClassVar[dict[str, tuple[type[Payload], str]]] = {
        **BaseNamespace.events,
        "subscribe": (SubscribeIn, "subscribe"),
        "unsubscribe": (UnsubscribeIn, "unsubscribe"),
        "cancel": (CancelIn, "cancel"),
        "whoami": (WhoAmIIn, "whoami"),
    }

    async def subscribe(self, sid: str, conn: Connection, payload: SubscribeIn) -> dict[str, Any]:
        if payload.tag is not None:
            return await self.ctx.jobs.follow_tag(conn, payload.tag)
        job_id = check_job_id(payload.job_id or "", allow_all=True)
        logs = "log_since" in payload.model_fields_set
        return await self.ctx.jobs.subscribe(conn, job_id, payload.since, logs, payload.log_since)

    async def unsubscribe(
        self, sid: str, conn: Connection, payload: UnsubscribeIn
    ) -> dict[str, Any]:
        if payload.tag is not None:
            await self.ctx.jobs.unfollow_tag(conn, payload.tag)
            return {}
        job_id = check_job_id(payload.job_id or "", allow_all=True)
        await self.ctx.jobs.unsubscribe(conn, job_id)
        return {}

    async def cancel(self, sid: str, conn: Connection, payload: CancelIn) -> dict[str, Any]:
        job_id = check_job_id(payload.job_id, allow_all=False)
        if not conn.identity.may_cancel(job_id):
            raise forbidden(f"your token does not grant cancelling job {job_id!r}")
        by = conn.identity.sub or conn.member["id"]
        return {"job": await self.ctx.hub.cancel_job(job_id, by=by)}

    async def whoami(self, sid: str, conn: Connection, payload: WhoAmIIn) -> dict[str, Any]:
        """Who this connection is and what it may do, e.g. to show a Cancel button."""
        return {"sub": conn.identity.sub, "name": conn.identity.name, **conn.identity.grants()}

    async def closed(self, sid: str, conn: Connection) -> None:
        await self.ctx.jobs.leave_all(conn)

    async def regrant(self, sid: str, conn: Connection, identity: Identity) -> list[str]:
        await super().regrant(sid, conn, identity)
        ended = await self.ctx.jobs.outside_grants(conn)
        for one in ended:  # a job id, or tag:<tag>
            kind, value = ("tag", one[4:]) if one.startswith("tag:") else ("job_id", one)
            why = forbidden(f"your new token does not grant {kind} {value!r}")
            await conn.notify("unsubscribed", {kind: value, **why.body()})
        return ended
