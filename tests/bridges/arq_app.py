"""`arq tests.bridges.arq_app.WorkerSettings`"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Retry
from switchboard_client.arq import install, report

from . import common


async def progress(ctx: dict[str, Any]) -> dict[str, Any]:
    for value in (0, 25, 50, 75, 100):
        report(value, message=f"{value}%")
        await asyncio.sleep(0.02)
    return {"steps": 5}


async def fail(ctx: dict[str, Any]) -> None:
    report(10, message="about to fail")
    raise ValueError("boom")


async def slow(ctx: dict[str, Any]) -> None:
    report(5, message="waiting to be cancelled")
    await asyncio.sleep(common.PATIENCE)


async def steps(ctx: dict[str, Any]) -> None:
    for value in range(1, 100):
        report(value, message=f"step {value}")
        await asyncio.sleep(common.STEP)
    raise TimeoutError("was never cancelled")


async def quiet(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(common.PATIENCE)
    raise TimeoutError("was never stopped")


async def flaky(ctx: dict[str, Any]) -> str:
    if ctx["job_try"] == 1:
        report(10, message="first try")
        raise Retry(defer=0.1)
    report(50, message="second try")
    return "ok"


async def offline(ctx: dict[str, Any], key: str) -> dict[str, Any]:
    report(10, message="before the outage")
    deadline = time.monotonic() + common.PATIENCE
    while not await ctx["redis"].exists(f"go:{key}"):
        assert time.monotonic() < deadline, "the test never said go"
        await asyncio.sleep(0.02)
    return {"took": common.offline_steps(report, key)}


async def marker(ctx: dict[str, Any], key: str) -> None:
    await ctx["redis"].set(f"marker:{key}", time.time())


async def logs(ctx: dict[str, Any], *texts: str) -> None:
    common.logs(*texts)


async def chatty(ctx: dict[str, Any], key: str, count: int) -> None:
    """Logs `count` lines, taking turns with the other job of `key`, which runs meanwhile."""
    redis = ctx["redis"]
    await redis.incr(f"chatty:{key}")
    deadline = time.monotonic() + common.PATIENCE
    while int(await redis.get(f"chatty:{key}")) < 2:
        assert time.monotonic() < deadline, "the other job never started"
        await asyncio.sleep(0.01)
    for n in range(count):
        common.LOGGER.info("%s: line %d", ctx["job_id"], n)
        await asyncio.sleep(0.005)


class WorkerSettings:
    functions = [progress, fail, slow, steps, quiet, flaky, offline, marker, logs, chatty]
    redis_settings = RedisSettings.from_dsn(common.REDIS_URL)
    allow_abort_jobs = True
    poll_delay = 0.1
    max_tries = 3


install(
    WorkerSettings,
    url=common.SWITCHBOARD_URL,
    token=common.TOKEN,
    capture_logs=common.CAPTURE_LOGS,
)
