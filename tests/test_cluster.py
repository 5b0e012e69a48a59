"""A cluster keeps one process's promises: each client's exact sequence, whatever node
accepted each update and whatever happens to Redis.

Clients here are bare python-socketio clients that record every `job:update` as it
arrives (no client-side reordering or gap filling), so the server's order is what is
checked: the exact list, not the set.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import socketio
from switchboard_client import AsyncAdmin

from .conftest import ADMIN, ROOT, TRANSPORTS, RedisProcess, ServerProcess, require_binary

Spawn = Callable[..., ServerProcess]


class Raw:
    """A python-socketio client subscribed to one job, keeping seqs in arrival order."""

    def __init__(self, url: str, transport: str) -> None:
        self.url = url
        self.transport = transport
        self.sio = socketio.AsyncClient(reconnection=False)
        self.seqs: list[int] = []
        self.start = 0

    async def subscribe(self, job_id: str) -> None:
        self.sio.on("job:update", lambda job: self.seqs.append(job["seq"]), namespace="/job")
        await self.sio.connect(
            self.url, namespaces=["/job"], transports=TRANSPORTS[self.transport], wait_timeout=10
        )
        ack = await self.sio.call("subscribe", {"job_id": job_id}, namespace="/job", timeout=10)
        assert ack["ok"], ack
        self.start = ack["job"]["seq"] if ack["job"] else 0

    async def until(self, last: int, timeout: float = 30) -> list[int]:
        deadline = time.monotonic() + timeout
        while last not in self.seqs and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.sio.disconnect()
        return [seq for seq in self.seqs if seq > self.start]


def cluster(spawn: Spawn, redis: RedisProcess, count: int = 3) -> list[ServerProcess]:
    return [spawn("--store", redis.url) for _ in range(count)]


async def publish_concurrently(nodes: list[ServerProcess], job_id: str, count: int) -> list[int]:
    """`count` updates at once, spread over every node; the acknowledged seqs."""
    admins = [AsyncAdmin(node.url, ADMIN) for node in nodes]
    try:
        answers = await asyncio.gather(
            *(admins[n % len(admins)].update_job(job_id, progress=n % 100) for n in range(count))
        )
    finally:
        for admin in admins:
            await admin.close()
    return sorted(answer["seq"] for answer in answers)


async def test_every_client_sees_one_order_under_concurrent_publishers(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], start_nginx: Any, transport: str
) -> None:
    """Three nodes, updates to one job posted through all three at once; python-socketio
    and the official Node client on every node and through nginx."""
    redis = start_redis()
    nodes = cluster(spawn_server, redis)
    edge = start_nginx([n.url.removeprefix("http://") for n in nodes])
    urls = [n.url for n in nodes] + [edge]
    async with AsyncAdmin(nodes[0].url, ADMIN) as admin:
        await admin.create_job("hot", status="running")
    clients = [Raw(url, transport) for url in urls]
    for client in clients:
        await client.subscribe("hot")
    official = [await node_client(url, transport, "hot", 90) for url in urls]
    total = 1
    for _ in range(3):  # three bursts of 30 concurrent updates through three nodes
        acknowledged = await publish_concurrently(nodes, "hot", 30)
        assert acknowledged == list(range(total + 1, total + 31))
        total += 30
    results = await asyncio.gather(*(client.until(total) for client in clients))
    for client, seqs in zip(clients, results, strict=True):
        assert seqs == list(range(client.start + 1, total + 1)), (client.url, seqs)
    for proc in official:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode() + out.decode()


async def node_client(
    url: str, transport: str, job_id: str, count: int
) -> asyncio.subprocess.Process:
    """The official socket.io-client, subscribed (scenario `ordered`) when this returns."""
    env = {**os.environ, "SWITCHBOARD_URL": url, "TRANSPORT": transport,
           "ORDER_JOB": job_id, "ORDER_COUNT": str(count)}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        require_binary("node"), "scenarios.mjs", "ordered", cwd=ROOT / "tests" / "node", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.startswith(b"subscribed"), line + (await proc.stderr.read() if proc.stderr else b"")
    return proc


async def test_clients_that_stay_connected_through_a_redis_restart_miss_nothing(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], transport: str
) -> None:
    redis = start_redis()
    nodes = cluster(spawn_server, redis, count=2)
    async with AsyncAdmin(nodes[0].url, ADMIN) as admin:
        await admin.create_job("outage", status="running")
    clients = [Raw(node.url, transport) for node in nodes]
    for client in clients:
        await client.subscribe("outage")
    acknowledged = [1]
    admins = [AsyncAdmin(node.url, ADMIN, retries=0) for node in nodes]
    try:
        for n in range(10):
            acknowledged.append((await admins[n % 2].update_job("outage", progress=n))["seq"])
        redis.stop(signal.SIGKILL)
        await asyncio.sleep(0.5)
        redis.start()
        # Right after Redis is back, before the nodes' pub/sub may have resubscribed:
        # updates accepted then are published to nobody, and must still arrive.
        deadline = time.monotonic() + 20
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            try:
                answer = await admins[len(acknowledged) % 2].update_job("outage", progress=1)
                acknowledged.append(answer["seq"])
            except Exception:
                await asyncio.sleep(0.05)
    finally:
        for admin in admins:
            await admin.close()
    total = acknowledged[-1]
    assert acknowledged == list(range(1, total + 1))
    results = await asyncio.gather(*(client.until(total) for client in clients))
    for client, seqs in zip(clients, results, strict=True):
        assert seqs == list(range(client.start + 1, total + 1)), (client.url, seqs)


@pytest.mark.parametrize("store", ["redis", "sqlite"])
async def test_a_reconnect_storm_is_never_refused(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], store: str, tmp_path: Any
) -> None:
    """5,000 subscribes from 250 websocket clients at once, to one node: no refusal."""
    url = start_redis().url if store == "redis" else f"sqlite:///{tmp_path / 'storm.db'}"
    node = spawn_server(
        "--store", url, "--rate-per-second", "1000", "--rate-burst", "1000",
        "--max-subscriptions", "100",
    )  # fmt: skip
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(250)]

    async def storm(client: socketio.AsyncClient, n: int) -> list[Any]:
        await client.connect(
            node.url, namespaces=["/job"], transports=["websocket"], wait_timeout=30
        )
        acks = await asyncio.gather(
            *(
                client.call("subscribe", {"job_id": f"storm-{n}-{k}"}, namespace="/job", timeout=60)
                for k in range(20)
            )
        )
        await client.disconnect()
        return list(acks)

    results = await asyncio.gather(*(storm(c, n) for n, c in enumerate(clients)))
    acks = [ack for batch in results for ack in batch]
    assert len(acks) == 5000
    refused = [ack for ack in acks if not ack["ok"]]
    assert refused == []


@pytest.mark.parametrize("nodes_count", [1, 2])
async def test_a_hot_job_takes_every_update(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], nodes_count: int
) -> None:
    """1,000 updates to one job, 64 in flight, through one or two nodes: none refused,
    every seq taken once, the history exactly 1..1000."""
    nodes = cluster(spawn_server, start_redis(), count=nodes_count)
    admins = [AsyncAdmin(node.url, ADMIN, retries=0) for node in nodes]
    gate = asyncio.Semaphore(64)

    async def one(n: int) -> int:
        async with gate:
            return int((await admins[n % nodes_count].update_job("hot", progress=n % 100))["seq"])

    try:
        seqs = await asyncio.gather(*(one(n) for n in range(1000)))
        events = []
        while len(events) < 1000:
            page = await admins[0].events("hot", since=len(events))
            events += page["events"]
    finally:
        for admin in admins:
            await admin.close()
    assert sorted(seqs) == list(range(1, 1001))
    assert [event["seq"] for event in events] == list(range(1, 1001))


async def test_a_request_for_another_nodes_session_says_not_sticky(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess]
) -> None:
    nodes = cluster(spawn_server, start_redis(), count=2)
    async with httpx.AsyncClient(timeout=10) as http:
        opened = await http.get(f"{nodes[0].url}/socket.io/?EIO=4&transport=polling")
        sid = json.loads(opened.text[1:])["sid"]
        for method in ("GET", "POST"):
            wrong = await http.request(
                method, f"{nodes[1].url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                content="40/job," if method == "POST" else None,
            )  # fmt: skip
            assert wrong.status_code == 400
            error = wrong.json()["error"]
            assert error["code"] == "not_sticky"
            assert "hash $remote_addr consistent" in error["message"], error
        gone = await http.get(f"{nodes[1].url}/socket.io/?EIO=4&transport=polling&sid=x{sid}")
        assert gone.status_code == 400 and "not_sticky" not in gone.text  # no such node
        ok = await http.post(
            f"{nodes[0].url}/socket.io/?EIO=4&transport=polling&sid={sid}", content="40/job,"
        )
        assert ok.status_code == 200  # its own node still serves it
        metrics = (await http.get(f"{nodes[1].url}/metrics")).text
    assert 'switchboard_rejected_total{code="not_sticky"} 2.0' in metrics
    log = nodes[1].log.read_text()
    assert log.count("enable sticky sessions") == 1  # logged once a minute, not per request
