"""Local delivery of every emit: Socket.IO participants, plus taps for SSE and plain WebSockets.

`LocalDelivery` is what each process does with an emit meant for its own clients,
whether it was emitted here or came over Redis from another process: taps (SSE, /ws,
the revocation listener), job events put in order, and the Socket.IO clients through
the engine's broadcast primitives (engine.py), with slow consumers dropped. With several
processes, `RedisRelay` carries the emits between them. engine.py wires both into
python-socketio's client managers; nothing here touches a library's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .hub import JOB_NS
from .metrics import Metrics
from .ordering import JobOrder
from .redis_conn import glob_escape, redis_client
from .storage import StoreUnavailable

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("switchboard.manager")
IDLE_PING = 2.0  # seconds without a message before the pub/sub connection is pinged
PUBLISH_BATCH = 256  # messages sent in one round trip
FOLLOW_TIMEOUT = 5.0  # seconds for Redis to confirm a subscription

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


class LocalDelivery:
    """Every emit meant for this process's clients: its own emits and, through the relay,
    other processes'. The object create_app keeps as app[MANAGER]."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        max_pending: int = 1000,
        relay: RedisRelay | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.max_pending = max_pending  # packets queued for one client before it is dropped
        self.relay = relay  # None: a single process
        self.engine: Engine | None = None  # bound by SwitchboardServer
        self.taps: dict[tuple[str, str | None], set[Tap]] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self._resyncs: set[asyncio.Task[None]] = set()
        # Called when events may have been missed (a pub/sub reconnect): JobOrder.resync.
        self.on_resubscribe: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.order: JobOrder | None = None  # set by create_app: job events in seq order

    def bind(self, engine: Engine) -> None:
        self.engine = engine

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
        **kwargs: Any,
    ) -> None:
        """Every emit meant for this process's clients, its own and other processes'."""
        if self.order is not None and (namespace, event) in ORDERED and callback is None:
            await self.order.offer(event, data)  # it calls deliver() in seq / offset order
            return
        await self.deliver(event, data, namespace, room, skip_sid, callback, **kwargs)

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
        """Deliver now (JobOrder calls this in order): the taps of `target`, then the
        Socket.IO clients in it."""
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
        engine = self.engine
        if engine is not None and engine.serves(namespace):
            sent = (
                None
                if callback
                else self._broadcast(engine, event, data, namespace, target, skipped)
            )
            if sent is None:  # acks requested, or binary data: python-socketio's own path
                participants = engine.participants(namespace, target)
                sent = sum(sid not in skipped for sid, _ in participants)
                skip = [sid for sid in skipped if sid is not None]
                await engine.emit_each(event, data, namespace, target, skip, callback, **kwargs)
            delivered += sent
        self.metrics.deliveries.labels(namespace, event).inc(delivered)

    def _broadcast(
        self,
        engine: Engine,
        event: str,
        data: Any,
        namespace: str,
        target: Any,
        skipped: set[str | None],
    ) -> int | None:
        """Send one event to the Socket.IO participants: encoded once, no task per client.

        Each ready websocket gets the frame written in place; every other client gets the
        packet queued, unless it stopped reading. Returns how many were sent to, or None
        for data this path does not carry.
        """
        encoded = engine.encode(event, data, namespace)
        if encoded is None:  # binary attachments
            return None
        write_direct, queue_size, enqueue = engine.write_direct, engine.queue_size, engine.enqueue
        max_pending = self.max_pending
        direct = queued = 0
        for sid, eio_sid in engine.participants(namespace, target):
            if sid in skipped:
                continue
            if write_direct(eio_sid, encoded):
                direct += 1
                continue
            pending = queue_size(eio_sid)
            if pending is None:  # gone or closing
                continue
            if pending >= max_pending:
                self._drop_slow(engine, eio_sid, pending)
                continue
            enqueue(eio_sid, encoded)
            queued += 1
        self.metrics.broadcast_sends.labels("direct").inc(direct)
        self.metrics.broadcast_sends.labels("queued").inc(queued)
        return direct + queued

    def _drop_slow(self, engine: Engine, eio_sid: str, pending: int) -> None:
        """A client that stopped reading: drop it before its queue eats the memory."""
        log.warning(
            "dropping %s: %d packets unread (slow consumer)",
            eio_sid,
            pending,
            extra={"sid": eio_sid, "code": "slow_consumer"},
        )
        self.metrics.rejected.labels("slow_consumer").inc()
        task = asyncio.ensure_future(engine.drop(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def resubscribed(self) -> None:
        """The relay subscribed again after a loss: resync what clients may have missed."""
        if self.on_resubscribe is not None:
            task = asyncio.create_task(self.on_resubscribe())
            self._resyncs.add(task)
            task.add_done_callback(self._resyncs.discard)

    async def flush(self) -> None:
        """Wait until every emit queued for other processes is sent (none on one process)."""
        if self.relay is not None:
            await self.relay.flush()


# The name streams.py, tokens.py and ordering.py know app[MANAGER]'s type by.
LocalManager = LocalDelivery


class RedisRelay:
    """Emits between processes over Redis pub/sub, in python-socketio's message format.

    A job's events and log lines go to channels of their own (`{prefix}events:<id>`,
    `{prefix}logs:<id>`), everything else to `{prefix}socketio`: a node receives a job's
    traffic only while it follows the job (`follow`, counted; '*' and tag followers
    follow every job's events through one pattern). Publishing goes through an ordered
    queue on its own connection with timeouts, retried until Redis takes each message
    (instead of losing it); the subscription reconnects within two seconds, follows
    again what it followed, then calls `resubscribed` for a resync of what its clients
    may have missed.
    """

    def __init__(self, url: str, prefix: str, metrics: Metrics | None = None) -> None:
        self.url = url
        self.channel = f"{prefix}socketio"
        self.metrics = metrics or Metrics()
        self._events = f"{prefix}events:"
        self._logs = f"{prefix}logs:"
        self.every_job = glob_escape(self._events) + "*"  # a pattern: every job's events
        self._publisher: Any = None
        self._outgoing: asyncio.Queue[Any] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        # The subscription: one connection, its commands sent in order under the lock.
        self._pubsub: Any = None
        self._lock = asyncio.Lock()
        self._counts: dict[str, int] = {}  # followed channel (or the pattern) -> followers
        self._ready: set[str] = set()  # confirmed on the current connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}  # for a SUBSCRIBE to send
        # Per channel, the waiters of each SUBSCRIBE sent: Redis confirms them in order.
        self._sent: dict[str, deque[list[asyncio.Future[None]]]] = {}
        self._every_live = False  # the pattern is on: skip the per-job copy of an event
        self._rejoining: set[str] = set()  # to confirm after a reconnect, before the resync
        self._resync_due = False
        self._unsubscribing: set[asyncio.Task[None]] = set()

    def _client(self, **options: Any) -> Any:
        """A connection of its own (publisher or listener), following Sentinel failovers.

        No silent retries inside redis-py: a broken connection surfaces here and is
        replaced by a fresh one (its own resubscribe after a restart is not reliable).
        """
        return redis_client(
            self.url, pool_size=2, pool_timeout=5, socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0), **options,
        )  # fmt: skip

    def topic(self, message: Any) -> str:
        """The channel of a python-socketio message: its job's, or the shared one."""
        if message.get("method") == "emit" and message.get("namespace") == JOB_NS:
            body = message["data"][0] if message.get("data") else None
            if message.get("event") == "job:update" and isinstance(body, dict):
                return self._events + str(body["id"])
            if message.get("event") == "job:log" and isinstance(body, dict):
                return self._logs + str(body["job_id"])
        return self.channel

    def job_channel(self, kind: str, job_id: str | None) -> str:
        """The channel of a job's events or logs; the pattern of every job's events for
        job_id None."""
        if job_id is None:
            return self.every_job
        return (self._logs if kind == "logs" else self._events) + job_id

    def publish(self, message: Any) -> None:
        """Queue a message for the other processes: sent in order, retried until it goes."""
        self._outgoing.put_nowait(message)
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
                for message in batch:
                    pipe.publish(self.topic(message), json.dumps(message))
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

    async def follow(self, channel: str) -> None:
        """Receive `channel` (or the every-job pattern) until as many `unfollow`s: returns
        once Redis confirmed the subscription, so whatever is published from then on
        arrives here. Raises StoreUnavailable when it cannot be confirmed in time."""
        self._counts[channel] = self._counts.get(channel, 0) + 1
        if channel in self._ready:
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(confirmed)
        try:
            async with asyncio.timeout(FOLLOW_TIMEOUT):
                async with self._lock:
                    await self._subscribe(channel)
                await confirmed
        except BaseException as exc:
            self.unfollow(channel)
            if isinstance(exc, TimeoutError):
                raise StoreUnavailable("redis pub/sub did not confirm a subscription") from None
            raise

    def unfollow(self, channel: str) -> None:
        left = self._counts.get(channel, 0) - 1
        if left > 0:
            self._counts[channel] = left
            return
        self._counts.pop(channel, None)
        task = asyncio.create_task(self._unsubscribe(channel))
        self._unsubscribing.add(task)
        task.add_done_callback(self._unsubscribing.discard)

    async def _subscribe(self, channel: str) -> None:
        """Send one SUBSCRIBE for the channel's waiters (under the lock). Without a
        connection, nothing: the listener subscribes to every followed channel when it
        connects."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        self._sent.setdefault(channel, deque()).append(self._waiters.pop(channel, []))
        try:
            if channel == self.every_job:
                await pubsub.psubscribe(channel)
            else:
                await pubsub.subscribe(channel)
        except Exception as exc:  # the listener notices too, reconnects and subscribes
            log.warning("cannot subscribe to %s (%s)", channel, exc)

    async def _unsubscribe(self, channel: str) -> None:
        async with self._lock:
            pubsub = self._pubsub
            if channel in self._counts or pubsub is None:
                return  # followed again meanwhile, or nothing to leave
            self._ready.discard(channel)
            with contextlib.suppress(Exception):
                if channel == self.every_job:
                    await pubsub.punsubscribe(channel)
                else:
                    await pubsub.unsubscribe(channel)

    async def _connected(self, pubsub: Any) -> None:
        """A new subscription connection: subscribe again to everything followed."""
        async with self._lock:
            self._ready.clear()
            self._every_live = False
            for channel, groups in self._sent.items():  # their SUBSCRIBEs died with it
                for group in groups:
                    self._waiters.setdefault(channel, []).extend(group)
            self._sent.clear()
            for channel in list(self._waiters):
                if channel not in self._counts:
                    del self._waiters[channel]
            self._pubsub = pubsub
            channels = [channel for channel in self._counts if channel != self.every_job]
            for channel in channels:
                self._sent[channel] = deque([self._waiters.pop(channel, [])])
            self._rejoining = set(self._counts)
            if channels:
                await pubsub.subscribe(*channels)
            if self.every_job in self._counts:
                self._sent[self.every_job] = deque([self._waiters.pop(self.every_job, [])])
                await pubsub.psubscribe(self.every_job)

    def _confirmed(self, channel: str) -> None:
        """Redis confirmed a SUBSCRIBE (they are confirmed in the order sent)."""
        sent = self._sent.get(channel)
        group = sent.popleft() if sent else []
        if sent is not None and not sent:
            del self._sent[channel]
            if channel in self._counts:  # followed, and no later SUBSCRIBE in flight
                self._ready.add(channel)
        if channel == self.every_job:
            self._every_live = True
        for waiter in group:
            if not waiter.done():
                waiter.set_result(None)
        self._rejoining.discard(channel)

    async def listen(self, resubscribed: Callable[[], None]) -> AsyncIterator[bytes]:
        """The data of every message this node receives, for ever.

        A fresh, confirmed subscription for every attempt (a reused PubSub can stay deaf
        after a Redis restart), a ping when idle to notice a dead socket, backoff <= 2 s.
        """
        delay, first = 0.25, True
        redis: Any = None
        pubsub: Any = None
        channel = self.channel.encode()
        events, logs = self._events.encode(), self._logs.encode()
        count = self.metrics.pubsub_messages.labels
        control, job_events, job_logs = count("control"), count("events"), count("logs")
        while True:
            try:
                redis = self._client()
                pubsub = redis.pubsub()
                await pubsub.subscribe(self.channel)
                # Wait for Redis to confirm: a SUBSCRIBE sent while a restarted Redis is
                # still loading its data is refused, and the connection would stay deaf.
                confirmed = await pubsub.get_message(timeout=2.0)
                if confirmed is None or confirmed["type"] != "subscribe":
                    raise ConnectionError(f"subscribe not confirmed: {confirmed!r}")
                await self._connected(pubsub)
                log.info("redis pub/sub subscribed to %s", self.channel)
                self._resync_due = not first
                first, delay = False, 0.25
                while True:
                    if self._resync_due and not self._rejoining:
                        self._resync_due = False  # every channel is back: read the gaps
                        resubscribed()
                    message = await pubsub.get_message(timeout=IDLE_PING)
                    if message is None:
                        await pubsub.ping()
                        continue
                    kind, name = message["type"], message["channel"]
                    if kind == "message":
                        if name == channel:
                            control.inc()
                        elif name.startswith(logs):
                            job_logs.inc()
                        elif self._every_live and name.startswith(events):
                            continue  # the pattern brings it too
                        else:
                            job_events.inc()
                        yield message["data"]
                    elif kind == "pmessage":
                        job_events.inc()
                        yield message["data"]
                    elif kind in ("subscribe", "psubscribe"):
                        self._confirmed(name.decode())
                    elif kind == "punsubscribe":
                        self._every_live = False
            except Exception as exc:
                log.warning("redis pub/sub lost (%s); retrying in %.2fs", exc, delay)
                self._pubsub = None
                self._ready.clear()  # a follow now waits for the next connection
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await redis.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
