"""One suite that every store backend passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest
from switchboard_server.errors import ApiError
from switchboard_server.models import (
    Announcement,
    ChatMessage,
    JobCreate,
    JobUpdate,
    LogEntry,
    apply_change,
    new_id,
    now_iso,
)
from switchboard_server.storage import NotReplicated, Store, open_store
from switchboard_server.storage.base import CHAT_HISTORY

from .conftest import RedisProcess


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    backend = open_store(store_url, history=5, prefix=f"test-{new_id()}:")
    await backend.open()
    yield backend
    await backend.close()


def update(job_id: str, **fields: object) -> partial:  # type: ignore[type-arg]
    return partial(apply_change, job_id, change=JobUpdate.model_validate(fields), create=False)


async def test_apply_creates_then_advances(store: Store) -> None:
    first = await store.apply("j", update("j", progress=1))
    second = await store.apply("j", update("j", status="running"))
    assert (first["seq"], second["seq"]) == (1, 2)
    assert second["progress"] == 1 and second["status"] == "running"
    assert await store.get_job("j") == second
    assert await store.get_job("missing") is None


async def test_a_refused_mutation_writes_nothing(store: Store) -> None:
    await store.apply("j", update("j", status="failed"))
    with pytest.raises(ApiError) as refused:
        await store.apply("j", update("j", progress=5))
    assert refused.value.code == "job_finished"
    create = partial(apply_change, "j", change=JobCreate(), create=True)
    with pytest.raises(ApiError):
        await store.apply("j", create)
    job = await store.get_job("j")
    assert job is not None and job["seq"] == 1
    assert [e["seq"] for e in await store.events_after("j", 0, 100)] == [1]


async def test_history_is_trimmed_to_the_setting(store: Store) -> None:
    for n in range(12):
        await store.apply("h", update("h", progress=n))
    assert [e["seq"] for e in await store.events_after("h", 0, 100)] == [8, 9, 10, 11, 12]
    assert [e["seq"] for e in await store.events_after("h", 9, 2)] == [10, 11]
    events = await store.events_after("h", 11, 100)
    assert events == [await store.get_job("h")]


async def test_concurrent_updates_get_consecutive_seqs(store: Store) -> None:
    jobs = await asyncio.gather(*(store.apply("c", update("c", progress=n)) for n in range(50)))
    assert sorted(j["seq"] for j in jobs) == list(range(1, 51))
    assert (await store.get_job("c"))["seq"] == 50  # type: ignore[index]


async def test_list_delete_and_purge(store: Store) -> None:
    await store.apply("a", update("a", status="succeeded"))
    await asyncio.sleep(0.002)
    await store.apply("b", update("b", status="running"))
    await asyncio.sleep(0.002)
    await store.apply("c", update("c", status="failed"))
    assert [j["id"] for j in await store.list_jobs(None, 10)] == ["c", "b", "a"]
    assert [j["id"] for j in await store.list_jobs("running", 10)] == ["b"]
    assert [j["id"] for j in await store.list_jobs(None, 1)] == ["c"]
    assert await store.delete_job("c") is True
    assert await store.delete_job("c") is False
    assert await store.events_after("c", 0, 10) == []
    removed = await store.purge(now_iso(), time.time())
    assert removed == 1  # the finished one; running jobs stay whatever their age
    assert [j["id"] for j in await store.list_jobs(None, 10)] == ["b"]


async def test_announcements_newest_first_with_room_filter(store: Store) -> None:
    def make(text: str, room: str | None) -> Announcement:
        return {"id": new_id(), "level": "info", "text": text, "room": room, "ts": now_iso()}

    for text, room in [("all-1", None), ("math", "math"), ("art", "art"), ("all-2", None)]:
        await store.add_announcement(make(text, room))
    assert [a["text"] for a in await store.recent_announcements(10)] == [
        "all-2", "art", "math", "all-1",
    ]  # fmt: skip
    assert [a["text"] for a in await store.recent_announcements(10, ["math"])] == [
        "all-2", "math", "all-1",
    ]  # fmt: skip
    assert [a["text"] for a in await store.recent_announcements(10, [])] == ["all-2", "all-1"]
    assert len(await store.recent_announcements(2)) == 2


async def test_chat_keeps_the_last_messages_per_room(store: Store) -> None:
    def make(room: str, text: str) -> ChatMessage:
        sender = {"id": "u", "name": None}
        return {"id": new_id(), "room": room, "text": text, "sender": sender, "ts": now_iso()}  # type: ignore[typeddict-item]

    for n in range(CHAT_HISTORY + 10):
        await store.add_message(make("busy", f"m{n}"))
        if n % 20 == 0:
            await store.add_message(make("quiet", f"q{n}"))
    busy = [m["text"] for m in await store.recent_messages("busy")]
    assert busy == [f"m{n}" for n in range(10, CHAT_HISTORY + 10)]
    assert [m["text"] for m in await store.recent_messages("quiet")] == ["q0", "q20", "q40"]
    assert await store.recent_messages("empty") == []


async def test_idempotent_responses_expire(store: Store, store_url: str) -> None:
    await store.put_response("k1", {"status": 201, "body": {"x": 1}}, time.time() + 60)
    assert await store.get_response("k1", time.time()) == {"status": 201, "body": {"x": 1}}
    assert await store.get_response("k1", time.time() + 120) is None
    job = await store.apply("i", update("i", progress=1), idempotency_key="k2")
    assert await store.get_response("k2", time.time()) == {"status": 201, "body": job}
    if store_url.startswith("redis"):
        return  # Redis expires the keys itself (EX), on its own clock
    await store.purge(now_iso(), time.time() + 10 * 24 * 3600)
    assert await store.get_response("k1", time.time()) is None


async def test_presence_counts_distinct_members(store: Store) -> None:
    await store.add_member("r", "sid-1", {"id": "ann", "name": "Ann"})
    await store.add_member("r", "sid-2", {"id": "ann", "name": "Ann"})  # a second tab
    await store.add_member("r", "sid-3", {"id": "bob", "name": "Bob"})
    assert sorted(m["id"] for m in await store.members("r")) == ["ann", "bob"]
    await store.remove_member("r", "sid-3")
    await store.remove_member("r", "sid-unknown")
    assert [m["id"] for m in await store.members("r")] == ["ann"]


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/durable.db"
    first = open_store(url, history=100)
    await first.open()
    for n in range(3):
        await first.apply("d", update("d", progress=n))
    await first.close()
    second = open_store(url, history=100)
    await second.open()
    assert [e["seq"] for e in await second.events_after("d", 0, 10)] == [1, 2, 3]
    assert (await second.apply("d", update("d", progress=9)))["seq"] == 4
    await second.close()


def test_unknown_store_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown store"):
        open_store("postgres://x", history=1)


async def test_redis_writes_wait_for_replicas_and_reload_their_scripts(
    start_redis: Callable[[], RedisProcess],
) -> None:
    """With --redis-replicas and no replica, a job update and log lines are committed and
    said to be unreplicated (WAIT on the write's connection); after SCRIPT FLUSH (a Redis
    restart) the scripts are loaded again and the writes go on."""
    redis = start_redis()
    store = open_store(redis.url, history=5, prefix=f"test-{new_id()}:", redis_replicas=1)
    await store.open()
    try:
        for flush in (False, True):
            if flush:
                assert await store.redis.script_flush()  # type: ignore[attr-defined]
            with pytest.raises(NotReplicated) as job:
                await store.apply("j", update("j", progress=int(flush)))
            assert job.value.committed["seq"] == 1 + flush
            entry: LogEntry = {"text": "line", "stream": "stdout", "ts": now_iso()}
            with pytest.raises(NotReplicated) as lines:
                await store.append_logs("j", [entry])
            assert [line["offset"] for line in lines.value.committed] == [1 + flush]
        assert [event["seq"] for event in await store.events_after("j", 0, 10)] == [1, 2]
    finally:
        await store.close()
