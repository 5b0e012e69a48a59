"""The small interface every store implements; the hub is its only caller."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from ..errors import ApiError, not_found
from ..models import (
    Announcement,
    ChatMessage,
    Job,
    LogBatch,
    LogEntry,
    LogLine,
    Member,
    Revocation,
    tags_of,
    text_size,
)

CHAT_HISTORY = 50
KEEP_ANNOUNCEMENTS = 1000
IDEMPOTENCY_TTL = 24 * 3600.0
# Log lines read at once (a subscribe ack, a batch filling a gap): small enough for any client.
LOG_PAGE_LINES = 1000
LOG_PAGE_BYTES = 512 * 1024

# Turns the current state (None: unknown job) into the next one, or raises ApiError.
Mutation = Callable[[Job | None], Job]
# The webhooks (their keys) that want a committed state: the store enqueues one delivery
# for each in the same write as the job.
Targets = Callable[[Job], list[str]]


class StoredResponse(TypedDict):
    status: int
    body: Any


def revocation_key(revocation: Revocation) -> str:
    jti = revocation["jti"]
    return f"jti:{jti}" if jti is not None else f"sub:{revocation['sub']}"


def index_keys(job: Job | None) -> set[str]:
    """What lists a job beside its status: tag:<tag> for each tag, parent:<id>."""
    if job is None:
        return set()
    keys = {f"tag:{tag}" for tag in tags_of(job)}
    if job.get("parent"):
        keys.add(f"parent:{job['parent']}")
    return keys


def listed_by(tag: str | None, parent: str | None) -> str | None:
    """The index key list_jobs reads (None: every job)."""
    return f"tag:{tag}" if tag is not None else f"parent:{parent}" if parent is not None else None


def job_response(job: Job) -> StoredResponse:
    """What an HTTP write of `job` answered: 201 when it created the job (seq 1), else 200."""
    return {"status": 201 if job["seq"] == 1 else 200, "body": job}


def log_response(job_id: str, lines: list[LogLine]) -> StoredResponse:
    """What an HTTP append of `lines` answered (Redis builds the same in its script)."""
    return {"status": 201, "body": {"job_id": job_id, "offsets": [n["offset"] for n in lines]}}


def no_job(job_id: str) -> ApiError:
    return not_found(f"no job {job_id!r}; create it first (any update creates it)")


def numbered(entries: list[LogEntry], head: int) -> list[LogLine]:
    """The entries as the lines after offset `head`."""
    return [{"offset": head + n, **entry} for n, entry in enumerate(entries, 1)]


@dataclass(frozen=True)
class LogLimits:
    """Log lines kept per job: the oldest go while more than `lines` or `bytes` of text are
    kept, but never the newest line."""

    lines: int = 10_000
    bytes: int = 4 * 1024 * 1024

    def excess(self, kept: int, size: int, oldest: Iterable[int]) -> tuple[int, int]:
        """How many of the oldest lines go, and their bytes, given the count and bytes kept
        and the sizes of the kept lines, oldest first (read only as far as needed)."""
        dropped = freed = 0
        for line_size in oldest:
            left = kept - dropped
            if left <= 1 or (left <= self.lines and size - freed <= self.bytes):
                break
            dropped += 1
            freed += line_size
        return dropped, freed


def webhook_event(job_id: str, seq: int, job_json: str) -> tuple[str, str]:
    """A webhook delivery of an event: its id and the exact body POSTed (Redis builds the
    same text in its script; job ids need no JSON escaping)."""
    event_id = f"{job_id}:{seq}"
    return event_id, f'{{"id":"{event_id}","type":"job.update","job":{job_json}}}'


@dataclass(frozen=True)
class OutboxEntry:
    """A webhook delivery waiting in the store: the head of its lane (webhook, job)."""

    ref: str  # the store's handle for it
    event_id: str  # "<job id>:<seq>", the webhook-id header
    body: str  # the JSON POSTed, the same at every attempt
    created: float  # when the event was committed (seconds since the epoch)
    attempts: int  # attempts of the lane that failed in a row


class WebhookStats(TypedDict):
    """A webhook's deliveries as the store counts them (every node's, on Redis)."""

    pending: int
    delivered: int
    dead: int
    last_success: float | None
    last_failure: float | None
    last_error: str | None


def no_webhook_stats() -> WebhookStats:
    return {"pending": 0, "delivered": 0, "dead": 0, "last_success": None,
            "last_failure": None, "last_error": None}  # fmt: skip


class StoreUnavailable(Exception):
    """The backend cannot be reached or refused to commit; callers answer 503."""


class NotReplicated(StoreUnavailable):
    """Committed on the Redis primary but not acknowledged by enough replicas in time:
    answered 503 (a failover now could lose it), yet stored, so it is broadcast. `committed`
    is what was written: the job, or the log lines."""

    def __init__(self, committed: Any, message: str) -> None:
        super().__init__(message)
        self.committed = committed


@dataclass(frozen=True)
class RoomLimits:
    """What bounds chat state: rooms kept, presence records per room, life of an empty room."""

    max_rooms: int = 10_000
    max_members: int = 10_000
    ttl: float = 3600.0  # seconds an empty room keeps its record and history


class RoomLimitReached(Exception):
    """A join would pass RoomLimits; the message names the limit."""


def too_many_rooms(limit: int) -> RoomLimitReached:
    return RoomLimitReached(
        f"the server keeps at most {limit} chat rooms; join an existing room,"
        " or try again when an empty one has expired"
    )


def room_full(room: str, limit: int) -> RoomLimitReached:
    return RoomLimitReached(f"room {room!r} is full (at most {limit} members)")


class ChatUsage(TypedDict):
    """What chat holds in a store: rooms with a record or history, messages, presence records."""

    rooms: int
    messages: int
    members: int


class Store(ABC):
    def __init__(
        self, *, history: int, rooms: RoomLimits | None = None, logs: LogLimits | None = None
    ) -> None:
        self.history = history
        self.rooms = rooms or RoomLimits()
        self.logs = logs or LogLimits()
        self._members: dict[str, dict[str, Member]] = {}
        # Leases on webhook lanes (webhook key, job id) -> until when, for the stores that
        # one process owns; Redis keeps them in Redis, shared by the nodes.
        self._leases: dict[tuple[str, str], float] = {}

    # Set before use when webhooks are configured; None enqueues nothing.
    webhooks: Targets | None = None

    def outbox_targets(self, job: Job) -> list[str]:
        return self.webhooks(job) if self.webhooks is not None else []

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and prepare; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush what is pending and release resources."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable when the backend is not reachable."""

    # Shared stores name each process (a node) and know which are alive; one process
    # alone ("") is the only node there is.
    node = ""

    async def node_alive(self, node: str) -> bool:
        return node == self.node

    @abstractmethod
    async def apply(self, job_id: str, mutate: Mutation, idempotency_key: str | None = None) -> Job:
        """Atomically advance one job: read, mutate, write the job and its event, trim history.

        Returns once the result is committed. With `idempotency_key`, the HTTP answer
        (job_response) is committed in the same transaction.
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def list_jobs(
        self, status: str | None, limit: int, *, tag: str | None = None, parent: str | None = None
    ) -> list[Job]:
        """Most recently updated first; with `tag`, the jobs that have it; with `parent`,
        its children."""

    @abstractmethod
    async def events_after(self, job_id: str, since: int, limit: int) -> list[Job]:
        """Kept events with seq > since, oldest first."""

    @abstractmethod
    async def delete_job(self, job_id: str) -> bool:
        """Forget a job with its history and log lines."""

    @abstractmethod
    async def purge(self, finished_before: str, now: float) -> int:
        """Forget finished jobs last updated before `finished_before` (with their history and
        log lines), and expired responses."""

    @abstractmethod
    async def append_logs(
        self, job_id: str, entries: list[LogEntry], idempotency_key: str | None = None
    ) -> list[LogLine]:
        """Number the entries with the job's next offsets and keep them, within `logs`: one
        atomic write. Raises no_job for an unknown job. With `idempotency_key`, the HTTP
        answer (log_response) is committed with them."""

    @abstractmethod
    async def logs_after(self, job_id: str, after: int, limit: int) -> tuple[list[LogLine], int]:
        """Kept lines with offset > after, oldest first, at most `limit` (0: none); and the
        job's last offset (0: no line yet)."""

    async def log_head(self, job_id: str) -> int:
        """The job's last offset (0: no line yet)."""
        return (await self.logs_after(job_id, 0, 0))[1]

    async def log_page(self, job_id: str, after: int) -> tuple[list[LogLine], int]:
        """The next page of kept lines after `after` (LOG_PAGE_LINES, or as many as make
        LOG_PAGE_BYTES of text, at least one); and the job's last offset."""
        lines, head = await self.logs_after(job_id, after, LOG_PAGE_LINES)
        size = 0
        for count, line in enumerate(lines, 1):
            size += text_size(line["text"])
            if size >= LOG_PAGE_BYTES:
                return lines[:count], head
        return lines, head

    async def log_batches(
        self, job_id: str, after: int, until: int | None = None
    ) -> list[LogBatch]:
        """Every kept line after `after` (up to `until` at least, when given), a batch per
        page."""
        batches: list[LogBatch] = []
        while True:
            lines, head = await self.log_page(job_id, after)
            if not lines:
                return batches
            batches.append({"job_id": job_id, "lines": lines})
            after = lines[-1]["offset"]
            if after >= (head if until is None else min(head, until)):
                return batches

    @abstractmethod
    async def add_announcement(self, announcement: Announcement) -> None: ...

    @abstractmethod
    async def recent_announcements(
        self, limit: int, rooms: Iterable[str] | None = None
    ) -> list[Announcement]:
        """Newest first. With `rooms`, those to everyone plus those to the given rooms."""

    @abstractmethod
    async def add_message(self, message: ChatMessage) -> None: ...

    @abstractmethod
    async def recent_messages(self, room: str) -> list[ChatMessage]:
        """The last CHAT_HISTORY messages of a room, oldest first."""

    @abstractmethod
    async def purge_rooms(self, emptied_before: float) -> int:
        """Forget rooms empty since before `emptied_before`, with their history.

        Redis keeps the expiry of each room itself (its own clock) and ignores the argument.
        """

    @abstractmethod
    async def chat_usage(self) -> ChatUsage: ...

    @abstractmethod
    async def get_response(self, key: str, now: float) -> StoredResponse | None: ...

    @abstractmethod
    async def put_response(self, key: str, response: StoredResponse, expires: float) -> None: ...

    @abstractmethod
    async def revoke(self, revocation: Revocation) -> None:
        """Keep a revocation until its `until` (one per jti or sub: the latest wins)."""

    @abstractmethod
    async def revocations(self, now: float) -> list[Revocation]:
        """The revocations still in force."""

    # Webhook outbox. apply() enqueues a delivery per webhook that wants the committed state,
    # in the same write; a lane is one webhook's deliveries of one job, oldest first.

    @abstractmethod
    async def outbox_claim(self, hook: str, limit: int, lease: float) -> list[str]:
        """Up to `limit` jobs whose lane of `hook` is due and not leased, each now leased to
        this process for `lease` seconds."""

    @abstractmethod
    async def outbox_head(self, hook: str, job_id: str) -> OutboxEntry | None:
        """The lane's oldest delivery, None when the lane is empty."""

    @abstractmethod
    async def outbox_delivered(
        self, hook: str, job_id: str, entry: OutboxEntry, lease: float
    ) -> bool:
        """Remove the delivered head (a 2xx) and keep the lane `lease` seconds more; False
        when the lease was lost to another process (which then has the lane)."""

    @abstractmethod
    async def outbox_failed(
        self,
        hook: str,
        job_id: str,
        entry: OutboxEntry,
        delay: float,
        error: str,
        dead_before: float,
    ) -> int:
        """Note a failed attempt of the head and release the lane, due again in `delay`
        seconds. When the head was committed before `dead_before` it is given up, with the
        entries after it committed before then: how many were given up (dead)."""

    @abstractmethod
    async def outbox_release(self, hook: str, job_id: str) -> None:
        """Give the lane up: forgotten when empty, else due at once (for another process)."""

    @abstractmethod
    async def outbox_stats(self, hook: str) -> WebhookStats: ...

    def _lease(self, hook: str, job_id: str, now: float, lease: float) -> bool:
        """Take an in-process lease on a lane when it is free (single-process stores)."""
        if self._leases.get((hook, job_id), 0.0) > now:
            return False
        self._leases[(hook, job_id)] = now + lease
        return True

    def _leased(self, hook: str, now: float) -> int:
        for key in [k for k, until in self._leases.items() if until <= now]:
            del self._leases[key]
        return sum(1 for h, _ in self._leases if h == hook)

    # Presence: who is in a room right now. A single process keeps it in memory and
    # the room's record in the store; stores shared by several processes override these.

    async def add_member(self, room: str, conn: str, member: Member) -> None:
        """Raises RoomLimitReached for a new room past max_rooms or a full room."""
        if room not in self._members:
            await self._occupy(room, time.time())
        members = self._members.setdefault(room, {})
        if conn not in members and len(members) >= self.rooms.max_members:
            raise room_full(room, self.rooms.max_members)
        members[conn] = member

    async def remove_member(self, room: str, conn: str) -> None:
        members = self._members.get(room)
        if members is None or members.pop(conn, None) is None:
            return
        if not members:
            del self._members[room]
            await self._vacate(room, time.time())
            if room in self._members:  # a join whose write went before ours: in use after all
                with contextlib.suppress(RoomLimitReached):
                    await self._occupy(room, time.time())

    async def _occupy(self, room: str, now: float) -> None:
        """Mark the room in use, creating its record within max_rooms (single-process stores)."""
        raise NotImplementedError

    async def _vacate(self, room: str, now: float) -> None:
        """Note that the room became empty at `now`; it expires `ttl` later."""
        raise NotImplementedError

    async def members(self, room: str) -> list[Member]:
        """Distinct members (by id) of a room."""
        unique = {m["id"]: m for m in self._members.get(room, {}).values()}
        return list(unique.values())
