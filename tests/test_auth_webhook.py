"""--auth-webhook: a small real aiohttp app (the "back end") decides from its own session
cookie who a connection is and what it may see, over every transport, /ws and SSE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
from aiohttp import web

from .conftest import (
    ADMIN,
    ROOT,
    SECRET,
    TRANSPORTS,
    Api,
    Edge,
    Server,
    StartServer,
    free_port,
)
from .test_streams import Plain, sse_events

SESSIONS = {"s-ann": {"sub": "ann", "name": "Ann", "jobs": ["ann-*"], "rooms": ["lobby"]}}
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class Backend:
    """The app's auth endpoint: grants for a known session cookie, 401 otherwise."""

    url: str = ""
    asked: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"  # ok, slow, broken, garbage
    forbidden_jobs: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.asked.append(body)
        if self.mode == "slow":
            await asyncio.sleep(5)
        if self.mode == "broken":
            return web.Response(status=500)
        if self.mode == "garbage":
            return web.json_response({"sub": 42, "jobs": "everything"})
        cookie = body["headers"].get("cookie", "")
        session = SESSIONS.get(cookie.removeprefix("session="))
        if session is None:
            return web.json_response({"error": "sign in"}, status=401)
        if body["event"] == "subscribe" and body["job_id"] in self.forbidden_jobs:
            return web.Response(status=403)
        return web.json_response({**session, "extra": "ignored"})


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    app = web.Application()
    found = Backend()
    app.router.add_post("/switchboard-auth", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}/switchboard-auth"
    yield found
    await runner.cleanup()


@pytest.fixture
async def hooked(start_server: StartServer, backend: Backend) -> Server:
    return await start_server(client_secret=SECRET, auth_webhook=backend.url,
                              auth_webhook_timeout=1.0, auth_webhook_subscribe=True)  # fmt: skip


async def connect(
    url: str, transport: str, cookie: str | None
) -> tuple[socketio.AsyncClient, list[Any]]:
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    errors: list[Any] = []
    sio.on("connect_error", errors.append, "/job")
    headers = {"Cookie": cookie} if cookie else {}
    try:
        await sio.connect(url, namespaces=["/job", "/info"], headers=headers,
                          transports=TRANSPORTS[transport], wait_timeout=10)  # fmt: skip
    except socketio.exceptions.ConnectionError:
        await sio.disconnect()
    return sio, errors


async def test_the_back_end_s_session_cookie_is_enough(
    hooked: Server, backend: Backend, transport: str, edge: Edge
) -> None:
    sio, errors = await connect(edge(hooked), transport, "session=s-ann")
    try:
        assert errors == [] and sio.connected
        whoami = await sio.call("whoami", {}, namespace="/job", timeout=10)
        assert whoami == {"ok": True, "sub": "ann", "name": "Ann", "jobs": ["ann-*"],
                          "rooms": ["lobby"], "cancel": [], "tags": []}  # fmt: skip
        assert (await sio.call("subscribe", {"job_id": "ann-1"}, namespace="/job"))["ok"]
        other = await sio.call("subscribe", {"job_id": "bob-1"}, namespace="/job")
        assert other["error"]["code"] == "forbidden"  # outside the grants: not even asked
        backend.forbidden_jobs.add("ann-2")
        vetoed = await sio.call("subscribe", {"job_id": "ann-2"}, namespace="/job")
        assert (
            vetoed["error"]["code"] == "forbidden" and "auth webhook" in vetoed["error"]["message"]
        )
        joined = await sio.call("join", {"room": "lobby"}, namespace="/info")
        assert joined["members"] == [{"id": "ann", "name": "Ann"}]
    finally:
        await sio.disconnect()
    connects = [asked for asked in backend.asked if asked["event"] == "connect"]
    assert len(connects) == 1  # /job asked; /info's identical request came from the cache
    assert connects[0]["headers"]["cookie"] == "session=s-ann" and connects[0]["auth"] == {}
    assert {asked["event"] for asked in backend.asked} == {"connect", "subscribe", "join"}


async def test_no_session_is_unauthorized_and_a_down_back_end_is_unavailable(
    hooked: Server, backend: Backend, transport: str
) -> None:
    _, errors = await connect(hooked.url, transport, None)
    assert errors == [{"message": "unauthorized"}]
    for mode in ("slow", "broken", "garbage"):
        backend.mode = mode
        _, errors = await connect(hooked.url, transport, "session=s-other")
        assert errors == [{"message": "unavailable"}], mode


async def test_tokens_still_work_beside_the_webhook(
    hooked: Server, backend: Backend, transport: str
) -> None:
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await sio.connect(hooked.url, namespaces=["/job"], auth={"token": ADMIN},
                      transports=TRANSPORTS[transport], wait_timeout=10)  # fmt: skip
    try:
        assert (await sio.call("whoami", {}, namespace="/job"))["sub"] == "admin"
        assert (await sio.call("subscribe", {"job_id": "*"}, namespace="/job"))["ok"]
    finally:
        await sio.disconnect()
    assert backend.asked == []


async def test_a_revoked_sub_ends_webhook_connections(
    hooked: Server, backend: Backend, transport: str
) -> None:
    sio, _ = await connect(hooked.url, transport, "session=s-ann")
    async with httpx.AsyncClient(base_url=hooked.url, headers=ADMIN_HEADERS) as http:
        status, body = await Api(http).post("/api/tokens/revoke", json={"sub": "ann"})
    assert status == 200 and body["disconnected_here"] == 2
    for _ in range(500):
        if not sio.namespaces:
            break
        await asyncio.sleep(0.02)
    assert not sio.namespaces
    await sio.disconnect()


async def test_ws_and_sse_ask_the_back_end_too(
    hooked: Server, backend: Backend, api_hooked: Api
) -> None:
    await api_hooked.update("ann-9", status="succeeded")
    async with httpx.AsyncClient(timeout=20) as http:
        async with http.stream("GET", f"{hooked.url}/api/jobs/ann-9/stream",
                               headers={"Cookie": "session=s-ann"}) as response:  # fmt: skip
            assert response.status_code == 200
            events = [event async for event in sse_events(response)]
        assert [e["event"] for e in events] == ["job:update"]
        refused = await http.get(f"{hooked.url}/api/jobs/ann-9/stream")
        assert refused.status_code == 401
        backend.mode = "broken"
        down = await http.get(f"{hooked.url}/api/jobs/ann-9/stream",
                              headers={"Cookie": "session=s-new"})  # fmt: skip
        assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
    backend.mode = "ok"
    async with aiohttp.ClientSession(headers={"Cookie": "session=s-ann"}) as http:
        ws = await http.ws_connect(hooked.url.replace("http", "ws", 1) + "/ws")
        client = Plain(ws)
        assert (await client.ask("auth"))["ok"]  # no token: the cookie decides
        assert (await client.ask("whoami"))["sub"] == "ann"
        assert (await client.ask("subscribe", job_id="ann-2"))["ok"]
        await ws.close()


@pytest.fixture
async def api_hooked(hooked: Server) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=hooked.url, headers=ADMIN_HEADERS, timeout=10) as http:
        yield Api(http)


async def test_a_bad_webhook_url_is_a_configuration_error(start_server: StartServer) -> None:
    with pytest.raises(ValueError, match="http"):
        await start_server(auth_webhook="ftp://example.test/hook")


async def test_the_readme_s_back_end_runs_as_written(start_server: StartServer) -> None:
    """The README's aiohttp endpoint, executed as written, serving a real Switchboard."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Your back end decides") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n\nSee")]
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    runner = web.AppRunner(scope["app"])
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        server = await start_server(auth_webhook=f"http://127.0.0.1:{port}/switchboard-auth")
        sio, errors = await connect(server.url, "websocket", "session=s-3f9a")
        try:
            assert errors == []
            whoami = await sio.call("whoami", {}, namespace="/job")
            assert (whoami["sub"], whoami["jobs"]) == ("42", ["user-42-*"])
        finally:
            await sio.disconnect()
        _, errors = await connect(server.url, "polling", "session=forged")
        assert errors == [{"message": "unauthorized"}]
    finally:
        await runner.cleanup()
