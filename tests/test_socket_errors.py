"""Bad socket input on every event and transport: an error ack (or `error` event), never a drop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import Api, Connect, Recorder, Server, StartServer

BAD_JOB_PAYLOADS: list[tuple[str, tuple[Any, ...], str]] = [
    ("subscribe", (), "job_id"),
    ("subscribe", ("build-1",), "object"),
    ("subscribe", ([1, 2],), "object"),
    ("subscribe", (None,), "object"),
    ("subscribe", ({"job_id": 5},), "job_id"),
    ("subscribe", ({"job_id": ""},), "job_id"),
    ("subscribe", ({"job_id": "build-*"},), "job_id"),
    ("subscribe", ({"job_id": "x" * 129},), "job_id"),
    ("subscribe", ({"job_id": "a", "since": "3"},), "since"),
    ("subscribe", ({"job_id": "a", "since": -1},), "since"),
    ("subscribe", ({"job_id": "a", "since": 1.5},), "since"),
    ("subscribe", ({"job_id": "a", "extra": 1},), "extra"),
    ("subscribe", ({"job_id": "a"}, {"job_id": "b"}), "one payload"),
    ("unsubscribe", ({},), "job_id"),
    ("nonsense", ({},), "unknown event"),
]

BAD_INFO_PAYLOADS: list[tuple[str, tuple[Any, ...], str]] = [
    ("join", ({},), "room"),
    ("join", ({"room": "has space"},), "room"),
    ("join", ({"room": "x" * 65},), "room"),
    ("join", ({"room": ["a"]},), "room"),
    ("leave", ("room",), "object"),
    ("message", ({"room": "r"},), "text"),
    ("message", ({"room": "r", "text": ""},), "text"),
    ("message", ({"room": "r", "text": "x" * 2001},), "text"),
    ("message", ({"room": "r", "text": {"nested": True}},), "text"),
    ("recent", ({"limit": 0},), "limit"),
    ("recent", ({"limit": "ten"},), "limit"),
    ("subscribe", ({"job_id": "a"},), "unknown event"),
]


async def still_serves(client: Recorder) -> None:
    ack = await client.call("/job", "subscribe", {"job_id": "healthy"})
    assert ack["ok"] is True
    ack = await client.call("/info", "join", {"room": "healthy"})
    assert ack["ok"] is True


@pytest.mark.parametrize(("event", "args", "mentions"), BAD_JOB_PAYLOADS + BAD_INFO_PAYLOADS)
async def test_bad_payload_gets_an_error_ack(
    server: Server, connect: Connect, event: str, args: tuple[Any, ...], mentions: str
) -> None:
    namespace = "/info" if (event, args, mentions) in BAD_INFO_PAYLOADS else "/job"
    client = await connect(server.url)
    ack = await client.call(namespace, event, *args)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid_payload"
    assert mentions in ack["error"]["message"]
    await still_serves(client)


async def test_event_without_ack_gets_an_error_event(server: Server, connect: Connect) -> None:
    client = await connect(server.url)
    await client.sio.emit("subscribe", {"job_id": "bad id"}, namespace="/job")
    await client.sio.emit("message", {"room": "r", "text": "not joined"}, namespace="/info")
    # Both namespaces' `error` events are recorded under one key.
    errors = {e["event"]: e for e in await client.wait_for("error", 2)}
    assert errors["subscribe"]["ok"] is False
    assert errors["subscribe"]["error"]["code"] == "invalid_payload"
    assert errors["message"]["error"]["code"] == "forbidden"
    await still_serves(client)


async def test_oversize_data_fields_are_refused(server: Server, connect: Connect) -> None:
    client = await connect(server.url)
    await client.call("/info", "join", {"room": "big"})
    ack = await client.call("/info", "message", {"room": "big", "text": "x" * 100_000})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    await still_serves(client)


async def test_flood_is_rate_limited_then_recovers(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(rate_per_second=20, rate_burst=10)
    client = await connect(server.url)
    acks = await asyncio.gather(
        *(client.call("/job", "subscribe", {"job_id": f"f{n}"}) for n in range(15))
    )
    codes = [a["error"]["code"] if not a["ok"] else "ok" for a in acks]
    assert codes.count("ok") >= 10 and "rate_limited" in codes
    await asyncio.sleep(0.6)
    await still_serves(client)


async def test_a_client_that_keeps_flooding_is_disconnected(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(rate_per_second=1, rate_burst=5)
    flooder = await connect(server.url, namespaces=("/job",))
    bystander = await connect(server.url, namespaces=("/job",))
    for n in range(40):
        if not flooder.sio.connected:
            break
        await flooder.sio.emit("subscribe", {"job_id": f"f{n}"}, namespace="/job")
        await asyncio.sleep(0.005)
    deadline = asyncio.get_running_loop().time() + 10
    while flooder.sio.connected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not flooder.sio.connected
    assert any(e["error"]["code"] == "rate_limited" for e in flooder.received["error"])
    assert (await bystander.call("/job", "subscribe", {"job_id": "ok"}))["ok"]


async def test_subscription_and_room_limits(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(max_subscriptions=3, max_rooms=2)
    client = await connect(server.url)
    for n in range(3):
        assert (await client.call("/job", "subscribe", {"job_id": f"s{n}"}))["ok"]
    ack = await client.call("/job", "subscribe", {"job_id": "s3"})
    assert ack["error"]["code"] == "forbidden" and "3" in ack["error"]["message"]
    assert (await client.call("/job", "subscribe", {"job_id": "s0"}))["ok"]  # already counted
    await client.call("/job", "unsubscribe", {"job_id": "s0"})
    assert (await client.call("/job", "subscribe", {"job_id": "s3"}))["ok"]
    for room in ("a", "b"):
        assert (await client.call("/info", "join", {"room": room}))["ok"]
    ack = await client.call("/info", "join", {"room": "c"})
    assert ack["error"]["code"] == "forbidden"


async def test_rejections_are_counted(server: Server, api: Api, connect: Connect) -> None:
    client = await connect(server.url)
    await client.call("/job", "subscribe", {"job_id": "bad id"})
    await client.call("/info", "message", {"room": "r", "text": "not joined"})
    text = (await api.http.get("/metrics")).text
    assert 'switchboard_rejected_total{code="invalid_payload"} 1.0' in text
    assert 'switchboard_rejected_total{code="forbidden"} 1.0' in text


async def test_binary_payload_is_refused(server: Server, connect: Connect) -> None:
    client = await connect(server.url)
    ack = await client.call("/job", "subscribe", {"job_id": b"\x00\x01"})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    await still_serves(client)
