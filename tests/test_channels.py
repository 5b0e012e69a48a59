"""One pub/sub channel per job: a node receives a job's traffic only while one of its
clients follows the job (by id, by tag or '*'), and still delivers every event in order.

Each test reads the receiving node's `switchboard_pubsub_messages_total` to see what
Redis sent it, and uses a marker event (published after the traffic that must not
arrive, on the same connection, so Redis delivers it after) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from typing import Any

import httpx
import socketio
from switchboard_client import AsyncAdmin

from .conftest import ADMIN, TRANSPORTS, RedisProcess, ServerProcess
from .test_cluster import Raw, cluster
from .test_streams import ADMIN_HEADERS, plain, sse_events  # noqa: F401 - plain: a fixture

Spawn = Callable[..., ServerProcess]


async def received(node: ServerProcess, kind: str) -> int:
    """How many `kind` messages (control, events, logs) the node got from Redis."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{node.url}/metrics")).text
    found = re.search(rf'switchboard_pubsub_messages_total\{{kind="{kind}"\}} (\S+)', text)
    return int(float(found.group(1))) if found else 0


async def post(admin: AsyncAdmin, job_id: str, count: int) -> list[int]:
    return [(await admin.update_job(job_id, progress=n))["seq"] for n in range(count)]


async def test_a_node_receives_only_the_jobs_its_clients_follow(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], transport: str
) -> None:
    a, b = cluster(spawn_server, start_redis(), count=2)
    watcher = Raw(b.url, transport)
    await watcher.subscribe("watched")
    async with AsyncAdmin(a.url, ADMIN) as admin:
        await post(admin, "unwatched", 40)
        seqs = await post(admin, "watched", 5)
        assert await watcher.until(seqs[-1]) == seqs  # in order, nothing else
        assert await received(b, "events") == 5

        # Unsubscribed: the node leaves the job's channel (another job is the marker).
        listener = Raw(b.url, transport)
        await listener.subscribe("marker")
        again = Raw(b.url, transport)
        await again.subscribe("watched")
        await again.sio.call("unsubscribe", {"job_id": "watched"}, namespace="/job")
        await post(admin, "watched", 5)
        mark = await post(admin, "marker", 1)
        assert await listener.until(mark[-1]) == mark
    assert await received(b, "events") == 6
    await again.sio.disconnect()


async def test_followers_share_a_channel_and_churn_loses_nothing(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], transport: str
) -> None:
    """Two clients of one job on a node; one subscribes and unsubscribes quickly over and
    over: the other's sequence is untouched, and the last subscription still receives."""
    a, b = cluster(spawn_server, start_redis(), count=2)
    steady, churner = Raw(b.url, transport), Raw(b.url, transport)
    await steady.subscribe("shared")
    await churner.subscribe("other")
    async with AsyncAdmin(a.url, ADMIN) as admin:
        for _ in range(10):
            acks = await asyncio.gather(
                churner.sio.call("subscribe", {"job_id": "shared"}, namespace="/job"),
                churner.sio.call("unsubscribe", {"job_id": "shared"}, namespace="/job"),
                post(admin, "shared", 2),
            )
            assert acks[0]["ok"] and acks[1]["ok"], acks
        for _ in range(500):  # the last of them delivered before the steady one leaves
            if steady.start + 20 in steady.seqs:
                break
            await asyncio.sleep(0.02)
        await steady.sio.call("unsubscribe", {"job_id": "shared"}, namespace="/job")
        # Alone now, after leaving and joining the channel quickly (as a page would).
        for _ in range(5):
            await churner.sio.call("unsubscribe", {"job_id": "shared"}, namespace="/job")
            ack = await churner.sio.call("subscribe", {"job_id": "shared"}, namespace="/job")
        start = ack["job"]["seq"]
        churner.seqs.clear()
        seqs = await post(admin, "shared", 5)
    assert seqs == list(range(start + 1, start + 6))
    assert await churner.until(seqs[-1]) == seqs
    assert steady.seqs == list(range(steady.start + 1, steady.start + 21))
    await steady.sio.disconnect()


async def test_star_and_tag_followers_get_every_job_once_in_order(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], transport: str
) -> None:
    """'*' and tag followers on a node receive every job through one pattern; a client of
    one of those jobs by id on the same node does not make its events arrive twice."""
    a, b = cluster(spawn_server, start_redis(), count=2)
    seen: dict[str, dict[str, list[int]]] = {"star": {}, "tag": {}}
    clients = []
    for name, target in (("star", {"job_id": "*"}), ("tag", {"tag": "team:a"})):
        sio = socketio.AsyncClient(reconnection=False)
        sio.on(
            "job:update",
            lambda job, name=name: seen[name].setdefault(job["id"], []).append(job["seq"]),
            namespace="/job",
        )
        await sio.connect(b.url, namespaces=["/job"], transports=TRANSPORTS[transport])
        ack = await sio.call("subscribe", target, namespace="/job", timeout=10)
        assert ack["ok"], ack
        clients.append(sio)
    by_id = Raw(b.url, transport)
    await by_id.subscribe("j0")
    async with AsyncAdmin(a.url, ADMIN) as admin:
        for n in range(3):
            await admin.create_job(f"j{n}", status="running", tags=["team:a"] if n < 2 else [])
        await asyncio.gather(*(post(admin, f"j{n}", 10) for n in range(3)))
        await admin.create_job("end", status="running", tags=["team:a"])
    for name, jobs in (("star", ["j0", "j1", "j2"]), ("tag", ["j0", "j1"])):
        for _ in range(500):
            if "end" in seen[name]:
                break
            await asyncio.sleep(0.02)
        expected = {job: list(range(1, 12)) for job in jobs} | {"end": [1]}
        assert seen[name] == expected, name
    assert await by_id.until(11) == list(range(1, 12))
    assert await received(b, "events") == 3 * 11 + 1  # each event once
    for sio in clients:
        await sio.disconnect()


async def test_a_node_serving_only_streams_hears_the_others(
    spawn_server: Spawn,
    start_redis: Callable[[], RedisProcess],
    plain: Any,  # noqa: F811 - the fixture imported above
) -> None:
    """No Socket.IO client on node b: its SSE and /ws clients still get node a's events
    (python-socketio would start its pub/sub listener only at a first Socket.IO client)."""
    a, b = cluster(spawn_server, start_redis(), count=2)
    async with AsyncAdmin(a.url, ADMIN) as admin:
        await admin.create_job("streamed", status="running")
        ws = await plain(b.url)
        assert (await ws.ask("subscribe", job_id="streamed"))["ok"]
        async with (
            httpx.AsyncClient(timeout=20) as http,
            http.stream(
                "GET", f"{b.url}/api/jobs/streamed/stream", headers=ADMIN_HEADERS
            ) as response,
        ):
            events = sse_events(response)
            first = await anext(events)
            assert '"seq":1' in first["data"].replace(" ", "")
            await admin.update_job("streamed", progress=50)
            pushed = await ws.pushes("job:update", 1)
            assert [update["seq"] for update in pushed] == [2]
            second = await asyncio.wait_for(anext(events), 10)
            assert second["id"] == "2"


async def test_pattern_and_job_channels_come_back_after_a_redis_restart(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], transport: str
) -> None:
    """A '*' follower and a job's follower on node b stay connected while Redis is killed
    and restarted: node b subscribes to the pattern and the job's channel again, then
    reads what it missed, so each gets every seq once, in order (also of a job that only
    the '*' follower sees)."""
    redis = start_redis()
    a, b = cluster(spawn_server, redis, count=2)
    jobs = ("kept", "wide")
    async with AsyncAdmin(a.url, ADMIN) as admin:
        for job_id in jobs:
            await admin.create_job(job_id, status="running")
    star: dict[str, list[int]] = {job_id: [] for job_id in jobs}
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("job:update", lambda job: star[job["id"]].append(job["seq"]), namespace="/job")
    await sio.connect(b.url, namespaces=["/job"], transports=TRANSPORTS[transport])
    assert (await sio.call("subscribe", {"job_id": "*"}, namespace="/job", timeout=10))["ok"]
    by_id = Raw(b.url, transport)
    await by_id.subscribe("kept")
    acknowledged: dict[str, list[int]] = {job_id: [1] for job_id in jobs}
    async with AsyncAdmin(a.url, ADMIN, retries=0) as admin:
        for n in range(40):
            if n == 6:
                redis.stop(signal.SIGKILL)
                redis.start()
            job_id = jobs[n % 2]
            while True:
                try:
                    answer = await admin.update_job(job_id, progress=n)
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            acknowledged[job_id].append(answer["seq"])
    assert acknowledged == {job_id: list(range(1, 22)) for job_id in jobs}
    assert await by_id.until(21) == list(range(2, 22))
    for _ in range(500):
        if all(21 in seqs for seqs in star.values()):
            break
        await asyncio.sleep(0.02)
    assert star == {job_id: list(range(2, 22)) for job_id in jobs}
    await sio.disconnect()
