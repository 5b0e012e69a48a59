"""Cancel from a client to the worker: the `cancel` grant, the event, the worker's signal."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from playwright.async_api import Browser
from switchboard_client import AsyncAdmin, Cancelled

from .conftest import ADMIN, SECRET, Api, Connect, Server, StartServer


def token(**claims: Any) -> str:
    claims = {"sub": "ann", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
async def secured(start_server: StartServer) -> Server:
    return await start_server(client_secret=SECRET)


async def test_a_granted_client_cancels_and_the_worker_learns_it(
    secured: Server, connect: Connect
) -> None:
    ann = await connect(secured.url, auth={"token": token(jobs=["*"], cancel=["build-*"])})
    watcher = await connect(secured.url, auth={"token": token(sub="bob", jobs=["*"])})
    async with AsyncAdmin(secured.url, ADMIN) as worker:
        await worker.update_job("build-1", status="running", progress=10)
        assert (await watcher.call("/job", "subscribe", {"job_id": "build-1"}))["ok"]
        assert not await worker.cancel_requested("build-1")

        ack = await ann.call("/job", "cancel", {"job_id": "build-1"})
        assert ack["ok"] is True
        assert ack["job"]["status"] == "running" and ack["job"]["seq"] == 2
        assert ack["job"]["cancel_requested"]["by"] == "ann"
        again = await ann.call("/job", "cancel", {"job_id": "build-1"})
        assert again["job"]["seq"] == 2  # asking twice changes nothing

        events = await watcher.wait_for("job:update")
        assert [(e["seq"], e["cancel_requested"]["by"]) for e in events] == [(2, "ann")]
        assert await worker.cancel_requested("build-1")
        with pytest.raises(Cancelled) as stop:
            await worker.report("build-1", progress=20)
        assert stop.value.job["seq"] == 3 and stop.value.job["cancel_requested"]["by"] == "ann"
        final = await worker.report("build-1", status="cancelled", message="stopped")
        assert final["status"] == "cancelled" and final["seq"] == 4

    updates = await watcher.wait_for("job:update", 3)
    assert [(e["seq"], e["status"]) for e in updates] == [
        (2, "running"),
        (3, "running"),
        (4, "cancelled"),
    ]
    finished = await ann.call("/job", "cancel", {"job_id": "build-1"})
    assert finished["error"]["code"] == "job_finished"


async def test_cancel_needs_the_grant(secured: Server, connect: Connect) -> None:
    async with AsyncAdmin(secured.url, ADMIN) as admin_api:
        await admin_api.update_job("build-2", status="running")
        await admin_api.update_job("deploy-1", status="running")
    watcher = await connect(secured.url, auth={"token": token(jobs=["*"])})
    refused = await watcher.call("/job", "cancel", {"job_id": "build-2"})
    assert refused["error"]["code"] == "forbidden"
    narrow = await connect(secured.url, auth={"token": token(jobs=["*"], cancel=["build-*"])})
    other = await narrow.call("/job", "cancel", {"job_id": "deploy-1"})
    assert other["error"]["code"] == "forbidden"
    for bad in ({}, {"job_id": "*"}, {"job_id": 5}, {"job_id": "x", "extra": 1}):
        ack = await narrow.call("/job", "cancel", bad)
        assert ack["error"]["code"] == "invalid_payload", bad
    missing = await narrow.call("/job", "cancel", {"job_id": "build-none"})
    assert missing["error"]["code"] == "not_found"
    me = await narrow.call("/job", "whoami", {})
    assert me == {
        "ok": True,
        "sub": "ann",
        "name": None,
        "jobs": ["*"],
        "rooms": [],
        "cancel": ["build-*"],
        "tags": [],
    }
    admin = await connect(secured.url, auth={"token": ADMIN})
    done = await admin.call("/job", "cancel", {"job_id": "deploy-1"})
    assert done["ok"] is True, done


async def test_anonymous_clients_cannot_cancel(server: Server, connect: Connect, api: Api) -> None:
    await api.update("anon-1", status="running")
    anonymous = await connect(server.url)
    refused = await anonymous.call("/job", "cancel", {"job_id": "anon-1"})
    assert refused["error"]["code"] == "forbidden"
    operator = await connect(server.url, auth={"token": ADMIN})  # the admin token still works
    assert (await operator.call("/job", "cancel", {"job_id": "anon-1"}))["ok"] is True


async def test_cancel_over_http_and_ws(server: Server, api: Api) -> None:
    await api.update("http-1", status="running")
    status, job = await api.post("/api/jobs/http-1/cancel")
    assert status == 200 and job["cancel_requested"]["by"] == "admin" and job["seq"] == 2
    status, again = await api.post("/api/jobs/http-1/cancel")
    assert status == 200 and again["seq"] == 2
    status, body = await api.post("/api/jobs/nope/cancel")
    assert status == 404 and body["error"]["code"] == "not_found"
    await api.update("http-1", status="cancelled")
    status, body = await api.post("/api/jobs/http-1/cancel")
    assert status == 409 and body["error"]["code"] == "job_finished"

    import aiohttp  # the plain WebSocket takes the same op

    await api.update("ws-1", status="running")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url.replace("http", "ws") + f"/ws?token={ADMIN}")
        await ws.send_json({"op": "cancel", "ref": 1, "job_id": "ws-1"})
        answer = await asyncio.wait_for(ws.receive_json(), 10)
        assert answer["ref"] == 1 and answer["job"]["cancel_requested"]["by"] == "admin"
        await ws.close()


async def test_dashboard_cancel_button(start_server: StartServer, browser: Browser) -> None:
    """Shown only to a connection whose grants cover the job; the worker ends it."""
    server = await start_server(client_secret=SECRET)
    async with AsyncAdmin(server.url, ADMIN) as worker:
        await worker.update_job("build-9", status="running", progress=30)
        await worker.update_job("other-1", status="running", progress=30)
        viewer = await browser.new_page()
        await viewer.goto(f"{server.url}/?token={token(sub='viewer', jobs=['*'])}")
        await viewer.wait_for_selector(".job-id:text-is('build-9')")
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{server.url}/?token={token(jobs=['*'], cancel=['build-*'])}")
        button = page.locator(".job:has(.job-id:text-is('build-9')) .cancel")
        await button.wait_for(state="visible")
        other = page.locator(".job:has(.job-id:text-is('other-1')) .cancel")
        assert await other.is_hidden()
        assert await viewer.locator(".cancel:visible").count() == 0  # no cancel grant
        await button.click()
        await page.wait_for_function(
            "() => document.querySelector('.job:has(.job-id) .cancel:disabled') !== null"
        )
        with pytest.raises(Cancelled):
            await worker.report("build-9", progress=40)
        await worker.report("build-9", status="cancelled")
        await page.wait_for_selector(
            ".job[data-status=cancelled] .cancel[hidden]", state="attached"
        )
        await viewer.wait_for_selector(".job[data-status=cancelled]")
    assert errors == []
