"""A burst of updates on SQLite cut by SIGKILL or SIGTERM: nothing acknowledged is lost."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import ADMIN, ServerProcess, free_port

HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_burst_cut_by_a_signal_keeps_every_acknowledged_update(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path, sig: signal.Signals
) -> None:
    store, port = f"sqlite:///{tmp_path}/burst.db", free_port()
    keep_all = ("--history", "1000000")  # the burst may well pass the default 1,000
    server = spawn_server("--store", store, *keep_all, port=port)
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def publish() -> None:
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=5) as http:
            while not stop.is_set():
                try:
                    response = http.post("/api/jobs/burst/updates", json={"progress": 1})
                except httpx.TransportError:
                    return  # the server is gone: this answer never came
                if response.status_code in (200, 201):
                    with lock:
                        acknowledged.append(response.json()["seq"])

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    code = server.kill(sig)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    if sig == signal.SIGTERM:
        assert code == 0 and time.monotonic() - started < 10  # graceful, and quick

    again = spawn_server("--store", store, *keep_all, port=port)
    with httpx.Client(base_url=again.url, headers=HEADERS, timeout=10) as http:
        job = http.get("/api/jobs/burst").json()
        events: list[dict[str, int]] = []
        while page := http.get(
            "/api/jobs/burst/events", params={"since": len(events), "limit": 1000}
        ).json()["events"]:
            events += page  # pages of at most 1,000
        resumed = http.get("/api/jobs/burst/events", params={"since": 10, "limit": 1000}).json()
    assert len(acknowledged) > 10
    assert set(acknowledged) <= {e["seq"] for e in events}  # every acknowledged update is there
    assert [e["seq"] for e in events] == list(range(1, job["seq"] + 1))  # continuous
    assert [e["seq"] for e in resumed["events"]] == list(range(11, min(job["seq"], 1010) + 1))
    assert resumed["reset"] is False
