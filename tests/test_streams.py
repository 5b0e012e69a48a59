"""Server-Sent Events and the plain WebSocket /ws, directly and through nginx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from .conftest import ADMIN, ROOT, SECRET, Api, Connect, Edge, Server, StartServer, require_binary

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse an event stream into {"id", "event", "data"} dicts."""
    fields: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def read_stream(url: str, job_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream("GET", f"{url}/api/jobs/{job_id}/stream", **kwargs) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in sse_events(response)]


async def test_sse_streams_a_job_to_its_end(server: Server, api: Api, edge: Edge) -> None:
    await api.update("sse", status="running", progress=0)
    reading = asyncio.create_task(read_stream(edge(server), "sse", headers=ADMIN_HEADERS))
    await asyncio.sleep(0.3)
    for n in (30, 60, 90):
        await api.update("sse", progress=n)
    await api.update("sse", status="succeeded", progress=100)
    events = await asyncio.wait_for(reading, 20)  # the stream ends after the terminal event
    assert [e["id"] for e in events] == ["1", "2", "3", "4", "5"]
    assert {e["event"] for e in events} == {"job:update"}
    assert json.loads(events[-1]["data"])["status"] == "succeeded"


async def test_sse_resumes_from_last_event_id_and_since(server: Server, api: Api) -> None:
    for n in range(5):
        await api.update("again", progress=n)
    await api.update("again", status="failed")
    events = await read_stream(server.url, "again", headers={**ADMIN_HEADERS, "Last-Event-ID": "3"})
    assert [e["id"] for e in events] == ["4", "5", "6"]
    events = await read_stream(server.url, "again", params={"since": 5}, headers=ADMIN_HEADERS)
    assert [e["id"] for e in events] == ["6"]


async def test_sse_says_reset_when_history_is_gone(start_server: StartServer) -> None:
    server = await start_server(history=2)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        for n in range(6):
            await Api(http).update("short", progress=n)
        await Api(http).update("short", status="cancelled")
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream(
            "GET", f"{server.url}/api/jobs/short/stream?since=1", headers=ADMIN_HEADERS
        ) as r,
    ):
        body = (await r.aread()).decode()
    assert "event: reset" in body
    assert body.count("event: job:update") == 2 and "id: 7" in body


async def test_sse_takes_client_tokens_within_their_grants(start_server: StartServer) -> None:
    server = await start_server(client_secret=SECRET)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        api = Api(http)
        token = (await api.post("/api/tokens", json={"sub": "u", "jobs": ["mine-*"]}))[1]["token"]
        await api.update("mine-1", status="succeeded")
        await api.update("theirs", status="succeeded")
    events = await read_stream(server.url, "mine-1", params={"token": token})
    assert [e["id"] for e in events] == ["1"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        refused = await http.get("/api/jobs/theirs/stream", params={"token": token})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        for params in ({}, {"token": "garbage"}):
            refused = await http.get("/api/jobs/mine-1/stream", params=params)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
        bad = await http.get("/api/jobs/mine-1/stream", params={"token": token, "since": "-4"})
        assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]


# -- /ws ----------------------------------------------------------------------------


class Plain:
    """A /ws client: `ask` sends an op and waits for its answer; pushes are collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pushed: list[dict[str, Any]] = []
        self.answers: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.unanswered: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())
        self.refs = 0

    async def _read(self) -> None:
        async for frame in self.ws:
            body = json.loads(frame.data)
            if "event" in body:
                self.pushed.append(body)
            elif body.get("ref") in self.answers:
                self.answers.pop(body["ref"]).set_result(body)
            else:
                self.unanswered.append(body)

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        self.refs += 1
        ref = f"r{self.refs}"
        self.answers[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"op": op, "ref": ref, **fields})
        return await asyncio.wait_for(self.answers[ref], 10)

    async def pushes(self, event: str, count: int) -> list[dict[str, Any]]:
        for _ in range(500):
            found = [p["data"] for p in self.pushed if p["event"] == event]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {count} {event}, got {self.pushed}")


@pytest.fixture
async def plain() -> AsyncIterator[Any]:
    sessions: list[aiohttp.ClientSession] = []

    async def open_plain(url: str, **params: str) -> Plain:
        session = aiohttp.ClientSession()
        sessions.append(session)
        ws = await session.ws_connect(url.replace("http", "ws", 1) + "/ws", params=params)
        return Plain(ws)

    yield open_plain
    for session in sessions:
        await session.close()


async def test_ws_subscribe_and_receive(server: Server, api: Api, plain: Any, edge: Edge) -> None:
    client = await plain(edge(server))
    ack = await client.ask("subscribe", job_id="plain-1", since=None)
    assert ack == {"ref": "r1", "ok": True, "job": None, "missed": [], "reset": False}
    for n in range(3):
        await api.update("plain-1", progress=n)
    events = await client.pushes("job:update", 3)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert (await client.ask("subscribe", job_id="plain-1", since=1))["missed"][0]["seq"] == 2
    assert (await client.ask("unsubscribe", job_id="plain-1"))["ok"]


async def test_ws_chats_with_socket_io_clients(
    server: Server, api: Api, plain: Any, connect: Connect
) -> None:
    device = await plain(server.url, name="Device")
    browser = await connect(server.url, namespaces=("/info",), auth={"name": "Browser"})
    await browser.call("/info", "join", {"room": "lab"})
    joined = await device.ask("join", room="lab")
    assert sorted(m["name"] for m in joined["members"]) == ["Browser", "Device"]
    sent = await device.ask("message", room="lab", text="temperature 21C")
    assert (await browser.wait_for("message"))[0] == sent["message"]
    await browser.call("/info", "message", {"room": "lab", "text": "thanks"})
    assert (await device.pushes("message", 1))[0]["text"] == "thanks"
    await api.post("/api/announcements", json={"text": "to all"})
    await api.post("/api/announcements", json={"text": "to lab", "room": "lab"})
    assert [a["text"] for a in await device.pushes("announcement", 2)] == ["to all", "to lab"]
    await device.ws.close()
    presence = await browser.wait_for("presence", 2)
    device_member = next(m for m in joined["members"] if m["name"] == "Device")
    assert presence == [
        {"room": "lab", "joined": device_member},
        {"room": "lab", "left": device_member},
    ]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_payload"),
        ('{"op": "dance", "ref": 1}', "invalid_payload"),
        ('{"op": "subscribe", "ref": 1}', "invalid_payload"),
        ('{"op": "subscribe", "ref": 1, "job_id": "bad id"}', "invalid_payload"),
        ('{"op": "join", "ref": 1, "room": 5}', "invalid_payload"),
        ('{"op": "message", "ref": 1, "room": "x", "text": "not joined"}', "forbidden"),
    ],
)
async def test_ws_bad_frames_get_errors_and_the_socket_stays(
    server: Server, plain: Any, frame: str, code: str
) -> None:
    client = await plain(server.url)
    await client.ws.send_str(frame)
    for _ in range(500):
        if client.unanswered:
            break
        await asyncio.sleep(0.01)
    (answer,) = client.unanswered
    assert answer["ok"] is False and answer["error"]["code"] == code
    await client.ws.send_bytes(b"\x00binary")
    assert (await client.ask("subscribe", job_id="fine"))["ok"]


async def test_ws_auth_by_query_or_first_frame(start_server: StartServer, plain: Any) -> None:
    server = await start_server(client_secret=SECRET)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        token = (await http.post("/api/tokens", json={"sub": "dev", "rooms": ["lab"]})).json()
    by_query = await plain(server.url, token=token["token"])
    assert (await by_query.ask("join", room="lab"))["ok"]
    assert (await by_query.ask("join", room="office"))["error"]["code"] == "forbidden"

    by_frame = await plain(server.url)
    assert (await by_frame.ask("auth", token=token["token"])) == {"ref": "r1", "ok": True}
    assert (await by_frame.ask("join", room="lab"))["ok"]

    for opener in ({"token": "garbage"}, {}):
        refused = await plain(server.url, **opener)
        if not opener:
            await refused.ws.send_json({"op": "subscribe", "ref": 1, "job_id": "x"})
        await asyncio.wait_for(refused.reader, 10)
        assert refused.ws.close_code == 4401
        assert refused.unanswered[0]["error"]["code"] == "unauthorized"


async def test_miniprogram_example_follows_a_job(server: Server, api: Api, edge: Edge) -> None:
    node = require_binary("node")
    await api.update("mini", status="running", progress=0)
    proc = await asyncio.create_subprocess_exec(
        node, "--experimental-websocket", str(ROOT / "examples" / "miniprogram_client.js"),
        edge(server), "mini",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 15))
    assert first["seq"] == 1
    for n in (50, 100):
        await api.update("mini", progress=n)
    await api.update("mini", status="succeeded")
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert [json.loads(line)["seq"] for line in out.decode().splitlines()] == [2, 3, 4]
