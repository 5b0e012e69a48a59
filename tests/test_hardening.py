"""Attacks from the edges: abandoned connections, foreign origins, oversized headers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websocket

from .conftest import Server, StartServer

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
