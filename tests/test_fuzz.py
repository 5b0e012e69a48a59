"""Hypothesis throws garbage at every socket event and raw protocol; the server keeps serving."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KNOWN_EVENTS = ["subscribe", "unsubscribe", "join", "leave", "message", "recent"]
RESERVED = ["connect", "disconnect", "connect_error", "error"]
FIELDS = ["job_id", "since", "log_since", "room", "text", "limit", "op", "ref"]
# `make soak` raises the count; the default keeps `make test` quick.
EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS}),
    st.builds(lambda n: {"job_id": "x" * n}, st.integers(0, 3000)),
    st.builds(lambda n: {"room": "r", "text": "é" * n}, st.integers(0, 5000)),
)
events = st.sampled_from(KNOWN_EVENTS + RESERVED) | st.text(max_size=40)


@pytest.fixture(scope="module", params=["websocket", "polling"])
def fuzzed(request: pytest.FixtureRequest, live_url: str) -> Iterator[socketio.Client]:
    client = socketio.Client(reconnection=False)
    client.connect(live_url, namespaces=["/job", "/info"], transports=[request.param])
    yield client
    client.disconnect()


def well_behaved(url: str) -> None:
    """A fresh, ordinary client still gets served."""
    with socketio.SimpleClient() as client:
        client.connect(url, namespace="/job", transports=["websocket"])
        ack = client.call("subscribe", {"job_id": "healthy"}, timeout=10)
        assert ack["ok"] is True


@FUZZ
@given(event=events, payload=payloads, namespace=st.sampled_from(["/job", "/info"]))
def test_socket_events(fuzzed: socketio.Client, event: str, payload: Any, namespace: str) -> None:
    ack = fuzzed.call(event, payload, namespace=namespace, timeout=10)
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
    if not ack["ok"]:
        assert ack["error"]["code"] in ("invalid_payload", "forbidden", "not_found"), ack
    assert fuzzed.connected


def test_socket_server_still_serves(fuzzed: socketio.Client, live_url: str) -> None:
    assert fuzzed.call("subscribe", {"job_id": "after-fuzz"}, namespace="/job")["ok"]
    well_behaved(live_url)


@FUZZ
@given(frame=st.one_of(st.text(max_size=200), json_values.map(json.dumps), payloads.map(
    lambda p: json.dumps({"op": "subscribe", "ref": 1, **p} if isinstance(p, dict) else p)
)))  # fmt: skip
def test_plain_websocket_frames(live_url: str, frame: str) -> None:
    ws = websocket.create_connection(live_url.replace("http", "ws") + "/ws", timeout=10)
    try:
        ws.send(frame)
        answer = json.loads(ws.recv())
        assert "ok" in answer and (answer["ok"] or set(answer["error"]) == {"code", "message"})
        ws.send(json.dumps({"op": "subscribe", "ref": "check", "job_id": "fine"}))
        while (reply := json.loads(ws.recv())).get("ref") != "check":
            pass
        assert reply["ok"] is True
    finally:
        ws.close()


# Raw Engine.IO / Socket.IO packets, malformed on purpose.
RAW_PACKETS = [
    "", "x", "9", "4", "40", "4{", "42", "42[", "42[]", "42[1]", "42[null]", '42["subscribe"',
    '42/job,["subscribe",', '42/nowhere,["subscribe",{}]', '42/job,999999999999999999999["x"]',
    "43/job,1[]", "45-[]", '451-/job,["subscribe",{"_placeholder":true,"num":0}]', "2probe",
    "5", "6", "1", "0", "4" + "[" * 5000,
    '42/job,["subscribe",' + '{"a":' * 200 + "1" + "}" * 200 + "]",
]  # fmt: skip


@pytest.mark.parametrize("raw", RAW_PACKETS)
def test_raw_packets_over_websocket(live_url: str, raw: str) -> None:
    ws = websocket.create_connection(
        live_url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket", timeout=10
    )
    try:
        assert ws.recv().startswith("0{")  # the Engine.IO handshake
        ws.send(raw)
        time.sleep(0.05)
    finally:
        ws.close()
    well_behaved(live_url)


@pytest.mark.parametrize("raw", RAW_PACKETS[:12])
def test_raw_packets_over_polling(live_url: str, raw: str) -> None:
    with httpx.Client(base_url=live_url, timeout=10) as http:
        opened = http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert opened.status_code == 200
        sid = json.loads(opened.text[1:])["sid"]
        posted = http.post(
            "/socket.io/", params={"EIO": "4", "transport": "polling", "sid": sid}, content=raw
        )
        assert posted.status_code < 500
        bogus = http.post(
            "/socket.io/", params={"EIO": "4", "transport": "polling", "sid": "nope"}, content=raw
        )
        assert bogus.status_code < 500
    well_behaved(live_url)
