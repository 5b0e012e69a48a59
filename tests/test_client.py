"""The Python client library against a real server: watch, resume, rooms, admin helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from switchboard_client import Admin, AsyncAdmin, SwitchboardClient, SwitchboardError

from .conftest import ADMIN, SECRET, TRANSPORTS, Edge, Server, StartServer, free_port


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def client_for(
    server: Server, transport: str, url: str | None = None, **options: Any
) -> SwitchboardClient:
    return SwitchboardClient(
        url or server.url,
        transports=TRANSPORTS[transport],
        reconnection_delay=0.1,
        reconnection_delay_max=0.5,
        **options,
    )


async def test_watch_follows_a_job_to_its_end(server: Server, transport: str) -> None:
    async with AsyncAdmin(server.url, ADMIN) as admin:
        await admin.create_job("w1", status="running", progress=0)
        got: list[dict[str, Any]] = []
        async with client_for(server, transport) as client:
            async for event in client.watch("w1"):
                got.append(event)
                if len(got) == 1:
                    for n in range(1, 10):
                        await admin.update_job("w1", progress=n * 10, message=f"step {n}")
                    await admin.update_job("w1", status="succeeded")
    assert seqs(got) == list(range(1, 12))
    assert got[-1]["status"] == "succeeded" and got[-1]["progress"] == 90


async def test_watch_waits_for_a_job_that_does_not_exist_yet(
    server: Server, transport: str
) -> None:
    async with client_for(server, transport) as client, AsyncAdmin(server.url, ADMIN) as admin:
        watching = asyncio.create_task(_collect(client.watch("future")))
        await asyncio.sleep(0.2)
        await admin.create_job("future")
        await admin.update_job("future", status="failed", message="boom")
        got = await asyncio.wait_for(watching, 10)
    assert seqs(got) == [1, 2] and got[-1]["status"] == "failed"


async def _collect(stream: Any) -> list[dict[str, Any]]:
    return [event async for event in stream]


async def test_watch_resumes_across_a_server_restart(
    start_server: StartServer, tmp_path: Path, transport: str, edge: Edge
) -> None:
    store, port = f"sqlite:///{tmp_path}/restart.db", free_port()
    server = await start_server(store=store, port=port)
    url = edge(server)
    async with AsyncAdmin(url, ADMIN, retries=8) as admin:
        await admin.update_job("r", status="running", progress=0)
        client = client_for(server, transport, url=url)
        await client.connect()
        stream = client.watch("r").__aiter__()
        got = [await anext(stream)]
        await admin.update_job("r", progress=10)
        got.append(await anext(stream))

        await server.stop()  # every connection drops
        await start_server(store=store, port=port)
        for n in range(2, 6):  # published while the client is reconnecting
            await admin.update_job("r", progress=n * 10)
        await admin.update_job("r", status="succeeded", progress=100)
        got += [event async for event in stream]
        await client.close()
    assert seqs(got) == list(range(1, 8))
    assert got[-1]["status"] == "succeeded"


async def test_watch_outside_the_grants_raises_forbidden(start_server: StartServer) -> None:
    server = await start_server(client_secret=SECRET)
    async with AsyncAdmin(server.url, ADMIN) as admin:
        token = (await admin.mint_token("u", jobs=["mine-*"]))["token"]
    async with SwitchboardClient(server.url, token=token) as client:
        with pytest.raises(SwitchboardError) as refused:
            await anext(client.watch("theirs").__aiter__())
    assert refused.value.code == "forbidden"


async def test_bad_token_raises_unauthorized(start_server: StartServer) -> None:
    server = await start_server(client_secret=SECRET)
    client = SwitchboardClient(server.url, token="nonsense")
    with pytest.raises(SwitchboardError) as refused:
        await client.connect()
    assert refused.value.code == "unauthorized"


async def test_rooms_messages_and_announcements(server: Server, transport: str) -> None:
    async with (
        client_for(server, transport, name="Ann") as ann,
        client_for(server, transport, name="Bob") as bob,
        AsyncAdmin(server.url, ADMIN) as admin,
    ):
        heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        ann.on("message", heard.put_nowait)
        await ann.join("class")
        joined = await bob.join("class")
        assert sorted(m["name"] for m in joined["members"]) == ["Ann", "Bob"]
        sent = await bob.send("class", "hello")
        assert await asyncio.wait_for(heard.get(), 5) == sent

        announcements = bob.stream("announcement")
        await admin.announce("maintenance at noon", level="warning")
        got = await asyncio.wait_for(anext(announcements), 5)
        assert got["text"] == "maintenance at noon" and got["level"] == "warning"
        recent = await ann.recent_announcements()
        assert [a["text"] for a in recent] == ["maintenance at noon"]
        await bob.leave("class")


async def test_blocking_admin_helper(server: Server) -> None:
    def work() -> list[dict[str, Any]]:
        with Admin(server.url, ADMIN) as admin:
            admin.create_job("sync-1")
            admin.update_job("sync-1", status="running", progress=None)
            admin.update_job("sync-1", status="succeeded", progress=100)
            with pytest.raises(SwitchboardError) as refused:
                admin.update_job("sync-1", progress=1)
            assert refused.value.status == 409 and refused.value.code == "job_finished"
            assert admin.get_job("sync-1")["seq"] == 3
            assert [j["id"] for j in admin.list_jobs(status="succeeded")] == ["sync-1"]
            events = admin.events("sync-1", since=1)
            admin.delete_job("sync-1")
            return events["events"]  # type: ignore[no-any-return]

    events = await asyncio.to_thread(work)
    assert seqs(events) == [2, 3]


def test_admin_gives_up_on_an_unreachable_server() -> None:
    with Admin(f"http://127.0.0.1:{free_port()}", ADMIN, retries=2, backoff=0.01) as admin:
        with pytest.raises(SwitchboardError) as failed:
            admin.update_job("x", progress=1)
    assert failed.value.code == "unreachable" and failed.value.status == 0


async def test_admin_retries_until_the_server_is_up(start_server: StartServer) -> None:
    port = free_port()
    async with AsyncAdmin(f"http://127.0.0.1:{port}", ADMIN, retries=6, backoff=0.1) as admin:
        pending = asyncio.create_task(admin.update_job("late", progress=1))
        await asyncio.sleep(0.3)
        await start_server(port=port)
        job = await asyncio.wait_for(pending, 10)
    assert job["seq"] == 1
