"""Several `switchboard serve` processes on one real redis-server, with real nginx in front."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from switchboard_client import AsyncAdmin, SwitchboardClient, SwitchboardError

from .conftest import ADMIN, ARTIFACTS, TRANSPORTS, RedisProcess, ServerProcess

Spawn = Callable[..., ServerProcess]


def report(name: str, **figures: Any) -> None:
    """Keep the observed figures (published, delivered, lost, duplicated) as an artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"scale-{name}.json").write_text(json.dumps(figures, indent=2))
    print(name, figures)


def cluster(spawn: Spawn, redis: RedisProcess, count: int = 3) -> list[ServerProcess]:
    return [
        spawn("--store", redis.url, "--ping-interval", "2", "--ping-timeout", "2")
        for _ in range(count)
    ]


WAIT = 60.0  # seconds for anything awaited below: generous, the machine may be busy


class Watching:
    """`client.watch(job_id)` running in the background; `events` is what it yielded so far."""

    def __init__(self, client: SwitchboardClient, job_id: str) -> None:
        self.job_id = job_id
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._collect(client))

    async def _collect(self, client: SwitchboardClient) -> list[dict[str, Any]]:
        try:
            async for event in client.watch(self.job_id):
                self.events.append(event)
                self._changed.set()
        finally:
            self._changed.set()  # ended: `reached` stops waiting
        return self.events

    async def reached(self, seq: int, timeout: float = WAIT) -> None:
        """Wait until the watch has yielded `seq`. Seq 1 of a job created beforehand comes
        from the subscribe's answer: from then on the client is in the job's room."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.events or self.events[-1]["seq"] < seq:
            if self.task.done():
                self.task.result()  # what ended the watch, if it raised
                raise AssertionError(f"the watch of {self.job_id} ended before seq {seq}")
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._changed.wait(), max(left, 0))
            except TimeoutError:
                got = [e["seq"] for e in self.events]
                raise AssertionError(
                    f"the watch of {self.job_id} did not reach seq {seq} in {timeout}s: {got}"
                ) from None
            self._changed.clear()

    async def finished(self, timeout: float = WAIT) -> list[dict[str, Any]]:
        """Every event, once the watch has ended (after a terminal event)."""
        try:
            return await asyncio.wait_for(self.task, timeout)
        except TimeoutError:
            got = [e["seq"] for e in self.events]
            raise AssertionError(
                f"the watch of {self.job_id} did not end in {timeout}s: {got}"
            ) from None


def check(events: list[dict[str, Any]], total: int) -> tuple[int, int]:
    """(lost, duplicated) for a stream that should be seqs 1..total."""
    seqs = [e["seq"] for e in events]
    return total - len(set(seqs)), len(seqs) - len(set(seqs))


async def test_clients_on_every_node_get_every_event_in_order(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], start_nginx: Any, transport: str
) -> None:
    redis = start_redis()
    nodes = cluster(spawn_server, redis)
    edge = start_nginx([n.url.removeprefix("http://") for n in nodes])
    urls = [n.url for n in nodes] + [edge]
    clients = [SwitchboardClient(url, transports=TRANSPORTS[transport]) for url in urls]
    for client in clients:
        await client.connect()
    async with AsyncAdmin(nodes[0].url, ADMIN) as admin:
        await admin.create_job("spread", status="running")
        watches = [Watching(c, "spread") for c in clients]
        for watch in watches:
            await watch.reached(1)  # subscribed: in the job's room on its node
        total = 1
        for n in range(1, 31):  # published through every node in turn
            async with AsyncAdmin(nodes[n % 3].url, ADMIN) as via:
                await via.update_job("spread", progress=n)
            total += 1
        await admin.update_job("spread", status="succeeded")
        total += 1
        results = [await watch.finished() for watch in watches]
    for client in clients:
        await client.close()
    for events in results:
        assert [e["seq"] for e in events] == list(range(1, total + 1))
    report(f"spread-{transport}", published=total, clients=len(clients),
           delivered=sum(len(r) for r in results), lost=0, duplicated=0)  # fmt: skip


async def test_concurrent_publishers_on_different_nodes_share_one_seq(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess]
) -> None:
    redis = start_redis()
    nodes = cluster(spawn_server, redis)
    async with SwitchboardClient(nodes[2].url) as watcher:
        # Every job:update as node 2 sends it (no client-side resync to hide a gap).
        events: list[dict[str, Any]] = []
        ended = asyncio.Event()

        def hear(event: dict[str, Any]) -> None:
            events.append(event)
            if event["status"] == "succeeded":
                ended.set()

        watcher.on("job:update", hear)
        subscribe = {"job_id": "contended"}
        ack = await watcher.sio.call("subscribe", subscribe, namespace="/job", timeout=10)
        assert ack["ok"] and ack["job"] is None, ack  # in the room before the first publish
        admins = [AsyncAdmin(node.url, ADMIN) for node in nodes]
        answers = await asyncio.gather(
            *(admins[n % 3].update_job("contended", progress=n % 100) for n in range(90))
        )
        await admins[0].update_job("contended", status="succeeded")
        try:
            await asyncio.wait_for(ended.wait(), WAIT)
        except TimeoutError:
            got = [e["seq"] for e in events]
            raise AssertionError(f"no terminal event in {WAIT}s: {got}") from None
        history = await admins[1].events("contended", since=0)
        for admin in admins:
            await admin.close()
    assert sorted(a["seq"] for a in answers) == list(range(1, 91))
    assert [e["seq"] for e in history["events"]] == list(range(1, 92))
    assert [e["seq"] for e in events] == list(range(1, 92))  # in seq order, each once
    report("concurrent", published=91, acknowledged_seqs_unique=len({a["seq"] for a in answers}))


async def test_sigkill_a_node_mid_stream_loses_nothing(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], start_nginx: Any, transport: str
) -> None:
    redis = start_redis()
    nodes = cluster(spawn_server, redis)
    edge = start_nginx([n.url.removeprefix("http://") for n in nodes])
    client = SwitchboardClient(
        edge, transports=TRANSPORTS[transport], reconnection_delay=0.1, reconnection_delay_max=0.5
    )
    await client.connect()
    async with AsyncAdmin(nodes[0].url, ADMIN) as admin:
        await admin.create_job("failover", status="running")
        watch = Watching(client, "failover")
        await watch.reached(1)  # subscribed: in the job's room on the node nginx chose
        counts = [await _connections(n) for n in nodes]
        victim = nodes[counts.index(1)]  # the node nginx chose for this client
        publisher = next(n for n in nodes if n is not victim)
        acknowledged = [1]
        async with AsyncAdmin(publisher.url, ADMIN) as via:
            for n in range(1, 41):
                if n == 15:  # mid-stream: events before it may still be on their way
                    victim.kill(signal.SIGKILL)
                if n == 28:  # back on a surviving node and caught up: the rest arrive live
                    await watch.reached(acknowledged[-1])
                acknowledged.append((await via.update_job("failover", progress=n))["seq"])
            acknowledged.append((await via.update_job("failover", status="succeeded"))["seq"])
        events = await watch.finished()
    await client.close()
    lost, duplicated = check(events, len(acknowledged))
    report(f"sigkill-{transport}", published=len(acknowledged), delivered=len(events),
           lost=lost, duplicated=duplicated)  # fmt: skip
    assert [e["seq"] for e in events] == acknowledged == list(range(1, 43))


async def _connections(node: ServerProcess) -> int:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node.url}/metrics")).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith('switchboard_connections{namespace="/job"')
    )


async def test_redis_restart_mid_stream(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], transport: str
) -> None:
    redis = start_redis()
    nodes = cluster(spawn_server, redis, count=2)
    client = SwitchboardClient(
        nodes[1].url, transports=TRANSPORTS[transport], reconnection_delay=0.1
    )
    await client.connect()
    async with AsyncAdmin(nodes[0].url, ADMIN, retries=0) as admin:
        await admin.create_job("outage", status="running")
        watch = Watching(client, "outage")
        await watch.reached(1)  # subscribed: in the job's room on node 1
        acknowledged = [1]
        for n in range(1, 11):
            acknowledged.append((await admin.update_job("outage", progress=n))["seq"])

        redis.stop(signal.SIGKILL)
        async with httpx.AsyncClient() as http:
            ready = await http.get(f"{nodes[0].url}/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "unavailable"
        refused = 0
        for n in range(3):
            with pytest.raises(SwitchboardError) as failed:
                await admin.update_job("outage", progress=50 + n)
            assert failed.value.status == 503 and failed.value.code == "unavailable"
            refused += 1
        assert client.sio.connected  # sockets stay open while Redis is down

        redis.start()
        async with AsyncAdmin(nodes[0].url, ADMIN, retries=10, backoff=0.2) as patient:
            for n in range(11, 21):
                acknowledged.append((await patient.update_job("outage", progress=n))["seq"])
            acknowledged.append((await patient.update_job("outage", status="succeeded"))["seq"])
            history = await patient.events("outage", since=0)
        events = await watch.finished()
    await client.close()
    assert [e["seq"] for e in history["events"]] == acknowledged == list(range(1, 23))
    lost, duplicated = check(events, len(acknowledged))
    report(f"redis-restart-{transport}", published=len(acknowledged), refused_503=refused,
           delivered=len(events), lost=lost, duplicated=duplicated)  # fmt: skip
    assert [e["seq"] for e in events] == acknowledged
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{nodes[0].url}/readyz")).status_code == 200


async def test_presence_counts_members_on_every_node(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess]
) -> None:
    redis = start_redis()
    nodes = cluster(spawn_server, redis, count=2)
    async with (
        SwitchboardClient(nodes[0].url, name="Ann") as ann,
        SwitchboardClient(nodes[1].url, name="Bob") as bob,
    ):
        heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        ann.on("message", heard.put_nowait)
        await ann.join("shared")
        joined = await bob.join("shared")
        assert sorted(m["name"] for m in joined["members"]) == ["Ann", "Bob"]
        sent = await bob.send("shared", "across nodes")
        assert await asyncio.wait_for(heard.get(), 10) == sent
