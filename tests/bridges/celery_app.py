"""`celery -A tests.bridges.celery_app worker -P prefork -c 1` (prefork: revoke can terminate)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from switchboard_client.celery import install, report

from . import common

app = Celery("bridges", broker=common.REDIS_URL, backend=common.REDIS_URL)
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_track_started=True,
)
install(app, url=common.SWITCHBOARD_URL, token=common.TOKEN, capture_logs=common.CAPTURE_LOGS)


@app.task(bind=True)
def progress(self: Any) -> dict[str, Any]:
    def step(value: float, message: str | None = None) -> None:
        if value == 50:  # Celery's own way, picked up too
            self.update_state(state="PROGRESS", meta={"progress": value, "message": message})
        else:
            report(value, message=message)

    return common.progress(step)


@app.task
def fail() -> None:
    common.fail(report)


@app.task
def slow() -> None:
    common.slow(report)


@app.task
def steps() -> None:
    common.steps(report)


@app.task
def quiet() -> None:
    common.quiet()


@app.task(bind=True, max_retries=1)
def flaky(self: Any) -> str:
    if self.request.retries == 0:
        report(10, message="first try")
        raise self.retry(exc=ConnectionError("flaky"), countdown=0.1)
    report(50, message="second try")
    return "ok"


@app.task
def offline(key: str) -> dict[str, Any]:
    return common.offline(report, key)


@app.task
def marker(key: str) -> None:
    common.marker(key)


@app.task
def logs(*texts: str) -> None:
    common.logs(*texts)
