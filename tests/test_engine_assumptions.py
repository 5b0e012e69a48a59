"""What engine.py assumes of python-engineio and python-socketio (and of aiohttp, whose
websocket connections it takes over).

engine.py is the only module that touches those libraries' internals. Each test here
names one thing it relies on, so an upgrade of the pinned libraries fails here, with the
reason, rather than somewhere downstream. The last part tests the websocket channel that
replaces python-engineio's websocket handler, frame by frame.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import json
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import engineio
import pytest
import socketio
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet
from switchboard_server import engine
from switchboard_server.manager import LocalDelivery, RedisRelay
from switchboard_server.metrics import Metrics

from .conftest import Connect, Server, StartServer


def switchboard_server(relay: RedisRelay | None = None) -> engine.SwitchboardServer:
    return engine.SwitchboardServer(Metrics(), LocalDelivery(relay=relay), async_mode="aiohttp")


def params(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


# python-engineio


def test_websocket_handler_is_bound_to_its_socket() -> None:
    """FastWebSocket finds the session through the handler's __self__, also when the
    Admin UI wraps the handler in a partialmethod."""
    server = engineio.AsyncServer(async_mode="aiohttp")
    socket = AsyncSocket(server, "sid")
    assert socket._websocket_handler.__self__ is socket

    async def wrapper(sock: AsyncSocket, admin: object, ws: object) -> None: ...

    wrapped = functools.partialmethod(wrapper, object())
    assert wrapped.__get__(socket, AsyncSocket).__self__ is socket


async def test_aiohttp_websocket_driver_goes_through_sock() -> None:
    """FastWebSocket.__call__ replaces the driver's and sets `_sock` itself; the driver's
    send(), wait() and close() must use that attribute and nothing else it sets."""
    assert params(WebSocket.__init__) == ["self", "handler", "server"]
    calls: list[Any] = []

    class Sock:
        async def send_str(self, text: str) -> None:
            calls.append(("send_str", text))

        async def receive(self) -> Any:
            return type("Message", (), {"data": "2probe"})()

        async def close(self) -> None:
            calls.append("close")

    ws = WebSocket(handler=None, server=None)
    ws._sock = Sock()
    await ws.send("4x")
    assert await ws.wait() == "2probe"
    await ws.close()
    assert calls == [("send_str", "4x"), "close"]


def test_socket_has_no_websocket_attribute_of_its_own() -> None:
    """FastWebSocket records itself as `socket.websocket`: engineio must not use the name."""
    socket = AsyncSocket(engineio.AsyncServer(async_mode="aiohttp"), "sid")
    assert not hasattr(socket, "websocket")


def test_a_none_packet_is_a_noop_that_ends_the_upgrade() -> None:
    """FastWebSocket.wait() returns None to end an upgrade that timed out."""
    assert eio_packet.Packet(encoded_packet=None).packet_type == eio_packet.NOOP


def test_bad_request_is_a_response_dict() -> None:
    """A refused second websocket returns _bad_request() from the driver's __call__."""
    server = engineio.AsyncServer(async_mode="aiohttp")
    answer = server._bad_request("x")
    assert isinstance(answer, dict) and answer["status"].startswith("400")


def test_engineio_asks_of_its_queue_only_what_outqueue_has() -> None:
    """OutQueue stands in for asyncio.Queue: python-engineio creates it without arguments
    and calls no other method on it than these."""
    used: set[str] = set()
    for module in (engineio.base_socket, engineio.async_socket, engineio.async_server):
        used |= set(re.findall(r"\.queue\.(\w+)", inspect.getsource(module)))
    assert used == {"get", "get_nowait", "put", "put_nowait", "task_done", "join"}
    assert "self.queue = self.server.create_queue()" in inspect.getsource(engineio.base_socket)
    assert "except asyncio.QueueEmpty:" in inspect.getsource(AsyncSocket.poll)


async def test_queue_counts_unfinished_packets() -> None:
    """Engine.write_direct needs the count of packets not yet taken by the channel nor
    marked task_done after a get(); join() waits for it to reach zero."""
    queue = engine.OutQueue()
    queue.put_nowait(1)
    assert queue.unfinished == 1
    await queue.get()
    assert queue.unfinished == 1
    joined = asyncio.ensure_future(queue.join())
    await asyncio.sleep(0)
    assert not joined.done()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    assert queue.unfinished == 0
    with pytest.raises(ValueError):
        queue.task_done()


async def test_queue_wakes_one_long_poll_per_packet() -> None:
    """As asyncio.Queue: a packet wakes the first getter waiting; a getter cancelled
    (poll()'s wait_for timing out) leaves its turn to the next."""
    queue = engine.OutQueue()
    first, second = (asyncio.ensure_future(queue.get()) for _ in range(2))
    await asyncio.sleep(0)
    first.cancel()
    queue.put_nowait("a")
    assert await asyncio.wait_for(second, 1) == "a"
    assert first.cancelled() and queue.qsize() == 0
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait("b")
    assert await queue.get() == "b"


async def test_poll_answers_at_most_max_batch_packets() -> None:
    """OutQueue counts on poll() taking one packet with get() (which OutQueue serves
    through get_nowait()) and draining the rest with get_nowait()."""
    socket = AsyncSocket(engine.EngineServer(async_mode="aiohttp"), "sid")
    for n in range(engine.MAX_BATCH * 2 + 3):
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, str(n)))
    sizes = [len(await socket.poll()) for _ in range(3)]
    assert sizes == [engine.MAX_BATCH, engine.MAX_BATCH, 3]


async def test_a_none_on_the_queue_ends_a_poll() -> None:
    """drop() and a polling client's goodbye put None on the queue: poll() then answers
    nothing (the pending GET returns, the websocket writer stops)."""
    socket = AsyncSocket(engine.EngineServer(async_mode="aiohttp"), "sid")
    socket.queue.put_nowait(None)
    assert await socket.poll() == []


async def test_an_aborted_close_queues_nothing() -> None:
    """drop() closes with abort=True: no CLOSE packet queued behind what the client does
    not read, the socket closed at once, the disconnect handler called."""
    server = engine.EngineServer(async_mode="aiohttp")
    seen: list[Any] = []
    server.on("disconnect", lambda sid, reason: seen.append((sid, reason)))
    socket = AsyncSocket(server, "sid")
    await socket.close(wait=False, abort=True)
    assert socket.closed and socket.queue.qsize() == 0
    assert seen == [("sid", server.reason.SERVER_DISCONNECT)]


async def test_session_ids_come_from_generate_id() -> None:
    """EngineServer prefixes generate_id() with its node; python-socketio's manager asks
    the same method for Socket.IO sids."""
    sio = switchboard_server()
    sio.eio.node = "n7-"
    assert sio.eio.generate_id().startswith("n7-")
    assert (await sio.manager.pre_connect("e1", "/job")).startswith("n7-")


async def test_server_uses_our_engine_and_socket_flags(server: Server) -> None:
    sio = server.sio
    assert isinstance(sio.eio, engine.EngineServer)
    assert sio.eio._async["websocket"] is engine.FastWebSocket
    assert engineio.async_drivers.aiohttp._async["websocket"] is not engine.FastWebSocket
    socket = AsyncSocket(sio.eio, "sid")
    for flag in ("upgrading", "upgraded", "connected", "closed"):
        assert getattr(socket, flag) is False, flag
    assert isinstance(socket.queue, engine.OutQueue)


async def test_sessions_are_the_sockets_the_manager_names(
    server: Server, connect: Connect, transport: str
) -> None:
    """`eio.sockets` maps the eio_sid that the manager's participants carry to the
    session, whose `upgraded` says websocket."""
    await connect(server.url, namespaces=("/job",))
    found = list(server.sio.engine.participants("/job"))
    assert len(found) == 1
    _, eio_sid = found[0]
    assert server.sio.engine.has_session(eio_sid)
    assert eio_sid in server.sio.eio.sockets
    wanted = "polling" if transport == "polling" else "websocket"
    assert server.sio.engine.transport_of(eio_sid) == wanted
    assert server.sio.engine.queue_size(eio_sid) == 0


def test_the_websocket_handler_is_engineio_s_own_unless_patched() -> None:
    """FastWebSocket hands the connection to a WebSocketChannel only when the driver was
    given engineio's own _websocket_handler: the Admin UI patches it to count packets."""
    socket = AsyncSocket(engineio.AsyncServer(async_mode="aiohttp"), "sid")
    assert socket._websocket_handler.__func__ is engine.ENGINEIO_WEBSOCKET_HANDLER
    wrapped = functools.partialmethod(lambda sock, admin, ws: None, object())
    assert not hasattr(wrapped.__get__(socket, AsyncSocket), "__func__")


async def test_schedule_ping_starts_send_ping_and_keeps_nothing() -> None:
    """schedule_ping() starts the bound _send_ping with start_background_task() and keeps
    nothing it returns, so EngineServer may answer with a timer; after its sleep,
    _send_ping does what engine.send_ping does."""
    started: list[Any] = []

    class Recording(engineio.AsyncServer):  # type: ignore[misc]
        def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> None:
            started.append((target, args, kwargs))

    socket = AsyncSocket(Recording(async_mode="aiohttp"), "sid")
    socket.schedule_ping()
    assert len(started) == 1 and started[0][1:] == ((), {})
    target = started[0][0]
    assert target.__func__ is engine.ENGINEIO_SEND_PING and target.__self__ is socket

    servers = {"engineio": engineio.AsyncServer, "ours": engine.EngineServer}
    for closing in (False, True):
        found = {}
        for name, server_class in servers.items():
            server = server_class(async_mode="aiohttp", ping_interval=0.001)
            pinged = AsyncSocket(server, "sid")
            pinged.last_ping, pinged.closing = None, closing
            if name == "engineio":
                await pinged._send_ping()
            else:
                engine.send_ping(pinged)
            queued = [pinged.queue.get_nowait() for _ in range(pinged.queue.qsize())]
            found[name] = (pinged.last_ping is not None, [p.encode() for p in queued])
        assert found["engineio"] == found["ours"] == ((False, []) if closing else (True, ["2"]))


async def test_our_server_pings_with_a_timer() -> None:
    """EngineServer.start_background_task: a timer for _send_ping, a task for the rest."""
    server = engine.EngineServer(async_mode="aiohttp", ping_interval=5)
    socket = AsyncSocket(server, "sid")
    loop = asyncio.get_running_loop()
    handle = server.start_background_task(socket._send_ping)
    assert isinstance(handle, asyncio.TimerHandle)
    assert 4 < handle.when() - loop.time() <= 5
    handle.cancel()
    task = server.start_background_task(asyncio.sleep, 0)
    assert isinstance(task, asyncio.Task)
    await task


async def test_close_returns_in_the_step_that_fires_disconnect() -> None:
    """SwitchboardServer._handle_eio_disconnect closes the session's websocket with
    call_soon(): by then close() has queued its CLOSE packet and marked the socket closed."""
    server = engine.EngineServer(async_mode="aiohttp")
    socket = AsyncSocket(server, "sid")
    seen: list[Any] = []

    def later() -> None:
        seen.append((socket.closed, [p.encode() for p in socket.queue._items]))

    async def on_disconnect(sid: str, reason: str) -> None:
        asyncio.get_running_loop().call_soon(later)

    server.on("disconnect", on_disconnect)
    await socket.close(wait=False)
    await asyncio.sleep(0)
    assert seen == [(True, ["1"])]


async def test_socketio_keeps_the_environ_it_is_given_at_connect() -> None:
    """SwitchboardServer hands python-socketio a copy of the environ without the aiohttp
    request; python-socketio keeps that and gives it to the namespaces' connect."""
    sio = switchboard_server()
    environ = {"aiohttp.request": object(), "wsgi.input": object(), "QUERY_STRING": "EIO=4"}
    await sio._handle_eio_connect("e1", environ)
    assert sio.environ["e1"] == {"QUERY_STRING": "EIO=4"}
    assert "self.environ[eio_sid] = environ" in inspect.getsource(
        socketio.AsyncServer._handle_eio_connect
    )
    assert "self.environ[eio_sid]" in inspect.getsource(socketio.AsyncServer._handle_connect)


# aiohttp, for the websocket hand-off


def test_websocket_prepare_installs_its_reader_in_post_start() -> None:
    """HandOff overrides _post_start, which prepare() calls once the 101 is written to
    install aiohttp's reader; without it, frames wait in the protocol's _message_tail."""
    assert params(web.WebSocketResponse._post_start) == ["self", "request", "protocol", "writer"]
    source = inspect.getsource(web.WebSocketResponse.prepare)
    assert source.index("super().prepare(request)") < source.index("self._post_start(")
    assert "self._message_tail += data" in inspect.getsource(RequestHandler.data_received)
    assert "self._message_tail = tail" in inspect.getsource(RequestHandler.data_received)


# python-socketio's server


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("_engineio_server_class", ["self"]),
        ("_handle_event_internal", ["self", "server", "sid", "eio_sid", "data", "namespace", "id"]),
        ("_handle_eio_message", ["self", "eio_sid", "data"]),
        ("_handle_eio_disconnect", ["self", "eio_sid", "reason"]),
    ],
)
def test_socketio_server_hooks_keep_their_signatures(method: str, expected: list[str]) -> None:
    """SwitchboardServer overrides these and calls the originals."""
    original = getattr(socketio.AsyncServer, method)
    assert params(original) == expected
    assert inspect.iscoroutinefunction(original) == (method != "_engineio_server_class")


def test_engineio_events_reach_our_overrides() -> None:
    """python-socketio builds its Engine.IO server through _engineio_server_class() and
    registers its bound _handle_eio_* methods, so our overrides receive the events."""
    sio = switchboard_server()
    assert isinstance(sio.eio, engine.EngineServer)
    assert sio.eio.handlers["message"] == sio._handle_eio_message
    assert sio.eio.handlers["disconnect"] == sio._handle_eio_disconnect


def test_socketio_and_engineio_share_disconnect_reasons() -> None:
    """_handle_eio_disconnect compares engineio's reason with python-socketio's constant."""
    assert (
        socketio.AsyncServer.reason.CLIENT_DISCONNECT
        == engineio.AsyncServer.reason.CLIENT_DISCONNECT
    )


def test_event_packets_encode_once_as_text_unless_binary() -> None:
    """Engine.encode: a Socket.IO EVENT encodes to one string, or a list when it carries
    bytes; its Engine.IO MESSAGE is "4" and that string, the frame every client gets."""
    sio = switchboard_server()
    text = sio.packet_class(sio_packet.EVENT, namespace="/job", data=["e", {"a": 1}]).encode()
    assert text == '2/job,["e",{"a":1}]'
    assert eio_packet.Packet(eio_packet.MESSAGE, text).encode() == "4" + text
    binary = sio.packet_class(sio_packet.EVENT, namespace="/job", data=["e", b"\x00"]).encode()
    assert isinstance(binary, list)


# python-socketio's managers


def test_the_server_adopts_its_manager() -> None:
    """AsyncServer(client_manager=...) calls set_server(), so manager.server is the server
    (python-socketio's per-client path and pre_connect need it)."""
    sio = switchboard_server()
    assert isinstance(sio.manager, engine.SingleProcessManager)
    assert sio.manager.server is sio


async def test_engine_start_initializes_the_manager_once() -> None:
    """python-socketio initializes its manager (starting the pub/sub listener) at the first
    connection unless manager_initialized is set: Engine.start does it at start-up."""
    started: list[str] = []

    class Counted(engine.SingleProcessManager):
        def initialize(self) -> None:
            started.append("initialize")
            super().initialize()

    sio = engine.SwitchboardServer(Metrics(), LocalDelivery(), async_mode="aiohttp")
    sio.manager = Counted(sio.manager.delivery)
    sio.manager.set_server(sio)
    sio.engine.start()
    sio.engine.start()
    await sio._handle_eio_connect("e1", {})
    assert started == ["initialize"]


def test_manager_rooms_and_participants() -> None:
    """Engine.serves and Engine.participants: `rooms` is keyed by namespace, and
    get_participants() yields (sid, eio_sid) for a room, a list of rooms or None."""
    manager = socketio.AsyncManager()
    manager.basic_enter_room("s1", "/job", None, eio_sid="e1")
    manager.basic_enter_room("s2", "/job", None, eio_sid="e2")
    manager.basic_enter_room("s1", "/job", "a")
    manager.basic_enter_room("s2", "/job", "b")
    assert "/job" in manager.rooms and "/info" not in manager.rooms
    assert sorted(manager.get_participants("/job", None)) == [("s1", "e1"), ("s2", "e2")]
    assert list(manager.get_participants("/job", "a")) == [("s1", "e1")]
    assert sorted(manager.get_participants("/job", ["a", "b"])) == [("s1", "e1"), ("s2", "e2")]


def test_asyncmanager_emit_is_the_per_client_path() -> None:
    """Engine.emit_each calls AsyncManager.emit unbound, on either of our managers."""
    assert params(socketio.AsyncManager.emit) == [
        "self", "event", "data", "namespace", "room", "skip_sid", "callback", "to", "kwargs",
    ]  # fmt: skip
    assert issubclass(engine.RedisPubSubManager, socketio.AsyncManager)


class Recorded(socketio.AsyncRedisManager):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("redis://localhost:1/0", channel="chan")
        self.calls: list[tuple[str, Any]] = []

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        self.calls.append(("handle", message))

    async def _publish(self, data: Any) -> None:
        self.calls.append(("publish", data))


async def test_pubsub_emit_is_handled_here_then_published() -> None:
    """AsyncPubSubManager.emit delivers here through _handle_emit, then publishes the same
    message through _publish (so the relay never carries it back to this process)."""
    manager = Recorded()
    await manager.emit("job:update", {"a": 1}, namespace="/job", room="r", skip_sid="s")
    assert [kind for kind, _ in manager.calls] == ["handle", "publish"]
    message = manager.calls[0][1]
    assert manager.calls[1][1] is message
    assert message["method"] == "emit" and message["host_id"] == manager.host_id
    assert {"event", "data", "binary", "namespace", "room", "skip_sid", "callback"} <= set(message)


async def test_pubsub_rooms_and_disconnects_go_through_publish() -> None:
    """Every message for other processes goes through _publish, not just emits."""
    manager = Recorded()
    await manager.close_room("r", namespace="/job")
    await manager.leave_room("elsewhere", "/job", "r")
    assert [data["method"] for kind, data in manager.calls if kind == "publish"] == [
        "close_room",
        "leave_room",
    ]


MESSAGES = [
    {"event": "e", "data": [{"a": 1}], "namespace": "/job", "room": "r", "skip_sid": None},
    {"event": "e", "data": [1, 2], "namespace": "/job", "room": ["r", "q"], "skip_sid": ["x"]},
    {"event": "e", "data": [None], "namespace": "/info", "room": None, "skip_sid": "x"},
    {"event": "e", "data": [{"a": 1}], "namespace": "/job", "room": "r", "skip_sid": None,
     "callback": ["r", "/job", 3], "host_id": "other"},
]  # fmt: skip


def binary_message() -> dict[str, Any]:
    data, attachments = sio_packet.Packet.deconstruct_binary([{"blob": b"\x00\x01"}])
    encoded = [data, *[base64.b64encode(a).decode() for a in attachments]]
    return {"event": "e", "data": encoded, "binary": True, "namespace": "/job", "room": "r"}


@pytest.mark.parametrize(
    "message",
    [*MESSAGES, binary_message()],
    ids=["one-arg", "tuple", "none", "callback", "binary"],
)
async def test_handle_emit_decodes_as_python_socketio_does(
    message: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RedisPubSubManager._handle_emit copies AsyncPubSubManager's decoding, and hands the
    delivery what python-socketio would hand AsyncManager.emit."""
    theirs: list[Any] = []

    async def local_emit(self: Any, event: str, data: Any, **kwargs: Any) -> None:
        theirs.append((event, data, kwargs))

    monkeypatch.setattr(socketio.AsyncManager, "emit", local_emit)
    await socketio.AsyncRedisManager("redis://localhost:1/0")._handle_emit(message)

    ours: list[Any] = []

    class Delivery:
        relay = RedisRelay("redis://localhost:1/0", "chan")

        def bind(self, engine: Any) -> None: ...

        async def emit(self, *args: Any, **kwargs: Any) -> None:
            ours.append((args, kwargs))

        def resubscribed(self) -> None: ...

    manager = engine.RedisPubSubManager(Delivery(), Delivery.relay)
    await manager._handle_emit(message)

    (event, data, kwargs), ((o_event, o_data, namespace, room, skip, callback), _) = (
        theirs[0],
        ours[0],
    )
    assert (o_event, o_data, namespace, room, skip) == (
        event, data, kwargs["namespace"], kwargs["room"], kwargs["skip_sid"],
    )  # fmt: skip
    if kwargs["callback"] is None:
        assert callback is None
    else:
        library = socketio.AsyncRedisManager._return_callback
        assert callback.func.__func__ is kwargs["callback"].func.__func__ is library
        assert callback.args == kwargs["callback"].args == ("other", "r", "/job", 3)


def test_return_callback_signature() -> None:
    """_handle_emit binds acks for other processes to _return_callback like python-socketio."""
    assert params(socketio.AsyncRedisManager._return_callback) == [
        "self", "host_id", "sid", "namespace", "callback_id", "args",
    ]  # fmt: skip


async def test_listener_hands_other_processes_emits_to_handle_emit() -> None:
    """The background _thread() decodes each JSON message _listen() yields (engine.py
    replaces _listen with the relay's messages) and passes other hosts' emits (not this
    one's, already delivered) to _handle_emit."""
    handled: list[Any] = []
    ours = {"method": "emit", "event": "mine", "host_id": None}
    theirs = {"method": "emit", "event": "yours", "host_id": "other", "data": [1]}

    class Fed(socketio.AsyncRedisManager):  # type: ignore[misc]
        async def _listen(self) -> AsyncIterator[Any]:
            for message in (ours, theirs):
                yield json.dumps(message).encode()
            await asyncio.Event().wait()

        async def _handle_emit(self, message: dict[str, Any]) -> None:
            handled.append(message)

    manager = Fed("redis://localhost:1/0", channel="chan", logger=logging.getLogger("test"))
    ours["host_id"] = manager.host_id
    thread = asyncio.create_task(manager._thread())
    for _ in range(100):
        if handled:
            break
        await asyncio.sleep(0.01)
    thread.cancel()
    assert handled == [theirs]


def test_redis_server_gets_the_redis_manager() -> None:
    relay = RedisRelay("redis://localhost:1/0", "sb:")
    sio = switchboard_server(relay)
    assert isinstance(sio.manager, engine.RedisPubSubManager)
    assert sio.manager.channel == "sb:socketio" and sio.manager.server is sio
    # python-socketio would encode with engineio.json, which is the stdlib's dumps (with a
    # safer loads): RedisRelay encodes with json.dumps.
    assert sio.manager.json.dumps is json.dumps


# Outside engine.py: redis_conn.py reads Sentinel URLs with python-socketio's parser


def test_sentinel_urls_parse_to_sentinels_service_and_credentials() -> None:
    from socketio.redis_manager import parse_redis_sentinel_url

    assert parse_redis_sentinel_url("redis+sentinel://:pw@h1:26379,h2:26380/2/mymaster") == (
        [("h1", 26379), ("h2", 26380)],
        "mymaster",
        {"password": "pw", "db": 2},
    )
    assert parse_redis_sentinel_url("redis+sentinel://h1:26379/0")[1] is None


# The websocket channel (engine.WebSocketChannel), frame by frame


def masked(
    opcode: int, payload: bytes, final: bool = True, mask: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    """A client frame (RFC 6455 §5.2), masked as clients must."""
    head = bytes([opcode | (0x80 if final else 0)])
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return head + length + mask + engine.unmask(mask, payload)


class RawWebSocket:
    """A websocket client at the frame level: `async with RawWebSocket(server) as ws`."""

    def __init__(self, server: Server, early: bytes = b""):
        self.url = urllib.parse.urlsplit(server.url)
        self.early = early  # sent right behind the request

    async def __aenter__(self) -> RawWebSocket:
        self.reader, self.writer = await asyncio.open_connection(self.url.hostname, self.url.port)
        key = base64.b64encode(b"0123456789abcdef").decode()
        self.writer.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {self.url.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
            + self.early
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    async def send(self, text: bytes) -> None:
        self.writer.write(masked(0x1, text))

    async def read(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload); (-1, b"") when the connection ends."""
        try:
            head, size = await asyncio.wait_for(self.reader.readexactly(2), 5)
            if size == 126:
                size = int.from_bytes(await self.reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self.reader.readexactly(8), "big")
            return head & 0x0F, await self.reader.readexactly(size)
        except asyncio.IncompleteReadError:
            return -1, b""

    async def closed_with(self) -> int:
        """The close frame's code; the connection must end right after it."""
        while (found := await self.read())[0] == 0x1:
            pass
        opcode, payload = found
        assert opcode == 0x8, found
        assert await self.read() == (-1, b"")
        return int.from_bytes(payload[:2], "big")


async def opened(ws: RawWebSocket) -> None:
    """The Engine.IO handshake and /job's connect."""
    assert (await ws.read())[1].startswith(b"0{")
    await ws.send(b"40/job,")
    assert (await ws.read())[1].startswith(b"40/job,{")


async def test_aiohttp_forgets_a_handed_over_connection(server: Server) -> None:
    """After the hand-off aiohttp no longer holds the connection (connection_lost() with
    its transport unset lets go without closing it), and the websocket goes on."""
    async with RawWebSocket(server) as ws:
        assert (await ws.read())[1].startswith(b"0{")
        for _ in range(100):
            if not server.runner.server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.runner.server.connections == []
        await ws.send(b"40/job,")
        assert (await ws.read())[1].startswith(b"40/job,{")


async def test_frames_right_behind_the_upgrade_request_are_read(server: Server) -> None:
    """A client may send frames before it reads the 101: they reach the channel."""
    async with RawWebSocket(server, early=masked(0x1, b"40/job,")) as ws:
        assert (await ws.read())[1].startswith(b"0{")
        assert (await ws.read())[1].startswith(b"40/job,{")


async def test_fragmented_and_control_frames(server: Server) -> None:
    """A message in several frames (a ping between them) is one packet; a ping is
    answered with its payload."""
    async with RawWebSocket(server) as ws:
        await opened(ws)
        call = b'42/job,7["subscribe",{"job_id":"frag"}]'
        ws.writer.write(masked(0x1, call[:5], final=False) + masked(0x9, b"hi"))
        ws.writer.write(masked(0x0, call[5:20], final=False) + masked(0x0, call[20:]))
        assert await ws.read() == (0xA, b"hi")
        opcode, answer = await ws.read()
        assert opcode == 0x1 and answer.startswith(b'43/job,7[{"ok":true'), answer


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (masked(0x1, b"\xff\xfe"), 1007),  # not UTF-8
        (masked(0x3, b"x"), 1002),  # no such opcode
        (bytes([0xC1]) + masked(0x1, b"4x")[1:], 1002),  # a reserved bit, no extension
        (masked(0x0, b"4x"), 1002),  # a continuation of nothing
        (masked(0x1, b"4", final=False) + masked(0x1, b"x"), 1002),  # no continuation
        (masked(0x9, b"x", final=False), 1002),  # a fragmented control frame
        (masked(0x1, b"4" + b"x" * 2000), 1009),  # over max_packet_bytes (1,024)
        (masked(0x1, b"4x", final=False) + masked(0x0, b"x" * 1023), 1009),  # in pieces
        (masked(0x8, (1000).to_bytes(2, "big")), 1000),  # the client's close, answered
        (masked(0x1, b"x{"), 1000),  # not an Engine.IO packet
        (bytes([0x81, 0x02]) + b"4x", 1002),  # not masked, as every client frame must be
        (bytes([0x81, 0xFF]) + (1 << 63).to_bytes(8, "big") + b"\x01\x02\x03\x04", 1009),
    ],
    ids=[
        "utf8",
        "opcode",
        "rsv",
        "continuation",
        "interleaved",
        "control",
        "size",
        "size-fragmented",
        "close",
        "packet",
        "unmasked",
        "huge",
    ],
)
async def test_bad_frames_close_the_connection_and_the_session(
    start_server: StartServer, frames: bytes, code: int
) -> None:
    server = await start_server(max_packet_bytes=1024)
    async with RawWebSocket(server) as ws:
        await opened(ws)
        assert len(server.sio.eio.sockets) == 1
        ws.writer.write(frames)
        assert await ws.closed_with() == code
    for _ in range(100):
        if not server.sio.eio.sockets:
            break
        await asyncio.sleep(0.01)
    assert server.sio.eio.sockets == {}


async def test_pings_keep_an_answering_session(start_server: StartServer) -> None:
    """The ping timer goes on as pongs come back over the channel."""
    server = await start_server(ping_interval=0.2, ping_timeout=0.5)
    async with RawWebSocket(server) as ws:
        await opened(ws)
        for _ in range(4):
            assert await ws.read() == (0x1, b"2")
            await ws.send(b"3")
        assert len(server.sio.eio.sockets) == 1


async def test_a_client_that_stops_answering_pings_is_cut_off(start_server: StartServer) -> None:
    """When engineio's service task finds the pings unanswered, the connection is dropped
    without a goodbye (the client is gone) and the session with it."""
    server = await start_server(ping_interval=0.2, ping_timeout=0.3)
    async with RawWebSocket(server) as ws:
        await opened(ws)
        while (found := await ws.read()) == (0x1, b"2"):
            pass
        assert found == (-1, b"")
    assert server.sio.eio.sockets == {}


async def test_a_session_that_ends_closes_its_websocket(server: Server) -> None:
    """An Engine.IO close from the client, and a session dropped by the server, end the
    connection at once: a close frame, then the end."""
    async with RawWebSocket(server) as ws:
        await opened(ws)
        await ws.send(b"1")
        assert await ws.closed_with() == 1000
    async with RawWebSocket(server) as ws:
        await opened(ws)
        (eio_sid,) = server.sio.eio.sockets
        await server.sio.engine.drop(eio_sid)
        assert await ws.closed_with() == 1000
    await asyncio.sleep(0.05)
    assert server.sio.eio.sockets == {}


async def test_a_direct_write_and_queued_packets_keep_their_order(server: Server) -> None:
    """What engineio queues and what a broadcast writes in place go out in call order."""
    async with RawWebSocket(server) as ws:
        await opened(ws)
        (eio_sid,) = server.sio.eio.sockets
        socket = server.sio.eio.sockets[eio_sid]
        sio_engine = server.sio.engine
        direct = sio_engine.encode("direct", 1, "/job")
        assert direct is not None
        await socket.send(eio_packet.Packet(eio_packet.MESSAGE, '2/job,["queued",0]'))
        assert sio_engine.write_direct(eio_sid, direct)
        await socket.send(eio_packet.Packet(eio_packet.MESSAGE, '2/job,["queued",2]'))
        got = [(await ws.read())[1] for _ in range(3)]
        assert got == [b'42/job,["queued",0]', b'42/job,["direct",1]', b'42/job,["queued",2]']
