"""The broadcast path (engine.py, manager.LocalDelivery): frames written straight to ready
websockets, the queue for everyone else, and per-client order whichever way each packet
went."""

from __future__ import annotations

import asyncio
import re
import resource

import httpx
from switchboard_server.cli import raise_fd_limit

from .conftest import Api, Connect, Edge, Recorder, Server


async def sends(server: Server) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    found = re.findall(r'switchboard_broadcast_sends_total\{path="(\w+)"\} (\S+)', text)
    return {path: float(value) for path, value in found}


async def test_each_transport_takes_its_path(
    server: Server, api: Api, connect: Connect, transport: str
) -> None:
    client = await connect(server.url, namespaces=("/job",))
    await client.call("/job", "subscribe", {"job_id": "paths"})
    for step in range(5):
        await api.update("paths", progress=step)
    assert [e["seq"] for e in await client.wait_for("job:update", 5)] == [1, 2, 3, 4, 5]
    counted = await sends(server)
    assert counted["direct"] + counted["queued"] == 5
    if transport == "websocket":
        assert counted["direct"] == 5  # nothing queued: one frame, written in place
    if transport == "polling":
        assert counted["queued"] == 5  # a long-poll answer carries them


async def test_order_holds_while_acks_interleave_with_broadcasts(
    server: Server, api: Api, connect: Connect, edge: Edge
) -> None:
    # Acks go through each client's Engine.IO queue; broadcasts go straight to the socket
    # only when that queue is drained. Interleave both and check nothing overtakes.
    url = edge(server)
    clients = [await connect(url, namespaces=("/job",)) for _ in range(4)]
    for client in clients:
        await client.call("/job", "subscribe", {"job_id": "mix"})

    async def chatter(client: Recorder) -> None:
        for _ in range(15):
            await client.call("/job", "subscribe", {"job_id": "other"})

    updates = [api.update("mix", progress=i) for i in range(60)]
    await asyncio.gather(*updates, *(chatter(client) for client in clients))
    for client in clients:
        assert [e["seq"] for e in await client.wait_for("job:update", 60)] == list(range(1, 61))
    counted = await sends(server)
    assert counted["direct"] + counted["queued"] == 4 * 60


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
        assert wanted > 256, "this machine's hard limit leaves nothing to raise"
        assert raise_fd_limit() == wanted  # a no-op would answer None and leave 256
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == wanted
        assert raise_fd_limit() is None  # already there
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
