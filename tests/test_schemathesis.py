"""Schemathesis throws generated requests at every documented route: no 5xx, errors in shape."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from switchboard_server.openapi import build_openapi

from .conftest import ADMIN, free_port, switchboard_cmd

# The SSE stream stays open until its job ends; tests/test_streams.py covers it.
schema = schemathesis.openapi.from_dict(build_openapi()).exclude(path_regex=r"/stream$")


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "SWITCHBOARD_ADMIN_TOKEN": ADMIN, "SWITCHBOARD_CLIENT_SECRET": "s" * 32}
    proc = subprocess.Popen(
        [*switchboard_cmd(), "serve", "--store", "memory://", "--port", str(port),
         "--rate-per-second", "10000", "--rate-burst", "10000"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=15)


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: Any, live_url: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    response = case.call(base_url=live_url, headers=headers, timeout=10)
    assert response.status_code < 500 or case.path == "/readyz", response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
