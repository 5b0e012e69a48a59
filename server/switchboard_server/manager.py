"""Local delivery of every emit: Socket.IO participants, plus taps for SSE and plain WebSockets.

python-socketio calls `AsyncManager.emit` on each process for its own clients (directly, or
from a pub/sub listener with several processes). Subclassing at that seam lets streams
that are not Socket.IO clients receive the same events, on every process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from .metrics import Metrics

Message = tuple[str, Any]  # (event, body)


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
    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics
        self.taps: dict[tuple[str, str | None], set[Tap]] = {}

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
        target = to or room
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
        participants = self.get_participants(namespace, target)
        delivered += sum(1 for sid, _ in participants if sid not in skipped)
        self.metrics.deliveries.labels(namespace, event).inc(delivered)
        await super().emit(
            event, data, namespace, room=target, skip_sid=skip_sid, callback=callback, **kwargs
        )
