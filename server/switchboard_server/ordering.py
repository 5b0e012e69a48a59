"""Each job's events reach this process's clients in seq order, and its log lines in
offset order, with no gap, whatever the path they came by.

With several processes, an event arrives either from this process's own commit or from
another's through Redis pub/sub, and the two paths race: seq 23 can arrive before 22.
For every job this process has subscribers for, an Order knows the next number to
deliver (the seq of events; the offset of log lines, which come in batches of
consecutive offsets). What starts at that number goes out at once; what is older was
delivered already (a batch that overlaps is cut to its new lines); what is newer is held
while the gap is read from the store, where it is certain to be, since everything is
committed before it is published and numbers are committed in order. After the pub/sub
connection comes back (what was published meanwhile never arrived), every watched job is
filled from the store the same way. Order follows from the mechanism, not from timing.

A process receives a job's items from other processes only while it watches the job
(a Feed: with Redis, the job's own pub/sub channel, subscribed and confirmed before the
job's number is read, so nothing falls in between).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .hub import JOB_NS, event_rooms, is_log_room, job_room, log_room
from .metrics import Metrics
from .models import Job, LogBatch
from .storage import Store, StoreUnavailable

if TYPE_CHECKING:
    from .manager import LocalManager, RedisRelay

log = logging.getLogger("switchboard.ordering")

T = TypeVar("T")
RETRY = 0.2  # seconds between store reads while the store is unreachable
ADOPTED = 10_000  # jobs ordered for '*' and tag followers only, at most
TRIES = 50


class Order(Generic[T]):
    """One kind of numbered item (events, log batches) in order, per watched job."""

    def __init__(
        self,
        current: Callable[[str], Awaitable[int]],  # job id -> its last number stored, 0 if none
        # (job id, after, until or None) -> the items numbered after..until, oldest first
        fetch: Callable[[str, int, int | None], Awaitable[list[T]]],
        deliver: Callable[[T], Awaitable[None]],  # to this process's subscribers of the job
        span: Callable[[T], tuple[str, int, int]],  # item -> (job id, first number, last)
        trim: Callable[[T, int], T],  # the part of an item numbered from the given number on
        on_fill: Callable[[], None],
        feed: Feed | None = None,  # with several processes: receive a job's items (or all)
    ) -> None:
        self._current = current
        self._fetch = fetch
        self._deliver = deliver
        self._span = span
        self._trim = trim
        self._on_fill = on_fill
        self._feed = feed or Feed()
        self._next: dict[str, int] = {}  # watched job -> next number to deliver
        self._watchers: dict[str, int] = {}
        # Followers of '*' or of a tag on this process see jobs nobody watches by id: while
        # there are any, such a job is ordered from the first item seen (adopted; bounded).
        self._wide = 0
        self._adopted: OrderedDict[str, None] = OrderedDict()
        self._held: dict[str, dict[int, T]] = {}  # arrived ahead of a gap, by first number
        self._filling: dict[str, asyncio.Task[None]] = {}

    async def watch(self, job_id: str) -> None:
        """Order this job's items from now on; call before its subscriber joins the room.
        Raises StoreUnavailable, with nothing changed."""
        # Receive its items first, then read where they stand: none falls in between.
        await self._feed.follow(job_id)
        if job_id not in self._next:
            try:
                last = await self._current(job_id)
            except BaseException:
                self._feed.unfollow(job_id)
                raise
            # An item may have arrived meanwhile (untracked, so delivered as it came).
            self._next.setdefault(job_id, last + 1)
        self._watchers[job_id] = self._watchers.get(job_id, 0) + 1

    async def widen(self) -> None:
        """A follower of '*' or of a tag: every job's items from now on."""
        await self._feed.follow(None)
        self._wide += 1

    def narrow(self) -> None:
        self._wide -= 1
        self._feed.unfollow(None)

    def unwatch(self, job_id: str) -> None:
        self._feed.unfollow(job_id)
        left = self._watchers.get(job_id, 0) - 1
        if left > 0:
            self._watchers[job_id] = left
            return
        self._watchers.pop(job_id, None)
        if job_id not in self._adopted:
            self._forget(job_id)

    def _adopt(self, job_id: str, first: int) -> None:
        self._next[job_id] = first
        self._adopted[job_id] = None
        if len(self._adopted) > ADOPTED:
            oldest, _ = self._adopted.popitem(last=False)
            if oldest not in self._watchers:
                self._forget(oldest)

    def _forget(self, job_id: str) -> None:
        self._next.pop(job_id, None)
        self._held.pop(job_id, None)
        task = self._filling.pop(job_id, None)
        if task is not None:
            task.cancel()

    def watched(self) -> list[str]:
        return list(self._next)

    async def offer(self, item: T) -> None:
        """One item from any path; delivered now, held, or dropped as seen."""
        job_id, first, last = self._span(item)
        expected = self._next.get(job_id)
        if expected is None:  # nobody here watches this job by id
            if not self._wide:
                await self._deliver(item)
                return
            self._adopt(job_id, first)
            expected = first
        if last < expected:
            return
        if first <= expected and job_id not in self._filling:
            await self._send(job_id, item)
            await self._release(job_id)
            return
        self._held.setdefault(job_id, {})[first] = item
        self.fill(job_id)

    async def _send(self, job_id: str, item: T) -> None:
        """Deliver what the item has from the next number on; the next is then after it."""
        _, first, last = self._span(item)
        expected = self._next[job_id]
        await self._deliver(self._trim(item, expected) if first < expected else item)
        self._next[job_id] = last + 1

    def fill(self, job_id: str) -> None:
        """Read what is missing from the store and deliver it (in the background)."""
        if job_id in self._next and job_id not in self._filling:
            self._on_fill()
            task = asyncio.create_task(self._fill(job_id), name=f"switchboard-fill-{job_id}")
            self._filling[job_id] = task

    async def _fill(self, job_id: str) -> None:
        try:
            await self._read_gap(job_id)
        finally:
            if self._filling.get(job_id) is asyncio.current_task():
                del self._filling[job_id]

    async def _read_gap(self, job_id: str) -> None:
        # What arrives during a read may be ahead of numbers committed after the read
        # began: read again while reading helps; past a gap only when it no longer does.
        while True:
            before = self._next[job_id]
            for item in await self._read(job_id):
                if self._span(item)[2] >= self._next[job_id]:
                    await self._send(job_id, item)
            await self._release(job_id)
            if not self._held.get(job_id) or self._next[job_id] == before:
                break
        await self._release(job_id, force=True)

    async def _read(self, job_id: str) -> list[T]:
        """The gap: from the next number to just before the first held item (everything
        stored, when nothing is held). Never more: the head moves on meanwhile, and
        chasing it would hold live items for as long as the appends go on."""
        for _ in range(TRIES):
            held = self._held.get(job_id)
            until = min(held) - 1 if held else None
            try:
                return await self._fetch(job_id, self._next[job_id] - 1, until)
            except StoreUnavailable:
                await asyncio.sleep(RETRY)
        log.warning("could not read job %s to fill a gap; delivering what came", job_id)
        return []

    async def _release(self, job_id: str, force: bool = False) -> None:
        """Deliver held items that are next in line; with `force`, across a gap the
        store could not fill (history trimmed, job deleted): clients see the jump and
        resubscribe, as after any reset."""
        held = self._held.get(job_id)
        while held:
            first = min(held)
            if self._span(held[first])[2] < self._next[job_id]:
                del held[first]
                continue
            if first > self._next[job_id] and not force:
                return
            await self._send(job_id, held.pop(first))
        self._held.pop(job_id, None)

    async def resync(self) -> None:
        """After the pub/sub connection came back: fill every watched job from the store."""
        for job_id in list(self._next):
            self.fill(job_id)


class Feed:
    """Where a process receives the items of the jobs it follows: all of them come to
    one process anyway. With several, manager.RedisRelay's per-job channels."""

    async def follow(self, job_id: str | None) -> None:
        """Receive this job's items (None: every job's) from the moment this returns."""

    def unfollow(self, job_id: str | None) -> None:
        """As many unfollows as follows: then no longer."""


class RelayFeed(Feed):
    """One kind of item (events, logs) through a relay's per-job channels."""

    def __init__(self, relay: RedisRelay, kind: str) -> None:
        self.relay = relay
        self.kind = kind

    async def follow(self, job_id: str | None) -> None:
        await self.relay.follow(self.relay.job_channel(self.kind, job_id))

    def unfollow(self, job_id: str | None) -> None:
        self.relay.unfollow(self.relay.job_channel(self.kind, job_id))


class JobOrder:
    """The orders of one process: job events by seq (`job:update` to the job's room) and
    log lines by offset (`job:log` to its log room)."""

    def __init__(self, events: Order[Job], logs: Order[LogBatch]) -> None:
        self.events = events
        self.logs = logs

    def _order(self, room: str) -> tuple[Order[Any], str]:
        """The order of a job's room, and the job's id."""
        if is_log_room(room):
            return self.logs, room.removeprefix(log_room(""))
        return self.events, room.removeprefix(job_room(""))

    async def watch(self, room: str) -> None:
        """Order what goes to this room (a job's, or its log room) from now on; call before
        the subscriber joins it."""
        order, job_id = self._order(room)
        await order.watch(job_id)

    def unwatch(self, room: str) -> None:
        order, job_id = self._order(room)
        order.unwatch(job_id)

    async def widen(self) -> None:
        """A follower of '*' or a tag joins (events only: log lines are per job)."""
        await self.events.widen()

    def narrow(self) -> None:
        self.events.narrow()

    async def offer(self, event: str, body: Any) -> None:
        await (self.logs if event == "job:log" else self.events).offer(body)

    async def resync(self) -> None:
        await self.events.resync()
        await self.logs.resync()


def event_span(event: Job) -> tuple[str, int, int]:
    return event["id"], event["seq"], event["seq"]


def batch_span(batch: LogBatch) -> tuple[str, int, int]:
    lines = batch["lines"]
    return batch["job_id"], lines[0]["offset"], lines[-1]["offset"]


def event_from(event: Job, seq: int) -> Job:
    return event  # one number: never cut


def batch_from(batch: LogBatch, offset: int) -> LogBatch:
    lines = [line for line in batch["lines"] if line["offset"] >= offset]
    return {"job_id": batch["job_id"], "lines": lines}


def job_order(store: Store, manager: LocalManager, history: int, metrics: Metrics) -> JobOrder:
    """The JobOrder of one process: reads from `store`, delivers through `manager`."""

    async def current(job_id: str) -> int:
        job = await store.get_job(job_id)
        return job["seq"] if job else 0

    async def fetch(job_id: str, after: int, until: int | None) -> list[Job]:
        limit = history if until is None else max(1, min(history, until - after))
        return await store.events_after(job_id, after, limit)

    async def deliver(job: Job) -> None:
        await manager.deliver("job:update", job, JOB_NS, event_rooms(job))

    async def deliver_batch(batch: LogBatch) -> None:
        await manager.deliver("job:log", batch, JOB_NS, log_room(batch["job_id"]))

    fills = metrics.order_fills.inc
    relay = manager.relay
    events, logs = (Feed(), Feed()) if relay is None else (
        RelayFeed(relay, "events"), RelayFeed(relay, "logs"),
    )  # fmt: skip
    return JobOrder(
        Order(current, fetch, deliver, event_span, event_from, fills, events),
        Order(store.log_head, store.log_batches, deliver_batch, batch_span, batch_from, fills,
              logs),
    )  # fmt: skip
