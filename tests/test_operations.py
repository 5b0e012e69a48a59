"""What operators see: JSON logs with request ids and no secrets, and metrics that move."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable

import httpx
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families
from switchboard_client import AsyncAdmin, SwitchboardClient, SwitchboardError

from .conftest import ADMIN, SECRET, TRANSPORTS, Api, Server, ServerProcess


async def test_json_logs_have_request_ids_and_never_secrets(
    spawn_server: Callable[..., ServerProcess],
) -> None:
    server = spawn_server(
        "--store", "memory://", "--log-format", "json",
        env={"SWITCHBOARD_CLIENT_SECRET": SECRET},
    )  # fmt: skip
    async with AsyncAdmin(server.url, ADMIN) as admin:
        token = (await admin.mint_token("ops", name="Ops", jobs=["*"], rooms=["*"]))["token"]
        await admin.update_job("logged", status="running", progress=1)
        await admin.update_job("logged", status="succeeded")
    async with httpx.AsyncClient(base_url=server.url) as http:
        given = await http.get(
            "/api/jobs", headers={"Authorization": f"Bearer {ADMIN}", "X-Request-Id": "trace-42"}
        )
        assert given.headers["X-Request-Id"] == "trace-42"
        made = await http.get("/api/jobs/logged", headers={"Authorization": f"Bearer {ADMIN}"})
        assert len(made.headers["X-Request-Id"]) >= 16
        refused = await http.get("/api/jobs", headers={"Authorization": "Bearer wrong-token"})
        assert refused.status_code == 401 and refused.headers["X-Request-Id"]
        stream = await http.get(f"/api/jobs/logged/stream?token={token}")
        assert stream.status_code == 200
    async with SwitchboardClient(server.url, token=token) as client:
        await client.join("ops-room")
    with pytest.raises(SwitchboardError):
        await SwitchboardClient(server.url, token=token + "x").connect()
    server.kill(signal.SIGTERM)

    text = server.log.read_text()
    for secret in (ADMIN, SECRET, token, "wrong-token", "Authorization", "Bearer"):
        assert secret not in text, f"{secret!r} leaked into the logs"
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert entries and all({"ts", "level", "event"} <= set(e) for e in entries)
    facts = " ".join(e["event"] for e in entries if e["logger"] == "switchboard")
    for fact in ("serving on", "store:", "auth:", "event loop: uvloop", "CORS"):
        assert fact in facts
    access = [e for e in entries if e["logger"] == "switchboard.access"]
    assert {"method", "path", "status", "duration_ms", "request_id"} <= set(access[0])
    assert any(e["request_id"] == "trace-42" and e["status"] == 200 for e in access)
    assert any(e["status"] == 401 for e in access)
    assert all("?" not in e["path"] for e in access)
    updates = [e for e in entries if e.get("job_id") == "logged"]
    assert [e["status"] for e in updates] == ["running", "succeeded"]


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


async def test_metrics_move_when_things_happen(server: Server, api: Api, transport: str) -> None:
    async def scrape() -> str:
        return (await api.http.get("/metrics")).text

    before = await scrape()
    want = "polling" if transport == "polling" else "websocket"
    sio = socketio.AsyncClient(handle_sigint=False)
    await sio.connect(server.url, namespaces=["/job"], transports=TRANSPORTS[transport])
    while sio.transport() != want:
        await asyncio.sleep(0.01)
    await sio.call("subscribe", {"job_id": "m"}, namespace="/job")
    await api.update("m", progress=1)
    await api.update("m", progress=2)
    await sio.call("subscribe", {"job_id": "bad id"}, namespace="/job")
    await api.post("/api/jobs/m/updates", json={"progress": 500})
    await asyncio.sleep(0.2)
    during = await scrape()
    await sio.disconnect()
    await asyncio.sleep(0.2)
    after = await scrape()

    connections = "switchboard_connections"
    assert sample(during, connections, namespace="/job", transport=want) == 1
    assert sample(after, connections, namespace="/job", transport=want) == 0
    published = "switchboard_events_published_total"
    assert sample(during, published) - sample(before, published) == 2
    delivered = "switchboard_deliveries_total"
    assert sample(during, delivered, namespace="/job", event="job:update") == 2
    count = "switchboard_publish_seconds_count"
    assert sample(during, count) - sample(before, count) == 2
    rejected = "switchboard_rejected_total"
    assert sample(during, rejected, code="invalid_payload") == 2  # one socket, one HTTP
