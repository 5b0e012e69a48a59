"""`dramatiq tests.bridges.dramatiq_app -p 1 -t 2`"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
from switchboard_client.dramatiq import SwitchboardMiddleware, report

from . import common

broker = RedisBroker(url=common.REDIS_URL)
broker.add_middleware(CurrentMessage())
SwitchboardMiddleware.install(
    broker, url=common.SWITCHBOARD_URL, token=common.TOKEN, capture_logs=common.CAPTURE_LOGS
)
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def progress() -> dict[str, Any]:
    return common.progress(report)


@dramatiq.actor(max_retries=0)
def fail() -> None:
    common.fail(report)


@dramatiq.actor(max_retries=0)
def skipped() -> None:
    raise AssertionError("sent with an expired max_age: AgeLimit skips it")


@dramatiq.actor(max_retries=3, min_backoff=100, max_backoff=100)
def steps() -> None:
    common.steps(report)  # retries left, yet a Cancelled from report() is not retried


@dramatiq.actor(max_retries=1, min_backoff=100, max_backoff=100)
def flaky() -> str:
    message = CurrentMessage.get_current_message()
    assert message is not None
    if common.attempt(message.message_id) == 1:
        report(10, message="first try")
        raise ConnectionError("flaky")
    report(50, message="second try")
    return "ok"


@dramatiq.actor(max_retries=0)
def offline(key: str) -> dict[str, Any]:
    return common.offline(report, key)


@dramatiq.actor(max_retries=0)
def marker(key: str) -> None:
    common.marker(key)


@dramatiq.actor(max_retries=0)
def logs(*texts: str) -> None:
    common.logs(*texts)
