"""Client JWTs at connect, glob grants, and the exact refusal message."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import socketio

from .conftest import ADMIN, SECRET, TRANSPORTS, Connect, Server


def token(secret: str = SECRET, alg: str = "HS256", **claims: Any) -> str:
    body: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 86400, **claims}
    return jwt.encode(body, secret, algorithm=alg)


def unsigned(**claims: Any) -> str:
    body = {"sub": "user-1", "exp": int(time.time()) + 86400, **claims}
    return jwt.encode(body, None, algorithm="none")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "auth",
    [
        None,
        {},
        {"token": ""},
        {"token": 42},
        {"token": "not-a-jwt"},
        {"token": token(exp=int(time.time()) - 5)},
        {"token": token(secret="another-secret-of-at-least-32-bytes!")},
        {"token": token(alg="HS512")},
        {"token": unsigned()},
        {"token": jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")},
        {"token": jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")},
        {"token": token(jobs="build-*")},
    ],
    ids=[
        "none", "empty", "blank", "number", "garbage", "expired", "wrong-signature",
        "other-alg", "alg-none", "no-sub", "no-exp", "bad-grants",
    ],
)  # fmt: skip
async def test_bad_tokens_are_refused_with_unauthorized(
    secured: Server, transport: str, auth: Any
) -> None:
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    refusals: list[tuple[str, Any]] = []
    for namespace in ("/job", "/info"):
        sio.on("connect_error", lambda data, ns=namespace: refusals.append((ns, data)), namespace)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(
            secured.url, namespaces=["/job", "/info"], auth=auth, transports=TRANSPORTS[transport]
        )
    # socket.io-client sees this as connect_error with err.message === "unauthorized"
    assert sorted(refusals) == [
        ("/info", {"message": "unauthorized"}),
        ("/job", {"message": "unauthorized"}),
    ]
    await sio.disconnect()


async def test_valid_token_connects_and_names_the_member(secured: Server, connect: Connect) -> None:
    client = await connect(secured.url, auth={"token": token(name="Ann", rooms=["lobby"])})
    ack = await client.call("/info", "join", {"room": "lobby"})
    assert ack["members"] == [{"id": "user-1", "name": "Ann"}]


async def test_admin_token_works_as_a_socket_token(secured: Server, connect: Connect) -> None:
    client = await connect(secured.url, auth={"token": ADMIN})
    assert (await client.call("/job", "subscribe", {"job_id": "*"}))["ok"]


async def test_grants_limit_jobs_and_rooms(secured: Server, connect: Connect) -> None:
    client = await connect(secured.url, auth={"token": token(jobs=["build-*"], rooms=["class-?"])})
    assert (await client.call("/job", "subscribe", {"job_id": "build-7"}))["ok"]
    for job_id in ("deploy-1", "*"):
        ack = await client.call("/job", "subscribe", {"job_id": job_id})
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    assert (await client.call("/info", "join", {"room": "class-1"}))["ok"]
    ack = await client.call("/info", "join", {"room": "class-10"})
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    assert (await client.call("/job", "subscribe", {"job_id": "build-8"}))["ok"]  # still usable


async def test_anonymous_mode_takes_an_optional_name(server: Server, connect: Connect) -> None:
    named = await connect(server.url, auth={"name": "Guest"})
    ack = await named.call("/info", "join", {"room": "open"})
    assert ack["members"][0]["name"] == "Guest"
    odd = await connect(server.url, auth={"name": ["not", "a", "name"]})
    ack = await odd.call("/info", "join", {"room": "open"})
    assert sorted(str(m["name"]) for m in ack["members"]) == ["Guest", "None"]
