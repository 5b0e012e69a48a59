"""Real `switchboard` processes: SQLite durability across restarts and kills, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from switchboard_client import Admin, SwitchboardClient

from .conftest import ADMIN, SECRET, ServerProcess, free_port, switchboard_cmd

Spawn = Callable[..., ServerProcess]


def cli(
    *args: str, url: str, timeout: float = 30, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHBOARD_URL": url, "SWITCHBOARD_ADMIN_TOKEN": ADMIN}
    return subprocess.run(
        [*switchboard_cmd(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )  # type: ignore[call-overload, no-any-return]


def test_sqlite_keeps_jobs_and_history_across_restarts(spawn_server: Spawn, tmp_path: Path) -> None:
    store, port = f"sqlite:///{tmp_path}/jobs.db", free_port()
    first = spawn_server("--store", store, port=port)
    with Admin(first.url, ADMIN) as admin:
        for n in range(1, 6):
            admin.update_job("durable", status="running", progress=n * 10)
        admin.announce("persisted")
    assert first.kill(signal.SIGTERM) == 0

    second = spawn_server("--store", store, port=port)
    with Admin(second.url, ADMIN) as admin:
        job = admin.get_job("durable")
        assert job["seq"] == 5 and job["progress"] == 50
        assert [e["seq"] for e in admin.events("durable")["events"]] == [1, 2, 3, 4, 5]
        assert admin.update_job("durable", progress=60)["seq"] == 6
        assert admin.announce("again")
    announcements = httpx.get(
        f"{second.url}/api/announcements", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()["announcements"]
    assert [a["text"] for a in announcements] == ["again", "persisted"]


async def test_resumed_subscriber_misses_nothing_across_a_restart(
    spawn_server: Spawn, tmp_path: Path
) -> None:
    store, port = f"sqlite:///{tmp_path}/resume.db", free_port()
    server = spawn_server("--store", store, port=port)
    admin = Admin(server.url, ADMIN, retries=8)
    await asyncio.to_thread(admin.update_job, "resume", status="running", progress=0)
    client = SwitchboardClient(server.url, reconnection_delay=0.1, reconnection_delay_max=0.5)
    await client.connect()
    stream = client.watch("resume").__aiter__()
    got = [await anext(stream)]
    server.kill(signal.SIGKILL)
    spawn_server("--store", store, port=port)
    for n in range(1, 5):
        await asyncio.to_thread(admin.update_job, "resume", progress=n * 20)
    await asyncio.to_thread(admin.update_job, "resume", status="succeeded")
    got += [event async for event in stream]
    await client.close()
    admin.close()
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5, 6]


def test_serve_logs_its_start_up_facts_and_never_the_client_secret(
    spawn_server: Spawn, tmp_path: Path
) -> None:
    server = spawn_server("--store", "memory://", env={"SWITCHBOARD_CLIENT_SECRET": SECRET})
    server.kill(signal.SIGTERM)
    text = server.log.read_text()
    assert f"serving on {server.url}" in text
    assert "store: memory://" in text and "client tokens" in text and "CORS" in text
    assert SECRET not in text and ADMIN not in text


def test_warns_without_cors_origins_beyond_loopback(spawn_server: Spawn) -> None:
    """Same-origin is judged by Host, which DNS rebinding forges: say so at start."""
    exposed = spawn_server("--store", "memory://", "--host", "0.0.0.0")
    listed = spawn_server(
        "--store", "memory://", "--host", "0.0.0.0", "--cors-origins", "https://app.example"
    )
    local = spawn_server("--store", "memory://")
    for server in (exposed, listed, local):
        server.kill(signal.SIGTERM)
    assert "without --cors-origins" in exposed.log.read_text()
    assert "without --cors-origins" not in listed.log.read_text()
    assert "without --cors-origins" not in local.log.read_text()


def test_serve_generates_and_prints_an_admin_token_once(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_ADMIN_TOKEN"}
    proc = subprocess.Popen(
        [*switchboard_cmd(), "serve", "--store", "memory://", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = ""
        assert proc.stderr is not None
        for line in proc.stderr:
            if "admin token (generated, shown once):" in line:
                token = line.rsplit(" ", 1)[1].strip()
                break
        assert len(token) >= 32
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                response = httpx.get(
                    f"{url}/api/jobs", headers={"Authorization": f"Bearer {token}"}
                )
                break
            except httpx.TransportError:
                import time

                time.sleep(0.05)
        assert response.status_code == 200
        assert httpx.get(f"{url}/api/jobs").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_bad_configuration_exits_with_a_message() -> None:
    result = cli("serve", "--port", "99999", url="http://127.0.0.1:1")
    assert result.returncode == 2 and "port" in result.stderr
    result = cli(
        "serve", "--store", "nosuch://x", "--port", str(free_port()), url="http://127.0.0.1:1"
    )
    assert result.returncode != 0 and "unknown store" in result.stderr


def test_cli_watch_exits_0_when_the_job_succeeds(spawn_server: Spawn) -> None:
    server = spawn_server("--store", "memory://")
    assert (
        cli(
            "publish", "cli-ok", "--status", "running", "--progress", "0", url=server.url
        ).returncode
        == 0
    )
    watcher = subprocess.Popen(
        [*switchboard_cmd(), "watch", "cli-ok", "--json"],
        env={**os.environ, "SWITCHBOARD_URL": server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    first = json.loads(watcher.stdout.readline())  # the current state: watching has begun
    assert first["seq"] == 1
    for n in (25, 50, 75):
        published = cli(
            "publish", "cli-ok", "--progress", str(n), "--message", f"at {n}", url=server.url
        )
        assert published.returncode == 0, published.stderr
    done = cli(
        "publish",
        "cli-ok",
        "--status",
        "succeeded",
        "--data",
        '{"artifact": "a.tgz"}',
        url=server.url,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["data"] == {"artifact": "a.tgz"}
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    events = [first] + [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[-1]["status"] == "succeeded"


def test_cli_watch_fails_when_the_job_fails(spawn_server: Spawn) -> None:
    server = spawn_server("--store", "memory://")
    cli("publish", "cli-bad", "--status", "failed", "--message", "tests failed", url=server.url)
    result = cli("watch", "cli-bad", url=server.url)
    assert result.returncode == 1
    assert "failed" in result.stderr
    cli("publish", "cli-stop", "--status", "cancelled", url=server.url)
    assert cli("watch", "cli-stop", url=server.url).returncode == 3


def test_cli_publish_and_announce_report_refusals(spawn_server: Spawn) -> None:
    server = spawn_server("--store", "memory://")
    cli("publish", "fin", "--status", "succeeded", url=server.url)
    refused = cli("publish", "fin", "--progress", "3", url=server.url)
    assert refused.returncode == 1 and "job_finished" in refused.stderr
    bad = cli("publish", "fin2", "--progress", "300", url=server.url)
    assert bad.returncode == 1 and "progress" in bad.stderr
    bad_data = cli("publish", "fin2", "--data", "{not json", url=server.url)
    assert bad_data.returncode == 1 and "--data" in bad_data.stderr
    wrong = subprocess.run(
        [*switchboard_cmd(), "announce", "hi"],
        env={**os.environ, "SWITCHBOARD_URL": server.url, "SWITCHBOARD_ADMIN_TOKEN": "wrong"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert wrong.returncode == 1 and "unauthorized" in wrong.stderr
    ok = cli("announce", "deploy at 5", "--level", "warning", url=server.url)
    assert ok.returncode == 0 and json.loads(ok.stdout)["level"] == "warning"


def test_cli_jobs_table_token_and_chat(spawn_server: Spawn) -> None:
    server = spawn_server("--store", "memory://", env={"SWITCHBOARD_CLIENT_SECRET": SECRET})
    cli("publish", "table-job", "--status", "running", "--progress", "42", url=server.url)
    table = cli("jobs", url=server.url)
    assert table.returncode == 0 and "table-job" in table.stdout and "42%" in table.stdout

    minted = cli("token", "ann", "--name", "Ann", "--room", "lobby", url=server.url)
    assert minted.returncode == 0
    token = minted.stdout.strip()
    chat = subprocess.run(
        [*switchboard_cmd(), "chat", "lobby"],
        input="hello from the cli\n",
        env={**os.environ, "SWITCHBOARD_URL": server.url, "SWITCHBOARD_TOKEN": token},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert "Ann: hello from the cli" in chat.stdout
    outside = subprocess.run(
        [*switchboard_cmd(), "chat", "elsewhere"],
        input="", env={**os.environ, "SWITCHBOARD_URL": server.url, "SWITCHBOARD_TOKEN": token},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert outside.returncode != 0 and "forbidden" in outside.stderr


def test_help_and_version() -> None:
    result = cli("--help", url="")
    assert result.returncode == 0
    for command in ("serve", "watch", "jobs", "publish", "announce", "chat", "token"):
        assert command in result.stdout
    serve_help = cli("serve", "--help", url="")
    assert "SWITCHBOARD_STORE" in serve_help.stdout and "--client-secret" in serve_help.stdout
    assert cli("--version", url="").stdout.startswith("switchboard ")
