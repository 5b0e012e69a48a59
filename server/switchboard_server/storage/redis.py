"""redis://host:port/db — several processes share jobs, history, chat and presence.

An update is WATCH/MULTI/EXEC on the job's key: read, mutate in Python (the same rule
as every store), write the job, its event, the indexes and the idempotent answer in one
transaction, and retry when another process got there first. The seq therefore goes up
by exactly one per accepted update, whichever process accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from ..models import TERMINAL, Announcement, ChatMessage, Job, Member
from .base import (
    CHAT_HISTORY,
    IDEMPOTENCY_TTL,
    KEEP_ANNOUNCEMENTS,
    Mutation,
    Store,
    StoredResponse,
    StoreUnavailable,
    job_response,
)

NODE_TTL = 15  # seconds a node's presence records outlive its last heartbeat
HEARTBEAT = 5.0
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _score(iso: str) -> float:
    """updated_at as a sortable number (milliseconds)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc


class RedisStore(Store):
    def __init__(self, url: str, *, history: int, prefix: str = "switchboard:") -> None:
        super().__init__(history=history)
        self.url = url
        self.prefix = prefix
        self.node = uuid.uuid4().hex[:12]
        # redis-py's asyncio annotations are loose (bytes | str | ...): keep this one Any.
        self.redis: Any = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )
        self._heartbeat: asyncio.Task[None] | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def open(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="switchboard-redis-heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.key("node", self.node))
        await self.redis.aclose()

    async def ping(self) -> None:
        async with _reachable():
            await self.redis.ping()

    # -- jobs --------------------------------------------------------------

    async def apply(self, job_id: str, mutate: Mutation, idempotency_key: str | None = None) -> Job:
        job_key, events_key = self.key("job", job_id), self.key("events", job_id)
        async with _reachable(), self.redis.pipeline(transaction=True) as pipe:
            for attempt in range(100):
                try:
                    await pipe.watch(job_key)
                    raw = await pipe.get(job_key)
                    current = cast(Job, json.loads(raw)) if raw else None
                    job = mutate(current)  # may raise ApiError: nothing is written
                    body = _dumps(job)
                    pipe.multi()
                    pipe.set(job_key, body)
                    pipe.zadd(events_key, {body: job["seq"]})
                    pipe.zremrangebyscore(events_key, "-inf", job["seq"] - self.history)
                    pipe.zadd(self.key("jobs"), {job_id: _score(job["updated_at"])})
                    if current is not None and current["status"] != job["status"]:
                        pipe.zrem(self.key("status", current["status"]), job_id)
                    pipe.zadd(
                        self.key("status", job["status"]), {job_id: _score(job["updated_at"])}
                    )
                    if idempotency_key is not None:
                        expires = time.time() + IDEMPOTENCY_TTL
                        self._remember(pipe, idempotency_key, job_response(job), expires)
                    await pipe.execute()
                    return job
                except WatchError:
                    await asyncio.sleep(min(0.001 * attempt, 0.02))
                finally:
                    await pipe.reset()
        raise StoreUnavailable(f"job {job_id!r} is too contended, try again")

    async def get_job(self, job_id: str) -> Job | None:
        async with _reachable():
            raw = await self.redis.get(self.key("job", job_id))
        return cast(Job, json.loads(raw)) if raw else None

    async def list_jobs(self, status: str | None, limit: int) -> list[Job]:
        index = self.key("jobs") if status is None else self.key("status", status)
        async with _reachable():
            ids = await self.redis.zrevrange(index, 0, limit - 1)
            if not ids:
                return []
            raws = await self.redis.mget([self.key("job", job_id) for job_id in ids])
        return [json.loads(raw) for raw in raws if raw]

    async def events_after(self, job_id: str, since: int, limit: int) -> list[Job]:
        async with _reachable():
            raws = await self.redis.zrangebyscore(
                self.key("events", job_id), f"({since}", "+inf", start=0, num=limit
            )
        return [json.loads(raw) for raw in raws]

    async def delete_job(self, job_id: str) -> bool:
        async with _reachable():
            return await self._forget(job_id)

    async def _forget(self, job_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key("job", job_id), self.key("events", job_id))
            pipe.zrem(self.key("jobs"), job_id)
            for status in STATUSES:
                pipe.zrem(self.key("status", status), job_id)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def purge(self, finished_before: str, now: float) -> int:
        cutoff = _score(finished_before)
        removed = 0
        async with _reachable():
            for status in TERMINAL:
                for job_id in await self.redis.zrangebyscore(
                    self.key("status", status), "-inf", f"({cutoff}"
                ):
                    removed += await self._forget(job_id)
        return removed  # idempotent answers expire by themselves

    # -- announcements and chat ---------------------------------------------

    async def add_announcement(self, announcement: Announcement) -> None:
        async with _reachable(), self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key("announcements"), _dumps(announcement))
            pipe.ltrim(self.key("announcements"), 0, KEEP_ANNOUNCEMENTS - 1)
            await pipe.execute()

    async def recent_announcements(
        self, limit: int, rooms: Iterable[str] | None = None
    ) -> list[Announcement]:
        wanted = None if rooms is None else set(rooms)
        async with _reachable():
            raws = await self.redis.lrange(self.key("announcements"), 0, -1)
        found = (cast(Announcement, json.loads(raw)) for raw in raws)
        kept = [a for a in found if wanted is None or a["room"] is None or a["room"] in wanted]
        return kept[:limit]

    async def add_message(self, message: ChatMessage) -> None:
        key = self.key("messages", message["room"])
        async with _reachable(), self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, _dumps(message))
            pipe.ltrim(key, -CHAT_HISTORY, -1)
            await pipe.execute()

    async def recent_messages(self, room: str) -> list[ChatMessage]:
        async with _reachable():
            raws = await self.redis.lrange(self.key("messages", room), 0, -1)
        return [json.loads(raw) for raw in raws]

    # -- idempotency --------------------------------------------------------

    async def get_response(self, key: str, now: float) -> StoredResponse | None:
        async with _reachable():
            raw = await self.redis.get(self.key("idem", key))
        found = json.loads(raw) if raw else None
        return cast(StoredResponse, found["response"]) if found and found["expires"] > now else None

    async def put_response(self, key: str, response: StoredResponse, expires: float) -> None:
        async with _reachable():
            await self._remember(self.redis, key, response, expires)

    def _remember(self, client: Any, key: str, response: StoredResponse, expires: float) -> Any:
        """SET with the expiry kept in the value too; Redis forgets it a little later."""
        body = _dumps({"expires": expires, "response": response})
        return client.set(self.key("idem", key), body, ex=max(1, int(expires - time.time()) + 1))

    # -- presence, shared by every process ---------------------------------------
    # Each member record names its node; a node that stops beating is forgotten.

    async def add_member(self, room: str, conn: str, member: Member) -> None:
        async with _reachable():
            await self.redis.hset(self.key("members", room), f"{self.node}:{conn}", _dumps(member))

    async def remove_member(self, room: str, conn: str) -> None:
        async with _reachable():
            await self.redis.hdel(self.key("members", room), f"{self.node}:{conn}")

    async def members(self, room: str) -> list[Member]:
        key = self.key("members", room)
        async with _reachable():
            records = await self.redis.hgetall(key)
            nodes = {field.split(":", 1)[0] for field in records}
            alive = {node for node in nodes if await self.redis.exists(self.key("node", node))}
            dead = [field for field in records if field.split(":", 1)[0] not in alive]
            if dead:
                await self.redis.hdel(key, *dead)
        unique: dict[str, Member] = {}
        for field, raw in records.items():
            if field.split(":", 1)[0] in alive:
                member = cast(Member, json.loads(raw))
                unique[member["id"]] = member
        return list(unique.values())

    async def _beat(self) -> None:
        while True:
            # While Redis is down readiness says so, and the next beat tries again.
            with contextlib.suppress(RedisError, OSError):
                await self.redis.set(self.key("node", self.node), "1", ex=NODE_TTL)
            await asyncio.sleep(HEARTBEAT)
