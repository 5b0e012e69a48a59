"""The async Socket.IO client: watch jobs with resume by seq, chat rooms, announcements.

async with SwitchboardClient("http://127.0.0.1:8001") as client:
    async for event in client.watch("build-42"):
        print(event["seq"], event["status"], event["progress"])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import socketio

from .admin import DEFAULT_URL
from .errors import SwitchboardError

log = logging.getLogger("switchboard.client")

Event = dict[str, Any]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
JOB, INFO = "/job", "/info"
CALL_TIMEOUT = 10.0


class _Watch:
    """One job's stream: takes events in seq order exactly once, resyncs on any gap."""

    def __init__(self, client: SwitchboardClient, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.last: int | None = None
        self.queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self.early: list[Event] = []  # live events that arrived while a subscribe was in flight
        self.syncing = False

    def offer(self, event: Event) -> None:
        if self.syncing:
            self.early.append(event)
        else:
            self._accept(event)

    def _accept(self, event: Event) -> None:
        seq = event["seq"]
        if self.last is not None and seq <= self.last:
            return  # seen already
        if self.last is not None and seq > self.last + 1:
            self.early.append(event)  # a gap: fetch what is missing, then replay this
            self.client._spawn(self.sync())
            return
        self.last = seq
        self.queue.put_nowait(event)

    async def sync(self) -> None:
        """(Re)subscribe with `since` = the last seq taken, and take what was missed."""
        if self.syncing:
            return
        self.syncing = True
        try:
            ack = await self.client._call(
                JOB, "subscribe", {"job_id": self.job_id, "since": self.last}
            )
        except SwitchboardError as exc:
            if exc.code in ("forbidden", "invalid_payload", "not_found"):
                self.queue.put_nowait(exc)
            self.syncing = False
            return  # transient: the next (re)connect resyncs
        if ack["reset"]:
            self.last = None
        for event in ack["missed"]:
            self._accept(event)
        job = ack["job"]
        if job is not None and (self.last is None or job["seq"] > self.last):
            self.last = job["seq"]
            self.queue.put_nowait(job)
        self.syncing = False
        early, self.early = sorted(self.early, key=lambda e: e["seq"]), []
        for event in early:
            self._accept(event)


class SwitchboardClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        name: str | None = None,
        transports: list[str] | None = None,
        reconnection_delay: float = 0.5,
        reconnection_delay_max: float = 5.0,
    ) -> None:
        self.url = url
        self.transports = transports
        self.auth = {k: v for k, v in (("token", token), ("name", name)) if v}
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
            handle_sigint=False,
        )
        self._watches: dict[str, set[_Watch]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, list[Callable[[Event], Any]]] = {}
        self._refusal: str | None = None
        self.sio.on("connect", self._on_job_connect, namespace=JOB)
        for namespace in (JOB, INFO):
            self.sio.on("connect_error", self._on_refused, namespace=namespace)
        self.sio.on("job:update", self._on_job_update, namespace=JOB)
        for event in ("message", "announcement", "presence", "error"):
            self.sio.on(event, self._dispatcher(event), namespace=INFO)

    # -- connection --------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        try:
            await self.sio.connect(
                self.url,
                auth=self.auth or None,
                transports=self.transports,
                namespaces=[JOB, INFO],
                wait_timeout=timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal == "unauthorized":
                raise SwitchboardError(401, "unauthorized", "the server refused the token") from exc
            raise SwitchboardError(0, "unreachable", self._refusal or str(exc)) from exc

    async def _on_refused(self, data: Any) -> None:
        self._refusal = data.get("message") if isinstance(data, dict) else str(data)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.sio.disconnect()

    async def __aenter__(self) -> SwitchboardClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def transport(self) -> str | None:
        return self.sio.transport() if self.sio.connected else None  # type: ignore[no-any-return]

    # -- /job ----------------------------------------------------------------

    async def watch(self, job_id: str) -> AsyncIterator[Event]:
        """Every event of a job from its current state on, in order, once each.

        Survives reconnects (resuming by seq) and ends after a terminal event.
        """
        watch = _Watch(self, job_id)
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            await watch.sync()
            while True:
                item = await watch.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item["status"] in TERMINAL:
                    return
        finally:
            self._watches[job_id].discard(watch)
            if not self._watches[job_id]:
                del self._watches[job_id]
                with contextlib.suppress(SwitchboardError):
                    await self._call(JOB, "unsubscribe", {"job_id": job_id})

    async def subscribe_all(self) -> list[Event]:
        """Receive every job's events (see `on`("job:update")); returns the recent jobs."""
        ack = await self._call(JOB, "subscribe", {"job_id": "*"})
        return ack["jobs"]  # type: ignore[no-any-return]

    async def _on_job_connect(self) -> None:
        # A reconnect lost the server-side rooms: resubscribe every watch from its last seq.
        for watches in self._watches.values():
            for watch in watches:
                self._spawn(watch.sync())

    async def _on_job_update(self, event: Event) -> None:
        for watch in self._watches.get(event.get("id", ""), ()):
            watch.offer(event)
        self._fire("job:update", event)

    # -- /info ---------------------------------------------------------------

    async def join(self, room: str) -> Event:
        """Join a chat room; returns {"room", "history", "members"}."""
        return await self._call(INFO, "join", {"room": room})

    async def leave(self, room: str) -> None:
        await self._call(INFO, "leave", {"room": room})

    async def send(self, room: str, text: str) -> Event:
        """Send to a room you joined; returns the stored message."""
        return (await self._call(INFO, "message", {"room": room, "text": text}))["message"]  # type: ignore[no-any-return]

    async def recent_announcements(self, limit: int = 20) -> list[Event]:
        return (await self._call(INFO, "recent", {"limit": limit}))["announcements"]  # type: ignore[no-any-return]

    def on(self, event: str, handler: Callable[[Event], Any]) -> None:
        """Call `handler(body)` for "message", "announcement", "presence", "job:update", "error"."""
        self._handlers.setdefault(event, []).append(handler)

    async def stream(self, event: str) -> AsyncIterator[Event]:
        """An async iterator over one kind of server event, e.g. "message"."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.on(event, queue.put_nowait)
        try:
            while True:
                yield await queue.get()
        finally:
            self._handlers[event].remove(queue.put_nowait)

    def _dispatcher(self, event: str) -> Callable[[Event], Any]:
        async def handle(body: Event) -> None:
            self._fire(event, body)

        return handle

    def _fire(self, event: str, body: Event) -> None:
        for handler in list(self._handlers.get(event, ())):
            result = handler(body)
            if asyncio.iscoroutine(result):
                self._spawn(result)

    # -- plumbing ------------------------------------------------------------

    async def _call(self, namespace: str, event: str, payload: Event) -> Event:
        try:
            ack = await self.sio.call(event, payload, namespace=namespace, timeout=CALL_TIMEOUT)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.SocketIOError) as exc:
            raise SwitchboardError(0, "unavailable", f"{event}: {exc!r}") from exc
        if not isinstance(ack, dict):
            raise SwitchboardError(0, "invalid_ack", f"{event}: unexpected ack {ack!r}")
        if not ack.get("ok"):
            error = ack.get("error") or {}
            raise SwitchboardError(0, error.get("code", "error"), error.get("message", ""))
        return ack

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
