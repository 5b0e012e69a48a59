"""Client tokens on live connections: token:expiring, refresh, the end at exp, revocation.

Every Socket.IO case runs over websocket, polling and the upgrade; /ws and SSE follow the
same rules. Expiry tests wait for the clock: time is what they test.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import socketio
from playwright.async_api import Browser
from switchboard_client import SwitchboardClient

from .conftest import (
    ADMIN,
    SECRET,
    TRANSPORTS,
    Api,
    Connect,
    Edge,
    Recorder,
    Server,
    StartServer,
)
from .test_streams import Plain, plain, sse_events  # noqa: F401 - plain: a fixture

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def token(ttl: float = 600, sub: str = "ann", **claims: Any) -> str:
    now = time.time()
    body = {"sub": sub, "exp": int(now + ttl), "iat": now, "jti": secrets.token_hex(8)}
    body.update({"jobs": ["*"], "rooms": ["*"], **claims})
    return jwt.encode(body, SECRET, algorithm="HS256")


def jti_of(encoded: str) -> str:
    return str(jwt.decode(encoded, options={"verify_signature": False})["jti"])


async def listening(connect: Connect, url: str, auth_token: str) -> Recorder:
    events = (("token:expiring", "/job"), ("unsubscribed", "/job"), ("left", "/info"),
              ("token:expiring", "/info"))  # fmt: skip
    return await connect(url, auth={"token": auth_token}, events=events)


async def gone(client: Recorder, timeout: float = 10) -> None:
    """The server hung up on every namespace of this client."""
    deadline = time.monotonic() + timeout
    while client.sio.namespaces:
        assert time.monotonic() < deadline, f"still connected to {client.sio.namespaces}"
        await asyncio.sleep(0.02)


async def refused(url: str, auth_token: str, transport: str) -> list[Any]:
    """Connect and expect connect_error: its payloads."""
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    errors: list[Any] = []
    sio.on("connect_error", errors.append, "/job")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(url, namespaces=["/job"], auth={"token": auth_token},
                          transports=TRANSPORTS[transport], wait_timeout=10)  # fmt: skip
    await sio.disconnect()
    return errors


# -- expiry and refresh ---------------------------------------------------------------


async def test_expiring_token_is_refreshed_and_the_connection_lives_on(
    secured: Server, secured_admin: Api, connect: Connect
) -> None:
    client = await listening(connect, secured.url, token(ttl=2))
    notices = await client.wait_for("token:expiring", 2)  # one per namespace, at once
    for notice in notices:  # (under a minute left)
        assert 0 < notice["expires_in"] <= 2 and notice["expires_at"].endswith("Z")
    assert (await client.call("/job", "subscribe", {"job_id": "build"}))["ok"]

    fresh = token(ttl=600)
    for namespace in ("/job", "/info"):  # each namespace holds its own token
        ack = await client.call(namespace, "refresh", {"token": fresh})
        assert ack["ok"] and ack["ended"] == [] and 590 < ack["expires_in"] <= 600
    await asyncio.sleep(2.5)  # past the first token's exp
    await secured_admin.update("build", progress=10)
    [update] = await client.wait_for("job:update")
    assert update["progress"] == 10 and client.sio.connected
    assert "error" not in client.received


async def test_a_token_that_expires_ends_the_connection(secured: Server, connect: Connect) -> None:
    client = await listening(connect, secured.url, token(ttl=1.5))
    await client.wait_for("token:expiring")
    errors = await client.wait_for("error", 2)  # one per namespace
    assert {e["error"]["code"] for e in errors} == {"unauthorized"}
    assert "expired" in errors[0]["error"]["message"]
    await gone(client)


async def test_refresh_replaces_the_grants(
    secured: Server, secured_admin: Api, connect: Connect
) -> None:
    client = await listening(connect, secured.url, token(jobs=["a", "b"], rooms=["r1", "r2"]))
    for job_id in ("a", "b"):
        assert (await client.call("/job", "subscribe", {"job_id": job_id}))["ok"]
    for room in ("r1", "r2"):
        assert (await client.call("/info", "join", {"room": room}))["ok"]

    narrower = token(jobs=["a"], rooms=["r1"])
    job_ack = await client.call("/job", "refresh", {"token": narrower})
    info_ack = await client.call("/info", "refresh", {"token": narrower})
    assert job_ack["ended"] == ["b"] and info_ack["ended"] == ["r2"]
    [ended] = await client.wait_for("unsubscribed")
    assert ended == {
        "job_id": "b",
        "error": {"code": "forbidden", "message": ended["error"]["message"]},
    }
    [left] = await client.wait_for("left")
    assert left["room"] == "r2" and left["error"]["code"] == "forbidden"

    await secured_admin.update("b", progress=1)  # must not arrive
    await secured_admin.update("a", progress=2)  # the marker, after it
    [update] = await client.wait_for("job:update")
    assert update["id"] == "a"
    again = await client.call("/job", "subscribe", {"job_id": "b"})
    assert again["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (lambda: {"token": token(sub="bob")}, "forbidden"),
        (lambda: {"token": token(ttl=-5)}, "unauthorized"),
        (lambda: {"token": "garbage"}, "unauthorized"),
        (lambda: {"token": ADMIN}, "forbidden"),  # the admin token is not a user's refresh
        (lambda: {}, "invalid_payload"),
        (lambda: {"token": 42}, "invalid_payload"),
        (lambda: {"token": "x" * 9000}, "invalid_payload"),
    ],
    ids=["other-sub", "expired", "garbage", "admin", "missing", "number", "huge"],
)
async def test_bad_refreshes_are_refused_and_the_old_token_stays(
    secured: Server, connect: Connect, payload: Callable[[], dict[str, Any]], code: str
) -> None:
    client = await listening(connect, secured.url, token(jobs=["a"]))
    ack = await client.call("/job", "refresh", payload())  # made now: tokens expire
    assert ack["ok"] is False and ack["error"]["code"] == code
    assert (await client.call("/job", "subscribe", {"job_id": "a"}))["ok"]
    whoami = await client.call("/job", "whoami")
    assert whoami["sub"] == "ann" and whoami["jobs"] == ["a"]


# -- revocation -----------------------------------------------------------------------


async def test_revoking_a_jti_ends_its_connections_and_refuses_it_after(
    secured: Server, secured_admin: Api, connect: Connect, transport: str
) -> None:
    status, minted = await secured_admin.post("/api/tokens", json={"sub": "ann", "jobs": ["*"]})
    assert status == 201 and minted["jti"]
    doomed = await listening(connect, secured.url, minted["token"])
    other = await listening(connect, secured.url, token())  # same sub, another jti

    status, body = await secured_admin.post("/api/tokens/revoke", json={"jti": minted["jti"]})
    assert status == 200 and body["revoked"]["jti"] == minted["jti"]
    errors = await doomed.wait_for("error", 2)
    assert {e["error"]["message"] for e in errors} == {"your token was revoked"}
    await gone(doomed)
    assert await refused(secured.url, minted["token"], transport) == [{"message": "unauthorized"}]
    assert (await other.call("/job", "whoami"))["sub"] == "ann"
    refresh = await other.call("/job", "refresh", {"token": minted["token"]})
    assert refresh["error"]["code"] == "unauthorized"


async def test_revoking_a_sub_ends_every_token_issued_before(
    secured: Server, secured_admin: Api, connect: Connect, transport: str
) -> None:
    first, second = token(), token()
    clients = [await listening(connect, secured.url, t) for t in (first, second)]
    bystander = await listening(connect, secured.url, token(sub="bob"))
    status, body = await secured_admin.post("/api/tokens/revoke", json={"sub": "ann"})
    assert status == 200 and body["disconnected_here"] == 4  # 2 clients x 2 namespaces
    for client in clients:
        await gone(client)
    for old in (first, second):
        assert await refused(secured.url, old, transport) == [{"message": "unauthorized"}]
    newer = await listening(connect, secured.url, token())  # issued after: welcome
    assert (await newer.call("/job", "whoami"))["sub"] == "ann"
    assert (await bystander.call("/job", "whoami"))["sub"] == "bob"


@pytest.mark.parametrize(
    "body",
    [{}, {"jti": "a", "sub": "b"}, {"jti": ""}, {"jti": 5}, {"sub": "a", "ttl": 0},
     {"sub": "a", "extra": 1}, [], "x"],
    ids=["neither", "both", "empty", "number", "ttl-0", "unknown-field", "list", "string"],
)  # fmt: skip
async def test_bad_revocations_are_400(secured: Server, secured_admin: Api, body: Any) -> None:
    status, answer = await secured_admin.post("/api/tokens/revoke", json=body)
    assert status == 400 and answer["error"]["code"] == "invalid_payload"


async def test_only_the_admin_revokes(secured: Server) -> None:
    async with httpx.AsyncClient(base_url=secured.url) as http:
        anonymous = await http.post("/api/tokens/revoke", json={"sub": "ann"})
        user = await http.post("/api/tokens/revoke", json={"sub": "ann"},
                               headers={"Authorization": f"Bearer {token()}"})  # fmt: skip
    assert anonymous.status_code == 401 and user.status_code == 403


async def test_revocations_outlive_a_restart(start_server: StartServer, tmp_path: Path) -> None:
    options = {"client_secret": SECRET, "store": f"sqlite:///{tmp_path}/store.db"}
    server = await start_server(**options)
    doomed = token()
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        assert (await http.post("/api/tokens/revoke", json={"jti": jti_of(doomed)})).is_success
    await server.stop()
    again = await start_server(**options)
    assert await refused(again.url, doomed, "websocket") == [{"message": "unauthorized"}]


async def test_a_revocation_reaches_every_node(
    start_server: StartServer, shared_redis: Any, connect: Connect, transport: str
) -> None:
    options = {"client_secret": SECRET, "store": shared_redis.url,
               "redis_prefix": f"revoke-{secrets.token_hex(4)}:"}  # fmt: skip
    one, two = await start_server(**options), await start_server(**options)
    doomed = token()
    client = await listening(connect, two.url, doomed)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=one.url, headers=ADMIN_HEADERS) as http:
        status, body = await Api(http).post("/api/tokens/revoke", json={"jti": jti_of(doomed)})
    assert status == 200 and body["disconnected_here"] == 0
    await gone(client, timeout=5)
    assert time.monotonic() - started < 5  # pub/sub carries it; the reload is a fallback
    assert await refused(two.url, doomed, transport) == [{"message": "unauthorized"}]
    three = await start_server(**options)  # a node that starts later reads the list
    assert await refused(three.url, doomed, transport) == [{"message": "unauthorized"}]


# -- /ws and SSE --------------------------------------------------------------------


async def test_ws_refresh_expiry_and_revocation(
    secured: Server,
    secured_admin: Api,
    plain: Any,  # noqa: F811 - the fixture imported above
) -> None:
    client: Plain = await plain(secured.url, token=token(ttl=2, jobs=["a", "b"]))
    [notice] = await client.pushes("token:expiring", 1)
    assert notice["expires_in"] <= 2
    for job_id in ("a", "b"):
        assert (await client.ask("subscribe", job_id=job_id))["ok"]
    ack = await client.ask("refresh", token=token(jobs=["a"]))
    assert ack["ok"] and ack["ended"] == ["b"]
    [ended] = await client.pushes("unsubscribed", 1)
    assert ended["job_id"] == "b" and ended["error"]["code"] == "forbidden"
    assert (await client.ask("refresh", token="garbage"))["error"]["code"] == "unauthorized"
    await asyncio.sleep(2.5)  # past the first token's exp: still here
    assert (await client.ask("whoami"))["jobs"] == ["a"]

    expiring: Plain = await plain(secured.url, token=token(ttl=1.5))
    await expiring.reader  # the server closes it at exp
    assert expiring.ws.close_code == 4401
    assert expiring.pushed[-1]["event"] == "error"

    await secured_admin.post("/api/tokens/revoke", json={"sub": "ann"})
    await asyncio.wait_for(client.reader, 5)
    assert client.ws.close_code == 4401
    assert client.pushed[-1]["data"]["error"]["message"] == "your token was revoked"


async def test_sse_ends_at_expiry_and_on_revocation(secured: Server, secured_admin: Api) -> None:
    await secured_admin.update("job", progress=1)

    async def read(auth_token: str) -> list[dict[str, Any]]:
        async with (
            httpx.AsyncClient(timeout=20) as http,
            http.stream(
                "GET", f"{secured.url}/api/jobs/job/stream", params={"token": auth_token}
            ) as response,  # fmt: skip
        ):
            assert response.status_code == 200
            return [event async for event in sse_events(response)]

    events = await asyncio.wait_for(read(token(ttl=1.5)), 10)
    assert [e["event"] for e in events] == ["job:update", "token:expiring", "error"]
    assert json.loads(events[-1]["data"])["error"]["code"] == "unauthorized"

    revoked = token()
    reading = asyncio.create_task(read(revoked))
    await asyncio.sleep(0.5)  # connected and following
    await secured_admin.post("/api/tokens/revoke", json={"jti": jti_of(revoked)})
    events = await asyncio.wait_for(reading, 10)
    assert [e["event"] for e in events] == ["job:update", "error"]
    async with httpx.AsyncClient(base_url=secured.url) as http:
        again = await http.get("/api/jobs/job/stream", params={"token": revoked})
    assert again.status_code == 401


# -- the clients refresh by themselves ---------------------------------------------------


async def test_python_client_refreshes_through_its_callback(
    secured: Server, secured_admin: Api, transport: str, edge: Edge
) -> None:
    calls: list[str] = []

    async def refresh() -> str:
        calls.append("refresh")
        return token(ttl=600)

    client = SwitchboardClient(edge(secured), token=token(ttl=2), refresh_token=refresh,
                               transports=TRANSPORTS[transport])  # fmt: skip
    async with client:
        events = client.watch("refreshed")
        await secured_admin.update("refreshed", progress=1)
        assert (await anext(events))["seq"] == 1
        await asyncio.sleep(2.5)  # past the first token's exp
        await secured_admin.update("refreshed", status="succeeded")
        assert [e["seq"] async for e in events] == [2]
        assert calls == ["refresh"]  # one call for both namespaces
        assert (await client.join("lobby"))["room"] == "lobby"  # /info was refreshed too


async def test_switchboard_js_refreshes_through_its_callback(
    secured: Server, secured_admin: Api, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(secured.url + "/static/dashboard.css")  # same origin, no dashboard script
    await page.evaluate(
        """async ([first, next]) => {
            const sb = await import("/switchboard.js");
            window.calls = 0;
            window.seen = [];
            const refreshToken = async () => { window.calls++; return next; };
            sb.configure({ token: first, refreshToken });
            sb.watchJob("browser", (e) => window.seen.push(e.seq));
            await new Promise((resolve) => sb.socket("/job").on("connect", resolve));
        }""",
        [token(ttl=2), token(ttl=600)],
    )
    await secured_admin.update("browser", progress=1)
    await page.wait_for_function("() => window.seen.length === 1")
    await asyncio.sleep(2.5)  # past the first token's exp
    await secured_admin.update("browser", progress=2)
    await page.wait_for_function("() => window.seen.length === 2")
    assert await page.evaluate("() => [window.seen, window.calls]") == [[1, 2], 1]
    assert await page.evaluate(
        "async () => (await import('/switchboard.js')).socket('/job').connected"
    )
