"""The one place that changes state: validate, store durably, then broadcast."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypedDict, cast

from .errors import unavailable
from .metrics import Metrics
from .models import (
    TERMINAL,
    Announcement,
    AnnouncementIn,
    ChatMessage,
    Job,
    JobChange,
    LogBatch,
    LogEntry,
    LogLine,
    LogsIn,
    Member,
    apply_change,
    new_id,
    now_iso,
    request_cancel,
    tags_of,
)
from .settings import Settings
from .storage import NotReplicated, RoomLimitReached, Store, StoredResponse, StoreUnavailable
from .storage.base import IDEMPOTENCY_TTL, Mutation

log = logging.getLogger("switchboard.hub")

JOB_NS = "/job"
INFO_NS = "/info"
ALL_JOBS_ROOM = "job:*"  # job ids never contain '*'
PURGE_EVERY = 60.0
STOP_TIMEOUT = 5.0
MAX_CHILDREN = 1000  # children counted in a parent's summary


class Children(TypedDict):
    """`job:children`: a parent's children counted by status, and their mean progress."""

    job_id: str  # the parent
    total: int
    by_status: dict[str, int]
    progress: float | None
    updated_at: str  # the latest child change counted


def job_room(job_id: str) -> str:
    return f"job:{job_id}"


def log_room(job_id: str) -> str:
    """Where a job's `job:log` batches go: subscribers that asked for its lines."""
    return f"log:{job_id}"


def is_log_room(room: str) -> bool:
    return room.startswith("log:")


def tag_room(tag: str) -> str:
    """Where the events of every job with this tag go (subscribe {tag})."""
    return f"tag:{tag}"


def is_tag_room(room: str) -> bool:
    return room.startswith("tag:")


def event_rooms(job: Job) -> list[str]:
    """Every room a job's event goes to: its own, '*', its tags' and those of the tags it
    took away (their followers learn that the job left them)."""
    tags = [*tags_of(job), *job.get("tags_removed", [])]
    return [job_room(job["id"]), ALL_JOBS_ROOM, *(tag_room(tag) for tag in tags)]


def chat_room(room: str) -> str:
    return f"room:{room}"


class LogCatchUp(TypedDict):
    """What a subscribe with `log_since` adds to its ack."""

    logs: list[LogLine]  # a page of kept lines with offset > log_since
    logs_reset: bool  # lines after log_since were dropped before these
    log_offset: int  # the job's last offset: more pages follow while beyond the last line


class Hub:
    def __init__(self, store: Store, sio: Any, metrics: Metrics, settings: Settings) -> None:
        self.store = store
        self.sio = sio
        self.metrics = metrics
        self.settings = settings
        # One broadcaster emits committed events in commit order, whatever the manager.
        self._outbox: asyncio.Queue[tuple[Job, float]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._parents: set[str] = set()  # whose children changed since the last summary
        self._parents_changed = asyncio.Event()
        # Called with each committed job state (the webhooks look for work).
        self.on_commit: list[Callable[[Job], None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._broadcast_loop(), name="switchboard-broadcast"),
            asyncio.create_task(self._purge_loop(), name="switchboard-purge"),
            asyncio.create_task(self._children_loop(), name="switchboard-children"),
        ]

    async def stop(self) -> None:
        """Emit what is committed but not yet sent, then stop the background tasks."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), STOP_TIMEOUT)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- jobs ----------------------------------------------------------------

    async def write_job(
        self,
        job_id: str,
        change: JobChange,
        *,
        create: bool = False,
        idempotency_key: str | None = None,
    ) -> Job:
        """Apply one update; returns the committed state. The broadcast follows."""
        former: set[str] = set()

        def mutate(current: Job | None) -> Job:
            if current is not None and current.get("parent"):
                former.add(cast(str, current["parent"]))  # it may leave that parent
            return apply_change(job_id, current, change, create=create)

        job = await self._commit(job_id, mutate, idempotency_key)
        self._parents_changed_for(former - {job.get("parent")})
        return job

    async def cancel_job(self, job_id: str, by: str) -> Job:
        """Ask the job's worker to stop: an event with `cancel_requested`, status as it was.
        Asking again changes nothing; a finished job answers 409."""
        job = await self.store.get_job(job_id)
        if job is not None and job.get("cancel_requested") and job["status"] not in TERMINAL:
            return job
        return await self._commit(job_id, partial(request_cancel, job_id, by=by), None)

    async def _commit(self, job_id: str, mutate: Mutation, idempotency_key: str | None) -> Job:
        accepted = time.perf_counter()
        try:
            job = await self.store.apply(job_id, mutate, idempotency_key)
        except NotReplicated as exc:
            job = cast(Job, exc.committed)
            log.error("update of %s seq %d is not replicated: %s", job_id, job["seq"], exc)
            self._committed(job, accepted)
            raise unavailable(f"{exc}; retry with the same Idempotency-Key") from None
        except StoreUnavailable as exc:
            log.error("store refused an update of %s: %s", job_id, exc)
            raise unavailable() from None
        self._committed(job, accepted)
        log.info(
            "job %s seq %d %s",
            job_id,
            job["seq"],
            job["status"],
            extra={"job_id": job_id, "seq": job["seq"], "status": job["status"]},
        )
        return job

    def _committed(self, job: Job, accepted: float) -> None:
        self._outbox.put_nowait((job, accepted))
        if job.get("parent"):
            self._parents_changed_for({cast(str, job["parent"])})
        for hook in self.on_commit:
            hook(job)

    def _parents_changed_for(self, parents: set[Any]) -> None:
        """These parents' children changed: a summary follows (see _children_loop)."""
        if parents:
            self._parents |= parents
            self._parents_changed.set()

    async def _broadcast_loop(self) -> None:
        while True:
            job, accepted = await self._outbox.get()
            try:
                await self._emit(JOB_NS, "job:update", job, event_rooms(job))
                self.metrics.published.inc()
                self.metrics.publish_seconds.observe(time.perf_counter() - accepted)
            except Exception:
                log.exception("broadcast of %s seq %s failed", job["id"], job["seq"])
            finally:
                self._outbox.task_done()

    async def catch_up(
        self, job_id: str, since: int | None, limit: int | None = None
    ) -> tuple[Job | None, list[Job], bool]:
        """(current state, kept events with seq > since, reset: events are missing before them)."""
        job = await self.store.get_job(job_id)
        if since is None:
            return job, [], False
        if job is None:
            return None, [], since > 0
        if since >= job["seq"]:
            return job, [], since > job["seq"]
        events = await self.store.events_after(job_id, since, limit or self.settings.history)
        reset = not events or events[0]["seq"] != since + 1
        return job, events, reset

    # -- log lines -------------------------------------------------------------

    async def append_logs(
        self, job_id: str, payload: LogsIn, idempotency_key: str | None = None
    ) -> list[LogLine]:
        """Store the lines in one write, then send them to the job's log subscribers."""
        ts = now_iso()
        entries: list[LogEntry] = [
            {"stream": line.stream, "text": line.text, "ts": ts} for line in payload.lines
        ]
        try:
            lines = await self.store.append_logs(job_id, entries, idempotency_key)
        except NotReplicated as exc:
            log.error("log lines of %s are not replicated: %s", job_id, exc)
            await self._emit_logs(job_id, exc.committed)
            raise unavailable(f"{exc}; retry with the same Idempotency-Key") from None
        await self._emit_logs(job_id, lines)
        return lines

    async def _emit_logs(self, job_id: str, lines: list[LogLine]) -> None:
        batch: LogBatch = {"job_id": job_id, "lines": lines}
        await self._emit(JOB_NS, "job:log", batch, log_room(job_id))

    async def catch_up_logs(self, job_id: str, since: int | None) -> LogCatchUp:
        """Like catch_up, for log lines: none for since=None (from now on)."""
        if since is None:
            head = await self.store.log_head(job_id)
            return {"logs": [], "logs_reset": False, "log_offset": head}
        lines, head = await self.store.log_page(job_id, since)
        if not lines and since > head:  # numbered anew (deleted, created again): from the start
            lines, head = await self.store.log_page(job_id, 0)
            return {"logs": lines, "logs_reset": True, "log_offset": head}
        reset = bool(lines) and lines[0]["offset"] != since + 1
        return {"logs": lines, "logs_reset": reset, "log_offset": head}

    # -- /info -------------------------------------------------------------

    async def announce(self, payload: AnnouncementIn) -> Announcement:
        announcement: Announcement = {
            "id": new_id(),
            "level": payload.level,
            "text": payload.text,
            "room": payload.room,
            "ts": now_iso(),
        }
        await self.store.add_announcement(announcement)
        room = chat_room(payload.room) if payload.room else None
        await self._emit(INFO_NS, "announcement", announcement, room)
        return announcement

    async def post_message(self, room: str, text: str, sender: Member, sid: str) -> ChatMessage:
        message: ChatMessage = {
            "id": new_id(),
            "room": room,
            "text": text,
            "sender": sender,
            "ts": now_iso(),
        }
        await self.store.add_message(message)
        await self._emit(INFO_NS, "message", message, chat_room(room), skip_sid=sid)
        return message

    async def enter_room(self, room: str, sid: str, member: Member) -> None:
        try:
            await self.store.add_member(room, sid, member)
        except RoomLimitReached as exc:
            # Shared capacity, not this client's doing: 503, try again later.
            raise unavailable(str(exc)) from None
        await self._presence(room, "joined", member, sid)

    async def exit_room(self, room: str, sid: str, member: Member) -> None:
        await self.store.remove_member(room, sid)
        await self._presence(room, "left", member, sid)

    async def room_state(self, room: str) -> dict[str, Any]:
        return {
            "room": room,
            "history": await self.store.recent_messages(room),
            "members": await self.store.members(room),
        }

    async def _presence(self, room: str, change: str, member: Member, sid: str) -> None:
        body = {"room": room, change: member}
        await self._emit(INFO_NS, "presence", body, chat_room(room), skip_sid=sid)

    # -- reads ---------------------------------------------------------------
    # Store errors surface as StoreUnavailable; the HTTP and socket layers answer 503.

    async def get_job(self, job_id: str) -> Job | None:
        return await self.store.get_job(job_id)

    async def list_jobs(
        self, status: str | None, limit: int, *, tag: str | None = None, parent: str | None = None
    ) -> list[Job]:
        return await self.store.list_jobs(status, limit, tag=tag, parent=parent)

    async def children(self, parent: str) -> Children | None:
        """A parent's summary: its children counted by status, their mean progress."""
        jobs = await self.store.list_jobs(None, MAX_CHILDREN, parent=parent)
        if not jobs:
            return None
        progress = [job["progress"] for job in jobs if job["progress"] is not None]
        return {
            "job_id": parent,
            "total": len(jobs),
            "by_status": dict(Counter(job["status"] for job in jobs)),
            "progress": round(sum(progress) / len(progress), 3) if progress else None,
            "updated_at": max(job["updated_at"] for job in jobs),
        }

    async def _children_loop(self) -> None:
        """After a child changes, its parent's summary to the parent's subscribers (one per
        parent however many children changed meanwhile)."""
        while True:
            await self._parents_changed.wait()
            self._parents_changed.clear()
            parents, self._parents = self._parents, set()
            for parent in parents:
                try:
                    summary = await self.children(parent)
                except StoreUnavailable as exc:
                    log.warning("no children summary for %s: %s", parent, exc)
                    continue
                if summary is None:  # its last child left it, or was deleted
                    summary = {"job_id": parent, "total": 0, "by_status": {},
                               "progress": None, "updated_at": now_iso()}  # fmt: skip
                rooms = [job_room(parent), ALL_JOBS_ROOM]
                await self._emit(JOB_NS, "job:children", summary, rooms)

    async def delete_job(self, job_id: str) -> bool:
        job = await self.store.get_job(job_id)
        deleted = await self.store.delete_job(job_id)
        if deleted and job is not None and job.get("parent"):
            self._parents_changed_for({job["parent"]})
        return deleted

    async def recent_announcements(
        self, limit: int, rooms: Iterable[str] | None = None
    ) -> list[Announcement]:
        return await self.store.recent_announcements(limit, rooms)

    async def replay(self, key: str) -> StoredResponse | None:
        """The stored answer to an earlier POST with this Idempotency-Key."""
        return await self.store.get_response(key, time.time())

    async def remember(self, key: str, response: StoredResponse) -> None:
        await self.store.put_response(key, response, time.time() + IDEMPOTENCY_TTL)

    # -- helpers -------------------------------------------------------------

    async def _emit(
        self,
        namespace: str,
        event: str,
        body: Any,
        to: str | list[str] | None,
        skip_sid: str | None = None,
    ) -> None:
        # The manager delivers (and counts deliveries) on every process.
        await self.sio.emit(event, body, to=to, namespace=namespace, skip_sid=skip_sid)

    async def _purge_loop(self) -> None:
        # Every minute, or every room_ttl when shorter (at most once a second).
        every = min(PURGE_EVERY, max(self.settings.room_ttl, 1.0))
        while True:
            await asyncio.sleep(every)
            await self.purge()

    async def purge(self) -> int:
        """Forget expired chat rooms, then finished jobs past the retention (returned)."""
        with contextlib.suppress(StoreUnavailable):
            expired = await self.store.purge_rooms(time.time() - self.settings.room_ttl)
            if expired:
                log.info("forgot %d chat rooms empty for longer than room_ttl", expired)
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.retention)
        cutoff_iso = cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with contextlib.suppress(StoreUnavailable):
            removed = await self.store.purge(cutoff_iso, time.time())
            if removed:
                log.info("forgot %d finished jobs older than the retention", removed)
            return removed
        return 0
