"""/job over websocket, polling and the upgrade path: order, resume, reset, '*'."""

from __future__ import annotations

import asyncio

import httpx

from .conftest import ADMIN, Api, Connect, Edge, Server, StartServer


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events]


async def test_subscribe_then_updates_arrive_in_order(
    server: Server, api: Api, connect: Connect, edge: Edge
) -> None:
    client = await connect(edge(server), namespaces=("/job",))
    ack = await client.call("/job", "subscribe", {"job_id": "build-1"})
    assert ack == {"ok": True, "job": None, "missed": [], "reset": False}
    for step in range(1, 21):
        await api.update("build-1", status="running", progress=step * 5)
    events = await client.wait_for("job:update", 20)
    assert seqs(events) == list(range(1, 21))
    assert events[-1]["progress"] == 100 and events[-1]["id"] == "build-1"


async def test_subscribe_returns_state_and_missed(
    server: Server, api: Api, connect: Connect
) -> None:
    for step in range(5):
        await api.update("m1", progress=step)
    client = await connect(server.url, namespaces=("/job",))
    ack = await client.call("/job", "subscribe", {"job_id": "m1", "since": 2})
    assert ack["ok"] and ack["reset"] is False
    assert ack["job"]["seq"] == 5
    assert seqs(ack["missed"]) == [3, 4, 5]
    ack = await client.call("/job", "subscribe", {"job_id": "m1"})
    assert ack["missed"] == [] and ack["job"]["seq"] == 5


async def test_resume_after_a_dropped_connection(
    server: Server, api: Api, connect: Connect, edge: Edge
) -> None:
    url = edge(server)
    first = await connect(url, namespaces=("/job",))
    await first.call("/job", "subscribe", {"job_id": "r1"})
    for step in range(3):
        await api.update("r1", progress=step)
    seen = seqs(await first.wait_for("job:update", 3))
    await first.sio.disconnect()
    for step in range(3, 7):  # published during the gap
        await api.update("r1", progress=step)
    second = await connect(url, namespaces=("/job",))
    ack = await second.call("/job", "subscribe", {"job_id": "r1", "since": seen[-1]})
    assert seqs(ack["missed"]) == [4, 5, 6, 7] and ack["reset"] is False
    await api.update("r1", progress=7, status="succeeded")
    live = await second.wait_for("job:update", 1)
    assert seqs(live) == [8]
    assert seen + seqs(ack["missed"]) + seqs(live) == list(range(1, 9))


async def test_reset_when_since_is_older_than_history(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(history=5)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        api = Api(http)
        for step in range(20):
            await api.update("h1", progress=step)
    client = await connect(server.url, namespaces=("/job",))
    ack = await client.call("/job", "subscribe", {"job_id": "h1", "since": 2})
    assert ack["reset"] is True
    assert ack["job"]["seq"] == 20
    assert seqs(ack["missed"]) == [16, 17, 18, 19, 20]


async def test_job_created_after_subscribe_arrives(
    server: Server, api: Api, connect: Connect
) -> None:
    client = await connect(server.url, namespaces=("/job",))
    await client.call("/job", "subscribe", {"job_id": "later", "since": None})
    status, _ = await api.post("/api/jobs", json={"id": "later"})
    assert status == 201
    assert seqs(await client.wait_for("job:update")) == [1]


async def test_subscribe_all_jobs(server: Server, api: Api, connect: Connect) -> None:
    await api.update("a1", progress=1)
    client = await connect(server.url, namespaces=("/job",))
    ack = await client.call("/job", "subscribe", {"job_id": "*"})
    assert ack["ok"] and [j["id"] for j in ack["jobs"]] == ["a1"]
    # Subscribed to '*' and to one job: still one delivery per event.
    await client.call("/job", "subscribe", {"job_id": "a2"})
    await api.update("a2", progress=1)
    await api.update("a3", progress=1)
    # A marker after them, on the path a2 takes twice (its room and '*'): a second copy
    # of either event would have arrived before it.
    await api.update("a2", progress=2)
    events = await client.wait_for("job:update", 3)
    assert [(e["id"], e["seq"]) for e in events] == [("a2", 1), ("a3", 1), ("a2", 2)]


async def test_unsubscribe_stops_delivery(server: Server, api: Api, connect: Connect) -> None:
    client = await connect(server.url, namespaces=("/job",))
    await client.call("/job", "subscribe", {"job_id": "u1"})
    await api.update("u1", progress=1)
    await client.wait_for("job:update")
    assert await client.call("/job", "unsubscribe", {"job_id": "u1"}) == {"ok": True}
    await api.update("u1", progress=2)
    await client.call("/job", "subscribe", {"job_id": "marker"})
    await api.update("marker", progress=1)
    events = await client.wait_for("job:update", 2)
    assert [(e["id"], e["seq"]) for e in events] == [("u1", 1), ("marker", 1)]


async def test_many_subscribers_all_get_every_event(
    server: Server, api: Api, connect: Connect
) -> None:
    clients = [await connect(server.url, namespaces=("/job",)) for _ in range(5)]
    for client in clients:
        await client.call("/job", "subscribe", {"job_id": "fan"})
    await asyncio.gather(*(api.update("fan", progress=i) for i in range(10)))
    for client in clients:
        assert seqs(await client.wait_for("job:update", 10)) == list(range(1, 11))


async def test_connections_metric_counts_the_transport(
    server: Server, connect: Connect, transport: str
) -> None:
    client = await connect(server.url)
    # A round trip first: the client counts itself upgraded once it has sent the upgrade
    # packet, the server once it has read it, and it reads this call after it.
    assert (await client.call("/job", "whoami", {}))["ok"]
    want = "polling" if transport == "polling" else "websocket"
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    assert f'switchboard_connections{{namespace="/job",transport="{want}"}} 1.0' in text
    assert f'switchboard_connections{{namespace="/info",transport="{want}"}} 1.0' in text
