"""Every row of the HTTP API table, against a real server over real HTTP."""

from __future__ import annotations

import re

import httpx
import jwt
import pytest

from .conftest import ADMIN, SECRET, Api, Server, StartServer

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_create_job_answers_201_with_the_full_state(api: Api) -> None:
    status, job = await api.post(
        "/api/jobs", json={"id": "build-1", "message": "queued up", "data": {"n": 1}}
    )
    assert status == 201
    assert job["id"] == "build-1"
    assert job["status"] == "queued"
    assert job["progress"] is None
    assert job["message"] == "queued up"
    assert job["data"] == {"n": 1}
    assert job["seq"] == 1
    assert RFC3339_MS.match(job["created_at"]) and job["created_at"] == job["updated_at"]


async def test_create_without_id_generates_one(api: Api) -> None:
    status, job = await api.post("/api/jobs", json={"status": "running", "progress": 5})
    assert status == 201
    assert job["id"] and job["status"] == "running" and job["progress"] == 5


async def test_create_twice_is_job_exists(api: Api) -> None:
    await api.post("/api/jobs", json={"id": "dup"})
    status, body = await api.post("/api/jobs", json={"id": "dup"})
    assert status == 409
    assert body["error"]["code"] == "job_exists"


async def test_update_creates_then_advances_seq(api: Api) -> None:
    status, job = await api.post("/api/jobs/j1/updates", json={"progress": 10})
    assert (status, job["seq"], job["status"]) == (201, 1, "queued")
    status, job = await api.post(
        "/api/jobs/j1/updates", json={"status": "running", "message": "step 2"}
    )
    assert status == 200
    assert (job["seq"], job["status"], job["progress"], job["message"]) == (
        2, "running", 10, "step 2",
    )  # fmt: skip
    status, job = await api.post("/api/jobs/j1/updates", json={"progress": None})
    assert status == 200 and job["progress"] is None and job["message"] == "step 2"


async def test_data_is_replaced_not_merged(api: Api) -> None:
    await api.update("d1", data={"a": 1})
    job = await api.update("d1", data={"b": 2})
    assert job["data"] == {"b": 2}


async def test_update_after_terminal_is_job_finished(api: Api) -> None:
    await api.update("done", status="succeeded", progress=100)
    status, body = await api.post("/api/jobs/done/updates", json={"progress": 50})
    assert status == 409 and body["error"]["code"] == "job_finished"
    status, job = await api.get("/api/jobs/done")
    assert job["seq"] == 1


async def test_get_job_and_not_found(api: Api) -> None:
    await api.update("g1", progress=1)
    status, job = await api.get("/api/jobs/g1")
    assert status == 200 and job["seq"] == 1
    status, body = await api.get("/api/jobs/nope")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_events_since_and_limit(api: Api) -> None:
    for step in range(1, 6):
        await api.update("e1", progress=step * 10)
    status, body = await api.get("/api/jobs/e1/events", params={"since": 2})
    assert status == 200
    assert [e["seq"] for e in body["events"]] == [3, 4, 5]
    assert body["reset"] is False
    _, body = await api.get("/api/jobs/e1/events", params={"since": 0, "limit": 2})
    assert [e["seq"] for e in body["events"]] == [1, 2]
    _, body = await api.get("/api/jobs/e1/events", params={"since": 5})
    assert body == {"events": [], "reset": False}
    status, body = await api.get("/api/jobs/none/events")
    assert status == 404


async def test_events_reset_when_history_was_trimmed(start_server: StartServer) -> None:
    server = await start_server(history=3)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        api = Api(http)
        for step in range(10):
            await api.update("t1", progress=step)
        _, body = await api.get("/api/jobs/t1/events", params={"since": 1})
        assert body["reset"] is True
        assert [e["seq"] for e in body["events"]] == [8, 9, 10]
        _, body = await api.get("/api/jobs/t1/events", params={"since": 7})
        assert body["reset"] is False and [e["seq"] for e in body["events"]] == [8, 9, 10]
        _, body = await api.get("/api/jobs/t1/events", params={"since": 99})
        assert body == {"events": [], "reset": True}


async def test_list_jobs_newest_first_and_by_status(api: Api) -> None:
    await api.update("l1", status="running")
    await api.update("l2", status="succeeded")
    await api.update("l3", status="running")
    status, body = await api.get("/api/jobs")
    assert status == 200
    assert [j["id"] for j in body["jobs"]] == ["l3", "l2", "l1"]
    _, body = await api.get("/api/jobs", params={"status": "running", "limit": 1})
    assert [j["id"] for j in body["jobs"]] == ["l3"]


async def test_delete_job_forgets_it_and_its_history(api: Api) -> None:
    await api.update("x1", progress=1)
    await api.update("x1", progress=2)
    status, body = await api.delete("/api/jobs/x1")
    assert status == 204 and body is None
    assert (await api.get("/api/jobs/x1"))[0] == 404
    assert (await api.delete("/api/jobs/x1"))[0] == 404
    job = await api.update("x1", progress=3)
    assert job["seq"] == 1


async def test_announcements_post_and_list(api: Api) -> None:
    status, first = await api.post("/api/announcements", json={"text": "hello"})
    assert status == 201
    assert first["level"] == "info" and first["room"] is None and first["text"] == "hello"
    assert first["id"] and RFC3339_MS.match(first["ts"])
    await api.post(
        "/api/announcements", json={"text": "class starts", "level": "warning", "room": "math"}
    )
    status, body = await api.get("/api/announcements", params={"limit": 10})
    assert status == 200
    assert [a["text"] for a in body["announcements"]] == ["class starts", "hello"]


async def test_tokens_need_a_client_secret(api: Api) -> None:
    status, body = await api.post("/api/tokens", json={"sub": "u1"})
    assert status == 400 and body["error"]["code"] == "no_client_secret"


async def test_tokens_minted_with_grants(start_server: StartServer) -> None:
    server = await start_server(client_secret=SECRET)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        status, body = await Api(http).post(
            "/api/tokens",
            json={"sub": "u1", "name": "Ann", "jobs": ["build-*"], "rooms": ["math"], "ttl": 60},
        )
    assert status == 201
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u1" and claims["name"] == "Ann"
    assert claims["jobs"] == ["build-*"] and claims["rooms"] == ["math"]
    assert RFC3339_MS.match(body["expires_at"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN}"},
        {"Authorization": "Bearer"},
    ],
)
async def test_admin_api_needs_the_admin_token(server: Server, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, path in [
            ("GET", "/api/jobs"),
            ("POST", "/api/jobs"),
            ("DELETE", "/api/jobs/a"),
        ]:
            response = await http.request(method, path, headers=headers, json={})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"


async def test_client_token_on_admin_api_is_forbidden(start_server: StartServer) -> None:
    server = await start_server(client_secret=SECRET)
    token = jwt.encode({"sub": "u", "exp": 2**40}, SECRET, algorithm="HS256")
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    headers = {"Idempotency-Key": "retry-1"}
    first = await api.http.post("/api/jobs/idem/updates", json={"progress": 1}, headers=headers)
    again = await api.http.post("/api/jobs/idem/updates", json={"progress": 1}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    _, body = await api.get("/api/jobs/idem/events")
    assert [e["seq"] for e in body["events"]] == [1]
    other = await api.http.post(
        "/api/jobs/idem/updates", json={"progress": 2}, headers={"Idempotency-Key": "retry-2"}
    )
    assert other.status_code == 200 and other.json()["seq"] == 2


async def test_idempotency_key_on_create_and_announce(api: Api) -> None:
    headers = {"Idempotency-Key": "k"}
    first = await api.http.post("/api/jobs", json={"id": "ic"}, headers=headers)
    again = await api.http.post("/api/jobs", json={"id": "ic"}, headers=headers)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    one = await api.http.post("/api/announcements", json={"text": "once"}, headers=headers)
    two = await api.http.post("/api/announcements", json={"text": "once"}, headers=headers)
    assert one.status_code == two.status_code == 201 and one.json() == two.json()
    _, body = await api.get("/api/announcements")
    assert [a["text"] for a in body["announcements"]] == ["once"]


async def test_concurrent_retries_with_one_key_make_one_event(api: Api) -> None:
    import asyncio

    headers = {"Idempotency-Key": "same"}
    answers = await asyncio.gather(
        *(
            api.http.post("/api/jobs/race/updates", json={"progress": 1}, headers=headers)
            for _ in range(10)
        )
    )
    assert {a.json()["seq"] for a in answers} == {1}
    _, body = await api.get("/api/jobs/race/events")
    assert len(body["events"]) == 1


async def test_health_ready_metrics_and_dashboard(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        metrics = (await http.get("/metrics")).text
        for name in (
            "switchboard_connections",
            "switchboard_events_published_total",
            "switchboard_deliveries_total",
            "switchboard_publish_seconds",
            "switchboard_rejected_total",
        ):
            assert name in metrics
        page = await http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
