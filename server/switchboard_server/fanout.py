"""The broadcast path: encode once, write the same WebSocket frame to every ready client.

python-socketio's manager sends an emit to each recipient in its own asyncio task, and
each Engine.IO websocket writer then wakes up, encodes, compresses and writes the packet
again. Here an emit builds the Socket.IO packet and its WebSocket frame once; a websocket
client with nothing else pending gets that frame written straight to its transport, and
every other client (long-polling, mid-upgrade, backlogged) gets the packet on its
Engine.IO queue, so each client still sees packets in the order they were sent.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import engineio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket

from .metrics import Metrics

WRITE_LIMIT = 64 * 1024  # bytes buffered in a transport before writes go through the queue
MAX_BATCH = 16  # packets in one long-poll answer
UPGRADE_TIMEOUT = 10.0  # seconds for the websocket upgrade handshake, as in Node's engine.io


def text_frame(text: str) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2), as a server sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class FastWebSocket(WebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp websocket, without permessage-deflate, writable in place.

    Node's socket.io does not compress websocket messages by default either: on a
    broadcast each recipient would pay for its own compressor, in CPU and in memory.

    One websocket per Engine.IO session: the first to arrive holds the session until it
    ends, and any other (someone who learned the sid) is refused with 400 before it is
    accepted, as Node's engine.io does. The upgrade must finish within UPGRADE_TIMEOUT,
    so a websocket that never sends the probe cannot hold a polling session paused.
    """

    sending = False  # the Engine.IO writer is inside send(), maybe waiting for a drain
    transport: asyncio.Transport | None = None
    socket: Any = None  # the engineio AsyncSocket this websocket serves

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse | dict[str, Any]:
        # The handler is a bound method of the socket (the Admin UI's partialmethod wrapper
        # keeps __self__ too; tests/test_engine_assumptions.py checks both).
        socket = getattr(self.handler, "__self__", None)
        if socket is not None:
            if getattr(socket, "websocket", None) is not None or socket.upgrading:
                refusal: dict[str, Any] = self.server._bad_request("a websocket has this session")
                return refusal
            socket.websocket = self  # claimed before the first await: no race to win
            self.socket = socket
        try:
            request: web.Request = environ["aiohttp.request"]
            self._sock = web.WebSocketResponse(
                max_msg_size=self.server.max_http_buffer_size, compress=False
            )
            await self._sock.prepare(request)
            self.environ = environ
            self.transport = request.transport
            await self.handler(self)
        finally:
            if socket is not None and socket.websocket is self:
                socket.websocket = None
        return self._sock

    async def wait(self) -> Any:
        """The next Engine.IO packet; None ends the connection as if the client left."""
        socket = self.socket
        try:
            if socket is None or socket.upgraded:
                data = await super().wait()
            else:  # the probe or the upgrade packet, which a client sends at once
                async with asyncio.timeout(UPGRADE_TIMEOUT):
                    data = await super().wait()
        except TimeoutError:
            return None  # engineio ends the upgrade; the session goes on polling
        try:  # engineio would decode it outside any handler: a traceback per packet
            eio_packet.Packet(encoded_packet=data)
        except Exception as exc:
            self.server.malformed(exc)
            return None
        return data

    async def send(self, message: str | bytes) -> None:
        self.sending = True
        try:
            await super().send(message)
        finally:
            self.sending = False

    def ready(self, socket: Any) -> bool:
        """Whether a frame written now lands after everything already sent to `socket`.

        True when this websocket completed the socket's upgrade (it is the only one the
        session accepted), its writer has taken and written every queued packet
        (asyncio.Queue counts a packet as unfinished until the writer's task_done) and
        the transport is not backed up.
        """
        transport = self.transport
        return (
            self.server.direct_writes
            and not self.sending
            and self.socket is socket
            and socket.websocket is self
            and socket.upgraded
            and not socket.upgrading
            and socket.queue._unfinished_tasks == 0
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() < WRITE_LIMIT
        )


class Cork:
    """Frames written in one event-loop pass, joined into one write per websocket.

    A burst of events (the hub emits all the updates committed meanwhile in one pass)
    then costs one system call per client instead of one per event. The flush runs at
    the start of the next pass, before any Engine.IO writer that was woken after the
    first frame, so the order per client holds.
    """

    def __init__(self) -> None:
        self._pending: dict[FastWebSocket, list[bytes]] = {}

    def write(self, ws: FastWebSocket, frame: bytes) -> None:
        frames = self._pending.get(ws)
        if frames is not None:
            frames.append(frame)
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending[ws] = [frame]

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for ws, frames in pending.items():
            transport = ws.transport
            if transport is not None and not transport.is_closing():
                transport.write(frames[0] if len(frames) == 1 else b"".join(frames))


class OutQueue(asyncio.Queue[Any]):
    """An Engine.IO socket's outgoing queue that hands out at most MAX_BATCH per wait.

    engineio's poll() takes one packet with get(), then drains the rest with
    get_nowait(). python-engineio clients refuse a long-poll answer of more than 16
    packets (Payload.max_decode_packets), so a burst is spread over several answers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._batch = 0

    async def get(self) -> Any:
        self._batch = 0
        return await super().get()

    def get_nowait(self) -> Any:
        if self._batch >= MAX_BATCH:
            raise asyncio.QueueEmpty
        item = super().get_nowait()
        self._batch += 1
        return item


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with the two transports above."""

    # Off with the Admin UI, which counts bytes in each websocket's send(): broadcasts
    # then go through the Engine.IO queues.
    direct_writes = True
    metrics: Metrics | None = None  # set by SwitchboardServer
    node = ""  # this process's name in a cluster, the first part of every session id

    def generate_id(self) -> str:
        return self.node + str(super().generate_id())

    async def drop(self, sid: str) -> None:
        """End a session at once, without a goodbye packet (it would queue behind what
        the client does not read, and a polling close waits for the client's next poll).
        The websocket closes, a pending long-poll is answered, the namespaces see the
        disconnect."""
        socket = self.sockets.pop(sid, None)
        if socket is not None:
            await socket.close(wait=False, abort=True)
            socket.queue.put_nowait(None)

    def malformed(self, error: Exception) -> None:
        """A client sent a packet that does not decode: a metric and a condensed line."""
        if self.metrics is not None:
            self.metrics.rejected.labels("invalid_packet").inc()
        self.logger.warning("malformed packet from a client, disconnecting it: %r", error)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # A copy: the driver table is a module-level dict shared by every server.
        self._async: dict[str, Any] = {**self._async, "websocket": FastWebSocket}

    def create_queue(self, *args: Any, **kwargs: Any) -> OutQueue:
        return OutQueue()
