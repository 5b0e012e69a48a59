"""Every class of bad HTTP input gets the SPEC error shape and status, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Api


def assert_error(status: int, body: Any, want_status: int, code: str, mentions: str = "") -> None:
    assert status == want_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert mentions in body["error"]["message"]


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b"", b"   ", b'{"progress": NaN}', b'{"progress": Infinity}', b"\xff\xfe"],
)
async def test_invalid_json(api: Api, raw: bytes) -> None:
    status, body = await api.post("/api/jobs/j/updates", content=raw)
    assert_error(status, body, 400, "invalid_json")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([1, 2], "object"),
        ("text", "object"),
        (None, "object"),
        ({}, "at least one"),
        ({"progress": "50"}, "progress"),
        ({"progress": True}, "progress"),
        ({"progress": 101}, "progress"),
        ({"progress": -1}, "progress"),
        ({"status": "done"}, "status"),
        ({"status": None}, "status"),
        ({"message": 5}, "message"),
        ({"message": "x" * 2001}, "message"),
        ({"data": [1]}, "data"),
        ({"data": None}, "data"),
        ({"data": {"blob": "x" * 70_000}}, "data"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_update_payloads(api: Api, payload: Any, field: str) -> None:
    status, body = await api.post("/api/jobs/j/updates", content=json.dumps(payload))
    assert_error(status, body, 400, "invalid_payload", field)
    assert (await api.get("/api/jobs/j"))[0] == 404  # nothing was written


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "-leading-dash"}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": 7}, "id"),
        ({"id": "ok", "seq": 5}, "seq"),
    ],
)
async def test_invalid_create_payloads(api: Api, payload: Any, field: str) -> None:
    status, body = await api.post("/api/jobs", json=payload)
    assert_error(status, body, 400, "invalid_payload", field)


@pytest.mark.parametrize("job_id", ["-x", "a%20b", "a*", "x" * 129])
async def test_invalid_job_id_in_path(api: Api, job_id: str) -> None:
    status, body = await api.post(f"/api/jobs/{job_id}/updates", json={"progress": 1})
    assert_error(status, body, 400, "invalid_payload", "job_id")
    status, body = await api.get(f"/api/jobs/{job_id}")
    assert_error(status, body, 400, "invalid_payload", "job_id")


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/jobs", {"limit": "many"}, "limit"),
        ("/api/jobs", {"limit": "0"}, "limit"),
        ("/api/jobs", {"limit": "100000"}, "limit"),
        ("/api/jobs", {"status": "finished"}, "status"),
        ("/api/jobs/q/events", {"since": "-1"}, "since"),
        ("/api/jobs/q/events", {"since": "1.5"}, "since"),
        ("/api/announcements", {"limit": "x"}, "limit"),
    ],
)
async def test_invalid_query_parameters(
    api: Api, path: str, params: dict[str, str], field: str
) -> None:
    await api.update("q", progress=1)
    status, body = await api.get(path, params=params)
    assert_error(status, body, 400, "invalid_payload", field)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "x" * 2001}, "text"),
        ({"text": "hi", "level": "loud"}, "level"),
        ({"text": "hi", "room": "bad room"}, "room"),
    ],
)
async def test_invalid_announcements(api: Api, payload: Any, field: str) -> None:
    status, body = await api.post("/api/announcements", json=payload)
    assert_error(status, body, 400, "invalid_payload", field)


async def test_invalid_token_requests(api: Api) -> None:
    for payload, field in [
        ({}, "sub"),
        ({"sub": "u", "ttl": 0}, "ttl"),
        ({"sub": "u", "jobs": "a"}, "jobs"),
    ]:
        status, body = await api.post("/api/tokens", json=payload)
        assert_error(status, body, 400, "invalid_payload", field)


async def test_body_over_one_mib_is_413(api: Api) -> None:
    huge = b'{"message": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    status, body = await api.post("/api/jobs/big/updates", content=huge)
    assert_error(status, body, 413, "payload_too_large")
    # The same without a Content-Length (chunked) is refused too.

    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 65536

    status, body = await api.post("/api/jobs/big/updates", content=chunks())
    assert_error(status, body, 413, "payload_too_large")


async def test_bad_idempotency_key(api: Api) -> None:
    status, body = await api.post("/api/jobs", json={}, headers={"Idempotency-Key": "x" * 300})
    assert_error(status, body, 400, "invalid_payload", "Idempotency-Key")


async def test_unknown_routes_and_methods_use_the_error_shape(api: Api) -> None:
    status, body = await api.get("/api/nothing-here")
    assert_error(status, body, 404, "not_found")
    status, body = await api.request("PUT", "/api/jobs")
    assert_error(status, body, 405, "method_not_allowed")
    status, body = await api.get("/no/such/page")
    assert_error(status, body, 404, "not_found")
