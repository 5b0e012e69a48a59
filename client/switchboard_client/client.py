"""The async Socket.IO client: watch jobs with resume by seq, chat rooms, announcements.

async with SwitchboardClient("http://127.0.0.1:8001") as client:
    async for event in client.watch("build-42"):
        print(event["seq"], event["status"], event["progress"])
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
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
    """One job's stream: takes events in seq order exactly once, and with `logs` its log
    lines in offset order exactly once (in batches); resyncs on any gap."""

    def __init__(self, client: SwitchboardClient, job_id: str, logs: bool = False) -> None:
        self.client = client
        self.job_id = job_id
        self.logs = logs
        self.last: int | None = None
        self.offset: int | None = 0  # the last line taken; None after a reset: take what comes
        self.queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self.early: list[tuple[str, Event]] = []  # what arrived while a subscribe was in flight
        self.syncing = False
        self.idle = asyncio.Event()
        self.idle.set()

    def offer(self, kind: str, body: Event) -> None:
        if kind == "job:log" and not self.logs:
            return
        if self.syncing:
            self.early.append((kind, body))
        else:
            self._accept(kind, body)

    def _accept(self, kind: str, body: Event) -> None:
        if kind == "job:log":
            self._take_lines(body["lines"])
        else:
            self._take_event(body)

    def _take_event(self, event: Event) -> None:
        seq = event["seq"]
        if self.last is not None and seq <= self.last:
            return  # seen already
        if self.last is not None and seq > self.last + 1:
            self._gap("job:update", event)
            return
        self.last = seq
        self.queue.put_nowait(event)

    def _take_lines(self, lines: list[Event]) -> None:
        fresh = [line for line in lines if self.offset is None or line["offset"] > self.offset]
        if not fresh:
            return  # seen already
        batch = {"job_id": self.job_id, "lines": fresh}
        if self.offset is not None and fresh[0]["offset"] > self.offset + 1:
            self._gap("job:log", batch)
            return
        self.offset = fresh[-1]["offset"]
        self.queue.put_nowait(batch)

    def _gap(self, kind: str, body: Event) -> None:
        self.early.append((kind, body))  # fetch what is missing, then replay this
        self.client._spawn(self.sync())

    async def sync(self) -> None:
        """(Re)subscribe from the last seq (and offset) taken, and take what was missed."""
        if self.syncing:
            return
        self.syncing = True
        self.idle.clear()
        try:
            more: bool | None = True
            while more:  # a page of log lines at a time
                more = await self._subscribe()
        finally:
            self.syncing = False
            self.idle.set()
        if more is None:
            return  # the next (re)connect resyncs
        early, self.early = sorted(self.early, key=_numbered), []
        for kind, body in early:
            self._accept(kind, body)

    async def _subscribe(self) -> bool | None:
        """One subscribe: True when more kept lines follow, None when it failed."""
        payload: Event = {"job_id": self.job_id, "since": self.last}
        if self.logs:
            payload["log_since"] = self.offset
        try:
            ack = await self.client._call(JOB, "subscribe", payload)
        except SwitchboardError as exc:
            if exc.code in ("forbidden", "invalid_payload", "not_found"):
                self.queue.put_nowait(exc)
            return None  # transient: the next (re)connect resyncs
        if ack["reset"]:
            self.last = None
        for event in ack["missed"]:
            self._take_event(event)
        job = ack["job"]
        if job is not None and (self.last is None or job["seq"] > self.last):
            self.last = job["seq"]
            self.queue.put_nowait(job)
        if not self.logs:
            return False
        if ack["logs_reset"]:
            self.offset = None
        self._take_lines(ack["logs"])
        if self.offset is None:
            self.offset = ack["log_offset"]
        return bool(ack["logs"]) and self.offset < ack["log_offset"]

    async def settle(self) -> None:
        """Take the lines stored so far that are still on their way."""
        while True:
            await self.idle.wait()
            if not self.syncing:
                await self.sync()
                return


def _numbered(item: tuple[str, Event]) -> tuple[str, int]:
    kind, body = item
    return kind, body["lines"][0]["offset"] if kind == "job:log" else body["seq"]


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
        refresh_token: Callable[[], str | Awaitable[str]] | None = None,
    ) -> None:
        """`refresh_token()`: called when the server says the token expires soon; returns a
        new token for the same sub (sent as `refresh` on both namespaces). Without it the
        server disconnects when the token expires."""
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
        self._refresh_token = refresh_token
        self._renewals: dict[str, asyncio.Future[str]] = {}  # expires_at -> the new token
        self.sio.on("connect", self._on_job_connect, namespace=JOB)
        for namespace in (JOB, INFO):
            self.sio.on("connect_error", self._on_refused, namespace=namespace)
            self.sio.on("token:expiring", self._expiring(namespace), namespace=namespace)
        self.sio.on("job:update", self._on_job_update, namespace=JOB)
        self.sio.on("job:log", self._on_job_log, namespace=JOB)
        self.sio.on("job:children", self._dispatcher("job:children"), namespace=JOB)
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

    def _expiring(self, namespace: str) -> Callable[[Event], Any]:
        async def handle(notice: Event) -> None:
            self._fire("token:expiring", notice)
            if self._refresh_token is not None:
                self._spawn(self._renew(namespace, str(notice.get("expires_at"))))

        return handle

    async def _renew(self, namespace: str, expires_at: str) -> None:
        """One refresh_token() per expiring token, sent on each namespace that was told."""
        renewal = self._renewals.get(expires_at)
        if renewal is None:  # the first namespace told: forget older tokens' renewals
            renewal = asyncio.ensure_future(self._new_token())
            self._renewals = {expires_at: renewal}
        try:
            token = await renewal
            self.auth["token"] = token  # a reconnect brings the new one too
            await self._call(namespace, "refresh", {"token": token})
        except Exception as exc:
            log.warning("token refresh on %s failed: %s", namespace, exc)

    async def _new_token(self) -> str:
        assert self._refresh_token is not None
        token = self._refresh_token()
        return await token if inspect.isawaitable(token) else token

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

    async def watch(self, job_id: str, *, logs: bool = False) -> AsyncIterator[Event]:
        """Every event of a job from its current state on, in order, once each.

        With `logs`, also the job's log lines from the first one kept, as batches
        {"job_id", "lines": [{"offset", "stream", "text", "ts"}, …]} in offset order, each
        line once. Survives reconnects (resuming by seq and offset) and ends after a
        terminal event (with `logs`, after the lines stored before it).
        """
        watch = _Watch(self, job_id, logs)
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            await watch.sync()
            while True:
                item = await watch.queue.get()
                if isinstance(item, BaseException):
                    raise item
                ended = item.get("status") in TERMINAL
                if ended and logs:
                    await watch.settle()
                    while not watch.queue.empty():
                        late = watch.queue.get_nowait()
                        if not isinstance(late, BaseException) and "lines" in late:
                            yield late
                yield item
                if ended:
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

    async def subscribe_tag(self, tag: str) -> list[Event]:
        """Receive the events of every job with `tag` (see `on`("job:update"), and
        "job:children" for parents); returns the newest such jobs."""
        ack = await self._call(JOB, "subscribe", {"tag": tag})
        return ack["jobs"]  # type: ignore[no-any-return]

    async def _on_job_connect(self) -> None:
        # A reconnect lost the server-side rooms: resubscribe every watch from its last seq.
        for watches in self._watches.values():
            for watch in watches:
                self._spawn(watch.sync())

    async def _on_job_update(self, event: Event) -> None:
        for watch in self._watches.get(event.get("id", ""), ()):
            watch.offer("job:update", event)
        self._fire("job:update", event)

    async def _on_job_log(self, batch: Event) -> None:
        for watch in self._watches.get(batch.get("job_id", ""), ()):
            watch.offer("job:log", batch)
        self._fire("job:log", batch)

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
        """Call `handler(body)` for "message", "announcement", "presence", "job:update",
        "job:log", "error", "token:expiring"."""
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
