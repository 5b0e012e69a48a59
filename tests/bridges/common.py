"""What the four test workers share: the broker the test started, and the task bodies.

Every body takes the bridge's `report` so that each queue runs the same steps. The
test reads the exact (status, progress) sequence each one must produce.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

REDIS_URL = os.environ["BRIDGE_REDIS_URL"]  # the test's own redis-server, never a shared one
SWITCHBOARD_URL = os.environ["SWITCHBOARD_URL"]
TOKEN = os.environ["SWITCHBOARD_ADMIN_TOKEN"]
CAPTURE_LOGS = os.environ.get("BRIDGE_CAPTURE_LOGS") == "1"  # the install's capture_logs
LOGGER = logging.getLogger("bridges.tasks")
LOGGER.setLevel(logging.INFO)  # arq and RQ leave the root logger at WARNING
PATIENCE = 60.0  # seconds a task waits for the test before giving up
STEP = 0.25  # seconds between the reports of `steps`; well under the bridge's 1 s poll

Report = Callable[..., None]


def broker() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def progress(report: Report) -> dict[str, Any]:
    for value in (0, 25, 50, 75, 100):
        report(value, message=f"{value}%")
        time.sleep(0.02)
    return {"steps": 5}


def fail(report: Report) -> None:
    report(10, message="about to fail")
    raise ValueError("boom")


def slow(report: Report) -> None:
    """Runs until it is cancelled."""
    report(5, message="waiting to be cancelled")
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise TimeoutError("was never cancelled")


def steps(report: Report) -> None:
    """Reports 1%, 2%, ... every STEP seconds until it is cancelled."""
    for value in range(1, 100):
        report(value, message=f"step {value}")
        time.sleep(STEP)
    raise TimeoutError("was never cancelled")


def quiet() -> None:
    """Never reports after it starts: runs until it is stopped."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise TimeoutError("was never stopped")


def attempt(key: str) -> int:
    """1 on the first run of the job `key`, 2 on the second, ..."""
    return int(broker().incr(f"tries:{key}"))


def wait_for_go(key: str) -> None:
    deadline = time.monotonic() + PATIENCE
    connection = broker()
    while not connection.exists(f"go:{key}"):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.02)


def offline_steps(report: Report, key: str) -> float:
    """Report while Switchboard is down; returns how long the reports took."""
    started = time.monotonic()
    for value in (20, 40, 60, 80, 100):
        report(value, message=f"{value}% while Switchboard is down")
    took = time.monotonic() - started
    broker().set(f"took:{key}", took)
    return took


def offline(report: Report, key: str) -> dict[str, Any]:
    report(10, message="before the outage")
    wait_for_go(key)
    return {"took": offline_steps(report, key)}


def marker(key: str) -> None:
    broker().set(f"marker:{key}", time.time())


def logs(info: str, warning: str, error: str) -> None:
    """One record at each level, and two that are never captured: the HTTP client's, and
    one made in another thread."""
    LOGGER.info(info)
    LOGGER.warning(warning)
    logging.getLogger("httpx").warning("the HTTP client's record")
    elsewhere = threading.Thread(target=LOGGER.warning, args=("another thread's record",))
    elsewhere.start()
    elsewhere.join()
    LOGGER.error(error)
