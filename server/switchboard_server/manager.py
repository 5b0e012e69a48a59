"""Local delivery of every emit: Socket.IO participants, plus taps for SSE and plain WebSockets.

python-socketio calls `AsyncManager.emit` on each process for its own clients (directly, or
from a pub/sub listener with several processes). Subclassing at that seam lets streams
that are not Socket.IO clients receive the same events, on every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import socketio
from engineio import packet as eio_packet
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from socketio import packet as sio_packet

from .fanout import Cork, text_frame
from .hub import JOB_NS
from .metrics import Metrics
from .ordering import JobOrder
from .redis_conn import redis_client

log = logging.getLogger("switchboard.manager")
IDLE_PING = 2.0  # seconds without a message before the pub/sub connection is pinged
PUBLISH_BATCH = 256  # messages sent in one round trip

Message = tuple[str, Any]  # (event, body)
ORDERED = {(JOB_NS, "job:update"), (JOB_NS, "job:log")}


class Tap:
    """A non-Socket.IO listener: a bounded queue of (event, body) for one connection."""

    def __init__(self, sid: str, limit: int = 1000) -> None:
        self.sid = sid
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=limit)
        self.overflowed = asyncio.Event()  # the reader fell behind: its owner hangs up

    def deliver(self, event: str, body: Any) -> None:
        try:
            self.queue.put_nowait((event, body))
        except asyncio.QueueFull:
            self.overflowed.set()


class LocalManager(socketio.AsyncManager):  # type: ignore[misc]
    def __init__(self, metrics: Metrics | None = None, max_pending: int = 1000) -> None:
        super().__init__()
        self.metrics = metrics or Metrics()
        self.max_pending = max_pending  # packets queued for one client before it is dropped
        self.taps: dict[tuple[str, str | None], set[Tap]] = {}
        self._cork = Cork()
        self._closing: set[asyncio.Future[None]] = set()
        # Called when events may have been missed (a pub/sub reconnect): JobOrder.resync.
        self.on_resubscribe: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.order: JobOrder | None = None  # set by create_app: job events in seq order

    def add_tap(self, namespace: str, room: str | None, tap: Tap) -> None:
        """Receive what is emitted to `room` (None: the whole namespace)."""
        self.taps.setdefault((namespace, room), set()).add(tap)

    def remove_tap(self, namespace: str, room: str | None, tap: Tap) -> None:
        found = self.taps.get((namespace, room))
        if found is not None:
            found.discard(tap)
            if not found:
                del self.taps[namespace, room]

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Every emit meant for this process's clients, its own and other processes'."""
        if self.order is not None and (namespace, event) in ORDERED and callback is None:
            await self.order.offer(event, data)  # it calls deliver() in seq / offset order
            return
        await self.deliver(event, data, namespace, to or room, skip_sid, callback, **kwargs)

    async def deliver(
        self,
        event: str,
        data: Any,
        namespace: str,
        target: Any,
        skip_sid: Any = None,
        callback: Any = None,
        **kwargs: Any,
    ) -> None:
        rooms: list[str | None] = (
            [target] if target is None or isinstance(target, str) else list(target)
        )
        skipped = set(skip_sid if isinstance(skip_sid, list) else [skip_sid])
        taps = {tap for key in rooms for tap in self.taps.get((namespace, key), ())}
        delivered = 0
        for tap in taps:
            if tap.sid not in skipped:
                tap.deliver(event, data)
                delivered += 1
        if namespace in self.rooms:
            sent = None if callback else self._broadcast(event, data, namespace, target, skipped)
            if sent is None:  # acks requested, or binary data: python-socketio's own path
                participants = self.get_participants(namespace, target)
                sent = sum(sid not in skipped for sid, _ in participants)
                skip = [sid for sid in skipped if sid is not None]
                await super().emit(
                    event, data, namespace, room=target, skip_sid=skip, callback=callback, **kwargs
                )
            delivered += sent
        self.metrics.deliveries.labels(namespace, event).inc(delivered)

    def _broadcast(
        self, event: str, data: Any, namespace: str, target: Any, skipped: set[str | None]
    ) -> int | None:
        """Send one event to the Socket.IO participants: encoded once, no task per client.

        Returns how many were sent to, or None for data this path does not carry.
        """
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        if isinstance(encoded, list):  # binary attachments
            return None
        message = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame: bytes | None = None
        sockets = self.server.eio.sockets
        direct = queued = 0
        for sid, eio_sid in list(self.get_participants(namespace, target)):
            socket = sockets.get(eio_sid)
            if sid in skipped or socket is None or socket.closed:
                continue
            ws = getattr(socket, "websocket", None)
            if ws is not None and ws.ready(socket):
                if frame is None:
                    frame = text_frame(message.encode())
                self._cork.write(ws, frame)
                direct += 1
            elif not self._too_slow(eio_sid, socket):
                socket.queue.put_nowait(message)
                queued += 1
        self.metrics.broadcast_sends.labels("direct").inc(direct)
        self.metrics.broadcast_sends.labels("queued").inc(queued)
        return direct + queued

    def _too_slow(self, eio_sid: str, socket: Any) -> bool:
        """A client that stopped reading: drop it before its queue eats the memory."""
        if socket.queue.qsize() < self.max_pending:
            return False
        if not socket.closed:
            log.warning(
                "dropping %s: %d packets unread (slow consumer)",
                eio_sid,
                socket.queue.qsize(),
                extra={"sid": eio_sid, "code": "slow_consumer"},
            )
            self.metrics.rejected.labels("slow_consumer").inc()
            task = asyncio.ensure_future(self.server.eio.drop(eio_sid))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return True

    async def flush(self) -> None:
        """Send what is queued for other processes (nothing, on a single process)."""


class RedisManager(socketio.AsyncRedisManager, LocalManager):  # type: ignore[misc]
    """Broadcasts through Redis pub/sub; each process delivers through LocalManager.

    Two narrow changes to python-socketio's manager: publishing goes through an ordered
    queue on its own connection with timeouts, retried until Redis takes each message
    (instead of losing it), and the listener reconnects within two seconds and then asks
    for a resync of what its clients may have missed.
    """

    def __init__(self, url: str, channel: str, metrics: Metrics, max_pending: int = 1000) -> None:
        socketio.AsyncRedisManager.__init__(self, url, channel=channel)
        self.metrics = metrics
        self.max_pending = max_pending
        self._publisher: Any = None
        self._outgoing: asyncio.Queue[Any] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._resyncs: set[asyncio.Task[None]] = set()

    def _client(self, **options: Any) -> Any:
        """A connection of its own (publisher or listener), following Sentinel failovers.

        No silent retries inside redis-py: a broken connection surfaces here and is
        replaced by a fresh one (its own resubscribe after a restart is not reliable).
        """
        return redis_client(
            self.redis_url, pool_size=2, pool_timeout=5, socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0), **options,
        )  # fmt: skip

    async def _publish(self, data: Any) -> None:
        """Queue a message for the other processes: sent in order, retried until it goes.

        python-socketio has already delivered it to this process's clients, so a failed
        publish must not fail the emit (a retry of the emit would deliver here twice).
        """
        self._outgoing.put_nowait(data)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop(), name="switchboard-publish")

    async def _send_loop(self) -> None:
        while True:
            batch = [await self._outgoing.get()]  # and what queued meanwhile: one round trip
            while not self._outgoing.empty() and len(batch) < PUBLISH_BATCH:
                batch.append(self._outgoing.get_nowait())
            delay = 0.05
            while not await self._send(batch):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            for _ in batch:
                self._outgoing.task_done()

    async def _send(self, batch: list[Any]) -> bool:
        try:
            if self._publisher is None:
                self._publisher = self._client(socket_timeout=2)
            async with self._publisher.pipeline(transaction=False) as pipe:
                for data in batch:
                    pipe.publish(self.channel, self.json.dumps(data))
                await pipe.execute()
            return True
        except Exception as exc:
            log.warning("cannot publish to redis (%s); retrying", exc)
            publisher, self._publisher = self._publisher, None
            with contextlib.suppress(Exception):
                await publisher.aclose()
            return False

    async def flush(self) -> None:
        """Wait until Redis took every queued message, then stop sending."""
        try:
            await self._outgoing.join()
        finally:
            if self._sender is not None:
                self._sender.cancel()

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        # A fresh, confirmed subscription for every attempt (a reused PubSub can stay deaf
        # after a Redis restart), a ping when idle to notice a dead socket, backoff <= 2 s.
        delay, first = 0.25, True
        while True:
            try:
                self.redis = self._client()
                pubsub = self.pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                # Wait for Redis to confirm: a SUBSCRIBE sent while a restarted Redis is
                # still loading its data is refused, and the connection would stay deaf.
                confirmed = await pubsub.get_message(timeout=2.0)
                if confirmed is None or confirmed["type"] != "subscribe":
                    raise ConnectionError(f"subscribe not confirmed: {confirmed!r}")
                log.info("redis pub/sub subscribed to %s", self.channel)
                if not first and self.on_resubscribe is not None:
                    task = asyncio.create_task(self.on_resubscribe())
                    self._resyncs.add(task)
                    task.add_done_callback(self._resyncs.discard)
                first, delay = False, 0.25
                while True:
                    message = await pubsub.get_message(timeout=IDLE_PING)
                    if message is not None:
                        yield message
                    else:
                        await pubsub.ping()
            except Exception as exc:
                log.warning("redis pub/sub lost (%s); retrying in %.2fs", exc, delay)
                with contextlib.suppress(Exception):
                    await self.pubsub.aclose()
                    await self.redis.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
