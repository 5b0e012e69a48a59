"""memory:// — everything in dicts; for tests and demos, lost at exit."""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..models import (
    TERMINAL,
    Announcement,
    ChatMessage,
    Job,
    LogEntry,
    LogLine,
    Revocation,
    state_of,
    text_size,
)
from .base import (
    CHAT_HISTORY,
    IDEMPOTENCY_TTL,
    KEEP_ANNOUNCEMENTS,
    ChatUsage,
    LogLimits,
    Mutation,
    OutboxEntry,
    RoomLimits,
    Store,
    StoredResponse,
    WebhookStats,
    index_keys,
    job_response,
    listed_by,
    log_response,
    no_job,
    no_webhook_stats,
    numbered,
    revocation_key,
    too_many_rooms,
    webhook_event,
)


@dataclass
class _Log:
    head: int = 0  # the last offset given
    size: int = 0  # bytes of text kept
    lines: deque[LogLine] = field(default_factory=deque)


@dataclass
class _Lane:
    """One webhook's deliveries of one job, oldest first."""

    entries: deque[OutboxEntry] = field(default_factory=deque)
    due: float = 0.0  # not before (seconds since the epoch)
    failures: int = 0  # attempts that failed in a row


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class MemoryStore(Store):
    def __init__(
        self, *, history: int, rooms: RoomLimits | None = None, logs: LogLimits | None = None
    ) -> None:
        super().__init__(history=history, rooms=rooms, logs=logs)
        self._logs: dict[str, _Log] = {}
        # room -> when it became empty; None while someone is in it
        self._rooms: dict[str, float | None] = {}
        self._jobs: dict[str, Job] = {}
        self._listed: dict[str, set[str]] = {}  # index key (tag:…, parent:…) -> its job ids
        self._events: dict[str, deque[Job]] = {}
        self._announcements: deque[Announcement] = deque(maxlen=KEEP_ANNOUNCEMENTS)
        self._messages: dict[str, deque[ChatMessage]] = {}
        self._responses: dict[str, tuple[float, StoredResponse]] = {}
        self._revocations: dict[str, Revocation] = {}
        self._lanes: dict[str, dict[str, _Lane]] = {}  # webhook -> job id -> lane
        self._webhook_stats: dict[str, WebhookStats] = {}
        self._entries = itertools.count(1)

    async def ping(self) -> None:
        return None

    async def apply(self, job_id: str, mutate: Mutation, idempotency_key: str | None = None) -> Job:
        # No await between read and write: atomic on the event loop.
        current = self._jobs.get(job_id)
        job = mutate(copy.deepcopy(current))
        if job["seq"] == 1:
            self._events[job_id] = deque(maxlen=self.history)
        self._jobs[job_id] = state_of(job)
        self._index(job_id, index_keys(current), index_keys(job))
        self._events[job_id].append(job)
        hooks = self.outbox_targets(job)
        if hooks:
            event_id, body = webhook_event(job_id, job["seq"], _dumps(job))
            for hook in hooks:
                entry = OutboxEntry(str(next(self._entries)), event_id, body, time.time(), 0)
                self._lanes.setdefault(hook, {}).setdefault(job_id, _Lane()).entries.append(entry)
                self._stats(hook)["pending"] += 1
        if idempotency_key is not None:
            self._responses[idempotency_key] = (
                time.time() + IDEMPOTENCY_TTL,
                job_response(job),
            )
        return copy.deepcopy(job)

    async def get_job(self, job_id: str) -> Job | None:
        return copy.deepcopy(self._jobs.get(job_id))

    async def list_jobs(
        self, status: str | None, limit: int, *, tag: str | None = None, parent: str | None = None
    ) -> list[Job]:
        key = listed_by(tag, parent)
        ids = self._jobs if key is None else self._listed.get(key, ())  # indexed: no scan
        listed = (self._jobs[job_id] for job_id in ids)
        jobs = [j for j in listed if status is None or j["status"] == status]
        jobs.sort(key=lambda j: j["updated_at"], reverse=True)
        return copy.deepcopy(jobs[:limit])

    async def events_after(self, job_id: str, since: int, limit: int) -> list[Job]:
        events = [e for e in self._events.get(job_id, ()) if e["seq"] > since]
        return copy.deepcopy(events[:limit])

    async def delete_job(self, job_id: str) -> bool:
        self._events.pop(job_id, None)
        self._logs.pop(job_id, None)
        job = self._jobs.pop(job_id, None)
        self._index(job_id, index_keys(job), set())
        return job is not None

    def _index(self, job_id: str, old: set[str], new: set[str]) -> None:
        """Keep the index (tags, parent) in step with the job's new state."""
        for key in old - new:
            listed = self._listed[key]
            listed.discard(job_id)
            if not listed:
                del self._listed[key]
        for key in new - old:
            self._listed.setdefault(key, set()).add(job_id)

    async def append_logs(
        self, job_id: str, entries: list[LogEntry], idempotency_key: str | None = None
    ) -> list[LogLine]:
        # No await: atomic on the event loop.
        if job_id not in self._jobs:
            raise no_job(job_id)
        log = self._logs.setdefault(job_id, _Log())
        lines = numbered(entries, log.head)
        log.head += len(lines)
        log.lines.extend(copy.deepcopy(lines))
        log.size += sum(text_size(line["text"]) for line in lines)
        sizes = (text_size(line["text"]) for line in log.lines)
        dropped, freed = self.logs.excess(len(log.lines), log.size, sizes)
        for _ in range(dropped):
            log.lines.popleft()
        log.size -= freed
        if idempotency_key is not None:
            expires = time.time() + IDEMPOTENCY_TTL
            self._responses[idempotency_key] = (expires, log_response(job_id, lines))
        return lines

    async def logs_after(self, job_id: str, after: int, limit: int) -> tuple[list[LogLine], int]:
        log = self._logs.get(job_id, _Log())
        start = max(0, after - (log.head - len(log.lines)))  # kept offsets are contiguous
        return copy.deepcopy(list(itertools.islice(log.lines, start, start + limit))), log.head

    async def purge(self, finished_before: str, now: float) -> int:
        old = [
            job_id
            for job_id, job in self._jobs.items()
            if job["status"] in TERMINAL and job["updated_at"] < finished_before
        ]
        for job_id in old:
            await self.delete_job(job_id)
        for key in [k for k, (expires, _) in self._responses.items() if expires <= now]:
            del self._responses[key]
        return len(old)

    # -- webhook outbox (lost at exit, like everything here) ---------------------------

    def _stats(self, hook: str) -> WebhookStats:
        return self._webhook_stats.setdefault(hook, no_webhook_stats())

    async def outbox_claim(self, hook: str, limit: int, lease: float) -> list[str]:
        now = time.time()
        lanes = self._lanes.get(hook, {})
        due = sorted((lane.due, job_id) for job_id, lane in lanes.items() if lane.due <= now)
        claimed: list[str] = []
        for _, job_id in due:
            if len(claimed) >= limit:
                break
            if self._lease(hook, job_id, now, lease):
                claimed.append(job_id)
        return claimed

    async def outbox_head(self, hook: str, job_id: str) -> OutboxEntry | None:
        lane = self._lanes.get(hook, {}).get(job_id)
        if lane is None or not lane.entries:
            return None
        head = lane.entries[0]
        return OutboxEntry(head.ref, head.event_id, head.body, head.created, lane.failures)

    async def outbox_delivered(
        self, hook: str, job_id: str, entry: OutboxEntry, lease: float
    ) -> bool:
        lane = self._lanes.get(hook, {}).get(job_id)
        if lane is not None and lane.entries and lane.entries[0].ref == entry.ref:
            lane.entries.popleft()
            lane.failures = 0
            stats = self._stats(hook)
            stats["pending"] -= 1
            stats["delivered"] += 1
            stats["last_success"] = time.time()
        self._leases[(hook, job_id)] = time.time() + lease
        return True

    async def outbox_failed(
        self,
        hook: str,
        job_id: str,
        entry: OutboxEntry,
        delay: float,
        error: str,
        dead_before: float,
    ) -> int:
        now = time.time()
        lane = self._lanes.get(hook, {}).get(job_id)
        stats = self._stats(hook)
        stats["last_failure"], stats["last_error"] = now, error
        self._leases.pop((hook, job_id), None)
        if lane is None:
            return 0
        dead = 0
        if lane.entries and lane.entries[0].ref == entry.ref:
            while lane.entries and lane.entries[0].created < dead_before:
                lane.entries.popleft()
                dead += 1
        stats["pending"] -= dead
        stats["dead"] += dead
        if lane.entries:
            lane.failures += 1
            lane.due = now + delay
        else:
            del self._lanes[hook][job_id]
        return dead

    async def outbox_release(self, hook: str, job_id: str) -> None:
        self._leases.pop((hook, job_id), None)
        lane = self._lanes.get(hook, {}).get(job_id)
        if lane is not None and not lane.entries:
            del self._lanes[hook][job_id]
        elif lane is not None:
            lane.due = 0.0

    async def outbox_stats(self, hook: str) -> WebhookStats:
        return dict(self._stats(hook))  # type: ignore[return-value]

    async def revoke(self, revocation: Revocation) -> None:
        self._revocations[revocation_key(revocation)] = revocation

    async def revocations(self, now: float) -> list[Revocation]:
        for key in [k for k, r in self._revocations.items() if r["until"] <= now]:
            del self._revocations[key]
        return list(self._revocations.values())

    async def add_announcement(self, announcement: Announcement) -> None:
        self._announcements.append(announcement)

    async def recent_announcements(
        self, limit: int, rooms: Iterable[str] | None = None
    ) -> list[Announcement]:
        wanted = None if rooms is None else set(rooms)
        found = [
            a
            for a in reversed(self._announcements)
            if wanted is None or a["room"] is None or a["room"] in wanted
        ]
        return found[:limit]

    async def add_message(self, message: ChatMessage) -> None:
        room = message["room"]
        self._rooms.setdefault(room, time.time())  # no record (nobody joined): expires too
        self._messages.setdefault(room, deque(maxlen=CHAT_HISTORY)).append(message)

    async def recent_messages(self, room: str) -> list[ChatMessage]:
        return list(self._messages.get(room, ()))

    async def _occupy(self, room: str, now: float) -> None:
        if room not in self._rooms and len(self._rooms) >= self.rooms.max_rooms:
            await self.purge_rooms(now - self.rooms.ttl)  # expired rooms make way
            if len(self._rooms) >= self.rooms.max_rooms:
                raise too_many_rooms(self.rooms.max_rooms)
        self._rooms[room] = None

    async def _vacate(self, room: str, now: float) -> None:
        if room in self._rooms:
            self._rooms[room] = now

    async def purge_rooms(self, emptied_before: float) -> int:
        old = [
            r for r, since in self._rooms.items() if since is not None and since <= emptied_before
        ]
        for room in old:
            del self._rooms[room]
            self._messages.pop(room, None)
        return len(old)

    async def chat_usage(self) -> ChatUsage:
        return {
            "rooms": len(self._rooms.keys() | self._messages.keys()),
            "messages": sum(len(kept) for kept in self._messages.values()),
            "members": sum(len(members) for members in self._members.values()),
        }

    async def get_response(self, key: str, now: float) -> StoredResponse | None:
        found = self._responses.get(key)
        if found is None or found[0] <= now:
            return None
        return found[1]

    async def put_response(self, key: str, response: StoredResponse, expires: float) -> None:
        self._responses[key] = (expires, response)
