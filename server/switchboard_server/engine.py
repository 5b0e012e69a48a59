"""The engine seam: everything Switchboard asks of python-socketio and python-engineio
beyond their documented API, in this one module.

The rest of the server never touches a private attribute of those libraries. It gets:

- `SwitchboardServer`, the python-socketio server to attach to the app, built around a
  `Delivery` (manager.LocalDelivery) that receives every emit meant for this process's
  clients, whichever process emitted it;
- `Engine` (`sio.engine`): this process's sessions (`has_session`, `transport_of`,
  `participants`, `drop`, `drop_all`, `node`) and the broadcast primitives the delivery
  uses (`encode`, `write_direct`, `queue_size`, `enqueue`, `emit_each`);
- the ContextVars `ack_requested` and `from_client`, set per client event.

tests/test_engine_assumptions.py holds one test per assumption this module makes about
the pinned libraries, so an upgrade fails there, with the reason, and nowhere else.

The broadcast path: python-socketio's manager sends an emit to each recipient in its own
asyncio task, and each Engine.IO websocket writer then wakes up, encodes, compresses and
writes the packet again. Here an emit builds the Socket.IO packet and its WebSocket frame
once; a websocket client with nothing else pending gets that frame written straight to
its transport (frames of one event-loop pass joined in one write: `Cork`), and every
other client (long-polling, mid-upgrade, backlogged) gets the packet on its Engine.IO
queue, so each client still sees packets in the order they were sent.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

import engineio
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket
from socketio import packet as sio_packet

from .metrics import Metrics

WRITE_LIMIT = 64 * 1024  # bytes buffered in a transport before writes go through the queue
MAX_BATCH = 16  # packets in one long-poll answer
UPGRADE_TIMEOUT = 10.0  # seconds for the websocket upgrade handshake, as in Node's engine.io

# Set per client event by SwitchboardServer: whether it carries an ack id, and that it
# came from a client (so a client cannot fake "connect" or "disconnect").
ack_requested: ContextVar[bool] = ContextVar("ack_requested", default=True)
from_client: ContextVar[bool] = ContextVar("from_client", default=False)


class Relay(Protocol):
    """What carries emits between processes (manager.RedisRelay)."""

    url: str
    channel: str

    def publish(self, message: Any) -> None:
        """Queue one JSON-serializable message for the other processes; never fails."""

    def listen(self, resubscribed: Callable[[], None]) -> AsyncIterator[Any]:
        """The data of every pub/sub message this process receives, for ever;
        `resubscribed()` after a reconnect, when messages may have been missed."""


class Delivery(Protocol):
    """What receives every emit meant for this process's clients (manager.LocalDelivery)."""

    @property
    def relay(self) -> Relay | None:
        """What carries emits to and from other processes; None for a single process."""

    def bind(self, engine: Engine) -> None:
        """Called once, when the server and its engine exist."""

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
        """Deliver to this process's clients of `namespace` in `room` (None: all of them)."""

    def resubscribed(self) -> None:
        """The relay reconnected: events may have been missed."""


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


class SwitchboardServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on EngineServer, delivering through `delivery`.

    It tells handlers whether the client asked for an ack (`ack_requested`), hangs up on
    packets that do not decode, and answers a polling client's pending GET when it says
    goodbye. Its client manager is one of the two below, chosen by `delivery.relay`.
    """

    def __init__(self, metrics: Metrics, delivery: Delivery, **kwargs: Any) -> None:
        relay = delivery.relay
        manager: socketio.AsyncManager = (
            SingleProcessManager(delivery) if relay is None else RedisPubSubManager(delivery, relay)
        )
        super().__init__(client_manager=manager, **kwargs)
        self.eio.metrics = metrics
        self.engine = Engine(self)
        delivery.bind(self.engine)

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
    ) -> None:
        ack_requested.set(id is not None)
        from_client.set(True)
        await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """A packet that does not decode: one condensed warning, a metric, hang up.

        python-socketio would log each one as an error with a traceback, so a client
        could fill the log at will.
        """
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            self.eio.malformed(exc)
            await self.eio.drop(eio_sid)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)
        # python-engineio leaves the pending long-poll GET hanging until the ping timeout
        # when a polling client says goodbye; answer it now so the client closes at once.
        if socket is not None and not socket.upgraded and reason == self.reason.CLIENT_DISCONNECT:
            socket.queue.put_nowait(None)


class SingleProcessManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager for one process: rooms as usual, every emit handed to
    the delivery."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__()
        self.delivery = delivery

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
        await self.delivery.emit(event, data, namespace, to or room, skip_sid, callback, **kwargs)


class RedisPubSubManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager (its message format, rooms, disconnects and acks
    across processes) with our delivery and our Redis connections.

    python-socketio routes every emit for this process's clients, its own (from emit())
    and every other process's (from the listener), through `_handle_emit`: decoded here
    as python-socketio does, then handed to the delivery. Publishing goes to the relay
    (ordered, retried until Redis takes each message), and python-socketio's listener
    reads the relay's subscriptions (reconnected within seconds, then a resync).
    """

    def __init__(self, delivery: Delivery, relay: Relay) -> None:
        super().__init__(relay.url, channel=relay.channel)
        self.delivery = delivery
        self.relay = relay

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("ignore_queue"):  # this process only; python-socketio would not call
            # _handle_emit, so the delivery would not see it
            await self.delivery.emit(event, data, namespace or "/", to or room, skip_sid, callback)
            return
        await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        # As AsyncPubSubManager._handle_emit decodes it (tests/test_engine_assumptions.py
        # compares the two), then to the delivery instead of AsyncManager.emit.
        callback = None
        remote_callback = message.get("callback")
        if remote_callback is not None and len(remote_callback) == 3:
            callback = functools.partial(
                self._return_callback, message.get("host_id"), *remote_callback
            )
        data = message["data"]
        if message.get("binary"):
            attachments = [base64.b64decode(a) for a in data[1:]]
            data = sio_packet.Packet.reconstruct_binary(data[0], attachments)
        if isinstance(data, list):
            data = data[0] if len(data) == 1 else tuple(data)
        await self.delivery.emit(
            message["event"],
            data,
            message.get("namespace") or "/",
            message.get("room"),
            message.get("skip_sid"),
            callback,
        )

    async def _publish(self, data: Any) -> None:
        # python-socketio has already delivered it to this process's clients, so a failed
        # publish must not fail the emit (a retry of the emit would deliver here twice).
        self.relay.publish(data)

    async def _listen(self) -> AsyncIterator[Any]:
        # python-socketio's _thread() decodes and dispatches what this yields: the data of
        # every message the relay receives, on the shared channel and on per-job ones.
        async for data in self.relay.listen(self.delivery.resubscribed):
            yield data


class EncodedEvent:
    """One event, encoded once for every Socket.IO client: the Engine.IO packet for the
    queues, and its WebSocket frame (built on the first direct write)."""

    __slots__ = ("frame", "packet")

    def __init__(self, packet: eio_packet.Packet) -> None:
        self.packet = packet
        self.frame: bytes | None = None


class Engine:
    """This process's Engine.IO sessions and the broadcast primitives, by session id.

    `eio_sid` is an Engine.IO session id, as `participants` yields it beside the
    Socket.IO sid. Sessions come and go between calls: every method takes an unknown or
    closed session as gone (False, None or nothing done).
    """

    def __init__(self, server: SwitchboardServer) -> None:
        self._server = server
        self._eio: EngineServer = server.eio
        self._cork = Cork()

    def start(self) -> None:
        """Start the client manager's background work (the pub/sub listener) now.

        python-socketio starts it at the first Socket.IO connection, so a node serving
        only SSE or /ws clients would hear no other node.
        """
        if not self._server.manager_initialized:
            self._server.manager_initialized = True
            self._server.manager.initialize()

    @property
    def node(self) -> str:
        """This process's name in a cluster ("" alone), the prefix of its session ids."""
        node: str = self._eio.node
        return node

    @node.setter
    def node(self, name: str) -> None:
        self._eio.node = name

    @property
    def direct_writes(self) -> bool:
        """Whether broadcasts may write to websockets in place (off with the Admin UI,
        which counts bytes in each websocket's send())."""
        enabled: bool = self._eio.direct_writes
        return enabled

    @direct_writes.setter
    def direct_writes(self, enabled: bool) -> None:
        self._eio.direct_writes = enabled

    def has_session(self, eio_sid: str) -> bool:
        return eio_sid in self._eio.sockets

    def transport_of(self, eio_sid: str) -> str | None:
        """ "websocket" or "polling" (also while upgrading); None for no session."""
        socket = self._eio.sockets.get(eio_sid)
        if socket is None:
            return None
        return "websocket" if socket.upgraded else "polling"

    def serves(self, namespace: str) -> bool:
        """Whether any client of this process is in `namespace`."""
        return namespace in self._server.manager.rooms

    def participants(self, namespace: str, target: Any = None) -> Iterator[tuple[str, str]]:
        """(sid, eio_sid) of this process's clients in `target`: a room, a list of rooms,
        or None for the whole namespace."""
        found: Iterator[tuple[str, str]] = self._server.manager.get_participants(namespace, target)
        return found

    def encode(self, event: str, data: Any, namespace: str) -> EncodedEvent | None:
        """The event as every client receives it, or None for binary data (attachments
        go out as separate packets: emit_each)."""
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self._server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        if isinstance(encoded, list):
            return None
        return EncodedEvent(eio_packet.Packet(eio_packet.MESSAGE, encoded))

    def write_direct(self, eio_sid: str, event: EncodedEvent) -> bool:
        """Write the event's frame to the session's websocket now (corked), if it lands
        after everything already sent to it: False to use the queue instead.

        That is when the websocket completed the session's upgrade (it is the only one
        the session accepted), its Engine.IO writer has taken and written every queued
        packet (asyncio.Queue counts a packet as unfinished until the writer's
        task_done, and FastWebSocket.sending covers the write itself) and the transport
        is not backed up. On the hot path of every broadcast, hence inline.
        """
        socket = self._eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return False
        ws: FastWebSocket | None = getattr(socket, "websocket", None)
        if ws is None:
            return False
        transport = ws.transport
        if not (
            self._eio.direct_writes
            and not ws.sending
            and ws.socket is socket
            and socket.upgraded
            and not socket.upgrading
            and socket.queue._unfinished_tasks == 0
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() < WRITE_LIMIT
        ):
            return False
        frame = event.frame
        if frame is None:
            frame = event.frame = text_frame(event.packet.encode())
        self._cork.write(ws, frame)
        return True

    def queue_size(self, eio_sid: str) -> int | None:
        """Packets waiting on the session's Engine.IO queue; None for no open session."""
        socket = self._eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return None
        size: int = socket.queue.qsize()
        return size

    def enqueue(self, eio_sid: str, event: EncodedEvent) -> None:
        """Put the event on the session's Engine.IO queue, behind what is there."""
        socket = self._eio.sockets.get(eio_sid)
        if socket is not None:
            socket.queue.put_nowait(event.packet)

    async def emit_each(
        self,
        event: str,
        data: Any,
        namespace: str,
        target: Any,
        skip_sids: list[str],
        callback: Any = None,
        **kwargs: Any,
    ) -> None:
        """python-socketio's own delivery to this process's clients, one task each: for
        acks (an id per client) and binary data."""
        await socketio.AsyncManager.emit(
            self._server.manager,
            event,
            data,
            namespace,
            room=target,
            skip_sid=skip_sids,
            callback=callback,
            **kwargs,
        )

    async def drop(self, eio_sid: str) -> None:
        """End a session at once, without a goodbye packet (see EngineServer.drop)."""
        await self._eio.drop(eio_sid)

    async def drop_all(self) -> None:
        """Drop every session: clients see a lost connection and reconnect elsewhere."""
        for eio_sid in list(self._eio.sockets):
            await self._eio.drop(eio_sid)
