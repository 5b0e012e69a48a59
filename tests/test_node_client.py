"""The official Node socket.io-client (npm) against a real server, directly and through nginx."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import httpx
import pytest

from .conftest import ADMIN, ROOT, SECRET, Server, StartServer, require_binary

SCENARIOS = ["subscribe", "resume", "chat", "announce", "errors", "unauthorized", "tag", "refresh"]
NODE_TESTS = ROOT / "tests" / "node"


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_socket_io_client(
    start_server: StartServer,
    edge: Callable[[Server], str],
    transport: str,
    scenario: str,
) -> None:
    node = require_binary("node")
    assert (NODE_TESTS / "node_modules" / "socket.io-client").is_dir(), "run `make test` (npm ci)"
    server = await start_server(client_secret=SECRET)
    url = edge(server)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        token = (
            await http.post(
                "/api/tokens", json={"sub": "node", "ttl": 600, "jobs": ["*"], "rooms": ["*"]}
            )
        ).json()["token"]
    env = {
        **os.environ,
        "SWITCHBOARD_URL": url,
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN,
        "TRANSPORT": transport,
        "CLIENT_TOKEN": token,
    }
    proc = await asyncio.create_subprocess_exec(
        node, "scenarios.mjs", scenario,
        cwd=NODE_TESTS, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode() + out.decode()
    assert b": ok" in out
