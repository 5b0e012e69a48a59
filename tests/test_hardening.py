"""Attacks from the edges: abandoned connections, foreign origins, oversized headers."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest
import websocket

from .conftest import ADMIN, ARTIFACTS, Api, Connect, Server, StartServer

ENGINE_IO = {"EIO": "4", "transport": "polling"}


async def test_abandoned_connections_are_reaped_by_ping_timeout(start_server: StartServer) -> None:
    server = await start_server(ping_interval=0.5, ping_timeout=0.5)
    loop = asyncio.get_running_loop()
    # One over polling that never polls again, one over websocket that never answers pings.
    async with httpx.AsyncClient(base_url=server.url) as http:
        opened = await http.get("/socket.io/", params=ENGINE_IO)
        assert opened.status_code == 200
    ws = await loop.run_in_executor(
        None,
        lambda: websocket.create_connection(
            server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        ),
    )
    await loop.run_in_executor(None, lambda: ws.send("40/job,"))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if len(server.sio.eio.sockets) == 2:
            break
    assert len(server.sio.eio.sockets) == 2
    for _ in range(100):  # interval + timeout is one second; allow a few
        await asyncio.sleep(0.1)
        if not server.sio.eio.sockets:
            break
    assert server.sio.eio.sockets == {}
    ws.close()


async def test_foreign_origins_are_refused_by_default(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        same = await http.get("/socket.io/", params=ENGINE_IO, headers={"Origin": server.url})
        assert same.status_code == 200
        foreign = await http.get(
            "/socket.io/", params=ENGINE_IO, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 400


async def test_cors_origins_are_configurable(start_server: StartServer) -> None:
    server = await start_server(cors_origins=["http://app.example"])
    async with httpx.AsyncClient(base_url=server.url) as http:
        allowed = await http.get(
            "/socket.io/", params=ENGINE_IO, headers={"Origin": "http://app.example"}
        )
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == "http://app.example"
        other = await http.get(
            "/socket.io/", params=ENGINE_IO, headers={"Origin": "http://evil.example"}
        )
        assert other.status_code == 400


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/jobs", {"X-Padding": "x" * 20_000}),
        ("/api/jobs?" + "a=1&" * 5_000, {}),
        ("/" + "x" * 20_000, {}),
    ],
    ids=["huge-header", "huge-query", "huge-path"],
)
async def test_oversized_headers_and_urls_are_refused(
    server: Server, path: str, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(path, headers=headers)
        assert 400 <= response.status_code < 500
        assert (await http.get("/healthz")).status_code == 200


async def test_a_client_that_stops_reading_is_dropped(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(max_pending=50)
    loop = asyncio.get_running_loop()

    def open_silent_client() -> websocket.WebSocket:
        ws = websocket.create_connection(
            server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
            sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),),  # a small window
        )
        ws.recv()  # Engine.IO open
        ws.send("40/job,")
        ws.recv()  # namespace connected
        ws.send('42/job,0["subscribe",{"job_id":"slow"}]')
        ws.recv()  # the ack; from here on it never reads again
        return ws

    silent = await loop.run_in_executor(None, open_silent_client)
    reader = await connect(server.url, namespaces=("/job",))
    await reader.call("/job", "subscribe", {"job_id": "slow"})
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        api = Api(http)
        blob = "x" * 60_000  # fills the socket buffers fast
        for n in range(300):
            await api.update("slow", progress=n % 100, data={"blob": blob})
        text = (await http.get("/metrics")).text
    assert 'switchboard_rejected_total{code="slow_consumer"} 1.0' in text
    assert len(server.sio.eio.sockets) == 1  # only the reader is left
    events = await reader.wait_for("job:update", 300, timeout=30)
    assert [e["seq"] for e in events] == list(range(1, 301))  # the others were not held back
    silent.close()


async def _latencies(api: Api, reader: Any, job_id: str, count: int) -> list[float]:
    """Publish `count` events at about 100/s; seconds from each answer to its arrival."""
    published: dict[int, float] = {}
    arrived: dict[int, float] = {}

    async def stamp(event: dict[str, Any]) -> None:
        arrived[event["seq"]] = time.perf_counter()
        reader.received.setdefault("job:update", []).append(event)

    reader.sio.on("job:update", stamp, namespace="/job")
    reader.received.pop("job:update", None)
    for n in range(count):
        job = await api.update(job_id, progress=n % 100)
        published[job["seq"]] = time.perf_counter()
        await asyncio.sleep(0.01)
    await reader.wait_for("job:update", count, timeout=30)
    # The answer can come after the event: clamp at zero.
    return sorted(max(0.0, arrived[seq] - published[seq]) for seq in published)


async def test_a_flood_is_cut_off_and_the_others_keep_their_pace(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(rate_per_second=20, rate_burst=40)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        api = Api(http)
        bystander = await connect(server.url, namespaces=("/job",))
        await bystander.call("/job", "subscribe", {"job_id": "pace"})
        calm = await _latencies(api, bystander, "pace", 50)

        flooder = await connect(server.url, namespaces=("/job",))

        async def flood() -> int:
            sent = 0
            while flooder.sio.connected and sent < 5000:
                await flooder.sio.emit("subscribe", {"job_id": f"f{sent}"}, namespace="/job")
                sent += 1
                await asyncio.sleep(0)
            return sent

        flooding = asyncio.create_task(flood())
        loaded = await _latencies(api, bystander, "pace", 50)
        sent = await asyncio.wait_for(flooding, 30)
    p99 = {"calm": calm[int(len(calm) * 0.99) - 1], "flooded": loaded[int(len(loaded) * 0.99) - 1]}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "flood.json").write_text(json.dumps({"flood_events_sent": sent, "p99_s": p99}))
    print("flood", sent, p99)  # measured and reported, not asserted: shared machines are noisy
    assert not flooder.sio.connected  # told with rate_limited, then hung up on
    assert sent < 5000
    assert any(e["error"]["code"] == "rate_limited" for e in flooder.received["error"])
    seqs = [e["seq"] for e in bystander.received["job:update"]]
    assert seqs == list(range(51, 101))  # the bystander missed nothing
