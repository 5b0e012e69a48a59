"""Schemathesis throws generated requests at every documented route: no 5xx, errors in shape."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from switchboard_server.openapi import build_openapi

from .conftest import ADMIN

# The SSE stream stays open until its job ends; tests/test_streams.py covers it.
schema = schemathesis.openapi.from_dict(build_openapi()).exclude(path_regex=r"/stream$")


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
