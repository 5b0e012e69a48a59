"""Each job's events reach this process's clients in seq order, with no gap, whatever
the path they came by.

With several processes, an event arrives either from this process's own commit or from
another's through Redis pub/sub, and the two paths race: seq 23 can arrive before 22.
For every job this process has subscribers for, JobOrder knows the next seq to deliver.
An event with that seq goes out at once; an older one was delivered already; a newer
one is held while the gap is read from the store, where it is certain to be, since an
event is committed before it is published and seqs are committed in order. After the
pub/sub connection comes back (events published meanwhile never arrived), every
watched job is filled from the store the same way. Order follows from the mechanism,
not from timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .hub import ALL_JOBS_ROOM, JOB_NS, job_room
from .metrics import Metrics
from .models import Job
from .storage import Store, StoreUnavailable

if TYPE_CHECKING:
    from .manager import LocalManager

log = logging.getLogger("switchboard.ordering")

Fetch = Callable[[str, int], Awaitable[list[Job]]]  # (job id, after seq) -> events, oldest first
Current = Callable[[str], Awaitable[int]]  # job id -> its seq in the store, 0 if none
Deliver = Callable[[Job], Awaitable[None]]  # to this process's subscribers of the job
RETRY = 0.2  # seconds between store reads while the store is unreachable
TRIES = 50


class JobOrder:
    def __init__(
        self, current: Current, fetch: Fetch, deliver: Deliver, on_fill: Callable[[], None]
    ) -> None:
        self._current = current
        self._on_fill = on_fill
        self._fetch = fetch
        self._deliver = deliver
        self._next: dict[str, int] = {}  # watched job -> next seq to deliver
        self._watchers: dict[str, int] = {}
        self._held: dict[str, dict[int, Job]] = {}  # arrived ahead of a gap
        self._filling: dict[str, asyncio.Task[None]] = {}

    async def watch(self, job_id: str) -> None:
        """Order this job's events from now on; call before its subscriber joins the room."""
        if job_id not in self._next:
            seq = await self._current(job_id)  # may raise StoreUnavailable: nothing changed
            # An event may have arrived meanwhile (untracked, so delivered as it came).
            self._next.setdefault(job_id, seq + 1)
        self._watchers[job_id] = self._watchers.get(job_id, 0) + 1

    def unwatch(self, job_id: str) -> None:
        left = self._watchers.get(job_id, 0) - 1
        if left > 0:
            self._watchers[job_id] = left
            return
        self._watchers.pop(job_id, None)
        self._next.pop(job_id, None)
        self._held.pop(job_id, None)
        task = self._filling.pop(job_id, None)
        if task is not None:
            task.cancel()

    def watched(self) -> list[str]:
        return list(self._next)

    async def offer(self, event: Job) -> None:
        """One event from any path; delivered now, held, or dropped as seen."""
        job_id, seq = event["id"], event["seq"]
        expected = self._next.get(job_id)
        if expected is None:  # nobody here watches this job by id ('*' subscribers only)
            await self._deliver(event)
            return
        if seq < expected:
            return
        if seq == expected and job_id not in self._filling:
            await self._deliver(event)
            self._next[job_id] = seq + 1
            await self._release(job_id)
            return
        self._held.setdefault(job_id, {})[seq] = event
        self.fill(job_id)

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
        for _ in range(TRIES):
            try:
                events = await self._fetch(job_id, self._next[job_id] - 1)
                break
            except StoreUnavailable:
                await asyncio.sleep(RETRY)
        else:
            log.warning("could not read job %s to fill a gap; delivering what came", job_id)
            events = []
        for event in events:
            if event["seq"] >= self._next[job_id]:
                await self._deliver(event)
                self._next[job_id] = event["seq"] + 1
        await self._release(job_id, force=True)

    async def _release(self, job_id: str, force: bool = False) -> None:
        """Deliver held events that are next in line; with `force`, across a gap the
        store could not fill (history trimmed, job deleted): clients see the jump and
        resubscribe, as after any reset."""
        held = self._held.get(job_id)
        while held:
            seq = min(held)
            expected = self._next[job_id]
            if seq < expected:
                del held[seq]
                continue
            if seq > expected and not force:
                return
            await self._deliver(held.pop(seq))
            self._next[job_id] = seq + 1
        self._held.pop(job_id, None)

    async def resync(self) -> None:
        """After the pub/sub connection came back: fill every watched job from the store."""
        for job_id in list(self._next):
            self.fill(job_id)


def job_order(store: Store, manager: LocalManager, history: int, metrics: Metrics) -> JobOrder:
    """The JobOrder of one process: reads from `store`, delivers through `manager`."""

    async def current(job_id: str) -> int:
        job = await store.get_job(job_id)
        return job["seq"] if job else 0

    async def fetch(job_id: str, after: int) -> list[Job]:
        return await store.events_after(job_id, after, history)

    async def deliver(job: Job) -> None:
        rooms = [job_room(job["id"]), ALL_JOBS_ROOM]
        await manager.deliver("job:update", job, JOB_NS, rooms)

    return JobOrder(current, fetch, deliver, metrics.order_fills.inc)
