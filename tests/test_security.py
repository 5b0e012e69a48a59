"""Attacks from the security review (issue 12), each performed as described and now harmless.

Raw Engine.IO over aiohttp where the attack needs it, the official Node client as the
victim of the upgrade hijack. SECURITY.md names each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
import socketio
from switchboard_server import engine

from .conftest import (
    ADMIN,
    ROOT,
    SECRET,
    TRANSPORTS,
    Api,
    Connect,
    RedisProcess,
    Server,
    StartServer,
    require_binary,
)

EIO = "/socket.io/?EIO=4&transport="


def client_token(**claims: Any) -> str:
    return jwt.encode({"sub": "u", "exp": int(time.time()) + 600, **claims}, SECRET, "HS256")


# -- 1. the upgrade hijack ------------------------------------------------------------


class RawSession:
    """An Engine.IO v4 session spoken by hand: polling first, then maybe a websocket."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.sid = ""

    async def handshake(self) -> None:
        async with self.http.get(self.url + EIO + "polling") as response:
            self.sid = json.loads((await response.text())[1:])["sid"]

    async def post(self, *packets: str) -> None:
        url = f"{self.url}{EIO}polling&sid={self.sid}"
        async with self.http.post(url, data="\x1e".join(packets)) as response:
            assert response.status == 200, await response.text()

    async def poll(self) -> list[str]:
        async with self.http.get(f"{self.url}{EIO}polling&sid={self.sid}") as response:
            assert response.status == 200, await response.text()
            return (await response.text()).split("\x1e")

    async def poll_until(self, prefix: str) -> list[str]:
        seen: list[str] = []
        while not any(packet.startswith(prefix) for packet in seen):
            seen += await asyncio.wait_for(self.poll(), 10)
        return seen

    async def subscribe(self, job_id: str) -> None:
        await self.post("40/job,")
        await self.poll_until("40/job,")
        await self.post(f'42/job,1["subscribe",{{"job_id":"{job_id}"}}]')
        await self.poll_until("43/job,1")

    async def websocket(self) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(
            f"{self.url.replace('http', 'ws')}{EIO}websocket&sid={self.sid}"
        )


def update_seqs(packets: list[str]) -> list[int]:
    prefix = '42/job,["job:update",'
    return [json.loads(p[len("42/job,") :])[1]["seq"] for p in packets if p.startswith(prefix)]


async def ws_packets(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[str]:
    """Read until `count` job updates arrived (answering pings meanwhile)."""
    seen: list[str] = []
    while len(update_seqs(seen)) < count:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        if message.data == "2":
            await ws.send_str("3")
        seen.append(message.data)
    return seen


async def no_updates(ws: aiohttp.ClientWebSocketResponse, wait: float = 0.5) -> None:
    """The intruder's websocket carries no job update (it may be closed meanwhile)."""
    try:
        while True:
            message = await asyncio.wait_for(ws.receive(), wait)
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            assert "job:update" not in message.data, message.data
    except TimeoutError:
        return


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_second_websocket_during_the_upgrade_is_refused(
    server: Server, api: Api, http: aiohttp.ClientSession
) -> None:
    """Victim probes, intruder opens a websocket with the victim's sid, victim upgrades."""
    victim = RawSession(http, server.url)
    await victim.handshake()
    await victim.subscribe("hijack-a")
    ws = await victim.websocket()
    await ws.send_str("2probe")
    assert (await ws.receive()).data == "3probe"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await RawSession.websocket(_with_sid(http, server.url, victim.sid))
    assert refused.value.status == 400
    await ws.send_str("5")
    for progress in range(20):
        await api.update("hijack-a", progress=progress)
    assert update_seqs(await ws_packets(ws, 20)) == list(range(1, 21))
    await ws.close()


async def test_an_idle_intruder_websocket_cannot_take_the_session(
    server: Server, api: Api, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intruder first: the victim's websocket is refused, polling goes on, nothing is lost,
    and the intruder that never finishes the upgrade is let go after the upgrade timeout."""
    monkeypatch.setattr(engine, "UPGRADE_TIMEOUT", 1.0)
    victim = RawSession(http, server.url)
    await victim.handshake()
    await victim.subscribe("hijack-b")
    intruder = await RawSession.websocket(_with_sid(http, server.url, victim.sid))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await victim.websocket()
    assert refused.value.status == 400
    for progress in range(10):
        await api.update("hijack-b", progress=progress)
    polled: list[str] = []
    while len(update_seqs(polled)) < 10:
        polled += await asyncio.wait_for(victim.poll(), 10)
    assert update_seqs(polled) == list(range(1, 11))
    await no_updates(intruder)
    assert intruder.closed or (await intruder.receive(timeout=5)).type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
    )
    # The session is free again: the victim upgrades and gets what follows, directly.
    ws = await victim.websocket()
    await ws.send_str("2probe")
    assert (await ws.receive()).data == "3probe"
    await ws.send_str("5")
    for progress in range(10, 20):
        await api.update("hijack-b", progress=progress)
    assert update_seqs(await ws_packets(ws, 10)) == list(range(11, 21))
    await ws.close()


def _with_sid(http: aiohttp.ClientSession, url: str, sid: str) -> RawSession:
    session = RawSession(http, url)
    session.sid = sid
    return session


async def test_the_official_client_keeps_its_stream_against_an_intruder(
    start_server: StartServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """socket.io-client 4.8 as the victim; the intruder opens a websocket with its sid the
    moment the session exists (before or during the client's own upgrade)."""
    monkeypatch.setattr(engine, "UPGRADE_TIMEOUT", 2.0)
    node = require_binary("node")
    server = await start_server(client_secret=SECRET)
    before = set(server.sio.eio.sockets)
    env = {
        **os.environ,
        "SWITCHBOARD_URL": server.url,
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN,
        "TRANSPORT": "upgrade",
        "CLIENT_TOKEN": client_token(jobs=["victim"]),
    }
    proc = await asyncio.create_subprocess_exec(
        node, "scenarios.mjs", "victim", cwd=ROOT / "tests" / "node", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    intruders: list[aiohttp.ClientWebSocketResponse] = []
    deadline = time.monotonic() + 15
    while not intruders and time.monotonic() < deadline:
        for sid in set(server.sio.eio.sockets) - before:
            try:
                intruders.append(await RawSession.websocket(_with_sid(http, server.url, sid)))
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 400
                intruders.append(None)  # type: ignore[arg-type]
        await asyncio.sleep(0.001)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode() + out.decode()
    assert intruders, "the victim never connected"
    for intruder in intruders:
        if intruder is not None:
            await no_updates(intruder)
            await intruder.close()


# -- 2. a missing grant grants nothing -------------------------------------------------

GRANTS = [
    # claims, job ids allowed, jobs refused, rooms allowed, rooms refused
    ({}, [], ["a-1", "*"], [], ["math-1"]),
    ({"rooms": ["math-*"]}, [], ["a-1", "*"], ["math-1"], ["art"]),
    ({"jobs": ["a-*"]}, ["a-1"], ["b-1", "*"], [], ["math-1"]),
    ({"jobs": ["*"], "rooms": ["*"]}, ["a-1", "b-1", "*"], [], ["math-1"], []),
    ({"jobs": [], "rooms": []}, [], ["a-1", "*"], [], ["math-1"]),
]


@pytest.mark.parametrize(("claims", "jobs_ok", "jobs_no", "rooms_ok", "rooms_no"), GRANTS)
async def test_grants_are_exactly_what_the_token_names(
    start_server: StartServer,
    connect: Connect,
    claims: dict[str, Any],
    jobs_ok: list[str],
    jobs_no: list[str],
    rooms_ok: list[str],
    rooms_no: list[str],
) -> None:
    server = await start_server(client_secret=SECRET)
    token = client_token(**claims)
    client = await connect(server.url, auth={"token": token})
    for job_id in jobs_ok:
        assert (await client.call("/job", "subscribe", {"job_id": job_id}))["ok"] is True
    for job_id in jobs_no:
        ack = await client.call("/job", "subscribe", {"job_id": job_id})
        assert ack["error"]["code"] == "forbidden", (claims, job_id)
    for room in rooms_ok:
        assert (await client.call("/info", "join", {"room": room}))["ok"] is True
    for room in rooms_no:
        ack = await client.call("/info", "join", {"room": room})
        assert ack["error"]["code"] == "forbidden", (claims, room)
    async with httpx.AsyncClient(base_url=server.url) as plain:
        for job_id in ("a-1", "b-1"):
            path = f"/api/jobs/{job_id}/stream?token={token}"
            async with plain.stream("GET", path) as stream:  # headers only: it never ends
                assert stream.status_code == (200 if job_id in jobs_ok else 403), (claims, job_id)


async def test_minted_token_without_jobs_watches_nothing(start_server: StartServer) -> None:
    """`switchboard token carol --room 'math-*'`: rooms only, no job at all."""
    server = await start_server(client_secret=SECRET)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        minted = await http.post("/api/tokens", json={"sub": "carol", "rooms": ["math-*"]})
        token = minted.json()["token"]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert "jobs" not in claims
    client = socketio.AsyncClient()
    await client.connect(server.url, namespaces=["/job"], auth={"token": token})
    try:
        ack = await client.call("subscribe", {"job_id": "*"}, namespace="/job", timeout=10)
        assert ack["error"]["code"] == "forbidden"
    finally:
        await client.disconnect()


# -- 3. origins on /ws, the event stream and /api --------------------------------------

EVIL = "http://evil.example"
APP = "http://app.example:5173"


@pytest.mark.parametrize("cors", [[], [APP]])
async def test_ws_and_sse_refuse_foreign_origins(
    start_server: StartServer, cors: list[str]
) -> None:
    server = await start_server(cors_origins=cors)
    async with aiohttp.ClientSession() as http:
        ws_url = server.url.replace("http", "ws") + "/ws"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url, headers={"Origin": EVIL})
        assert refused.value.status == 403
        async with http.get(server.url + "/api/jobs/x/stream", headers={"Origin": EVIL}) as sse:
            assert sse.status == 403
            assert (await sse.json())["error"]["code"] == "forbidden"
        allowed = APP if cors else server.url
        ws = await http.ws_connect(ws_url, headers={"Origin": allowed})
        await ws.send_json({"op": "subscribe", "ref": 1, "job_id": "x"})
        assert (await ws.receive_json(timeout=10))["ok"] is True
        await ws.close()
        ws = await http.ws_connect(ws_url)  # no Origin: not a browser page
        await ws.close()


async def test_cors_headers_for_allowed_origins_only(start_server: StartServer, api: Any) -> None:
    server = await start_server(cors_origins=[APP])
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.post("/api/jobs", json={"id": "cors-1", "status": "succeeded"}, headers=auth)
        preflight = await http.options(
            "/api/jobs",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        refused = await http.options("/api/jobs", headers={"Origin": EVIL})
        assert refused.status_code == 403
        assert "Access-Control-Allow-Origin" not in refused.headers
        for origin, allowed in ((APP, True), (EVIL, False)):
            for path in ("/api/jobs", "/api/jobs/cors-1/stream"):  # the stream of a done job ends
                got = await http.get(path, headers={"Origin": origin, **auth})
                assert got.status_code == (200 if allowed else 403 if "stream" in path else 200)
                assert got.headers.get("Access-Control-Allow-Origin") == (
                    origin if allowed else None
                )
                assert "Origin" in got.headers["Vary"]


# -- 5. malformed packets: one condensed line, a metric, the sender is cut off ----------


async def test_malformed_packets_do_not_flood_the_log(
    spawn_server: Any, http: aiohttp.ClientSession
) -> None:
    server = spawn_server("--store", "memory://", "--log-format", "json")
    big = "1" * 114
    bad = [f'42/job,{big}["subscribe",{{}}]', f'42{big}["x"]', "x", "4{", "42/job,[1"]
    ws_url = server.url.replace("http", "ws") + EIO + "websocket"
    for round_ in range(40):  # 200 connections, 1,000 malformed packets
        for packet in bad:
            ws = await http.ws_connect(ws_url)
            await ws.receive()  # the open packet
            await ws.send_str("40/job,")
            await ws.receive()
            with contextlib.suppress(ConnectionResetError):  # cut off after the first
                for _ in range(5):
                    await ws.send_str(packet)
            closing = await ws.receive(timeout=10)
            if closing.type == aiohttp.WSMsgType.TEXT and closing.data == "1":  # Engine.IO close
                closing = await ws.receive(timeout=10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (
                round_,
                packet,
                closing,
            )
            await ws.close()
    async with httpx.AsyncClient(base_url=server.url) as probe:
        metrics = (await probe.get("/metrics")).text
        assert (await probe.get("/healthz")).status_code == 200
    count = re.search(r'switchboard_rejected_total\{code="invalid_packet"\} (\S+)', metrics)
    assert count is not None and float(count.group(1)) >= 200
    log = server.log.read_text()
    lines = log.splitlines()
    assert len(log) < 20_000, log[-3000:]
    for line in lines:
        entry = json.loads(line)  # every line is JSON: no library writes plain text
        assert "exc" not in entry and "Traceback" not in line, line


# -- 6. inputs that used to answer 500 -------------------------------------------------


async def test_undecodable_credentials_are_refused_not_crashed(
    start_server: StartServer, transport: str
) -> None:
    server = await start_server(client_secret=SECRET)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/api/jobs", "/api/jobs/x/stream"):
            got = await http.get(path, headers=[(b"Authorization", b"Bearer \xff\xfe")])
            assert got.status_code == 401, (path, got.text)
            assert got.json()["error"]["code"] == "unauthorized"
    client = socketio.AsyncClient()
    refusals: list[Any] = []
    client.on("connect_error", refusals.append, namespace="/job")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            server.url,
            namespaces=["/job"],
            auth={"token": "\ud800"},
            transports=TRANSPORTS[transport],
            wait_timeout=10,
        )
    assert refusals == [{"message": "unauthorized"}]
    async with aiohttp.ClientSession() as http2:
        ws = await http2.ws_connect(server.url.replace("http", "ws") + "/ws")
        await ws.send_str('{"op": "auth", "ref": 1, "token": "\\ud800"}')
        answer = await ws.receive_json(timeout=10)
        assert answer["error"]["code"] == "unauthorized"
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4401


@pytest.mark.parametrize(
    ("query", "header"),
    [("since=²", None), ("since=" + "9" * 5000, None), ("", "9" * 5000), ("", "١٢")],
)
async def test_bad_resume_points_are_400(
    server: Server, api: Api, query: str, header: str | None
) -> None:
    await api.update("resume-bad", progress=1)
    headers = [(b"Last-Event-ID", header.encode())] if header else []
    got = await api.http.get(f"/api/jobs/resume-bad/stream?{query}", headers=headers)
    assert got.status_code == 400, got.text
    assert got.json()["error"]["code"] == "invalid_payload"


async def test_idempotency_key_on_engine_io_posts_is_ignored(
    server: Server, http: aiohttp.ClientSession
) -> None:
    session = RawSession(http, server.url)
    await session.handshake()
    url = f"{server.url}{EIO}polling&sid={session.sid}"
    for _ in range(2):
        async with http.post(url, data="40/job,", headers={"Idempotency-Key": "k"}) as response:
            assert response.status == 200
            assert await response.text() == "OK"
    assert any(p.startswith("40/job,") for p in await session.poll())


# -- 7. deeply nested data -------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for _ in range(depth - 1):
        data = {"a": data}
    return data


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
async def test_deep_data_is_refused_and_nothing_is_stored(
    start_server: StartServer,
    tmp_path: Path,
    store: str,
    connect: Connect,
    shared_redis: RedisProcess,
) -> None:
    urls = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'deep.db'}",
        "redis": shared_redis.url,
    }
    prefix = f"deep-{time.monotonic_ns()}:"
    server = await start_server(store=urls[store], redis_prefix=prefix)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        ok = await http.post("/api/jobs/deep/updates", json={"data": nested(32)})
        assert ok.status_code == 201, ok.text
        for depth in (33, 900):
            raw = '{"data": ' + '{"a": ' * (depth - 1) + "{}" + "}" * depth
            got = await http.post("/api/jobs/deeper/updates", content=raw)
            assert got.status_code == 400, (depth, got.text)
            assert got.json()["error"]["code"] == "invalid_payload"
            assert "data" in got.json()["error"]["message"]
        assert (await http.get("/api/jobs/deeper")).status_code == 404
        assert (await http.get("/api/jobs")).status_code == 200
    client = await connect(server.url)
    ack = await client.call("/job", "subscribe", {"job_id": "*"})
    assert [job["id"] for job in ack["jobs"]] == ["deep"]


# -- 8. minted tokens are never stored ---------------------------------------------------


async def test_minted_tokens_are_not_kept_for_idempotent_replay(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = tmp_path / "tokens.db"
    server = await start_server(client_secret=SECRET, store=f"sqlite:///{db}")
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": "k1"}
    ) as http:
        tokens = []
        for ttl in (600, 700):  # different claims: a replay would return the first token
            minted = await http.post("/api/tokens", json={"sub": "s", "ttl": ttl})
            assert minted.status_code == 201
            assert "Idempotent-Replayed" not in minted.headers
            tokens.append(minted.json()["token"])
        assert tokens[0] != tokens[1]
        await http.post("/api/jobs/after-tokens/updates", json={"progress": 1})
    await server.stop()
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    for token in tokens:
        assert token not in dump and token.split(".")[1] not in dump


# -- 9. the Admin UI -----------------------------------------------------------------------


async def test_admin_ui_login_and_broadcasts(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(admin_ui=True)
    for auth, accepted in (
        ({"username": "admin", "password": ADMIN}, True),
        ({"username": "admin", "password": ADMIN + "x"}, False),
        ({"username": "root", "password": ADMIN}, False),
        ({"username": "admin", "password": ["list"]}, False),
        ("admin", False),
    ):
        client = socketio.AsyncClient()
        try:
            await client.connect(server.url, namespaces=["/admin"], auth=auth, wait_timeout=10)
            assert accepted, auth
            await client.disconnect()
        except socketio.exceptions.ConnectionError:
            assert not accepted, auth
    # The Admin UI counts bytes in each websocket's send(): broadcasts go through it.
    watcher = await connect(server.url)
    await watcher.call("/job", "subscribe", {"job_id": "ui"})
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        await http.post("/api/jobs/ui/updates", json={"progress": 1})
        await watcher.wait_for("job:update")
        metrics = (await http.get("/metrics")).text
    assert 'switchboard_broadcast_sends_total{path="direct"} 0.0' in metrics


# -- 10. the shipped nginx config keeps tokens and sids out of its access log -------------


async def test_nginx_access_log_has_no_tokens_or_sids(
    start_server: StartServer, start_nginx: Any, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await start_server(client_secret=SECRET)
    url = start_nginx([server.url.removeprefix("http://")])
    token = client_token(jobs=["*"])
    async with http.get(f"{url}/api/jobs/logged/stream?token={token}&since=0") as stream:
        assert stream.status == 200
    session = RawSession(http, url)
    await session.handshake()
    await session.post("40/job," + json.dumps({"token": token}))
    await session.poll_until("40/job,")
    ws = await http.ws_connect(f"{url.replace('http', 'ws')}/ws?token={token}")
    await ws.close()
    log = await asyncio.to_thread(
        lambda: (next(tmp_path.glob("nginx-*")) / "access.log").read_text()
    )
    assert "/socket.io/" in log and "/api/jobs/logged/stream" in log and "/ws" in log
    for secret in (token, token.split(".")[1], session.sid, "token=", "sid="):
        assert secret not in log, secret
