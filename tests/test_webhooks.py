"""Webhooks out: each committed job event is POSTed, signed, to every webhook that wants it,
at least once and in seq order per job, through failures, timeouts, restarts and (Redis)
the death of the node that was sending.

Receivers here are real aiohttp apps on free ports that record every request in arrival
order; servers are real apps (in-process) or real `switchboard serve` processes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
from aiohttp import web
from multidict import CIMultiDict
from switchboard_server.models import JobUpdate, apply_change, new_id
from switchboard_server.storage import Store, open_store

from .conftest import (
    ADMIN,
    ROOT,
    RedisProcess,
    ServerProcess,
    StartServer,
    free_port,
    switchboard_cmd,
)

SECRET = "whsec_" + base64.b64encode(b"a signing key for the webhook tests").decode()
AUTH = {"Authorization": f"Bearer {ADMIN}"}
Spawn = Callable[..., ServerProcess]


# -- a receiver ------------------------------------------------------------------------


@dataclass
class Hit:
    """One request as the receiver saw it."""

    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes
    event_id: str
    job_id: str
    seq: int
    status: int = 0  # what the receiver answered (0: not yet)


# Decides a request's answer: a status, after any wait it likes.
Behaviour = Callable[[Hit, "Receiver"], Awaitable[int]]


async def accept(hit: Hit, receiver: Receiver) -> int:
    return 200


@dataclass
class Receiver:
    port: int
    behave: Behaviour = accept
    hits: list[Hit] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)  # job id -> requests open
    most_in_flight: dict[str, int] = field(default_factory=dict)
    most_open: int = 0  # requests open at once, every job
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends every wait
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.released.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = json.loads(body)
        job_id, _, seq = event["id"].rpartition(":")
        hit = Hit(request.path, request.query_string, CIMultiDict(request.headers), body,
                  event["id"], job_id, int(seq))  # fmt: skip
        self.hits.append(hit)
        self.in_flight[job_id] = self.in_flight.get(job_id, 0) + 1
        self.most_in_flight[job_id] = max(self.most_in_flight.get(job_id, 0),
                                          self.in_flight[job_id])  # fmt: skip
        self.most_open = max(self.most_open, sum(self.in_flight.values()))
        try:
            hit.status = await self.behave(hit, self)
        finally:
            self.in_flight[job_id] -= 1
        return web.Response(status=hit.status, text="ok")

    def arrivals(self, job_id: str, path: str | None = None) -> list[int]:
        """Seqs of the job's requests in arrival order, every attempt."""
        return [h.seq for h in self.hits if h.job_id == job_id and path in (None, h.path)]

    def delivered(self, path: str | None = None) -> list[str]:
        """Event ids answered 2xx, in arrival order."""
        return [h.event_id for h in self.hits if 200 <= h.status < 300 and path in (None, h.path)]

    def first_seqs(self, job_id: str) -> list[int]:
        """The job's seqs in order of first arrival (a receiver that dedupes by id)."""
        return list(dict.fromkeys(self.arrivals(job_id)))

    def attempts(self, event_id: str) -> int:
        return sum(1 for h in self.hits if h.event_id == event_id)

    async def until(self, done: Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                got = [(h.path, h.event_id, h.status) for h in self.hits]
                raise AssertionError(f"the receiver waited in vain; it got {got}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(behave: Behaviour = accept, port: int | None = None) -> Receiver:
        started.append(await Receiver(port or free_port(), behave).start())
        return started[-1]

    yield start
    for receiver in started:
        await receiver.stop()


async def post_update(http: httpx.AsyncClient, job_id: str, **fields: Any) -> dict[str, Any]:
    answer = await http.post(f"/api/jobs/{job_id}/updates", json=fields, headers=AUTH)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()  # type: ignore[no-any-return]


async def webhook_status(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as http:
        answer = await http.get("/api/webhooks/status")
    assert answer.status_code == 200, answer.text
    return answer.json()["webhooks"]  # type: ignore[no-any-return]


async def until_status(
    url: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 90.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = await webhook_status(url)
        if done(found):
            return found
        assert time.monotonic() < deadline, f"webhook status never got there: {found}"
        await asyncio.sleep(0.1)


async def metrics_text(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get("/metrics")).text


def readme_verify() -> Callable[..., Any]:
    """`verify` from the README's snippet, run exactly as written there."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, re.M | re.S)
    [snippet] = [b for b in blocks if b.startswith("# Verify a Switchboard webhook")]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


def store_options(store_url: str) -> dict[str, Any]:
    return {"store": store_url, "redis_prefix": f"test-{new_id()}:"}


# -- the outbox in each store ------------------------------------------------------------


def update(job_id: str, **fields: Any) -> partial[Any]:
    return partial(apply_change, job_id, change=JobUpdate.model_validate(fields), create=False)


@pytest.fixture
async def outbox_store(store_url: str) -> AsyncIterator[Store]:
    store = open_store(store_url, history=5, prefix=f"test-{new_id()}:")
    store.webhooks = lambda job: [h for h in ("all", "done") if h == "all" or job["seq"] > 2]
    await store.open()
    yield store
    await store.close()


async def test_each_store_keeps_a_lane_per_webhook_and_job(outbox_store: Store) -> None:
    store = outbox_store
    for n in range(4):
        await store.apply("j", update("j", progress=n))
    await store.apply("k", update("k", status="failed"))
    with pytest.raises(Exception, match="failed"):  # refused: nothing is enqueued
        await store.apply("k", update("k", progress=1))
    assert (await store.outbox_stats("all"))["pending"] == 5
    assert (await store.outbox_stats("done"))["pending"] == 2
    assert sorted(await store.outbox_claim("all", 10, 30.0)) == ["j", "k"]
    assert await store.outbox_claim("all", 10, 30.0) == []  # leased
    head = await store.outbox_head("all", "j")
    assert head is not None and (head.event_id, head.attempts) == ("j:1", 0)
    event = json.loads(head.body)
    assert event["id"] == "j:1" and event["type"] == "job.update"
    assert event["job"]["seq"] == 1 and event["job"]["progress"] == 0
    assert await store.outbox_delivered("all", "j", head, 30.0)
    head = await store.outbox_head("all", "j")
    assert head is not None and head.event_id == "j:2"
    # A failure releases the lane, due later; the next head counts the failure.
    assert await store.outbox_failed("all", "j", head, 60.0, "HTTP 500", 0.0) == 0
    assert await store.outbox_claim("all", 10, 30.0) == []
    again = await store.outbox_head("all", "j")
    assert again is not None and (again.event_id, again.attempts) == ("j:2", 1)
    stats = await store.outbox_stats("all")
    assert (stats["pending"], stats["delivered"], stats["dead"]) == (4, 1, 0)
    assert stats["last_error"] == "HTTP 500" and stats["last_failure"] and stats["last_success"]
    # Past the max age: the head and what is as old behind it are given up.
    await store.outbox_release("all", "k")
    [lane] = await store.outbox_claim("all", 10, 30.0)
    assert lane == "k"
    k_head = await store.outbox_head("all", "k")
    assert k_head is not None
    assert await store.outbox_failed("all", "k", k_head, 0.0, "timeout", time.time() + 1) == 1
    assert await store.outbox_head("all", "k") is None
    # Deleting a job keeps what was committed for the webhooks.
    assert await store.delete_job("j")
    assert (await store.outbox_stats("all"))["pending"] == 3
    assert (await store.outbox_stats("all"))["dead"] == 1


async def test_two_redis_nodes_never_hold_one_lane_at_once(shared_redis: RedisProcess) -> None:
    prefix = f"test-{new_id()}:"
    nodes = [open_store(shared_redis.url, history=5, prefix=prefix) for _ in range(2)]
    for node in nodes:
        node.webhooks = lambda job: ["h"]
        await node.open()
    try:
        one, two = nodes
        await one.apply("j", update("j", progress=1))
        await two.apply("j", update("j", progress=2))
        assert await one.outbox_claim("h", 5, 0.3) == ["j"]
        assert await two.outbox_claim("h", 5, 0.3) == []
        head = await one.outbox_head("h", "j")
        assert head is not None and head.event_id == "j:1"
        await asyncio.sleep(0.5)  # the lease runs out: the other node takes the lane
        assert await two.outbox_claim("h", 5, 30.0) == ["j"]
        assert not await one.outbox_delivered("h", "j", head, 30.0)  # too late: not removed
        assert await one.outbox_failed("h", "j", head, 0.0, "late", time.time()) == 0
        head = await two.outbox_head("h", "j")
        assert head is not None and head.event_id == "j:1"
        assert await two.outbox_delivered("h", "j", head, 30.0)
        await two.outbox_release("h", "j")  # not empty: due at once, for anyone
        assert await one.outbox_claim("h", 5, 30.0) == ["j"]
        last = await one.outbox_head("h", "j")
        assert last is not None and last.event_id == "j:2"
        assert await one.outbox_delivered("h", "j", last, 30.0)
        assert await one.outbox_head("h", "j") is None
        await one.outbox_release("h", "j")
        assert await two.outbox_claim("h", 5, 30.0) == []
        stats = await two.outbox_stats("h")
        assert (stats["pending"], stats["delivered"], stats["last_error"]) == (0, 2, None)
    finally:
        for node in nodes:
            await node.close()


# -- one process ---------------------------------------------------------------------------


async def test_each_event_is_signed_and_the_readme_snippet_verifies_it(
    start_server: StartServer, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    server = await start_server(
        webhook=[f"{receiver.url}/in?token=receiver-own-secret"], webhook_secret=SECRET
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        jobs = [
            await post_update(http, "build-1", status="running", message="héllo ✓"),
            await post_update(http, "build-1", status="succeeded", progress=100),
        ]
    await receiver.until(lambda: len(receiver.delivered()) == 2)
    verify = readme_verify()
    for hit, job in zip(receiver.hits, jobs, strict=True):
        assert hit.path == "/in" and hit.query == "token=receiver-own-secret"
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["webhook-id"] == f"build-1:{job['seq']}"
        assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 300
        assert hit.headers["webhook-signature"].startswith("v1,")
        event = verify(SECRET, hit.headers, hit.body)
        assert event == {"id": f"build-1:{job['seq']}", "type": "job.update", "job": job}
        with pytest.raises(ValueError):
            verify(SECRET, hit.headers, hit.body.replace(b"build-1", b"build-2"))
        with pytest.raises(ValueError):
            verify("whsec_" + base64.b64encode(b"another key").decode(), hit.headers, hit.body)
        stale = CIMultiDict(hit.headers)
        stale["webhook-timestamp"] = str(int(time.time()) - 3600)
        with pytest.raises(ValueError):
            verify(SECRET, stale, hit.body)
    [status] = await webhook_status(server.url)
    assert status["url"] == f"{receiver.url}/in?***"
    assert (status["pending"], status["delivered"], status["dead"]) == (0, 2, 0)
    assert status["last_success"] and status["last_failure"] is None


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
async def test_each_job_arrives_in_seq_order_while_jobs_go_in_parallel(
    start_server: StartServer,
    receivers: Callable[..., Awaitable[Receiver]],
    request: pytest.FixtureRequest,
    tmp_path: Any,
    store: str,
) -> None:
    async def slow(hit: Hit, receiver: Receiver) -> int:
        await asyncio.sleep(random.uniform(0.005, 0.04))
        return 200

    receiver = await receivers(slow)
    if store == "redis":
        url = request.getfixturevalue("shared_redis").url
    else:
        url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/hooks.db"}[store]
    server = await start_server(webhook=[f"{receiver.url}/in"], **store_options(url))
    jobs, updates = [f"job-{n}" for n in range(6)], 15
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answers = await asyncio.gather(
            *(post_update(http, job, progress=n) for n in range(updates) for job in jobs)
        )
    assert len(answers) == len(jobs) * updates
    await receiver.until(lambda: len(receiver.delivered()) == len(jobs) * updates)
    for job in jobs:
        assert receiver.arrivals(job) == list(range(1, updates + 1)), job
        assert receiver.most_in_flight[job] == 1, job  # never two of one job at once
    assert receiver.most_open > 1  # jobs went in parallel
    [status] = await webhook_status(server.url)
    assert (status["pending"], status["delivered"]) == (0, len(jobs) * updates)


async def test_a_failing_receiver_gets_each_event_again_in_order(
    start_server: StartServer, receivers: Callable[..., Awaitable[Receiver]], tmp_path: Any
) -> None:
    async def first_attempt_fails(hit: Hit, receiver: Receiver) -> int:
        return 500 if receiver.attempts(hit.event_id) == 1 else 204

    receiver = await receivers(first_attempt_fails)
    server = await start_server(
        webhook=[f"{receiver.url}/in"], store=f"sqlite:///{tmp_path}/hooks.db"
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for n in range(3):
            await asyncio.gather(
                post_update(http, "a", progress=n), post_update(http, "b", progress=n)
            )
    await receiver.until(lambda: len(receiver.delivered()) == 6)
    for job in ("a", "b"):
        assert receiver.arrivals(job) == [1, 1, 2, 2, 3, 3]  # each retried once, in order
        assert [h.status for h in receiver.hits if h.job_id == job] == [500, 204] * 3
    [status] = await webhook_status(server.url)
    assert (status["pending"], status["delivered"], status["dead"]) == (0, 6, 0)
    assert status["last_error"] == "HTTP 500" and status["last_failure"]
    metrics = await metrics_text(server.url)
    assert 'switchboard_webhook_deliveries_total{outcome="delivered"} 6.0' in metrics
    assert 'switchboard_webhook_deliveries_total{outcome="failed"} 6.0' in metrics
    assert "switchboard_webhook_attempt_seconds_count 12.0" in metrics


async def test_a_receiver_that_does_not_answer_in_time_gets_the_event_again(
    start_server: StartServer, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    async def first_attempt_hangs(hit: Hit, receiver: Receiver) -> int:
        if receiver.attempts(hit.event_id) == 1:
            with contextlib.suppress(TimeoutError):  # the sender gives up after 0.5 s
                await asyncio.wait_for(receiver.released.wait(), 3.0)
        return 200

    receiver = await receivers(first_attempt_hangs)
    server = await start_server(webhook=[f"{receiver.url}/in"], webhook_timeout=0.5)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await post_update(http, "slow", status="running")
        await post_update(http, "slow", status="failed")
    await receiver.until(lambda: receiver.arrivals("slow") == [1, 1, 2, 2])
    [status] = await until_status(server.url, lambda found: found[0]["pending"] == 0)
    assert status["last_error"] == "no answer within 0.5 s"
    assert status["delivered"] == 2 and status["dead"] == 0


async def test_filters_pick_the_events_and_status_shows_each_webhook(
    start_server: StartServer, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    hooks = {
        "/all": "",
        "/terminal": "#status=terminal",
        "/builds": "#job=build-*",
        "/mix": "#status=failed,running&job=deploy-*,other",
    }
    server = await start_server(
        webhook=[f"{receiver.url}{path}?k=hush{filters}" for path, filters in hooks.items()]
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for job_id, status in [
            ("build-1", "running"), ("build-1", "succeeded"), ("deploy-1", "running"),
            ("deploy-1", "failed"), ("other", "queued"), ("other", "cancelled"),
        ]:  # fmt: skip
            await post_update(http, job_id, status=status)
        unauthorized = await http.get("/api/webhooks/status")
    assert unauthorized.status_code == 401
    found = await until_status(server.url, lambda found: sum(h["delivered"] for h in found) == 13)
    expected = {
        "/all": ["build-1:1", "build-1:2", "deploy-1:1", "deploy-1:2", "other:1", "other:2"],
        "/terminal": ["build-1:2", "deploy-1:2", "other:2"],
        "/builds": ["build-1:1", "build-1:2"],
        "/mix": ["deploy-1:1", "deploy-1:2"],
    }
    for path, ids in expected.items():
        assert sorted(receiver.delivered(path)) == ids, path
    assert [h["url"] for h in found] == [f"{receiver.url}{path}?***" for path in hooks]
    assert [h["filters"] for h in found] == [
        {"status": None, "job": None},
        {"status": ["cancelled", "failed", "succeeded"], "job": None},
        {"status": None, "job": ["build-*"]},
        {"status": ["failed", "running"], "job": ["deploy-*", "other"]},
    ]
    assert all(h["pending"] == 0 and h["dead"] == 0 for h in found)
    assert "hush" not in json.dumps(found)


async def test_events_older_than_the_max_age_are_given_up_and_the_rest_goes_on(
    start_server: StartServer, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    async def refuse_doomed(hit: Hit, receiver: Receiver) -> int:
        return 503 if hit.job_id == "doomed" else 200

    receiver = await receivers(refuse_doomed)
    server = await start_server(
        webhook=[f"{receiver.url}/in"], webhook_max_age=1.0, webhook_backoff_max=0.3
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await post_update(http, "doomed", status="running")
        await post_update(http, "doomed", status="failed")
        await post_update(http, "fine", status="running")
        [status] = await until_status(server.url, lambda found: found[0]["dead"] == 2)
        assert status["pending"] == 0 and status["last_error"] == "HTTP 503"
        await post_update(http, "fine", status="succeeded")
    await receiver.until(lambda: receiver.delivered() == ["fine:1", "fine:2"])
    assert receiver.arrivals("doomed")[0] == 1 and set(receiver.arrivals("doomed")) <= {1, 2}
    metrics = await metrics_text(server.url)
    assert 'switchboard_webhook_deliveries_total{outcome="dead"} 2.0' in metrics


def test_a_bad_webhook_is_a_configuration_error() -> None:
    for args, said in [
        (["--webhook", "ftp://example.com/in?token=hush"], "http:// or https://"),
        (["--webhook", "https://example.com/in?token=hush#status=done"], "status 'done'"),
        (["--webhook", "https://a.example/in?token=hush,https://b.example/in"], "spaces"),
        (["--webhook", "https://a.example/in?token=hush#colour=red"], "unknown filter"),
        (["--webhook-secret", "whsec_not*base64"], "base64"),
    ]:
        result = subprocess.run(
            [*switchboard_cmd(), "serve", "--store", "memory://", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "bad configuration" in result.stderr and said in result.stderr
        assert "hush" not in result.stderr and "not*base64" not in result.stderr


# -- restarts and nodes ----------------------------------------------------------------------


async def test_deliveries_wait_in_sqlite_through_a_restart_until_the_receiver_is_back(
    spawn_server: Spawn, receivers: Callable[..., Awaitable[Receiver]], tmp_path: Any
) -> None:
    port, store = free_port(), f"sqlite:///{tmp_path}/outbox.db"
    options = ("--store", store, "--webhook", f"http://127.0.0.1:{port}/in?token=hush",
               "--webhook-secret", SECRET, "--webhook-backoff-max", "0.5",
               "--log-format", "json")  # fmt: skip
    server = spawn_server(*options)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for n in range(3):
            await asyncio.gather(
                post_update(http, "x", progress=n), post_update(http, "y", progress=n)
            )
    down = await until_status(
        server.url, lambda found: found[0]["last_error"] is not None and found[0]["pending"] == 6
    )
    assert down[0]["delivered"] == 0
    server.kill(signal.SIGKILL)  # the entries are only in the file now

    receiver = await receivers(port=port)
    again = spawn_server(*options, port=int(server.url.rsplit(":", 1)[1]))
    await receiver.until(lambda: len(receiver.delivered()) == 6)
    verify = readme_verify()
    for job in ("x", "y"):
        assert receiver.arrivals(job) == [1, 2, 3], job
    for hit in receiver.hits:
        verify(SECRET, hit.headers, hit.body)
    [status] = await until_status(again.url, lambda found: found[0]["pending"] == 0)
    assert status["delivered"] == 6
    for log in (server.log, again.log):
        text = log.read_text()
        assert "hush" not in text and SECRET.removeprefix("whsec_") not in text


async def test_two_redis_nodes_deliver_every_event_one_sender_per_job(
    spawn_server: Spawn,
    start_redis: Callable[[], RedisProcess],
    receivers: Callable[..., Awaitable[Receiver]],
) -> None:
    async def slow(hit: Hit, receiver: Receiver) -> int:
        await asyncio.sleep(random.uniform(0.005, 0.03))
        return 200

    receiver = await receivers(slow)
    redis = start_redis()
    options = ("--store", redis.url, "--webhook", f"{receiver.url}/in", "--webhook-secret", SECRET)
    nodes = [spawn_server(*options), spawn_server(*options)]
    jobs, updates = [f"job-{n}" for n in range(4)], 12
    clients = [httpx.AsyncClient(base_url=node.url, timeout=30) for node in nodes]
    try:
        await asyncio.gather(
            *(
                post_update(clients[(n + j) % 2], job, progress=n)
                for n in range(updates)
                for j, job in enumerate(jobs)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    everything = {f"{job}:{n}" for job in jobs for n in range(1, updates + 1)}
    await receiver.until(lambda: set(receiver.delivered()) == everything)
    for job in jobs:
        assert receiver.first_seqs(job) == list(range(1, updates + 1)), job
        assert receiver.most_in_flight[job] == 1, job  # one node at a time per job
    for node in nodes:  # both nodes see the store's counts
        [status] = await until_status(node.url, lambda found: found[0]["pending"] == 0)
        assert status["delivered"] >= len(everything) and status["dead"] == 0


async def test_a_node_that_dies_while_sending_hands_its_lane_over(
    spawn_server: Spawn,
    start_redis: Callable[[], RedisProcess],
    receivers: Callable[..., Awaitable[Receiver]],
) -> None:
    async def first_attempt_hangs(hit: Hit, receiver: Receiver) -> int:
        if receiver.attempts(hit.event_id) == 1 and hit.seq == 1:
            await receiver.released.wait()  # the sender dies meanwhile
        return 200

    receiver = await receivers(first_attempt_hangs)
    redis = start_redis()
    # A lease lasts the attempt's timeout plus 10 s; the first node dies well within it.
    options = ("--store", redis.url, "--webhook", f"{receiver.url}/in", "--webhook-timeout", "2")
    first = spawn_server(*options)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        for n in range(3):
            await post_update(http, "held", progress=n)
    await receiver.until(lambda: receiver.arrivals("held") == [1])
    second = spawn_server(*options)
    first.kill(signal.SIGKILL)  # mid-attempt, holding the lane
    await receiver.until(lambda: receiver.delivered() == ["held:1", "held:2", "held:3"])
    assert receiver.arrivals("held") == [1, 1, 2, 3]  # at least once, in order, nothing lost
    [status] = await until_status(second.url, lambda found: found[0]["pending"] == 0)
    assert status["delivered"] == 3 and status["dead"] == 0
