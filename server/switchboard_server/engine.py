"""The engine seam: everything Switchboard asks of python-socketio and python-engineio
beyond their documented API (and of aiohttp, to take a websocket's connection over), in
this one module.

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

The websocket path: python-engineio serves each websocket from the request's handler,
with a reader task, a writer task and a ping task, and aiohttp keeps the request and the
middlewares' frames alive under them for the life of the connection. Here, once the
handshake is answered, a `WebSocketChannel` (a protocol object) takes the connection over
from aiohttp and serves the session itself: an idle client costs that object, its
transport and the session's state.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

import engineio
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket
from engineio.async_socket import AsyncSocket
from engineio.exceptions import SocketIsClosedError, UnknownPacketError
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


def encode_frame(head: int, payload: bytes) -> bytes:
    """One unmasked frame (RFC 6455 §5.2), as a server sends it; `head` is its first byte
    (FIN and the opcode)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", head, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", head, 126, size)
    else:
        header = struct.pack("!BBQ", head, 127, size)
    return header + payload


def text_frame(text: str) -> bytes:
    """One final text frame."""
    return encode_frame(0x81, text.encode())


def unmask(mask: bytes, payload: bytes) -> bytes:
    """A client frame's payload, unmasked (RFC 6455 §5.3)."""
    size = len(payload)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")


# python-engineio's own methods, before the Admin UI (if on) patches them: FastWebSocket and
# EngineServer take over only what these would have done.
ENGINEIO_WEBSOCKET_HANDLER = AsyncSocket._websocket_handler
ENGINEIO_SEND_PING = AsyncSocket._send_ping


class FastWebSocket(WebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp websocket driver, without permessage-deflate.

    Node's socket.io does not compress websocket messages by default either: on a
    broadcast each recipient would pay for its own compressor, in CPU and in memory.

    After the handshake the connection is handed to a WebSocketChannel, which serves the
    session in place of python-engineio's handler; with the Admin UI on (it patches that
    handler to count packets) the handler runs as python-engineio has it, on aiohttp's
    WebSocketResponse, and this object stays as the session's websocket.

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
            if socket is not None and (
                getattr(self.handler, "__func__", None) is ENGINEIO_WEBSOCKET_HANDLER
            ):
                handed = HandOff(compress=False)
                await handed.prepare(request)
                WebSocketChannel.take_over(socket, request)
                return handed
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


class HandOff(web.WebSocketResponse):
    """aiohttp's websocket handshake (checks, 101 answer, response signals), without its
    reader: whatever the client sends next waits in the request's protocol (its
    `_message_tail`) until WebSocketChannel.take_over, and aiohttp writes nothing more
    on the connection once the handler returns this."""

    def _post_start(self, request: web.BaseRequest, protocol: Any, writer: Any) -> None:
        pass

    async def write_eof(self, data: bytes = b"") -> None:
        pass


PROBE, UPGRADE, OPEN = range(3)  # a WebSocketChannel's phase: what the client sends next


class WebSocketChannel(asyncio.Protocol):
    """One Engine.IO session's websocket, once aiohttp has handed over the connection.

    python-engineio serves a websocket from the request's handler coroutine, with a
    reader and a writer task that each wait with a timer, and under them aiohttp keeps
    the request, its parser and the middlewares' frames as long as the client stays.
    Here an idle client costs this object and its transport. Frames are parsed as they
    arrive and the session's packets handled in order, in a task only while some wait
    (reading pauses meanwhile); what the session queues is written at once (through the
    Cork, so in order with direct writes) unless the transport is backed up: then it
    stays on the queue, where the slow-consumer check counts it, until the transport
    drains. The session closes when the connection does; the connection closes with the
    session (SwitchboardServer._handle_eio_disconnect) or on a bad frame or packet.
    """

    __slots__ = ("_binary", "_fragments", "_inbox", "_tail", "_task", "_timer", "paused",
                 "phase", "socket", "transport")  # fmt: skip
    sending = False  # for Engine.write_direct, as FastWebSocket's: no send() to wait in

    def __init__(self, socket: Any, transport: asyncio.Transport, phase: int) -> None:
        self.socket = socket
        self.transport: asyncio.Transport | None = transport
        self.phase = phase
        self.paused = False  # the transport's buffer is full: packets wait on the queue
        self._tail = b""  # the start of a frame not yet complete
        self._fragments: bytearray | None = None  # a message sent in several frames
        self._binary = False  # that message's type
        self._inbox: list[str | bytes] = []  # complete messages, not yet handled
        self._task: asyncio.Task[None] | None = None  # handling them
        self._timer: asyncio.TimerHandle | None = None  # the end of the upgrade's time

    @classmethod
    def take_over(cls, socket: Any, request: web.BaseRequest) -> None:
        """Take the request's connection from aiohttp, right after the handshake."""
        protocol = request.protocol
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client left during the handshake")
        early = protocol._message_tail  # frames sent right behind the request
        upgrade = socket.connected  # else this websocket opens the session
        channel = cls(socket, transport, PROBE if upgrade else OPEN)
        socket.websocket = channel
        # aiohttp forgets the connection as if it were lost, without closing it: its
        # request handler, parser and tasks end with this request.
        protocol.transport = None
        transport.set_protocol(channel)
        protocol.connection_lost(None)
        if upgrade:
            socket.upgrading = True  # polls answer NOOP until the upgrade ends
            loop = asyncio.get_running_loop()
            channel._timer = loop.call_later(UPGRADE_TIMEOUT, channel._upgrade_timed_out)
        else:
            socket.connected = True
            channel._open()
        if early:
            channel.data_received(early)
        if not transport.is_reading():  # aiohttp pauses while its tail is long
            transport.resume_reading()

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        limit = self.socket.server.max_http_buffer_size
        size = len(data)
        start = 0
        while size - start >= 2:
            head, second = data[start], data[start + 1]
            opcode, length, at = head & 0x0F, second & 0x7F, start + 2
            if length == 126:
                if size - at < 2:
                    break
                length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
            elif length == 127:
                if size - at < 8:
                    break
                length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
            if head & 0x70 or opcode not in (0, 1, 2, 8, 9, 10) or not second & 0x80:
                self.close(1002)  # an extension (none was agreed), or not masked
                return
            if opcode >= 8 and (length > 125 or not head & 0x80):
                self.close(1002)  # control frames are short and never fragmented
                return
            if opcode < 8 and length + len(self._fragments or b"") > limit:
                self.close(1009)
                return
            end = at + 4 + length
            if end > size:
                break
            payload = unmask(data[at : at + 4], data[at + 4 : end])
            start = end
            if not self._frame(head & 0x80, opcode, payload):
                return
        self._tail = data[start:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
        socket = self.socket
        socket.server.cork.take(self)
        if socket.websocket is self:
            socket.websocket = None
        if self.phase != OPEN:
            socket.upgrading = False  # the session goes on polling
            return
        socket.queue.detach(self)
        self._inbox.clear()
        if self._task is None:  # else it closes the session after the packet in hand
            self._task = asyncio.ensure_future(self._handle_inbox())

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    # writing

    def pump(self) -> None:
        """Write what the session has queued, in order, while the transport takes it."""
        queue = self.socket.queue
        cork = self.socket.server.cork
        while queue.qsize() and not self.paused and self.transport is not None:
            packet = queue.take()
            if packet is None:  # EngineServer.drop, or the session ended
                self.close()
                return
            encoded = packet.encode()
            cork.write(
                self,
                text_frame(encoded) if isinstance(encoded, str) else encode_frame(0x82, encoded),
            )

    def close(self, code: int = 1000) -> None:
        """Write what is pending, a close frame with `code`, and close the connection
        (at once, dropping what is pending, while the transport is backed up)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pending = self.socket.server.cork.take(self)
        if self.paused:
            self.abort()
            return
        transport.write(b"".join([*pending, encode_frame(0x88, code.to_bytes(2, "big"))]))
        transport.close()

    def abort(self) -> None:
        """Drop the connection and whatever is pending."""
        if self.transport is not None:
            self.transport.abort()

    # reading

    def _frame(self, final: int, opcode: int, payload: bytes) -> bool:
        """Take one frame; False when it closed the connection."""
        if opcode == 8:  # the client's close: answer it
            self.close()
            return False
        if opcode == 9:
            self.socket.server.cork.write(self, encode_frame(0x8A, payload))
            return True
        if opcode == 10:
            return True
        if (opcode == 0) != (self._fragments is not None):  # a continuation out of place
            self.close(1002)
            return False
        if not final:
            if self._fragments is None:
                self._fragments, self._binary = bytearray(), opcode == 2
            self._fragments += payload
            return True
        binary = opcode == 2
        if self._fragments is not None:
            payload, binary = bytes(self._fragments + payload), self._binary
            self._fragments = None
        if binary:
            self._received(payload)
            return True
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self.close(1007)
            return False
        self._received(text)
        return True

    def _received(self, message: str | bytes) -> None:
        self._inbox.append(message)
        if self._task is None:
            self._task = asyncio.ensure_future(self._handle_inbox())
        elif self.transport is not None:
            self.transport.pause_reading()  # until the task has caught up

    async def _handle_inbox(self) -> None:
        """Handle the messages waiting, in order; after the connection is lost, close the
        session as python-engineio's handler does when its websocket ends."""
        socket = self.socket
        try:
            while self._inbox:
                if not await self._handle(self._inbox.pop(0)):
                    self._inbox.clear()
                    self.close()
            transport = self.transport
            if transport is None:
                await socket.close(
                    wait=False, abort=True, reason=socket.server.reason.TRANSPORT_CLOSE
                )
                if socket.server.sockets.get(socket.sid) is socket:
                    del socket.server.sockets[socket.sid]
            elif not transport.is_closing() and not transport.is_reading():
                transport.resume_reading()
        finally:
            self._task = None

    async def _handle(self, message: str | bytes) -> bool:
        """One message from the client; False to close the connection."""
        socket = self.socket
        try:  # engineio would decode it outside any handler: a traceback per packet
            packet = eio_packet.Packet(encoded_packet=message)
        except Exception as exc:
            socket.server.malformed(exc)
            return False
        if self.phase == OPEN:
            try:
                await socket.receive(packet)
            except UnknownPacketError:
                pass
            except SocketIsClosedError:
                return False
            except Exception:
                socket.server.logger.exception("Unknown receive error")
            return True
        if self.phase == PROBE:
            if packet.packet_type != eio_packet.PING or packet.data != "probe":
                socket.server.logger.info(
                    "%s: Failed websocket upgrade, no PING packet", socket.sid
                )
                return False
            self.socket.server.cork.write(
                self, text_frame(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            )
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
            self.phase = UPGRADE
            return True
        if packet.packet_type != eio_packet.UPGRADE:
            socket.server.logger.info(
                "%s: Failed websocket upgrade, expected UPGRADE packet, received %s instead.",
                socket.sid,
                message,
            )
            return False
        self._open()
        return True

    def _open(self) -> None:
        """From here the websocket carries the session: its queue drains into it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        socket = self.socket
        socket.upgraded, socket.upgrading = True, False
        self.phase = OPEN
        socket.queue.attach(self)
        socket.server.logger.info("%s: Upgrade to websocket successful", socket.sid)

    def _upgrade_timed_out(self) -> None:
        self._timer = None
        self.socket.server.logger.info("%s: websocket upgrade timed out", self.socket.sid)
        self.close()


class Cork:
    """Frames written in one event-loop pass, joined into one write per websocket.

    A burst of events (the hub emits all the updates committed meanwhile in one pass)
    then costs one system call per client instead of one per event. The flush runs at
    the start of the next pass, before any Engine.IO writer that was woken after the
    first frame, so the order per client holds.
    """

    def __init__(self) -> None:
        self._pending: dict[Any, list[bytes]] = {}

    def write(self, ws: FastWebSocket | WebSocketChannel, frame: bytes) -> None:
        frames = self._pending.get(ws)
        if frames is not None:
            frames.append(frame)
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending[ws] = [frame]

    def take(self, ws: FastWebSocket | WebSocketChannel) -> list[bytes]:
        """The frames not yet written to `ws`, taken out (to be written before its last)."""
        return self._pending.pop(ws, [])

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for ws, frames in pending.items():
            transport = ws.transport
            if transport is not None and not transport.is_closing():
                transport.write(frames[0] if len(frames) == 1 else b"".join(frames))


class OutQueue:
    """An Engine.IO socket's outgoing packets: what python-engineio asks of its
    asyncio.Queue (put, put_nowait, get, get_nowait, task_done, join, qsize), small
    enough to keep one per idle client, and

    - get_nowait() hands out at most MAX_BATCH packets per get(): engineio's poll() takes
      one with get(), then drains the rest with get_nowait(), and python-engineio clients
      refuse a long-poll answer of more than 16 packets (Payload.max_decode_packets);
    - a websocket channel, once attached, takes each packet as it is put (pump()), and
      the rest with take() when its transport has drained.

    `unfinished` counts the packets put and not yet taken by the channel or marked
    task_done() by engineio after a get().
    """

    __slots__ = ("_batch", "_channel", "_getters", "_items", "_joined", "unfinished")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self.unfinished = 0
        self._batch = 0
        self._channel: WebSocketChannel | None = None
        self._getters: list[asyncio.Future[None]] | None = None  # long polls waiting
        self._joined: asyncio.Event | None = None  # set when nothing is unfinished

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self.unfinished += 1
        if self._channel is not None:
            self._channel.pump()
        elif self._getters:
            self._wake()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    async def get(self) -> Any:
        self._batch = 0
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:  # as asyncio.Queue does: the next getter's turn
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake()
                raise
        return self.get_nowait()

    def get_nowait(self) -> Any:
        if self._batch >= MAX_BATCH or not self._items:
            raise asyncio.QueueEmpty
        self._batch += 1
        return self._items.pop(0)

    def task_done(self) -> None:
        if self.unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self.unfinished -= 1
        if not self.unfinished and self._joined is not None:
            self._joined.set()
            self._joined = None

    async def join(self) -> None:
        while self.unfinished:
            if self._joined is None:
                self._joined = asyncio.Event()
            await self._joined.wait()

    def attach(self, channel: WebSocketChannel) -> None:
        """The session's websocket takes the packets from now on, starting with these."""
        self._channel = channel
        channel.pump()

    def detach(self, channel: WebSocketChannel) -> None:
        """The websocket is gone: what it did not take is dropped."""
        if self._channel is channel:
            self._channel = None
            for _ in self._items:
                self.task_done()
            self._items.clear()

    def take(self) -> Any:
        """The next packet, for the channel, counted as finished."""
        item = self._items.pop(0)
        self.task_done()
        return item

    def _wake(self) -> None:
        assert self._getters is not None
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with the transports above, and a timer (instead of a
    sleeping task) per session for the next ping."""

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
            ws = getattr(socket, "websocket", None)
            if isinstance(ws, WebSocketChannel):  # also one still upgrading
                ws.close()

    def malformed(self, error: Exception) -> None:
        """A client sent a packet that does not decode: a metric and a condensed line."""
        if self.metrics is not None:
            self.metrics.rejected.labels("invalid_packet").inc()
        self.logger.warning("malformed packet from a client, disconnecting it: %r", error)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # A copy: the driver table is a module-level dict shared by every server.
        self._async: dict[str, Any] = {**self._async, "websocket": FastWebSocket}
        self.cork = Cork()

    def create_queue(self, *args: Any, **kwargs: Any) -> OutQueue:
        return OutQueue()

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        # A socket's schedule_ping() starts _send_ping(), which sleeps ping_interval then
        # sends a PING: a task per client, all the time. A timer does the same.
        if getattr(target, "__func__", None) is ENGINEIO_SEND_PING:
            loop = asyncio.get_running_loop()
            return loop.call_later(self.ping_interval, send_ping, target.__self__)
        return super().start_background_task(target, *args, **kwargs)


def send_ping(socket: Any) -> None:
    """What engineio's _send_ping() does once its sleep is over."""
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


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

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        # python-socketio keeps the environ for the life of the session: without the
        # aiohttp request and its body reader (nothing reads them after the handshake), and
        # with its names shared between sessions.
        kept = {sys.intern(name): value for name, value in environ.items()
                if name not in ("aiohttp.request", "wsgi.input")}  # fmt: skip
        await super()._handle_eio_connect(eio_sid, kept)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)
        if socket is None:
            return
        # python-engineio leaves the pending long-poll GET hanging until the ping timeout
        # when a polling client says goodbye; answer it now so the client closes at once.
        if not socket.upgraded and reason == self.reason.CLIENT_DISCONNECT:
            socket.queue.put_nowait(None)
        # The session's websocket closes with it, once engineio's close() has queued its
        # goodbye (if any) and returned: python-engineio's handler would wait for the
        # client to hang up, or for a ping interval and timeout of silence. A client that
        # stopped answering pings is gone: nothing it would read is waited for.
        ws = getattr(socket, "websocket", None)
        if isinstance(ws, WebSocketChannel):
            gone = reason == self.eio.reason.PING_TIMEOUT
            asyncio.get_running_loop().call_soon(ws.abort if gone else ws.close)


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
        self._cork = self._eio.cork

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
        the session accepted), every queued packet has been taken and written (OutQueue
        counts a packet as unfinished until the channel takes it or engineio's writer
        marks it task_done, and FastWebSocket.sending covers that writer's send) and the
        transport is not backed up. On the hot path of every broadcast, hence inline.
        """
        socket = self._eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return False
        ws: FastWebSocket | WebSocketChannel | None = getattr(socket, "websocket", None)
        if ws is None:
            return False
        transport = ws.transport
        if not (
            self._eio.direct_writes
            and not ws.sending
            and ws.socket is socket
            and socket.upgraded
            and not socket.upgrading
            and socket.queue.unfinished == 0
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
