"""Following jobs, one way for every way in: Socket.IO `/job` (and `/ws`, which speaks
through it) and Server-Sent Events.

A follower is whatever carries one client's live events: it enters and leaves rooms (a
Socket.IO room, or a tap for streams). `subscribe` checks the grants (and the auth
webhook), has the job's events ordered before entering its rooms, then reads what the
client missed: an event committed meanwhile arrives live or in the catch-up (the client
drops a seq it has seen), never in neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .auth import Identity
from .authhook import AuthWebhook, check_hook
from .errors import forbidden, invalid_payload
from .hub import ALL_JOBS_ROOM, Hub, is_log_room, is_tag_room, job_room, log_room, tag_room
from .ordering import JobOrder

RECENT_JOBS = 100  # jobs a '*' subscription's ack lists


class Follower(Protocol):
    @property
    def identity(self) -> Identity: ...
    @property
    def described(self) -> dict[str, Any]: ...  # what the auth webhook is told about it
    @property
    def subscriptions(self) -> set[str]: ...  # rooms entered: job:…, log:…, job:*
    @property
    def enter(self) -> Callable[[str], Awaitable[None]]: ...
    @property
    def exit(self) -> Callable[[str], Awaitable[None]]: ...


class JobService:
    def __init__(
        self, hub: Hub, order: JobOrder, hook: AuthWebhook | None, max_subscriptions: int
    ) -> None:
        self.hub = hub
        self.order = order
        self.hook = hook
        self.max_subscriptions = max_subscriptions

    async def subscribe(
        self,
        follower: Follower,
        job_id: str,
        since: int | None,
        logs: bool = False,
        log_since: int | None = None,
    ) -> dict[str, Any]:
        """Follow a job (or '*', every job) from now on; the ack: its state and what was
        missed after `since` (with `logs`, the lines after `log_since` too)."""
        if logs and job_id == "*":
            raise invalid_payload("log_since: log lines are per job, not for '*'")
        if job_id == "*":
            if not follower.identity.may_watch_all():
                raise forbidden("your token does not grant every job")
            await check_hook(self.hook, follower, "subscribe", "job_id", job_id)
            await self._join(follower, ALL_JOBS_ROOM)
            return {"jobs": await self.hub.list_jobs(None, RECENT_JOBS)}
        if not follower.identity.may_watch(job_id):
            raise forbidden(f"your token does not grant job {job_id!r}")
        await check_hook(self.hook, follower, "subscribe", "job_id", job_id)
        # Join first, then read: an event committed meanwhile arrives live or in `missed`.
        await self._join(follower, job_room(job_id))
        if logs:  # its lines too, until unsubscribe (the log room counts with the job's)
            await self._join(follower, log_room(job_id))
        job, missed, reset = await self.hub.catch_up(job_id, since)
        ack: dict[str, Any] = {"job": job, "missed": missed, "reset": reset}
        if job is not None and (children := await self.hub.children(job_id)) is not None:
            ack["children"] = children  # a parent: then `job:children` as they change
        if logs:
            ack.update(await self.hub.catch_up_logs(job_id, log_since))
        return ack

    async def follow_tag(self, follower: Follower, tag: str) -> dict[str, Any]:
        """Every job with `tag` from now on, whatever its id (its events in per-job seq
        order); the ack: the current state of the newest of them."""
        if not follower.identity.may_follow(tag):
            raise forbidden(f"your token does not grant tag {tag!r}")
        await check_hook(self.hook, follower, "subscribe", "tag", tag)
        await self._join(follower, tag_room(tag))
        return {"tag": tag, "jobs": await self.hub.list_jobs(None, RECENT_JOBS, tag=tag)}

    async def unsubscribe(self, follower: Follower, job_id: str) -> None:
        rooms = [ALL_JOBS_ROOM] if job_id == "*" else [job_room(job_id), log_room(job_id)]
        await self._leave(follower, rooms)

    async def unfollow_tag(self, follower: Follower, tag: str) -> None:
        await self._leave(follower, [tag_room(tag)])

    async def _leave(self, follower: Follower, rooms: list[str]) -> None:
        for room in rooms:
            if room in follower.subscriptions:
                await self._part(follower, room)

    async def leave_all(self, follower: Follower) -> None:
        for room in list(follower.subscriptions):
            await self._part(follower, room)

    async def outside_grants(self, follower: Follower) -> list[str]:
        """Unsubscribe what the follower's (new) grants do not cover: the job ids."""
        ended = []
        identity = follower.identity
        for room in sorted(follower.subscriptions):
            if is_log_room(room):
                continue
            if is_tag_room(room):
                tag = room.removeprefix(tag_room(""))
                if not identity.may_follow(tag):
                    await self.unfollow_tag(follower, tag)
                    ended.append(room)
                continue
            job_id = "*" if room == ALL_JOBS_ROOM else room.removeprefix(job_room(""))
            if identity.may_watch_all() if job_id == "*" else identity.may_watch(job_id):
                continue
            await self.unsubscribe(follower, job_id)
            ended.append(job_id)
        return ended

    async def _join(self, follower: Follower, room: str) -> None:
        if room in follower.subscriptions:
            return
        # A log room is joined only with its job's room, and does not count on its own.
        jobs = sum(not is_log_room(joined) for joined in follower.subscriptions)
        if not is_log_room(room) and jobs >= self.max_subscriptions:
            raise forbidden(f"at most {self.max_subscriptions} subscriptions per connection")
        follower.subscriptions.add(room)
        try:  # before entering the room: its events then reach this client in order
            if _wide(room):  # jobs nobody here watches by id: ordered from first sight
                await self.order.widen()
            else:
                await self.order.watch(room)
        except BaseException:
            follower.subscriptions.discard(room)
            raise
        await follower.enter(room)

    async def _part(self, follower: Follower, room: str) -> None:
        follower.subscriptions.discard(room)
        if _wide(room):
            self.order.narrow()
        else:
            self.order.unwatch(room)
        await follower.exit(room)


def _wide(room: str) -> bool:
    return room == ALL_JOBS_ROOM or is_tag_room(room)
