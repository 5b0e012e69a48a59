"""What fanout.py and namespaces/base.py assume of python-engineio and python-socketio.

Each test names one assumption, so an upgrade of the pinned libraries fails here, with
the reason, rather than somewhere downstream.
"""

from __future__ import annotations

import asyncio
import functools

import engineio
import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from switchboard_server import fanout

from .conftest import Server


def test_websocket_handler_is_bound_to_its_socket() -> None:
    """FastWebSocket finds the session through the handler's __self__, also when the
    Admin UI wraps the handler in a partialmethod."""
    server = engineio.AsyncServer(async_mode="aiohttp")
    socket = AsyncSocket(server, "sid")
    assert socket._websocket_handler.__self__ is socket

    async def wrapper(sock: AsyncSocket, admin: object, ws: object) -> None: ...

    wrapped = functools.partialmethod(wrapper, object())
    assert wrapped.__get__(socket, AsyncSocket).__self__ is socket


def test_a_none_packet_is_a_noop_that_ends_the_upgrade() -> None:
    """FastWebSocket.wait() returns None to end an upgrade that timed out."""
    assert eio_packet.Packet(encoded_packet=None).packet_type == eio_packet.NOOP


def test_bad_request_is_a_response_dict() -> None:
    """A refused second websocket returns _bad_request() from the driver's __call__."""
    server = engineio.AsyncServer(async_mode="aiohttp")
    answer = server._bad_request("x")
    assert isinstance(answer, dict) and answer["status"].startswith("400")


async def test_queue_counts_unfinished_packets() -> None:
    """ready() needs asyncio.Queue's count of packets taken but not yet task_done."""
    queue = fanout.OutQueue()
    queue.put_nowait(1)
    assert queue._unfinished_tasks == 1
    await queue.get()
    assert queue._unfinished_tasks == 1
    queue.task_done()
    assert queue._unfinished_tasks == 0


async def test_server_uses_our_engine_and_socket_flags(server: Server) -> None:
    sio = server.sio
    assert isinstance(sio.eio, fanout.EngineServer)
    assert sio.eio._async["websocket"] is fanout.FastWebSocket
    assert engineio.async_drivers.aiohttp._async["websocket"] is not fanout.FastWebSocket
    socket = AsyncSocket(sio.eio, "sid")
    for flag in ("upgrading", "upgraded", "connected", "closed"):
        assert getattr(socket, flag) is False, flag
    assert isinstance(socket.queue, fanout.OutQueue)


def test_socketio_message_handler_is_overridable() -> None:
    """Malformed packets are caught around AsyncServer._handle_eio_message."""
    assert asyncio.iscoroutinefunction(socketio.AsyncServer._handle_eio_message)
    assert asyncio.iscoroutinefunction(socketio.AsyncServer._handle_event_internal)
