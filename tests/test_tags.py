"""Tags and parents: "my jobs" and batches. Jobs carry tags and a parent; a client follows
every job with a tag (grants: `tags` globs); a parent's children are summed up live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
import socketio
from playwright.async_api import Browser
from switchboard_client import AsyncAdmin, SwitchboardClient
from switchboard_server.http_api import HUB
from switchboard_server.storage.memory import MemoryStore

from .conftest import (
    ADMIN,
    SECRET,
    TRANSPORTS,
    Api,
    Connect,
    RedisProcess,
    Server,
    ServerProcess,
    StartServer,
)

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def token(**claims: Any) -> str:
    body = {"sub": "ann", "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def following(connect: Connect, url: str, auth_token: str) -> Any:
    events = (("job:children", "/job"), ("unsubscribed", "/job"))
    return await connect(url, auth={"token": auth_token}, namespaces=("/job",), events=events)


def seqs_by_job(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for event in events:
        found.setdefault(event["id"], []).append(event["seq"])
    return found


# -- the HTTP side ------------------------------------------------------------------


async def test_jobs_carry_tags_and_a_parent_and_list_by_them(
    start_server: StartServer, store_url: str
) -> None:
    server = await start_server(store=store_url, redis_prefix=f"tags-{time.monotonic_ns()}:")
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        status, batch = await api.post("/api/jobs", json={"id": "batch-7", "tags": ["user:42"]})
        assert status == 201 and batch["tags"] == ["user:42"] and batch["parent"] is None
        tags = ["user:42", "batch:7", "user:42"]  # a repeated tag counts once
        for n in range(3):
            await api.post("/api/jobs", json={"id": f"part-{n}", "parent": "batch-7", "tags": tags})
        await api.update("other", status="running", tags=["user:43"])
        await api.update("part-0", progress=50)  # the newest now
        await api.update("part-1", tags=["batch:7"])  # no longer user:42's

        _, mine = await api.get("/api/jobs", params={"tag": "user:42"})
        assert [job["id"] for job in mine["jobs"]] == ["part-0", "part-2", "batch-7"]
        _, parts = await api.get("/api/jobs", params={"parent": "batch-7", "limit": 2})
        assert [job["id"] for job in parts["jobs"]] == ["part-1", "part-0"]
        _, running = await api.get("/api/jobs", params={"tag": "user:43", "status": "running"})
        assert [job["id"] for job in running["jobs"]] == ["other"]
        _, summary = await api.get("/api/jobs/batch-7/children")
        assert summary["total"] == 3 and summary["by_status"] == {"queued": 3}
        assert summary["progress"] == 50.0  # the mean of those that report one
        assert (await api.get("/api/jobs/other/children"))[0] == 404

        await api.delete("/api/jobs/part-0")
        _, mine = await api.get("/api/jobs", params={"tag": "user:42"})
        assert [job["id"] for job in mine["jobs"]] == ["part-2", "batch-7"]


@pytest.mark.parametrize(
    "body",
    [
        {"tags": [f"t{n}" for n in range(17)]}, {"tags": ["has space"]},
        {"tags": [":lead"]}, {"tags": ["x" * 65]}, {"tags": "user:42"}, {"tags": None},
        {"tags": [5]}, {"parent": "self"}, {"parent": "bad id"}, {"parent": 7},
    ],
    ids=["17", "space", "leading-colon", "long", "string", "null", "number",
         "own-parent", "bad-parent", "number-parent"],
)  # fmt: skip
async def test_bad_tags_and_parents_are_400(secured: Server, secured_admin: Api, body: Any) -> None:
    status, answer = await secured_admin.post("/api/jobs", json={"id": "self", **body})
    assert status == 400 and answer["error"]["code"] == "invalid_payload", answer


@pytest.mark.parametrize("query", [{"tag": "bad tag"}, {"tag": ""}, {"parent": "bad id"}])
async def test_bad_list_filters_are_400(secured: Server, secured_admin: Api, query: Any) -> None:
    status, answer = await secured_admin.get("/api/jobs", params=query)
    assert status == 400 and answer["error"]["code"] == "invalid_payload"


# -- following a tag ----------------------------------------------------------------


async def test_a_client_follows_every_job_with_its_tag(
    secured: Server, secured_admin: Api, connect: Connect
) -> None:
    await secured_admin.update("old", tags=["user:42"])
    await secured_admin.update("theirs", tags=["user:43"])
    client = await following(connect, secured.url, token(tags=["user:42"]))
    ack = await client.call("/job", "subscribe", {"tag": "user:42"})
    assert ack["ok"] and ack["tag"] == "user:42"
    assert [job["id"] for job in ack["jobs"]] == ["old"]

    for n in range(3):
        await secured_admin.update("old", progress=n)
        await secured_admin.update("theirs", progress=n)  # not for this client
    await secured_admin.update("new", tags=["user:42", "batch:1"])  # a new job with the tag
    await secured_admin.update("theirs", tags=["user:43", "user:42"])  # gains it
    await secured_admin.update("new", status="succeeded")  # the marker: last of all
    events = await client.wait_for("job:update", 6)  # "new" succeeded is the last of them
    assert seqs_by_job(events) == {"old": [2, 3, 4], "new": [1, 2], "theirs": [5]}


async def test_the_update_that_takes_a_tag_away_is_its_followers_last(
    start_server: StartServer, store_url: str, connect: Connect
) -> None:
    """A follower of user:42 gets the event that takes the tag away (it names it in
    `tags_removed`), then nothing more of that job; catch-up carries the same event."""
    server = await start_server(
        store=store_url, client_secret=SECRET, redis_prefix=f"tags-{time.monotonic_ns()}:"
    )
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        await api.update("j", tags=["user:42", "batch:1"])
        await api.update("k", tags=["user:42"])
        await api.update("marker", tags=["user:42"])
        client = await following(connect, server.url, token(tags=["user:42"]))
        assert (await client.call("/job", "subscribe", {"tag": "user:42"}))["ok"]

        await api.update("j", progress=10)
        answer = await api.update("j", tags=["batch:1"])  # replaced: user:42 is gone
        assert answer["tags"] == ["batch:1"] and answer["tags_removed"] == ["user:42"]
        await api.update("k", tags=[])
        await api.update("j", progress=20)  # no longer user:42's: not for this client
        await api.post("/api/jobs/j/cancel")
        await api.update("marker", progress=1)  # the marker: last of all
        events = await client.wait_for("job:update", 4)
        assert [(e["id"], e["seq"], e["tags"], e.get("tags_removed")) for e in events] == [
            ("j", 2, ["user:42", "batch:1"], None),
            ("j", 3, ["batch:1"], ["user:42"]),
            ("k", 2, [], ["user:42"]),
            ("marker", 2, ["user:42"], None),
        ]
        removals = {event["id"]: event for event in events if "tags_removed" in event}

        watcher = await following(connect, server.url, token(jobs=["j"]))
        ack = await watcher.call("/job", "subscribe", {"job_id": "j", "since": 0})
        assert [event["seq"] for event in ack["missed"]] == [1, 2, 3, 4, 5]
        assert ack["missed"][2] == removals["j"]  # as it came live
        assert [event.get("tags_removed") for event in ack["missed"]] == [
            None, None, ["user:42"], None, None,
        ]  # fmt: skip
        _, kept = await api.get("/api/jobs/k/events", params={"since": 1})
        assert kept["events"] == [removals["k"]]
        _, state = await api.get("/api/jobs/k")
        assert "tags_removed" not in state and state["seq"] == 2


async def test_tag_grants(secured: Server, secured_admin: Api, connect: Connect) -> None:
    client = await following(connect, secured.url, token(tags=["user:42"], jobs=["x"]))
    refused = await client.call("/job", "subscribe", {"tag": "user:43"})
    assert refused["error"]["code"] == "forbidden"
    everything = await following(connect, secured.url, token(jobs=["*"]))
    assert (await everything.call("/job", "subscribe", {"tag": "user:43"}))["ok"]
    for payload in ({"tag": "bad tag"}, {"tag": "a", "job_id": "b"}, {}, {"tag": 5}):
        answer = await client.call("/job", "subscribe", payload)
        assert answer["error"]["code"] == "invalid_payload", payload

    assert (await client.call("/job", "subscribe", {"tag": "user:42"}))["ok"]
    narrower = token(tags=["user:9"], jobs=["x"])
    ack = await client.call("/job", "refresh", {"token": narrower})
    assert ack["ended"] == ["tag:user:42"]
    [ended] = await client.wait_for("unsubscribed")
    assert ended["tag"] == "user:42" and ended["error"]["code"] == "forbidden"
    await secured_admin.update("j", tags=["user:42"])  # must not arrive
    assert (await client.call("/job", "subscribe", {"job_id": "x"}))["ok"]
    await secured_admin.update("x", progress=1)  # the marker
    [update] = await client.wait_for("job:update")
    assert update["id"] == "x"
    assert (await client.call("/job", "unsubscribe", {"tag": "user:9"}))["ok"]


async def test_a_parent_hears_its_children(
    secured: Server, secured_admin: Api, connect: Connect
) -> None:
    await secured_admin.update("batch", status="running", tags=["user:42"])
    client = await following(connect, secured.url, token(jobs=["batch"]))
    ack = await client.call("/job", "subscribe", {"job_id": "batch"})
    assert "children" not in ack  # none yet
    for n in range(3):
        await secured_admin.update(f"child-{n}", parent="batch", progress=0)
    await secured_admin.update("child-0", status="succeeded", progress=100)
    for _ in range(500):
        summaries = client.received.get("job:children", [])
        if summaries and summaries[-1]["by_status"] == {"queued": 2, "succeeded": 1}:
            break
        await asyncio.sleep(0.02)
    last = client.received["job:children"][-1]
    assert last == {"job_id": "batch", "total": 3, "by_status": {"queued": 2, "succeeded": 1},
                    "progress": round(100 / 3, 3), "updated_at": last["updated_at"]}  # fmt: skip
    again = await client.call("/job", "subscribe", {"job_id": "batch", "since": 0})
    assert again["children"]["total"] == 3

    # A child that moves to another parent, or is deleted, leaves the summary too.
    async def total(expected: int) -> dict[str, Any]:
        for _ in range(500):
            if client.received["job:children"][-1]["total"] == expected:
                break
            await asyncio.sleep(0.02)
        return dict(client.received["job:children"][-1])

    await secured_admin.update("child-1", parent="other")
    assert (await total(2))["by_status"] == {"queued": 1, "succeeded": 1}
    await secured_admin.delete("/api/jobs/child-2")
    assert (await total(1))["by_status"] == {"succeeded": 1}
    await secured_admin.delete("/api/jobs/child-0")
    assert (await total(0))["by_status"] == {}


class Reads(dict[str, Any]):
    """A memory store's jobs, noting the ids of those read."""

    def __init__(self, jobs: dict[str, Any]) -> None:
        super().__init__(jobs)
        self.read: set[str] = set()

    def __getitem__(self, job_id: str) -> Any:
        self.read.add(job_id)
        return super().__getitem__(job_id)

    def get(self, job_id: str, default: Any = None) -> Any:
        self.read.add(job_id)
        return super().get(job_id, default)

    def __iter__(self) -> Any:
        self.read.update(super().keys())
        return super().__iter__()

    def values(self) -> Any:
        self.read.update(super().keys())
        return super().values()

    def items(self) -> Any:
        self.read.update(super().keys())
        return super().items()


async def test_a_subscribe_reads_the_job_and_its_children_only(server: Server, api: Api) -> None:
    """The ack's `children` comes from the parent's index, not from a look at every job."""
    await asyncio.gather(*(api.update(f"other-{n}", tags=["user:1"]) for n in range(50)))
    await api.update("batch", status="running")
    for n in range(3):
        await api.update(f"child-{n}", parent="batch")
    await api.update("child-2", parent="other-0")  # moved to another batch
    await api.delete("/api/jobs/child-1")
    store = server.app[HUB].store
    assert isinstance(store, MemoryStore)
    jobs = store._jobs = Reads(store._jobs)
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(server.url, namespaces=["/job"], auth={"token": ADMIN}, wait_timeout=10)
    try:
        ack = await sio.call("subscribe", {"job_id": "other-1"}, namespace="/job")
        assert ack["ok"] and "children" not in ack  # not a parent
        assert jobs.read == {"other-1"}
        jobs.read.clear()
        ack = await sio.call("subscribe", {"job_id": "batch"}, namespace="/job")
        assert ack["children"]["total"] == 1
        assert jobs.read == {"batch", "child-0"}
    finally:
        await sio.disconnect()


async def test_tag_followers_on_every_node_get_each_job_in_order(
    spawn_server: Callable[..., ServerProcess], start_redis: Callable[[], RedisProcess],
    transport: str,
) -> None:  # fmt: skip
    """Two nodes, updates to three tagged jobs through both at once: a tag follower on each
    node gets every job's events in seq order, none missing, none twice."""
    redis = start_redis()
    nodes = [spawn_server("--store", redis.url) for _ in range(2)]
    followers = []
    for node in nodes:
        sio = socketio.AsyncClient(reconnection=False)
        seen: list[dict[str, Any]] = []
        sio.on("job:update", seen.append, namespace="/job")
        await sio.connect(node.url, namespaces=["/job"], auth={"token": ADMIN},
                          transports=TRANSPORTS[transport], wait_timeout=10)  # fmt: skip
        assert (await sio.call("subscribe", {"tag": "hot"}, namespace="/job"))["ok"]
        followers.append((sio, seen))
    admins = [AsyncAdmin(node.url, ADMIN) for node in nodes]
    try:
        jobs = ["a", "b", "c"]
        for job_id in jobs:
            await admins[0].create_job(job_id, tags=["hot"])
        await asyncio.gather(*(admins[n % 2].update_job(jobs[n % 3], progress=n)
                               for n in range(60)))  # fmt: skip
        for _, seen in followers:
            for _ in range(1000):
                if len(seen) >= 63:
                    break
                await asyncio.sleep(0.02)
            assert seqs_by_job(seen) == {job_id: list(range(1, 22)) for job_id in jobs}
    finally:
        for admin in admins:
            await admin.close()
        for sio, _ in followers:
            await sio.disconnect()


async def test_a_follower_on_another_node_gets_the_update_that_takes_its_tag_away(
    spawn_server: Callable[..., ServerProcess], start_redis: Callable[[], RedisProcess],
    connect: Connect,
) -> None:  # fmt: skip
    """Each node finds the rooms in the event itself: committed on one node, the event that
    takes a tag away reaches that tag's follower on the other."""
    redis = start_redis()
    nodes = [spawn_server("--store", redis.url) for _ in range(2)]
    client = await following(connect, nodes[1].url, ADMIN)
    assert (await client.call("/job", "subscribe", {"tag": "hot"}))["ok"]
    admin = AsyncAdmin(nodes[0].url, ADMIN)
    try:
        await admin.create_job("a", tags=["hot", "cold"])
        await admin.create_job("b", tags=["hot"])
        await admin.update_job("a", tags=["cold"])
        await admin.update_job("a", progress=1)  # not for this follower
        await admin.update_job("b", progress=1)  # the marker
        events = await client.wait_for("job:update", 4)
        assert [(e["id"], e["seq"], e.get("tags_removed")) for e in events] == [
            ("a", 1, None), ("b", 1, None), ("a", 2, ["hot"]), ("b", 2, None),
        ]  # fmt: skip
    finally:
        await admin.close()


async def test_the_dashboard_filters_by_tag_and_nests_a_batch(
    secured: Server, secured_admin: Api, browser: Browser
) -> None:
    await secured_admin.update("batch-7", status="running", tags=["user:42"])
    await secured_admin.update("part-a", parent="batch-7", status="succeeded", tags=["user:42"])
    await secured_admin.update("part-b", parent="batch-7", status="running", tags=["user:42"])
    await secured_admin.update("someone-else", status="running", tags=["user:43"])
    page = await browser.new_page()
    await page.goto(f"{secured.url}/?tag=user:42&token={token(tags=['user:42'])}")
    batch = page.locator("#jobs > li.job", has_text="batch-7")
    await batch.locator(".children > li.job").nth(1).wait_for()
    assert await page.locator("#jobs > li.job").count() == 1  # the parts sit inside the batch
    children = batch.locator(".children > li.job .job-id")
    assert sorted(await children.all_text_contents()) == ["part-a", "part-b"]
    summary = await batch.locator(".children-summary").first.text_content()
    assert summary is not None and summary.startswith("2 children")
    assert "1 succeeded" in summary and "1 running" in summary
    assert await page.locator("text=someone-else").count() == 0
    await secured_admin.update("part-c", parent="batch-7", status="queued", tags=["user:42"])
    await batch.locator(".children > li.job").nth(2).wait_for()  # live
    await secured_admin.update("part-b", tags=["user:43"])  # no longer user:42's: it goes
    await page.locator(".job-id", has_text="part-b").wait_for(state="detached")
    await secured_admin.update("batch-7", tags=[])  # its parts stay, in the list itself
    await page.locator(".job-id", has_text="batch-7").wait_for(state="detached")
    shown = page.locator("#jobs > li.job .job-id")
    assert sorted(await shown.all_text_contents()) == ["part-a", "part-c"]
    await page.locator("#clear-filter").click()  # this token cannot see every job
    refused = "() => document.querySelector('#job-count').textContent.includes('every job')"
    await page.wait_for_function(refused)


async def test_python_client_follows_a_tag(secured: Server, secured_admin: Api) -> None:
    await secured_admin.update("mine", tags=["user:7"], progress=1)
    async with SwitchboardClient(secured.url, token=token(tags=["user:7"])) as client:
        seen: list[dict[str, Any]] = []
        client.on("job:update", seen.append)
        assert [job["id"] for job in await client.subscribe_tag("user:7")] == ["mine"]
        await secured_admin.update("mine", progress=2)
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert [job["seq"] for job in seen] == [2]
