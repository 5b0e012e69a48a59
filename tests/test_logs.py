"""Live log lines per job: append over HTTP, follow over Socket.IO, SSE, /ws, the Python
client, the CLI and the dashboard, in exact offset order, resumed by offset, on every store
and across two nodes.

Lists are compared exactly (order included), never as sets.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
from playwright.async_api import Browser
from switchboard_client import Admin, AsyncAdmin, SwitchboardClient, SwitchboardError
from switchboard_server.errors import ApiError
from switchboard_server.models import JobUpdate, LogEntry, apply_change, new_id, now_iso
from switchboard_server.ordering import Order, batch_from, batch_span
from switchboard_server.storage import LogLimits, Store, open_store
from switchboard_server.storage.base import log_response

from .conftest import (
    ADMIN,
    TRANSPORTS,
    Api,
    Connect,
    Edge,
    Recorder,
    RedisProcess,
    Server,
    ServerProcess,
    StartServer,
    free_port,
    switchboard_cmd,
)
from .test_browser import open_dashboard
from .test_streams import ADMIN_HEADERS, Plain, sse_events

Spawn = Callable[..., ServerProcess]
Line = dict[str, Any]


def offsets(lines: list[Line]) -> list[int]:
    return [line["offset"] for line in lines]


def texts(lines: list[Line]) -> list[str]:
    return [line["text"] for line in lines]


def lines_of(batches: list[dict[str, Any]]) -> list[Line]:
    return [line for batch in batches for line in batch["lines"]]


async def received(client: Recorder, count: int, timeout: float = 20) -> list[Line]:
    """The lines of every `job:log` the client got, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = lines_of(client.received.get("job:log", []))
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"expected {count} lines, got {offsets(lines)}"
        await asyncio.sleep(0.01)


async def append(api: Api, job_id: str, *lines: str, **headers: str) -> list[int]:
    status, body = await api.post(
        f"/api/jobs/{job_id}/logs", json={"lines": [{"text": t} for t in lines]}, headers=headers
    )
    assert status == 201, body
    assert body["job_id"] == job_id
    return body["offsets"]  # type: ignore[no-any-return]


async def log_client(connect: Connect, url: str) -> Recorder:
    client = await connect(url, namespaces=("/job",))
    client.on("job:log", "/job")
    return client


async def subscribe(client: Recorder, job_id: str, log_since: int | None) -> dict[str, Any]:
    """Subscribe to a job with its lines after `log_since`; the ack."""
    ack = await client.call("/job", "subscribe", {"job_id": job_id, "log_since": log_since})
    return ack  # type: ignore[no-any-return]


# -- over Socket.IO ---------------------------------------------------------------------


async def test_lines_reach_log_subscribers_in_offset_order(
    server: Server, api: Api, connect: Connect, edge: Edge
) -> None:
    url = edge(server)
    await api.update("build", status="running")
    follower = await log_client(connect, url)
    bystander = await log_client(connect, url)
    ack = await subscribe(follower, "build", 0)
    assert (ack["logs"], ack["logs_reset"], ack["log_offset"]) == ([], False, 0)
    plain_ack = await bystander.call("/job", "subscribe", {"job_id": "build"})
    assert set(plain_ack) == {"ok", "job", "missed", "reset"}  # no log_since: no lines

    sent: list[list[int]] = []
    written: list[str] = []
    for size in (1, 3, 1, 5, 2):
        batch = [f"line {len(written) + n} <b>&amp;</b>" for n in range(size)]
        sent.append(await append(api, "build", *batch))
        written += batch
    assert [n for batch in sent for n in batch] == list(range(1, 13))
    lines = await received(follower, 12)
    assert offsets(lines) == list(range(1, 13))
    assert texts(lines) == written
    assert {line["stream"] for line in lines} == {"stdout"}
    batches = follower.received["job:log"]
    assert [offsets(batch["lines"]) for batch in batches] == sent  # one event per append
    assert {batch["job_id"] for batch in batches} == {"build"}

    await api.update("build", progress=50)  # emitted after every line above
    await bystander.wait_for("job:update")
    await follower.wait_for("job:update")
    assert "job:log" not in bystander.received
    assert len(lines_of(follower.received["job:log"])) == 12


async def test_log_since_resumes_after_a_reconnect(
    server: Server, api: Api, connect: Connect, edge: Edge
) -> None:
    url = edge(server)
    await api.update("r", status="running")
    first = await log_client(connect, url)
    await subscribe(first, "r", 0)
    await append(api, "r", "a", "b", "c")
    seen = offsets(await received(first, 3))
    await first.sio.disconnect()
    await append(api, "r", "d", "e")  # while nobody listens
    await append(api, "r", "f", "g")

    second = await log_client(connect, url)
    ack = await subscribe(second, "r", seen[-1])
    assert offsets(ack["logs"]) == [4, 5, 6, 7] and texts(ack["logs"]) == list("defg")
    assert (ack["logs_reset"], ack["log_offset"]) == (False, 7)
    await append(api, "r", "h")
    assert offsets(await received(second, 1)) == [8]

    # null: from now on, with the offset to resume from
    third = await log_client(connect, url)
    ack = await subscribe(third, "r", None)
    assert (ack["logs"], ack["logs_reset"], ack["log_offset"]) == ([], False, 8)
    await append(api, "r", "i")
    assert offsets(await received(third, 1)) == [9]
    assert offsets(await received(second, 2)) == [8, 9]


async def test_lines_and_their_numbering_survive_a_restart(
    start_server: StartServer, tmp_path: Path, connect: Connect
) -> None:
    store, port = f"sqlite:///{tmp_path}/logs.db", free_port()
    server = await start_server(store=store, port=port)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        await api.update("durable", status="running")
        assert await append(api, "durable", "one", "two", "three", "four") == [1, 2, 3, 4]
        await server.stop()
        await start_server(store=store, port=port)
        client = await log_client(connect, server.url)
        ack = await subscribe(client, "durable", 2)
        assert texts(ack["logs"]) == ["three", "four"] and ack["log_offset"] == 4
        assert await append(api, "durable", "five", "six") == [5, 6]
    assert offsets(await received(client, 2)) == [5, 6]


async def test_retention_keeps_the_newest_and_says_reset(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(log_lines=3, log_bytes=8192)
    client = await log_client(connect, server.url)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        for job in ("many", "big", "huge"):
            await api.update(job, status="running")
        await append(api, "many", *"abcde")
        await append(api, "big", *("x" * 3000 for _ in range(3)))  # 9000 bytes > 8192
        await append(api, "huge", "y" * 8192)  # the newest line always stays
        await append(api, "huge", "z")
        await append(api, "huge", "é" * 4096)

    async def since(job: str, log_since: int) -> tuple[list[int], bool]:
        ack = await subscribe(client, job, log_since)
        return offsets(ack["logs"]), ack["logs_reset"]

    assert await since("many", 0) == ([3, 4, 5], True)
    assert await since("many", 2) == ([3, 4, 5], False)
    assert await since("many", 4) == ([5], False)
    assert await since("many", 5) == ([], False)
    assert await since("many", 9) == ([3, 4, 5], True)  # ahead: numbered anew, from the start
    assert await since("big", 0) == ([2, 3], True)
    assert await since("huge", 0) == ([3], True)


# -- HTTP input -----------------------------------------------------------------------------


def assert_error(status: int, body: Any, want: int, code: str, mentions: str = "") -> None:
    assert status == want, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert mentions in body["error"]["message"], body


@pytest.mark.parametrize(
    ("raw", "code", "mentions"),
    [
        (b"{", "invalid_json", ""),
        (b"not json", "invalid_json", ""),
        (b"", "invalid_json", ""),
        (b"[1, 2]", "invalid_payload", "object"),
        (b'"text"', "invalid_payload", "object"),
        (b"null", "invalid_payload", "object"),
        (b"{}", "invalid_payload", "lines"),
        (b'{"lines": "abc"}', "invalid_payload", "lines"),
        (b'{"lines": {"text": "x"}}', "invalid_payload", "lines"),
        (b'{"lines": []}', "invalid_payload", "lines"),
        (b'{"lines": ["just text"]}', "invalid_payload", "lines.0"),
        (b'{"lines": [{"stream": "stdout"}]}', "invalid_payload", "text"),
        (b'{"lines": [{"text": 5}]}', "invalid_payload", "text"),
        (b'{"text": null}', "invalid_payload", "text"),
        (b'{"text": "\\ud800"}', "invalid_payload", "Unicode"),
        (json.dumps({"text": "x" * 8193}).encode(), "invalid_payload", "8192 bytes"),
        (json.dumps({"text": "é" * 4097}).encode(), "invalid_payload", "8192 bytes"),
        (b'{"text": "x", "stream": ""}', "invalid_payload", "stream"),
        (b'{"text": "x", "stream": "has space"}', "invalid_payload", "stream"),
        (b'{"text": "x", "stream": "-dash"}', "invalid_payload", "stream"),
        (json.dumps({"text": "x", "stream": "s" * 33}).encode(), "invalid_payload", "stream"),
        (b'{"text": "x", "stream": 1}', "invalid_payload", "stream"),
        (b'{"text": "x", "stream": null}', "invalid_payload", "stream"),
        (json.dumps({"lines": [{"text": "x"}] * 1001}).encode(), "invalid_payload", "lines"),
        (b'{"lines": [{"text": "x"}], "colour": "red"}', "invalid_payload", "colour"),
        (b'{"text": "x", "colour": "red"}', "invalid_payload", "colour"),
        (b'{"lines": [{"text": "x", "level": 3}]}', "invalid_payload", "level"),
        (b'{"lines": [{"text": "x"}], "text": "y"}', "invalid_payload", "text"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_appended(
    api: Api, raw: bytes, code: str, mentions: str
) -> None:
    await api.update("strict", status="running")
    status, body = await api.post("/api/jobs/strict/logs", content=raw)
    assert_error(status, body, 400, code, mentions)
    assert await append(api, "strict", "the first line") == [1]


async def test_oversized_bodies_unknown_jobs_and_bad_ids(api: Api) -> None:
    await api.update("sized", status="running")
    too_big = {"lines": [{"text": "x" * 8000}] * 140}  # 1.1 MB
    status, body = await api.post("/api/jobs/sized/logs", content=json.dumps(too_big))
    assert_error(status, body, 413, "payload_too_large")
    status, body = await api.post("/api/jobs/nobody/logs", json={"text": "hello?"})
    assert_error(status, body, 404, "not_found", "create it first")
    status, body = await api.post("/api/jobs/bad%20id/logs", json={"text": "x"})
    assert_error(status, body, 400, "invalid_payload", "job_id")
    status, body = await api.post("/api/jobs/sized/logs", json={"text": "x"}, headers={})
    assert status == 201 and body == {"job_id": "sized", "offsets": [1]}
    async with httpx.AsyncClient(base_url=str(api.http.base_url)) as anonymous:
        refused = await anonymous.post("/api/jobs/sized/logs", json={"text": "x"})
    assert_error(refused.status_code, refused.json(), 401, "unauthorized")


async def test_one_line_shape_streams_and_late_lines(api: Api, connect: Connect) -> None:
    server_url = str(api.http.base_url)
    await api.update("late", status="running")
    status, body = await api.post("/api/jobs/late/logs", json={"text": "", "stream": "stderr"})
    assert (status, body) == (201, {"job_id": "late", "offsets": [1]})
    await api.update("late", status="succeeded")
    multi = "two\nlines\tand a tab"
    await append(api, "late", multi)  # a finished job still takes lines
    client = await log_client(connect, server_url)
    ack = await subscribe(client, "late", 0)
    assert [(n["offset"], n["stream"], n["text"]) for n in ack["logs"]] == [
        (1, "stderr", ""),
        (2, "stdout", multi),
    ]
    assert ack["logs"][0]["ts"] <= ack["logs"][1]["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ack["logs"][0]["ts"])
    refused = await subscribe(client, "*", 0)
    assert refused["ok"] is False and refused["error"]["code"] == "invalid_payload"
    refused = await subscribe(client, "late", -1)
    assert refused["error"]["code"] == "invalid_payload"


async def test_deleting_a_job_drops_its_lines(api: Api, connect: Connect) -> None:
    await api.update("gone", status="running")
    await append(api, "gone", "old 1", "old 2")
    assert (await api.delete("/api/jobs/gone"))[0] == 204
    status, body = await api.post("/api/jobs/gone/logs", json={"text": "x"})
    assert_error(status, body, 404, "not_found")
    await api.update("gone", status="running")
    assert await append(api, "gone", "new 1") == [1]  # numbered anew
    client = await log_client(connect, str(api.http.base_url))
    ack = await subscribe(client, "gone", 0)
    assert texts(ack["logs"]) == ["new 1"]


# -- every store ----------------------------------------------------------------------------


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Store] = []

    async def make(**limits: int) -> Store:
        logs = LogLimits(**limits)
        store = open_store(store_url, history=10, prefix=f"test-{new_id()}:", logs=logs)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def entries(*texts: str, stream: str = "stdout") -> list[LogEntry]:
    return [{"stream": stream, "text": text, "ts": now_iso()} for text in texts]


async def create(store: Store, job_id: str, status: str = "running") -> None:
    """Create or update the job in the store, as an HTTP update would."""
    change = JobUpdate(status=status)
    await store.apply(job_id, lambda current: apply_change(job_id, current, change, create=False))


async def test_store_numbers_concurrent_appends_without_gaps(make_store: Any) -> None:
    store = await make_store()
    await create(store, "c")
    batches = [entries(*(f"{n}.{k}" for k in range(1 + n % 3))) for n in range(30)]
    appended = await asyncio.gather(*(store.append_logs("c", batch) for batch in batches))
    for lines, batch in zip(appended, batches, strict=True):
        assert texts(lines) == [entry["text"] for entry in batch]
        assert offsets(lines) == list(range(lines[0]["offset"], lines[0]["offset"] + len(batch)))
    assert sorted(n for lines in appended for n in offsets(lines)) == list(range(1, 61))
    kept, head = await store.logs_after("c", 0, 1000)
    assert offsets(kept) == list(range(1, 61)) and head == 60
    by_offset = {line["offset"]: line for lines in appended for line in lines}
    assert kept == [by_offset[n] for n in range(1, 61)]
    page, head = await store.logs_after("c", 57, 2)
    assert offsets(page) == [58, 59] and head == 60
    assert await store.log_head("c") == 60 and await store.log_head("none") == 0


async def test_store_keeps_lines_within_both_limits(make_store: Any) -> None:
    store = await make_store(lines=4, bytes=10_000)
    for job in ("n", "b"):
        await create(store, job)
    for n in range(1, 7):
        await store.append_logs("n", entries(f"line {n}"))
    assert offsets((await store.logs_after("n", 0, 100))[0]) == [3, 4, 5, 6]
    await store.append_logs("n", entries("a", "b", "c", "d", "e", "f"))  # one batch past it
    kept, head = await store.logs_after("n", 0, 100)
    assert offsets(kept) == [9, 10, 11, 12] and head == 12
    await store.append_logs("b", entries("x" * 4000, "é" * 2000))  # 8000 bytes
    await store.append_logs("b", entries("y" * 4000))  # 12000: the oldest goes
    assert offsets((await store.logs_after("b", 0, 100))[0]) == [2, 3]
    await store.append_logs("b", entries("z" * 8192))
    assert texts((await store.logs_after("b", 0, 100))[0]) == ["z" * 8192]
    await store.append_logs("b", entries("after"))
    assert offsets((await store.logs_after("b", 0, 100))[0]) == [4, 5]
    tiny = await make_store(lines=10, bytes=100)
    await create(tiny, "t")
    await tiny.append_logs("t", entries("a" * 60, "b" * 60, "c" * 500))
    kept, head = await tiny.logs_after("t", 0, 100)
    assert texts(kept) == ["c" * 500] and head == 3  # alone over the bytes, the newest stays


async def test_store_refuses_unknown_jobs_and_forgets_deleted_ones(make_store: Any) -> None:
    store = await make_store()
    with pytest.raises(ApiError) as refused:
        await store.append_logs("ghost", entries("boo"), "key-ghost")
    assert refused.value.status == 404
    assert await store.log_head("ghost") == 0
    assert await store.get_response("key-ghost", time.time()) is None
    await create(store, "d")
    await store.append_logs("d", entries("1", "2"))
    assert await store.delete_job("d")
    assert await store.logs_after("d", 0, 10) == ([], 0)
    await create(store, "p")
    await store.append_logs("p", entries("kept until purged"))
    await create(store, "p", "succeeded")
    assert await store.purge("9999-01-01T00:00:00.000Z", time.time()) == 1
    assert await store.logs_after("p", 0, 10) == ([], 0)


async def test_store_commits_the_idempotent_answer_with_the_lines(make_store: Any) -> None:
    store = await make_store()
    await create(store, "i")
    lines = await store.append_logs("i", entries("a", "b", stream="stderr"), "the-key")
    assert offsets(lines) == [1, 2] and {n["stream"] for n in lines} == {"stderr"}
    assert await store.get_response("the-key", time.time()) == log_response("i", lines)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_an_idempotent_append_is_written_once(
    start_server: StartServer, connect: Connect, tmp_path: Path, kind: str, request: Any
) -> None:
    local = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/idem.db"}
    store = local.get(kind) or request.getfixturevalue("shared_redis").url
    server = await start_server(store=store, redis_prefix=f"test-{new_id()}:")
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        await api.update("once", status="running")
        client = await log_client(connect, server.url)
        await subscribe(client, "once", 0)
        key = {"Idempotency-Key": f"append-{new_id()}"}
        first = await http.post("/api/jobs/once/logs", json={"text": "a"}, headers=key)
        again = await http.post("/api/jobs/once/logs", json={"text": "other"}, headers=key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert first.json() == again.json() == {"job_id": "once", "offsets": [1]}
        assert again.headers["Idempotent-Replayed"] == "true"
        together = {"Idempotency-Key": f"together-{new_id()}"}
        two = {"lines": [{"text": "b"}] * 2}
        answers = await asyncio.gather(
            *(http.post("/api/jobs/once/logs", json=two, headers=together) for _ in range(5))
        )
        assert [a.json()["offsets"] for a in answers] == [[2, 3]] * 5
        assert await append(api, "once", "c") == [4]
        assert texts(await received(client, 4)) == ["a", "b", "b", "c"]
        ack = await subscribe(client, "once", 0)
        assert texts(ack["logs"]) == ["a", "b", "b", "c"]


# -- two nodes on Redis -------------------------------------------------------------------


class RawLogs:
    """A bare python-socketio client following one job's lines: offsets in arrival order,
    from the subscribe ack on (no client-side reordering or gap filling)."""

    def __init__(self, url: str, transport: str) -> None:
        self.url = url
        self.transport = transport
        self.sio = socketio.AsyncClient(reconnection=False)
        self.lines: list[Line] = []

    async def follow(self, job_id: str) -> None:
        self.sio.on("job:log", lambda batch: self.lines.extend(batch["lines"]), namespace="/job")
        await self.sio.connect(
            self.url, namespaces=["/job"], transports=TRANSPORTS[self.transport], wait_timeout=10
        )
        ack = await self.sio.call(
            "subscribe", {"job_id": job_id, "log_since": 0}, namespace="/job", timeout=10
        )
        assert ack["ok"] and ack["logs"] == [], ack

    async def until(self, count: int, timeout: float = 30) -> list[Line]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.sio.disconnect()
        return self.lines


async def test_two_nodes_give_every_subscriber_one_order(
    spawn_server: Spawn, shared_redis: RedisProcess, start_nginx: Any, transport: str
) -> None:
    """Appends through both nodes at once; subscribers on each node and through nginx get
    every line once, in offset order, whichever node took it."""
    prefix = f"test-{new_id()}:"
    nodes = [spawn_server("--store", shared_redis.url, "--redis-prefix", prefix) for _ in "ab"]
    edge = start_nginx([n.url.removeprefix("http://") for n in nodes])
    admins = [AsyncAdmin(node.url, ADMIN, retries=0) for node in nodes]
    followers = [RawLogs(url, transport) for url in [n.url for n in nodes] * 2 + [edge]]
    written: dict[int, str] = {}
    try:
        await admins[0].create_job("hot", status="running")
        for follower in followers:
            await follower.follow("hot")

        async def one(n: int) -> None:
            batch = [f"{n}.{k}" for k in range(1 + n % 3)]
            answer = await admins[n % 2].log("hot", batch, stream=f"worker-{n % 2}")
            assert len(answer["offsets"]) == len(batch)
            assert answer["offsets"] == list(
                range(answer["offsets"][0], answer["offsets"][0] + len(batch))
            )
            written.update(zip(answer["offsets"], batch, strict=True))

        for burst in range(3):  # three bursts of 20 appends at once, through both nodes
            await asyncio.gather(*(one(burst * 20 + n) for n in range(20)))
    finally:
        for admin in admins:
            await admin.close()
    total = len(written)
    assert sorted(written) == list(range(1, total + 1))
    results = await asyncio.gather(*(follower.until(total) for follower in followers))
    for follower, lines in zip(followers, results, strict=True):
        assert offsets(lines) == list(range(1, total + 1)), follower.url
        assert texts(lines) == [written[n] for n in range(1, total + 1)]


async def test_order_reads_again_for_what_arrived_during_a_read() -> None:
    """A batch held while the gap is read may be ahead of lines committed after the read
    began: they are read too, never skipped; and a read stops at the first held line."""
    stored: list[Line] = [{"offset": n, "text": str(n)} for n in range(1, 4)]  # 4 comes later
    delivered: list[int] = []
    reading = asyncio.Event()
    go_on = asyncio.Event()

    reads: list[tuple[int, int | None]] = []

    async def fetch(job_id: str, after: int, until: int | None) -> list[dict[str, Any]]:
        reads.append((after, until))
        lines = [line for line in stored if after < line["offset"] <= (until or 1 << 60)]
        reading.set()
        await go_on.wait()
        return [{"job_id": job_id, "lines": lines}] if lines else []

    async def deliver(batch: dict[str, Any]) -> None:
        delivered.extend(offsets(batch["lines"]))

    async def head(job_id: str) -> int:
        return 0

    def batch(*numbers: int) -> dict[str, Any]:
        return {"job_id": "j", "lines": [{"offset": n, "text": str(n)} for n in numbers]}

    order = Order(head, fetch, deliver, batch_span, batch_from, lambda: None)
    await order.watch("j")
    await order.offer(batch(3))  # 1 and 2 are on their way: held, the store is read
    await asyncio.wait_for(reading.wait(), 5)
    stored += [{"offset": 4, "text": "4"}, {"offset": 5, "text": "5"}]  # committed meanwhile
    await order.offer(batch(5))  # arrives before 4 does
    go_on.set()
    for _ in range(500):
        if delivered[-1:] == [5]:
            break
        await asyncio.sleep(0.01)
    await order.offer(batch(4))  # late: seen already
    await order.offer(batch(1, 2, 3, 4, 5, 6))  # overlapping: only 6 is new
    assert delivered == [1, 2, 3, 4, 5, 6]
    # Each read is the gap before what is held, never the head moving on behind it.
    assert reads == [(0, 2), (3, 4)]


async def test_followers_miss_no_line_through_a_redis_restart(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess]
) -> None:
    """Lines accepted right after Redis is back, before the nodes' pub/sub may have
    resubscribed, still reach followers that stayed connected (read from the store)."""
    redis = start_redis()
    nodes = [spawn_server("--store", redis.url) for _ in "ab"]
    admins = [AsyncAdmin(node.url, ADMIN, retries=0) for node in nodes]
    followers = [RawLogs(node.url, "websocket") for node in nodes]
    acknowledged: list[int] = []
    try:
        await admins[0].create_job("outage", status="running")
        for follower in followers:
            await follower.follow("outage")
        for n in range(6):
            acknowledged += (await admins[n % 2].log("outage", f"before {n}"))["offsets"]
        redis.stop(signal.SIGKILL)
        await asyncio.sleep(0.5)
        redis.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            try:
                answer = await admins[len(acknowledged) % 2].log("outage", "after")
            except SwitchboardError:
                await asyncio.sleep(0.05)  # 503 while Redis comes back: nothing appended
                continue
            acknowledged += answer["offsets"]
    finally:
        for admin in admins:
            await admin.close()
    assert acknowledged == list(range(1, 21))
    results = await asyncio.gather(*(follower.until(20) for follower in followers))
    for follower, lines in zip(followers, results, strict=True):
        assert offsets(lines) == acknowledged, follower.url


async def test_lines_resume_across_a_node_restart_on_redis(
    spawn_server: Spawn, shared_redis: RedisProcess, transport: str
) -> None:
    """The Python client follows a job's lines while its node is SIGKILLed and started
    again on the same Redis: every line once, in order."""
    store, port = ("--store", shared_redis.url, "--redis-prefix", f"test-{new_id()}:"), free_port()
    node = spawn_server(*store, port=port)
    async with AsyncAdmin(node.url, ADMIN, retries=20, backoff=0.1) as admin:
        await admin.update_job("phoenix", status="running")
        await admin.log("phoenix", ["one", "two"])
        client = SwitchboardClient(
            node.url, transports=TRANSPORTS[transport], reconnection_delay=0.1,
            reconnection_delay_max=0.5,
        )  # fmt: skip
        await client.connect()
        stream = client.watch("phoenix", logs=True).__aiter__()
        got = [await anext(stream), await anext(stream)]
        node.kill()
        spawn_server(*store, port=port)
        await admin.log("phoenix", ["three", "four"])
        await admin.log("phoenix", "five")
        await admin.update_job("phoenix", status="succeeded")
        got += [item async for item in stream]
        await client.close()
    lines = lines_of([item for item in got if "lines" in item])
    assert offsets(lines) == [1, 2, 3, 4, 5]
    assert texts(lines) == ["one", "two", "three", "four", "five"]
    assert [item["seq"] for item in got if "seq" in item] == [1, 2]


# -- SSE and /ws ------------------------------------------------------------------------------


async def read_sse(url: str, job_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream("GET", f"{url}/api/jobs/{job_id}/stream", **kwargs) as response,
    ):
        assert response.status_code == 200, await response.aread()
        return [event async for event in sse_events(response)]


def of_kind(events: list[dict[str, Any]], kind: str) -> list[Any]:
    return [json.loads(e["data"]) for e in events if e["event"] == kind]


async def test_sse_carries_lines_and_resumes_both(server: Server, api: Api, edge: Edge) -> None:
    url = edge(server)
    await api.update("sse", status="running")
    await append(api, "sse", "before 1", "before 2")
    reading = asyncio.create_task(
        read_sse(url, "sse", params={"log_since": "0"}, headers=ADMIN_HEADERS)
    )
    await asyncio.sleep(0.3)  # lines posted before the stream opens arrive all the same
    await append(api, "sse", "live 1")
    await api.update("sse", progress=50)
    await append(api, "sse", "live 2", "live 3")
    await api.update("sse", status="succeeded")
    events = await asyncio.wait_for(reading, 20)  # ends after the terminal event
    lines = lines_of(of_kind(events, "job:log"))
    assert offsets(lines) == [1, 2, 3, 4, 5]
    assert texts(lines) == ["before 1", "before 2", "live 1", "live 2", "live 3"]
    assert [e["seq"] for e in of_kind(events, "job:update")] == [1, 2, 3]
    assert all(re.fullmatch(r"\d+:\d+", e["id"]) for e in events), events
    assert events[-1]["id"] == "3:5"

    # Resume from the id of the first frame: what came after it, once.
    resumed = await read_sse(url, "sse", headers={**ADMIN_HEADERS, "Last-Event-ID": "1:2"})
    assert [e["seq"] for e in of_kind(resumed, "job:update")] == [2, 3]
    assert offsets(lines_of(of_kind(resumed, "job:log"))) == [3, 4, 5]
    # Without log_since the stream is as it always was.
    plain_stream = await read_sse(url, "sse", params={"since": "0"}, headers=ADMIN_HEADERS)
    assert [e["id"] for e in plain_stream] == ["1", "2", "3"]
    assert {e["event"] for e in plain_stream} == {"job:update"}
    bad = await read_sse_status(url, "sse", {"log_since": "x"})
    assert bad == 400


async def read_sse_status(url: str, job_id: str, params: dict[str, str]) -> int:
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.get(
            f"{url}/api/jobs/{job_id}/stream", params=params, headers=ADMIN_HEADERS
        )
    return response.status_code


async def test_sse_says_logs_reset_when_lines_are_gone(start_server: StartServer) -> None:
    server = await start_server(log_lines=2)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        await api.update("short", status="running")
        await append(api, "short", *"abcd")
        await api.update("short", status="failed")
    events = await read_sse(server.url, "short", headers={**ADMIN_HEADERS, "Last-Event-ID": "1:1"})
    assert [e["event"] for e in events][:2] == ["logs_reset", "job:update"]
    assert texts(lines_of(of_kind(events, "job:log"))) == ["c", "d"]


async def test_ws_subscribe_with_log_since(server: Server, api: Api, edge: Edge) -> None:
    url = edge(server).replace("http", "ws", 1) + "/ws"
    await api.update("dev", status="running")
    await append(api, "dev", "boot")
    async with aiohttp.ClientSession() as session:
        client = Plain(await session.ws_connect(url))
        ack = await client.ask("subscribe", job_id="dev", log_since=0)
        assert ack["ok"] and texts(ack["logs"]) == ["boot"] and ack["log_offset"] == 1
        await append(api, "dev", "temp 21C", "temp 22C")
        await append(api, "dev", "temp 23C")
        batches = await client.pushes("job:log", 2)
        assert [offsets(b["lines"]) for b in batches] == [[2, 3], [4]]
        await client.ws.close()
        await append(api, "dev", "while away")
        again = Plain(await session.ws_connect(url))
        ack = await again.ask("subscribe", job_id="dev", log_since=4)
        assert offsets(ack["logs"]) == [5] and ack["logs_reset"] is False
        assert (await again.ask("unsubscribe", job_id="dev"))["ok"]
        await append(api, "dev", "not for me")
        await api.update("dev", progress=1)
        await again.ask("subscribe", job_id="barrier")
        await api.update("barrier", progress=1)  # sent after all of the above
        await again.pushes("job:update", 1)
        pushed = [(p["event"], p["data"].get("id")) for p in again.pushed]
        assert pushed == [("job:update", "barrier")]  # unsubscribed from the job and its lines


# -- the Python client, the CLI ------------------------------------------------------------


async def test_python_client_watches_lines_through_a_restart(
    start_server: StartServer, tmp_path: Path, transport: str
) -> None:
    store, port = f"sqlite:///{tmp_path}/client.db", free_port()
    server = await start_server(store=store, port=port)
    async with AsyncAdmin(server.url, ADMIN, retries=8) as admin:
        await admin.update_job("py", status="running")
        await admin.log("py", ["one", "two"])
        client = SwitchboardClient(
            server.url,
            transports=TRANSPORTS[transport],
            reconnection_delay=0.1,
            reconnection_delay_max=0.5,
        )
        await client.connect()
        stream = client.watch("py", logs=True).__aiter__()
        got = [await anext(stream), await anext(stream)]  # the state, the kept lines
        await admin.log("py", "three", stream="stderr")
        got.append(await anext(stream))

        await server.stop()  # every connection drops
        await start_server(store=store, port=port)
        await admin.log("py", ["four", "five"])  # while the client reconnects
        await admin.update_job("py", progress=50)
        await admin.log("py", "six")
        await admin.update_job("py", status="succeeded")
        got += [item async for item in stream]
        await client.close()
    events = [item for item in got if "seq" in item]
    lines = lines_of([item for item in got if "lines" in item])
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert offsets(lines) == [1, 2, 3, 4, 5, 6]
    assert texts(lines) == ["one", "two", "three", "four", "five", "six"]
    assert lines[2]["stream"] == "stderr"
    assert got[-1]["status"] == "succeeded"  # the lines written before the end came first


async def test_blocking_admin_appends(server: Server) -> None:
    def work() -> list[Any]:
        with Admin(server.url, ADMIN) as admin:
            admin.update_job("sync-logs", status="running")
            return [
                admin.log("sync-logs", "one"),
                admin.log("sync-logs", ["two", {"text": "three", "stream": "stderr"}]),
            ]

    answers = await asyncio.to_thread(work)
    assert answers == [
        {"job_id": "sync-logs", "offsets": [1]},
        {"job_id": "sync-logs", "offsets": [2, 3]},
    ]


def test_cli_watch_prints_the_lines(spawn_server: Spawn) -> None:
    server = spawn_server("--store", "memory://")
    with Admin(server.url, ADMIN) as admin:
        admin.update_job("cli-logs", status="running", progress=10)
        admin.log("cli-logs", ["compiling", "\x1b[31mwarning\x1b[0m: unused"])
        watcher = subprocess.Popen(
            [*switchboard_cmd(), "watch", "cli-logs", "--logs", "--url", server.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == b"compiling\n"  # watching has begun
        # Not a terminal: as written, escape sequences included.
        assert watcher.stdout.readline() == b"\x1b[31mwarning\x1b[0m: unused\n"
        admin.log("cli-logs", ["linking", "done"])
        admin.update_job("cli-logs", status="succeeded", progress=100)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert out.decode().splitlines() == ["linking", "done"]
    assert "cli-logs: succeeded" in err.decode()


def test_cli_watch_json_prints_the_batches(spawn_server: Spawn) -> None:
    server = spawn_server("--store", "memory://")
    with Admin(server.url, ADMIN) as admin:
        admin.update_job("cli-json", status="running")
        admin.log("cli-json", ["a", "b"])
        admin.update_job("cli-json", status="failed")
    result = subprocess.run(
        [*switchboard_cmd(), "watch", "cli-json", "--logs", "--json", "--url", server.url],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    printed = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [item.get("seq") for item in printed] == [None, 2]
    assert offsets(printed[0]["lines"]) == [1, 2] and printed[0]["job_id"] == "cli-json"


# -- the dashboard --------------------------------------------------------------------------


async def line_offsets(page: Any) -> list[int]:
    found = await page.locator("#lines .line").evaluate_all(
        "rows => rows.map(r => +r.dataset.offset)"
    )
    return list(found)


async def test_dashboard_tails_the_lines_as_text(
    server: Server, api: Api, browser: Browser, transport: str
) -> None:
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    await api.update("tail", status="running")
    await append(api, "tail", "first", hostile)
    page = await open_dashboard(browser, server.url, transport)
    await page.click(".job-id:text-is('tail')")
    await page.wait_for_function("() => document.querySelectorAll('#lines .line').length === 2")
    await append(api, "tail", *(f"line {n}" for n in range(3, 41)))
    await page.wait_for_function("() => document.querySelectorAll('#lines .line').length === 40")
    assert await line_offsets(page) == list(range(1, 41))
    assert await page.locator("#lines .line").nth(1).inner_text() == hostile
    assert await page.evaluate("() => window.pwned") is None
    assert await page.locator("main img, main script").count() == 0
    at_bottom = "b => Math.abs(b.scrollTop + b.clientHeight - b.scrollHeight) <= 4"
    assert await page.locator("#lines").evaluate(at_bottom)  # follows the newest line

    await page.locator("#lines").evaluate("b => { b.scrollTop = 0; }")  # the reader scrolls up
    await page.wait_for_selector("#lines-paused:not([hidden])")
    await append(api, "tail", "while paused")
    await page.wait_for_function("() => document.querySelectorAll('#lines .line').length === 41")
    assert await page.locator("#lines").evaluate("b => b.scrollTop") == 0  # left where it was
    await page.locator("#lines").evaluate("b => { b.scrollTop = b.scrollHeight; }")
    await page.wait_for_selector("#lines-paused[hidden]", state="attached")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_dashboard_keeps_a_bounded_tail(server: Server, api: Api, browser: Browser) -> None:
    await api.update("chatty", status="running")
    for start in range(0, 2100, 700):
        await append(api, "chatty", *(f"line {n + 1}" for n in range(start, start + 700)))
    page = await open_dashboard(browser, server.url, "websocket")
    await page.click(".job-id:text-is('chatty')")
    await page.wait_for_function(
        "() => document.querySelector('#lines .line:last-child')?.dataset.offset === '2100'"
    )
    assert await line_offsets(page) == list(range(101, 2101))  # the last 2,000


async def test_watch_logs_resumes_after_a_restart(
    start_server: StartServer, browser: Browser, tmp_path: Path, transport: str
) -> None:
    """/switchboard.js watchLogs beside watchJob on one socket: a restart leaves no gap."""
    store, port = f"sqlite:///{tmp_path}/js.db", free_port()
    server = await start_server(store=store, port=port)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        await api.update("js", status="running")
        await append(api, "js", "a", "b")
        page = await open_dashboard(browser, server.url, transport)
        await page.click(".job-id:text-is('js')")
        await page.wait_for_function("() => document.querySelectorAll('#lines .line').length === 2")
        await server.stop()
        await page.wait_for_selector("#connection[data-state=disconnected]", timeout=15000)
        await start_server(store=store, port=port)
        await append(api, "js", "c", "d")
        await append(api, "js", "e")
        await page.wait_for_function(
            "() => document.querySelectorAll('#lines .line').length >= 5", timeout=20000
        )
        await api.update("js", status="succeeded")
        await page.wait_for_selector(".job[data-status=succeeded]", timeout=20000)
    assert await line_offsets(page) == [1, 2, 3, 4, 5]
    assert await page.locator("#lines .line").all_inner_texts() == list("abcde")
