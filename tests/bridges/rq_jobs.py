"""The RQ jobs (enqueued by name; `flaky` with `retry=Retry(max=1)`)."""

from __future__ import annotations

from typing import Any

from rq import get_current_job
from switchboard_client.rq import report

from . import common


def progress() -> dict[str, Any]:
    return common.progress(report)


def fail() -> None:
    common.fail(report)


def slow() -> None:
    common.slow(report)


def steps() -> None:
    common.steps(report)


def quiet() -> None:
    common.quiet()


def flaky() -> str:
    job = get_current_job()
    assert job is not None
    if common.attempt(job.id) == 1:
        report(10, message="first try")
        raise ConnectionError("flaky")
    report(50, message="second try")
    return "ok"


def offline(key: str) -> dict[str, Any]:
    return common.offline(report, key)


def marker(key: str) -> None:
    common.marker(key)


def logs(*texts: str) -> None:
    common.logs(*texts)
